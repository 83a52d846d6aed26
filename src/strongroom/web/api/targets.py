"""GET /api/targets: every target with its newest backup, health and next run;
GET /api/targets/{name}/history: what the dashboard's charts of one target draw."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request

from strongroom.engines import engine_kind
from strongroom.errors import StrongroomError
from strongroom.repository.ids import parse_iso
from strongroom.repository.names import printable
from strongroom.services import records
from strongroom.web.api.common import READ_ERRORS
from strongroom.web.api.schemas import (
    HistoryBackup,
    HistoryRun,
    RestoreCheck,
    TargetHistory,
    TargetSummary,
    TargetWal,
)
from strongroom.web.auth import Principal, require_viewer
from strongroom.web.context import WebContext, context_of
from strongroom.web.models import IndexedBackup
from strongroom.web.status import health_report, next_runs, target_wal

router = APIRouter(tags=["targets"])
ALL = 10**9  # no limit: every backup of a target counts (the index's default is 500)


def summaries(ctx: WebContext) -> list[TargetSummary]:
    ctx.fresh_repository()
    health = {t["target"]: t for t in health_report(ctx)["targets"]}
    upcoming = next_runs(ctx)
    result = []
    for name in ctx.target_names():
        rows = ctx.index.backups(target=name, limit=ALL)
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
                wal=_wal(ctx, name),
            )
        )
    return result


def _wal(ctx: WebContext, name: str) -> TargetWal | None:
    found = target_wal(ctx, name)
    return TargetWal.model_validate(found) if found is not None else None


@router.get("/targets", responses=READ_ERRORS)
def list_targets(
    request: Request, _: Annotated[Principal, Depends(require_viewer)]
) -> list[TargetSummary]:
    """Every target: configured ones and any other that has backups."""
    return summaries(context_of(request))


HISTORY_LIMIT = 200  # backups and runs a history shows by default


def _seconds(iso: str) -> int:
    return int(parse_iso(iso).timestamp())


def _check(row: IndexedBackup | None) -> RestoreCheck | None:
    if row is None or row.verified_at is None:
        return None
    return RestoreCheck(
        backup_id=row.backup_id,
        verified_at=row.verified_at,
        kind=row.verified_kind or "read",
        ok=bool(row.verified_ok),
    )


def restore_checks(rows: list[IndexedBackup]) -> tuple[RestoreCheck | None, RestoreCheck | None]:
    """The newest restore drill and the newest verification of any kind, from the index
    rows of one target (each row holds its backup's newest verification only: a drill
    followed by a read check of the same backup counts as a read check)."""
    verified = [r for r in rows if r.verified_at]
    drills = [r for r in verified if r.verified_kind == "restore"]
    newest = max(verified, key=lambda r: r.verified_at or "", default=None)
    drill = max(drills, key=lambda r: r.verified_at or "", default=None)
    return _check(drill), _check(newest)


def history(ctx: WebContext, name: str, limit: int = HISTORY_LIMIT) -> TargetHistory:
    """The target's kept backups (sizes, cumulative size, durations), its backup runs
    (failed ones too: the repository's run records) and its newest verifications.

    Raises ``HTTPException(404)`` for a target that is neither configured nor has backups;
    ``StorageError`` (503) when the run records cannot be read."""
    repo = ctx.fresh_repository()
    if name not in ctx.target_names():
        raise HTTPException(404, f"no target {printable(name)[:80]!r}")
    rows = list(reversed(ctx.index.backups(target=name, limit=ALL)))  # oldest first
    points, total = [], 0
    for row in rows:
        total += row.stored_new_bytes
        points.append(
            HistoryBackup(
                backup_id=row.backup_id,
                finished_at=row.finished_at,
                at=_seconds(row.finished_at),
                stored_new_bytes=row.stored_new_bytes,
                stored_cumulative_bytes=total,
                raw_size=row.raw_size,
                duration_seconds=row.duration_seconds,
            )
        )
    runs = [r for r in records.runs(repo, name) if r.kind == "backup"][-limit:]
    drill, newest = restore_checks(rows)
    return TargetHistory(
        target=name,
        timezone=ctx.settings.timezone,
        backups=points[-limit:],
        total_backups=len(rows),
        stored_bytes=total,
        runs=[
            HistoryRun(
                finished_at=r.finished_at,
                at=_seconds(r.finished_at),
                ok=r.ok,
                backup_id=r.backup_id,
                error_kind=r.error_kind,
            )
            for r in runs
        ],
        failed_runs=sum(1 for r in runs if not r.ok),
        last_restore_drill=drill,
        last_verification=newest,
    )


@router.get("/targets/{name:path}/history", responses=READ_ERRORS)
def target_history(
    request: Request,
    _: Annotated[Principal, Depends(require_viewer)],
    name: Annotated[str, Path(max_length=200)],
    limit: Annotated[int, Query(ge=1, le=1000)] = HISTORY_LIMIT,
) -> TargetHistory:
    """One target's history for charts: its newest ``limit`` kept backups (new and
    cumulative stored bytes, duration), its newest ``limit`` backup runs (failed ones
    too) and its last restore drill. Times are UTC; ``timezone`` is the zone the UI
    shows them in. ``name`` is URL-quoted; a name with ``/`` (an older version's target,
    ``eu/shop``) is sent as ``eu%2Fshop`` or plain and reaches this route either way."""
    return history(context_of(request), name, limit)
