"""Backups, verification, pins and forgetting one backup, as jobs or quick calls."""

from __future__ import annotations

from typing import Any

from strongroom.engines import open_engine
from strongroom.errors import RepositoryError, StrongroomError, UsageError
from strongroom.notify.events import Event
from strongroom.repository.ids import BACKUP_ID_PATTERN, utc_now_iso
from strongroom.repository.manifest import Manifest
from strongroom.repository.names import check_tags, check_target_name
from strongroom.services import records
from strongroom.services.backup import BackupRun, record_backup_run, recorded_backup
from strongroom.services.forget import delete_backup
from strongroom.services.hooks import hooks_of
from strongroom.services.notifications import notify_backup
from strongroom.services.pins import pin_backup, unpin_backup
from strongroom.services.verify import verify_backup
from strongroom.web import audit
from strongroom.web.actions.common import Caller
from strongroom.web.context import WebContext
from strongroom.web.jobs import JobFailed, JobProgress


def start_backup(caller: Caller, target: str, tags: tuple[str, ...]) -> str:
    """Back up a configured target on a job (the "Back up now" button, ``POST
    /api/backups``, the cron endpoint); the run is recorded, the target's hooks run and
    the outcome is notified as for the scheduler's (``services/notifications.py``),
    before the job is reported finished. A failing ``post_backup`` hook fails the job, the
    backup is kept."""
    ctx = caller.ctx
    check_target_name(target)  # the CLI's rules, checked before anything is queued
    tags = check_tags(tags)
    url = ctx.database_url(target)  # raises for an unknown target
    repo = ctx.repository()

    def work(progress: JobProgress) -> dict[str, Any]:
        progress.phase("connecting")
        started = utc_now_iso()
        try:
            engine = open_engine(url)
        except StrongroomError as exc:
            record = record_backup_run(repo, target, tags, started, None, error=exc)
            run = BackupRun(record, None, exc)
        else:
            run = recorded_backup(  # the target's hooks run here, as for every backup
                repo,
                engine,
                target=target,
                tags=tags,
                progress=progress,
                created_by=f"{caller.name} (web)",
                hooks=hooks_of(ctx.settings, target, ctx.env),
            )
        notify_backup(ctx.notifier(), ctx.settings.notifications, repo, target, tags, run)
        if run.error is not None:
            raise run.error
        assert run.report is not None
        m = run.report.manifest
        return {
            "backup_id": m.backup_id,
            "raw_size": m.raw_size,
            "stored_new_bytes": m.stored_new_bytes,
            "duration_seconds": m.duration_seconds,
            "dedup_ratio": round(run.report.dedup_ratio, 2),
        }

    job_id = ctx.jobs.submit("backup", work, requested_by=caller.name, target=target)
    audit.record(
        ctx.db,
        caller.name,
        "backup",
        f"started (job {job_id})",
        subject=target,
        client=caller.client,
    )
    return job_id


def start_verify(caller: Caller, manifest: Manifest) -> str:
    """Re-read every chunk of a backup on a job; the outcome is recorded (kind "read")."""
    ctx = caller.ctx
    repo = ctx.repository()

    def work(progress: JobProgress) -> dict[str, Any]:
        result = verify_backup(repo, manifest, progress)  # records the outcome (kind "read")
        if not result.ok:
            raise JobFailed(result.problem or "verification failed")
        return {"ok": True, "bytes_checked": result.bytes_checked}

    return ctx.jobs.submit(
        "verify",
        work,
        requested_by=caller.name,
        target=manifest.target,
        backup_id=manifest.backup_id,
    )


def start_drill(caller: Caller, manifest: Manifest, scratch_url: str | None) -> str:
    """A restore drill (``verify --restore``) into a throwaway database, on a job."""
    from strongroom.services.drill import verify_by_restore
    from strongroom.web.actions.restore import scratch_engine

    ctx = caller.ctx
    repo = ctx.repository()
    scratch = scratch_engine(ctx, manifest, scratch_url)

    def work(progress: JobProgress) -> dict[str, Any]:
        result = verify_by_restore(repo, manifest, scratch, progress=progress)
        if not result.ok:
            problem = result.detail or result.record.problem or "restore drill failed"
            notify_failure(
                ctx,
                Event(
                    "verify_failed",
                    manifest.target,
                    f"restore drill of {manifest.backup_id} failed: {problem}",
                ),
            )
            raise JobFailed(problem)
        return {
            "ok": True,
            "restore_seconds": round(result.restore_seconds, 3),
            "tables_checked": len(result.comparisons),
        }

    return ctx.jobs.submit(
        "verify-restore",
        work,
        requested_by=caller.name,
        target=manifest.target,
        backup_id=manifest.backup_id,
    )


def notify_failure(ctx: WebContext, event: Event) -> None:
    """Send a failure event to the configured channels (if ``on_failure``)."""
    notifier = ctx.notifier()
    if notifier is not None and ctx.settings.notifications.on_failure:
        notifier.notify(event)


def set_pin(caller: Caller, reference: str, pinned: bool) -> dict[str, Any]:
    """Pin or unpin; audited either way."""
    ctx = caller.ctx
    repo = ctx.repository()
    action = "pin" if pinned else "unpin"
    try:
        change = pin_backup(repo, reference) if pinned else unpin_backup(repo, reference)
    except StrongroomError as exc:
        audit.record(
            ctx.db,
            caller.name,
            action,
            f"failed: {exc.message}",
            subject=reference,
            client=caller.client,
        )
        raise
    audit.record(
        ctx.db,
        caller.name,
        action,
        "ok" if change.changed else "ok (no change)",
        subject=change.backup_id,
        client=caller.client,
    )
    ctx.index.sync(repo)
    return {"backup_id": change.backup_id, "pinned": pinned, "changed": change.changed}


def exact_id(reference: str, action: str) -> str:
    """``reference`` if it is a full backup id; else ``UsageError`` (400): what ``latest``
    or a prefix means changes as backups come and go, which a destructive action must not
    depend on."""
    if not BACKUP_ID_PATTERN.fullmatch(reference):  # `$` in it lets a final "\n" by
        shown = reference[:40] + ("…" if len(reference) > 40 else "")
        raise UsageError(
            f"{action} needs a backup's full id (such as 20261121T140000Z-3f9a2c1b), not "
            f"'latest' or a prefix; got {shown!r}"
        )
    return reference


def forget_one(caller: Caller, reference: str) -> dict[str, Any]:
    """Delete one backup's manifest (its chunks go at the next prune); pinned ones refuse.
    Only a full id names the backup (``exact_id``); a refusal is audited too."""
    ctx = caller.ctx
    repo = ctx.repository()
    try:
        manifest = repo.resolve(exact_id(reference, "forget"))
        if records.is_pinned(repo, manifest.backup_id):
            raise PinnedBackup(f"backup {manifest.backup_id} is pinned; unpin it first")
        delete_backup(repo.storage, manifest.backup_id)
    except StrongroomError as exc:
        audit.record(
            ctx.db,
            caller.name,
            "forget",
            f"failed: {exc.message}",
            subject=reference,
            client=caller.client,
        )
        raise
    audit.record(
        ctx.db, caller.name, "forget", "ok", subject=manifest.backup_id, client=caller.client
    )
    ctx.index.sync(repo)
    return {"backup_id": manifest.backup_id, "forgotten": True}


class PinnedBackup(RepositoryError):
    """Forgetting a pinned backup by hand is refused (409)."""


def resolve(caller: Caller, reference: str) -> Manifest:
    if not reference or len(reference) > 100:
        raise UsageError("give a backup id")
    return caller.ctx.repository().resolve(reference)
