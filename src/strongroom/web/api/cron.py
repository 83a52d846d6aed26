"""POST /api/cron/backup: back up every configured target, for an external scheduler.

Authorised by ``Authorization: Bearer $CRON_SECRET`` (Vercel cron, a GitHub Actions step);
the endpoint does not exist (404) unless ``CRON_SECRET`` is set. Vercel cron sends GET, so
GET is accepted too."""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request

from strongroom.web.actions.backups import start_backup
from strongroom.web.actions.common import Caller
from strongroom.web.api.common import accepted
from strongroom.web.api.schemas import JobsAccepted, Problem
from strongroom.web.auth import ADMIN, Principal, bearer_token
from strongroom.web.context import client_of, context_of

router = APIRouter(tags=["cron"])


def cron_backup(
    request: Request,
    target: Annotated[str | None, Query(max_length=200)] = None,
    tag: Annotated[str, Query(min_length=1, max_length=50, pattern=r"^[A-Za-z0-9_.-]+$")] = "cron",
) -> JobsAccepted:
    """Start a backup of every configured target (or of ``target``), tagged ``tag``."""
    ctx = context_of(request)
    secret = ctx.cron_secret
    if secret is None:
        raise HTTPException(404, "Not Found")
    given = bearer_token(request) or ""
    if not hmac.compare_digest(given.encode(), secret.encode()):
        raise HTTPException(401, "wrong cron secret", headers={"WWW-Authenticate": "Bearer"})
    names = sorted(ctx.settings.targets)
    if target is not None:
        if target not in ctx.settings.targets:
            raise HTTPException(404, f"{target!r} is not a configured target")
        names = [target]
    who = Caller(ctx, Principal("cron", ADMIN, "cron"), client_of(request))
    return JobsAccepted(jobs=[accepted(start_backup(who, name, (tag,))) for name in names])


_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "wrong or missing secret"},
    404: {"model": Problem, "description": "CRON_SECRET is not set"},
}
for _method in ("POST", "GET"):
    router.add_api_route(
        "/cron/backup",
        cron_backup,
        methods=[_method],
        status_code=202,
        responses=_ERRORS,
        operation_id=f"cron_backup_{_method.lower()}",
    )
