"""The admin UI: server-rendered pages (Jinja2) with htmx for live parts."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from strongroom.web.auth import check_csrf
from strongroom.web.ui import actions, admin, assets, history, login, pages


def ui_router() -> APIRouter:
    router = APIRouter(include_in_schema=False, dependencies=[Depends(check_csrf)])
    for module in (login, pages, actions, admin, assets, history):
        router.include_router(module.router)
    return router
