"""The safe restore as the command line runs it: plan, confirmation, the restore service,
and what it prints. Shared by ``restore`` and ``rollback`` (cli/restore_cmd.py) and the
point-in-time restore of one database (cli/pitr_database_cmd.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table
from rich.text import Text

from strongroom.cli.output import human_bytes, human_seconds, progress_sink, stdout
from strongroom.engines.base import Engine, MissingRoles, RestoreOptions
from strongroom.errors import UsageError, VerificationMismatch
from strongroom.repository.manifest import Manifest
from strongroom.repository.repository import Repository
from strongroom.services.drill import named_tables
from strongroom.services.hooks import destination_hooks
from strongroom.services.restore import (
    PRE_RESTORE_TAG,
    RestorePlan,
    RestoreReport,
    plan_restore,
    restore_tables,
    run_restore,
)
from strongroom.services.restore_choice import DestinationTarget, RollbackChoice
from strongroom.wording import counted

if TYPE_CHECKING:
    from strongroom.config import Settings


def restore_options(
    create_roles: bool,
    skip_missing_roles: bool,
    skip_superuser_objects: bool,
    rewrite_definers: bool = False,
) -> RestoreOptions:
    """The user's choices about what the server restored into lacks."""
    if create_roles and skip_missing_roles:
        raise UsageError("choose one of --create-roles and --skip-missing-roles")
    missing: MissingRoles = "create" if create_roles else "skip" if skip_missing_roles else "refuse"
    return RestoreOptions(
        missing_roles=missing,
        skip_superuser_objects=skip_superuser_objects,
        rewrite_definers=rewrite_definers,
    )


def load_settings(
    config: str | None, repo: str | None, key_file: Path | None, s3_endpoint: str | None
) -> Settings | None:
    """The configuration file's settings (--config, STRONGROOM_CONFIG, ./strongroom.toml),
    or ``None`` without one (``services/settings_sources.py``)."""
    from strongroom.services.settings_sources import Sources

    return Sources.load(config).configured(repo, key_file, s3_endpoint)


def configured_urls(settings: Settings | None) -> dict[str, str]:
    """Configured target name -> database URL (targets whose ``url_env`` is not set here
    are left out: they cannot be the destination)."""
    urls = {}
    for name, settings_of in (settings.targets if settings is not None else {}).items():
        try:
            urls[name] = settings_of.database_url(os.environ)
        except UsageError:
            continue
    return urls


def perform_restore(
    repository: Repository,
    manifest: Manifest,
    engine: Engine,
    *,
    dry_run: bool,
    yes: bool,
    safety_backup: bool,
    drop_old: bool,
    options: RestoreOptions | None = None,
    target: DestinationTarget | None = None,
    chosen: str | None = None,
    rollback: RollbackChoice | None = None,
    settings: Settings | None = None,
) -> None:
    """The restore contract shared by restore and rollback. ``target``: the destination's
    target (default: found without configuration); ``chosen``: how the backup was chosen,
    for the plan; ``rollback``: what a rollback undoes; ``settings``: the configuration
    whose ``post_restore`` hooks apply (default: ``STRONGROOM_CONFIG``, see run_restore)."""
    plan = plan_restore(
        repository,
        manifest,
        engine,
        safety_backup=safety_backup,
        options=options,
        target=target,
        undoes=rollback.undoes.restore_id if rollback and rollback.undoes else None,
    )
    print_plan(plan, drop_old=drop_old, chosen=chosen, rollback=rollback)
    if plan.checks.refusal is not None:
        raise UsageError(f"{plan.checks.refusal}; nothing was changed")
    if dry_run:
        stdout.print("dry run: nothing was changed")
        return
    if plan.will_replace:
        confirm_replacement(engine, yes)
    report = run_restore(
        repository,
        manifest,
        engine,
        safety_backup=safety_backup,
        keep_old=not drop_old,
        progress=progress_sink(),
        plan=plan,
        hooks=destination_hooks(settings, engine) if settings is not None else None,
    )
    if report.safety_backup_id:
        stdout.print(
            f"safety backup {report.safety_backup_id} of target {plan.destination_target} "
            "taken (tag pre-restore)"
        )
    print_comparison(report)
    if report.left_out:
        stdout.print(f"left out as chosen ({len(report.left_out)} statements):")
        for line in report.left_out[:20]:
            stdout.print(f"  {line}")
    if not report.ok:
        bad = [c.name for c in report.comparisons if not c.matches]
        untouched = "untouched" if plan.state.exists else "not created"
        shown = named_tables(bad)
        raise VerificationMismatch(
            f"the restored copy differs from the backup in {counted(len(bad), 'table')} "
            f"({shown}); "
            f"{engine.describe()} is {untouched}"
        )
    stdout.print(
        f"restore complete and verified: {counted(len(report.comparisons), 'table')} match "
        f"({human_seconds(report.duration_seconds)})"
    )
    if report.old_kept_as:
        stdout.print(
            f"the replaced database is kept as {report.old_kept_as}; when satisfied, remove "
            f"it with: {engine.drop_hint(report.old_kept_as)} (or restore with --drop-old)",
            markup=False,
        )


def confirm_replacement(engine: Engine, yes: bool) -> None:
    """A typed confirmation naming the database; ``--yes`` for scripts; refuse otherwise."""
    if yes:
        return
    name = engine.database_name()
    if not sys.stdin.isatty():
        raise UsageError(
            f"refusing to replace {engine.describe()} without confirmation: run on a terminal "
            "to type its name, or pass --yes"
        )
    typed = typer.prompt(f"This replaces the database {name!r}. Type its name to go on")
    if typed.strip() != name:
        raise UsageError(f"confirmation did not match {name!r}; nothing was changed")


def print_plan(
    plan: RestorePlan,
    *,
    drop_old: bool,
    chosen: str | None = None,
    rollback: RollbackChoice | None = None,
) -> None:
    m = plan.manifest
    state = plan.state
    stdout.print("rollback plan" if rollback else "restore plan")
    kind = "safety backup, " if PRE_RESTORE_TAG in m.tags else ""
    stdout.print(
        f"  backup         {m.backup_id} ({kind}target {m.target}, {m.engine} "
        f"{m.engine_version}, {human_bytes(m.raw_size)} raw, taken {m.started_at})",
        markup=False,
    )
    if chosen:
        stdout.print(f"  chosen         {chosen}", markup=False)
    if rollback is not None:
        stdout.print(f"  undoes         {rollback.describe()}", markup=False)
        for note in rollback.notes:
            stdout.print(f"  note           {note}", markup=False)
    if not state.exists:
        now = "does not exist: it will be created"
    elif state.empty:
        now = "exists and is empty"
    else:
        size = human_bytes(state.size_bytes) if state.size_bytes is not None else "?"
        now = f"exists: {size}, {counted(len(state.tables), 'table')}"
    stdout.print(f"  into           {plan.target} ({now})", markup=False)
    stdout.print(f"  target         {plan.destination_target} ({plan.target_basis})", markup=False)
    if plan.warning:
        stdout.print(
            Text.assemble("  ", ("WARNING", "bold red"), f"        {plan.warning}"),
        )
    if plan.will_replace:
        fate = "dropped (--drop-old)" if drop_old else "kept under a dated name"
        stdout.print(
            f"  replaces       the current database; it is swapped out only after the "
            f"restored copy verifies, then {fate}"
        )
        safety = (
            f"a pre-restore backup of the database is taken first, filed under target "
            f"{plan.destination_target} (rollback returns to it)"
            if plan.safety_backup
            else "NONE (--no-safety-backup)"
        )
        stdout.print(f"  safety backup  {safety}")
    stdout.print(
        f"  estimate       ~{human_seconds(plan.estimated_seconds)} ({plan.estimate_basis})"
    )
    for number, line in enumerate(plan.checks.lines):
        stdout.print(f"  {'database' if number == 0 else '':<14} {line}")
    table = Table(box=None, pad_edge=False)
    table.add_column("TABLE")
    table.add_column("NOW", justify="right")
    table.add_column("IN BACKUP", justify="right")
    now_rows = {t.name: t.rows for t in state.tables}
    backup_rows = {t.name: t.rows for t in plan.backup_tables}
    for name in sorted(set(now_rows) | set(backup_rows)):
        table.add_row(
            name,
            str(now_rows[name]) if name in now_rows else "-",
            str(backup_rows[name]) if name in backup_rows else "-",
        )
    stdout.print(table)


def print_comparison(report: RestoreReport) -> None:
    table = Table(box=None, pad_edge=False)
    table.add_column("TABLE")
    table.add_column("IN BACKUP", justify="right")
    table.add_column("RESTORED", justify="right")
    table.add_column("CHECKSUM")
    table.add_column("")
    for c in report.comparisons:
        table.add_row(
            c.name,
            "-" if c.expected_rows is None else str(c.expected_rows),
            "-" if c.actual_rows is None else str(c.actual_rows),
            ("same" if c.expected_checksum == c.actual_checksum else "DIFFERS")
            if c.checksum_checked
            else "-",
            "ok" if c.matches else "MISMATCH",
        )
    stdout.print(table)


def restore_selected_tables(
    repository: Repository,
    manifest: Manifest,
    engine: Engine,
    tables: list[str],
    into_schema: str | None,
    dry_run: bool,
) -> None:
    """Restore selected tables from a verified dump, next to the live data."""
    into = f" (a side copy in {into_schema})" if into_schema else ""
    stdout.print(
        f"restore tables {', '.join(tables)} of {manifest.backup_id} into "
        f"{engine.describe()}{into}; existing tables are never overwritten"
    )
    if dry_run:
        stdout.print("dry run: nothing was changed")
        return
    restored = restore_tables(repository, manifest, engine, tables, into_schema)
    stdout.print(f"restored {', '.join(restored)} (verified)")
