"""Restore through the web: the plan (dry run), a typed confirmation, then a job running
the full contract of ``strongroom restore`` (safety backup, staged restore, verification,
swap). The destination is the backup's configured target unless a URL is given.

``latest`` resolves as on the command line (``services.restore_choice``): within one
target (the request's ``target``, else the one the destination belongs to, else the only
configured target), never to a safety backup."""

from __future__ import annotations

from typing import Any

from strongroom.engines import open_engine
from strongroom.engines.base import Engine, MissingRoles, RestoreOptions
from strongroom.errors import UsageError, VerificationMismatch
from strongroom.repository.ids import BACKUP_ID_PATTERN
from strongroom.repository.manifest import Manifest
from strongroom.services.drill import named_tables, scratch_for
from strongroom.services.hooks import destination_hooks
from strongroom.services.restore import RestorePlan, plan_restore, run_restore
from strongroom.services.restore_choice import (
    DestinationTarget,
    destination_target,
    latest_of,
    source_target,
)
from strongroom.web import audit
from strongroom.web.actions.common import Caller
from strongroom.web.context import WebContext
from strongroom.web.jobs import JobProgress
from strongroom.wording import counted


def mismatch_message(differing: list[str]) -> str:
    """A restore's verification failed: ``the restored copy differs from the backup in 2
    tables (users, orders); the target is untouched`` (names past ten: ``and N more``)."""
    return (
        f"the restored copy differs from the backup in {counted(len(differing), 'table')} "
        f"({named_tables(differing)}); the target is untouched"
    )


def destination(ctx: WebContext, manifest: Manifest, to: str | None) -> Engine:
    """The database a restore writes: ``to``, else the target's configured database."""
    url = to.strip() if to and to.strip() else ctx.database_url(manifest.target)
    return open_engine(url)


def configured_urls(ctx: WebContext) -> dict[str, str]:
    """Configured target name -> database URL (those whose ``url_env`` is unset left out)."""
    urls = {}
    for name in ctx.settings.targets:
        try:
            urls[name] = ctx.database_url(name)
        except UsageError:
            continue
    return urls


def choose_backup(
    caller: Caller, reference: str, to: str | None, target: str | None, *, exact: bool = False
) -> Manifest:
    """The backup a restore request names: an id or unique prefix as is; ``latest`` the
    newest regular backup of ``target``, else of the target ``to`` belongs to, else of the
    only configured target. Raises ``UsageError`` (naming ``"target"``) when that is not
    clear, ``BackupNotFound`` when the target has no backup. ``exact`` (the restore itself,
    not its plan): a prefix is refused (and the refusal audited); ``latest`` keeps its
    meaning above, the one ``strongroom restore latest`` has."""
    ctx = caller.ctx
    if reference.strip() != "latest":
        if not reference or len(reference) > 100:  # as web.actions.backups.resolve
            raise UsageError("give a backup id")
        if exact and not BACKUP_ID_PATTERN.fullmatch(reference):  # not "<id>\n"
            problem = (
                "a restore needs a backup's full id (such as 20261121T140000Z-3f9a2c1b; "
                "the plan shows it) or latest, not a prefix"
            )
            audit.record(
                ctx.db,
                caller.name,
                "restore",
                f"refused: {problem}",
                subject=reference,
                client=caller.client,
            )
            raise UsageError(problem)
        return ctx.repository().resolve(reference)
    repo = ctx.repository()
    configured = configured_urls(ctx)
    if target and target.strip():
        name = target.strip()
    elif to and to.strip():
        name = source_target(
            repo, open_engine(to.strip()), configured=configured, option='"target"'
        )
    elif len(ctx.settings.targets) == 1:
        name = next(iter(ctx.settings.targets))
    else:
        raise UsageError(
            'latest needs a target: give "target" (or "to") '
            f"(targets: {', '.join(ctx.target_names()) or 'none'})"
        )
    return latest_of(repo, name)


def target_of(
    ctx: WebContext,
    manifest: Manifest,
    to: str | None,
    engine: Engine,
    given: str | None = None,
) -> DestinationTarget:
    """The target the destination belongs to (its safety backup is filed there): the
    backup's own when restoring into its configured database, else as the CLI finds it
    (``given``: the request's ``target``, settling a tie)."""
    if not (to and to.strip()):
        return DestinationTarget(manifest.target, "the backup's configured target")
    return destination_target(
        ctx.repository(),
        engine,
        configured=configured_urls(ctx),
        given=given,
        backup=manifest,
        option='"target"',
    )


def scratch_engine(ctx: WebContext, manifest: Manifest, scratch_url: str | None) -> Engine:
    """Where a restore drill goes: the given URL, else a new database beside the target's
    configured one (see ``services.drill.scratch_for``)."""
    try:
        server_url: str | None = ctx.database_url(manifest.target)
    except UsageError:
        server_url = None  # not a configured target: only a scratch URL (or SQLite) will do
    return scratch_for(manifest, scratch_url=scratch_url, server_url=server_url)


def options_of(
    missing_roles: str = "refuse",
    skip_superuser_objects: bool = False,
    rewrite_definers: bool = False,
) -> RestoreOptions:
    """The user's choices about what the server restored into lacks (see the CLI's
    ``--create-roles``, ``--skip-missing-roles``, ``--skip-superuser-objects``,
    ``--rewrite-definers``)."""
    choices: dict[str, MissingRoles] = {"refuse": "refuse", "create": "create", "skip": "skip"}
    if missing_roles not in choices:
        raise UsageError("missing_roles must be refuse, create or skip")
    return RestoreOptions(choices[missing_roles], skip_superuser_objects, rewrite_definers)


def plan(
    ctx: WebContext,
    manifest: Manifest,
    to: str | None,
    safety_backup: bool,
    options: RestoreOptions | None = None,
    target: str | None = None,
) -> RestorePlan:
    engine = destination(ctx, manifest, to)
    return plan_restore(
        ctx.repository(),
        manifest,
        engine,
        safety_backup=safety_backup,
        options=options,
        target=target_of(ctx, manifest, to, engine, target),
    )


def plan_json(plan: RestorePlan, engine: Engine) -> dict[str, Any]:
    """The plan for the API and the dialog (the target is shown with its password removed)."""
    m = plan.manifest
    now_rows = {t.name: t.rows for t in plan.state.tables}
    backup_rows = {t.name: t.rows for t in plan.backup_tables}
    return {
        "backup_id": m.backup_id,
        "backup_target": m.target,
        "safety_backup_chosen": "pre-restore" in m.tags,
        "destination_target": plan.destination_target,
        "target_basis": plan.target_basis,
        "warning": plan.warning,
        "engine": m.engine,
        "raw_size": m.raw_size,
        "taken_at": m.started_at,
        "destination": plan.target,
        "database_name": engine.database_name(),
        "exists": plan.state.exists,
        "empty": plan.state.empty,
        "size_bytes": plan.state.size_bytes,
        "will_replace": plan.will_replace,
        "safety_backup": plan.safety_backup,
        "estimated_seconds": round(plan.estimated_seconds, 3),
        "estimate_basis": plan.estimate_basis,
        "checks": list(plan.checks.lines),
        "refusal": plan.checks.refusal,
        "tables": [
            {"name": name, "rows_now": now_rows.get(name), "rows_in_backup": backup_rows.get(name)}
            for name in sorted(set(now_rows) | set(backup_rows))
        ],
    }


def start_restore(
    caller: Caller,
    manifest: Manifest,
    to: str | None,
    confirm: str,
    *,
    safety_backup: bool = True,
    drop_old: bool = False,
    options: RestoreOptions | None = None,
    target: str | None = None,
) -> str:
    """Check the typed confirmation against the destination's database name, then restore
    on a job. The audit entry is written now and gets the outcome when the job ends."""
    ctx = caller.ctx
    repo = ctx.repository()
    engine = destination(ctx, manifest, to)
    name = engine.database_name()
    if confirm.strip() != name:
        audit.record(
            ctx.db,
            caller.name,
            "restore",
            "refused: confirmation did not match",
            subject=manifest.backup_id,
            client=caller.client,
            detail=f"into {engine.describe()}",
        )
        raise UsageError(f"type the database name {name!r} to confirm; nothing was changed")
    the_plan = plan_restore(
        repo,
        manifest,
        engine,
        safety_backup=safety_backup,
        options=options,
        target=target_of(ctx, manifest, to, engine, target),
    )
    if the_plan.checks.refusal is not None:
        audit.record(
            ctx.db,
            caller.name,
            "restore",
            "refused: the plan's checks",
            subject=manifest.backup_id,
            client=caller.client,
            detail=f"into {engine.describe()}: {the_plan.checks.refusal}",
        )
        raise UsageError(f"{the_plan.checks.refusal}; nothing was changed")
    entry = audit.record(
        ctx.db,
        caller.name,
        "restore",
        "started",
        subject=manifest.backup_id,
        client=caller.client,
        detail=f"into {engine.describe()}",
    )

    def work(progress: JobProgress) -> dict[str, Any]:
        if the_plan.safety_backup:
            progress.phase("safety backup")
        try:
            report = run_restore(
                repo,
                manifest,
                engine,
                safety_backup=safety_backup,
                keep_old=not drop_old,
                progress=progress,
                plan=the_plan,
                hooks=destination_hooks(ctx.settings, engine, ctx.env),  # post_restore
            )
        except Exception as exc:
            audit.update_result(
                ctx.db, entry, f"failed: {getattr(exc, 'message', type(exc).__name__)}"
            )
            raise
        if not report.ok:
            message = mismatch_message([c.name for c in report.comparisons if not c.matches])
            audit.update_result(ctx.db, entry, f"failed: {message}")
            raise VerificationMismatch(message)
        audit.update_result(ctx.db, entry, "ok (verified)")
        return {
            "backup_id": manifest.backup_id,
            "destination": report.target,
            "tables_verified": len(report.comparisons),
            "duration_seconds": round(report.duration_seconds, 3),
            "safety_backup_id": report.safety_backup_id,
            "old_kept_as": report.old_kept_as,
        }

    return ctx.jobs.submit(
        "restore",
        work,
        requested_by=caller.name,
        target=manifest.target,
        backup_id=manifest.backup_id,
    )
