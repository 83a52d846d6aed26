"""Backups: list, show, create (a job), download (streamed), forget, pin, verify."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request

from strongroom.services import records
from strongroom.web.actions import backups as actions
from strongroom.web.actions.downloads import (
    CHECKSUM_HEADER,
    DownloadResponse,
    download_name,
    download_stream,
)
from strongroom.web.api.common import READ_ERRORS, WRITE_ERRORS, accepted, caller, manifest_of
from strongroom.web.api.schemas import (
    BackupDetail,
    BackupRequest,
    BackupSummary,
    Forgotten,
    JobAccepted,
    PinState,
    Problem,
    TableRow,
    Verification,
    VerifyRestoreRequest,
)
from strongroom.web.auth import Principal, require_admin, require_viewer
from strongroom.web.context import context_of

router = APIRouter(tags=["backups"])
Viewer = Annotated[Principal, Depends(require_viewer)]
BackupId = Annotated[str, "backup id, unique prefix (8+ characters) or latest"]
ExactId = Annotated[str, "the backup's full id (not a prefix, not latest)"]


@router.get("/backups", responses=READ_ERRORS)
def list_backups(
    request: Request,
    _: Viewer,
    target: Annotated[str | None, Query(max_length=200)] = None,
    tag: Annotated[str | None, Query(max_length=100)] = None,
    verified: Literal["ok", "failed", "never"] | None = None,
    pinned: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[BackupSummary]:
    """Backups, newest first, from the manifest index (synced with the repository)."""
    ctx = context_of(request)
    ctx.fresh_repository()
    rows = ctx.index.backups(
        target=target, tag=tag, verified=verified, pinned=pinned, limit=limit, offset=offset
    )
    return [BackupSummary.of(row) for row in rows]


@router.get("/backups/{backup_id}", responses=READ_ERRORS)
def show_backup(request: Request, principal: Viewer, backup_id: BackupId) -> BackupDetail:
    """One backup: its manifest, per-table statistics and every verification."""
    ctx = context_of(request)
    manifest = manifest_of(request, principal, backup_id)
    repo = ctx.repository()
    ctx.index.fresh(repo)
    row = ctx.index.get(manifest.backup_id)
    if row is None:
        ctx.index.sync(repo)
        row = ctx.index.get(manifest.backup_id)
    assert row is not None
    private = repo.private_section(manifest)
    history = records.verification_history(repo, manifest.backup_id)
    return BackupDetail(
        **BackupSummary.of(row).model_dump(),
        dump_format=manifest.dump_format,
        tool_version=manifest.tool_version,
        new_chunk_count=manifest.new_chunk_count,
        stream_checksum=manifest.stream_checksum,
        database=private.database,
        tables=[
            TableRow(name=t.name, rows=t.rows, checksum=t.checksum is not None)
            for t in private.tables
        ],
        verifications=[
            Verification(verified_at=v.verified_at, kind=v.kind, ok=v.ok, problem=v.problem)
            for v in reversed(history)
        ],
    )


@router.post("/backups", status_code=202, responses=WRITE_ERRORS)
def create_backup(
    request: Request,
    body: BackupRequest,
    principal: Annotated[Principal, Depends(require_admin("backup"))],
) -> JobAccepted:
    """Back up a configured target now; follow the job at ``status_url``."""
    return accepted(actions.start_backup(caller(request, principal), body.target, tuple(body.tags)))


@router.get(
    "/backups/{backup_id}/download",
    response_class=DownloadResponse,
    responses={
        **WRITE_ERRORS,
        200: {
            "content": {"application/octet-stream": {}},
            "description": f"the raw dump; its BLAKE3 checksum is in {CHECKSUM_HEADER}",
        },
        409: {"model": Problem, "description": "the backup is damaged (nothing is sent)"},
    },
)
def download_backup(
    request: Request,
    backup_id: BackupId,
    principal: Annotated[Principal, Depends(require_admin("download"))],
) -> DownloadResponse:
    """The raw dump (pg_dump custom format, or the SQLite file), verified chunk by chunk as
    it streams; feed it to ``pg_restore`` or open it with ``sqlite3``. Every chunk is
    checked to exist first (a damaged backup: 409). Should the stream fail later, the
    connection closes before ``Content-Length`` bytes: the client sees an error, never a
    short file. ``X-Content-Blake3`` is the whole dump's BLAKE3 (``b3sum`` checks it)."""
    who = caller(request, principal)
    manifest = actions.resolve(who, backup_id)
    return DownloadResponse(
        download_stream(who, manifest),
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="{download_name(manifest)}"',
            "Content-Length": str(manifest.raw_size),
            CHECKSUM_HEADER: manifest.stream_checksum,
        },
    )


@router.delete("/backups/{backup_id}", responses=WRITE_ERRORS)
def forget_backup(
    request: Request,
    backup_id: ExactId,
    principal: Annotated[Principal, Depends(require_admin("forget"))],
) -> Forgotten:
    """Forget one backup (its unshared chunks go at the next prune). Pinned: 409. Only
    the full id is accepted (400 for ``latest`` or a prefix)."""
    return Forgotten(**actions.forget_one(caller(request, principal), backup_id))


@router.put("/backups/{backup_id}/pin", responses=WRITE_ERRORS)
def pin(
    request: Request,
    backup_id: BackupId,
    principal: Annotated[Principal, Depends(require_admin("pin"))],
) -> PinState:
    """Pin a backup: no retention policy forgets it."""
    return PinState(**actions.set_pin(caller(request, principal), backup_id, True))


@router.delete("/backups/{backup_id}/pin", responses=WRITE_ERRORS)
def unpin(
    request: Request,
    backup_id: BackupId,
    principal: Annotated[Principal, Depends(require_admin("unpin"))],
) -> PinState:
    """Remove a pin."""
    return PinState(**actions.set_pin(caller(request, principal), backup_id, False))


@router.post("/backups/{backup_id}/verify", status_code=202, responses=WRITE_ERRORS)
def verify(
    request: Request,
    backup_id: BackupId,
    principal: Annotated[Principal, Depends(require_admin("verify"))],
) -> JobAccepted:
    """Re-read every chunk: each chunk's hash and the whole-dump checksum (a job)."""
    who = caller(request, principal)
    return accepted(actions.start_verify(who, actions.resolve(who, backup_id)))


@router.post("/backups/{backup_id}/verify-restore", status_code=202, responses=WRITE_ERRORS)
def verify_restore(
    request: Request,
    backup_id: BackupId,
    principal: Annotated[Principal, Depends(require_admin("verify"))],
    body: VerifyRestoreRequest | None = None,
) -> JobAccepted:
    """A restore drill into a throwaway database, verified table by table (a job)."""
    who = caller(request, principal)
    manifest = actions.resolve(who, backup_id)
    return accepted(actions.start_drill(who, manifest, body.scratch if body else None))
