"""The REST API under /api/ (one router module per area), documented by its OpenAPI schema."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from strongroom.web.api import backups, cron, health, jobs, restore, retention, targets
from strongroom.web.auth import check_csrf


def api_router() -> APIRouter:
    router = APIRouter(prefix="/api", dependencies=[Depends(check_csrf)])
    for module in (targets, backups, restore, retention, jobs, cron, health):
        router.include_router(module.router)
    return router


__all__ = ["api_router", "health"]
