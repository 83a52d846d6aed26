"""GET /api/targets: every target with its newest backup, health and next run."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from strongroom.engines import engine_kind
from strongroom.errors import StrongroomError
from strongroom.web.api.common import READ_ERRORS
from strongroom.web.api.schemas import TargetSummary
from strongroom.web.auth import Principal, require_viewer
from strongroom.web.context import WebContext, context_of
from strongroom.web.status import health_report, next_runs

router = APIRouter(tags=["targets"])


def summaries(ctx: WebContext) -> list[TargetSummary]:
    ctx.fresh_repository()
    health = {t["target"]: t for t in health_report(ctx)["targets"]}
    upcoming = next_runs(ctx)
    result = []
    for name in ctx.target_names():
        rows = ctx.index.backups(target=name)
        engine = rows[0].engine if rows else None
        if engine is None and name in ctx.settings.targets:
            try:
                engine = engine_kind(ctx.database_url(name)).value
            except StrongroomError:
                engine = None
        own = health.get(name)
        result.append(
            TargetSummary(
                name=name,
                configured=name in ctx.settings.targets,
                engine=engine,
                backups=len(rows),
                stored_bytes=sum(r.stored_new_bytes for r in rows),
                newest_backup_id=rows[0].backup_id if rows else None,
                newest_backup_at=rows[0].finished_at if rows else None,
                health=own["status"] if own else "unknown",
                reasons=list(own["reasons"]) if own else [],
                next_run=upcoming.get(name),
            )
        )
    return result


@router.get("/targets", responses=READ_ERRORS)
def list_targets(
    request: Request, _: Annotated[Principal, Depends(require_viewer)]
) -> list[TargetSummary]:
    """Every target: configured ones and any other that has backups."""
    return summaries(context_of(request))
