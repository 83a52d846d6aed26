"""strongroom restore / rollback"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from strongroom.cli.options import KeyFileOption, RepoOption, S3EndpointOption, location
from strongroom.cli.output import human_bytes, human_seconds, progress_sink, stdout
from strongroom.cli.pitr_cmd import PITR_ONLY, ToRestorePointOption, ToTimelineOption, ToXidOption
from strongroom.engines import open_engine
from strongroom.engines.base import Engine, MissingRoles, RestoreOptions
from strongroom.engines.postgresql.physical import PHYSICAL_FORMAT
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
from strongroom.services.restore_choice import (
    DestinationTarget,
    RollbackChoice,
    destination_fingerprint,
    destination_target,
    find_rollback,
    latest_of,
    newest_good_before,
    source_target,
)
from strongroom.wording import counted

if TYPE_CHECKING:
    from strongroom.config import Settings

DryRunOption = Annotated[bool, typer.Option("--dry-run", help="Print the plan and change nothing.")]
YesOption = Annotated[
    bool, typer.Option("--yes", help="Replace without the typed confirmation (for scripts).")
]
NoSafetyOption = Annotated[
    bool,
    typer.Option(
        "--no-safety-backup", help="Do not back up the target before replacing it (not advised)."
    ),
]
DropOldOption = Annotated[
    bool,
    typer.Option("--drop-old", help="Drop the replaced database instead of keeping it renamed."),
]
CreateRolesOption = Annotated[
    bool,
    typer.Option(
        "--create-roles",
        help="Create the roles the backup refers to that the server lacks (NOLOGIN, no password).",
    ),
]
SkipRolesOption = Annotated[
    bool,
    typer.Option(
        "--skip-missing-roles",
        help="Restore without the ownership and privileges of roles the server lacks (or the "
        "restoring role cannot own as); their objects stay with the restoring role.",
    ),
]
SkipSuperuserOption = Annotated[
    bool,
    typer.Option(
        "--skip-superuser-objects",
        help="Leave out objects only a superuser can create (event triggers, untrusted "
        "extensions) when restoring as another role.",
    ),
]
TargetOption = Annotated[
    str | None,
    typer.Option(
        "--target",
        help="The target whose backups latest/--before choose from (default: the target the "
        "destination belongs to); also settles which target the destination is when several "
        "could be.",
    ),
]
ConfigOption = Annotated[
    str | None,
    typer.Option(
        "--config",
        envvar="STRONGROOM_CONFIG",
        help="strongroom.toml (default: ./strongroom.toml when it exists): a configured "
        "target whose URL names the destination's database is the destination's target.",
        show_envvar=True,
    ),
]
RewriteDefinersOption = Annotated[
    bool,
    typer.Option(
        "--rewrite-definers",
        help="MySQL/MariaDB: create views, triggers, routines and events whose DEFINER the "
        "restoring account cannot set (or that does not exist on the server) with the "
        "restoring account as definer.",
    ),
]


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


def restore(
    backup_id: Annotated[
        str | None,
        typer.Argument(metavar="[ID]", help="Backup id, prefix, or latest (or use --before)."),
    ] = None,
    to: Annotated[str, typer.Option("--to", help="Database URL to restore into.")] = "",
    dry_run: DryRunOption = False,
    yes: YesOption = False,
    no_safety_backup: NoSafetyOption = False,
    drop_old: DropOldOption = False,
    before: Annotated[
        str | None,
        typer.Option(
            "--before",
            help='The newest good backup started before this time, e.g. "2026-11-20 14:00" '
            "(local time unless it names an offset, e.g. +01:00 or Z).",
        ),
    ] = None,
    target: TargetOption = None,
    include_safety: Annotated[
        bool,
        typer.Option(
            "--include-safety",
            help="With latest/--before: safety (pre-restore) backups count too (they are "
            "left out otherwise; an explicit ID may always name one).",
        ),
    ] = False,
    config: ConfigOption = None,
    table: Annotated[
        list[str] | None,
        typer.Option("--table", help="Restore only this table (repeatable), e.g. public.users."),
    ] = None,
    into_schema: Annotated[
        str | None,
        typer.Option("--into-schema", help="With --table: restore into this side schema."),
    ] = None,
    create_roles: CreateRolesOption = False,
    skip_missing_roles: SkipRolesOption = False,
    skip_superuser_objects: SkipSuperuserOption = False,
    rewrite_definers: RewriteDefinersOption = False,
    repo: RepoOption = None,
    key_file: KeyFileOption = None,
    s3_endpoint: S3EndpointOption = None,
    to_datadir: Annotated[
        Path | None,
        typer.Option(
            "--to-datadir",
            help="PostgreSQL point-in-time recovery: lay a base backup down in this new or "
            "empty folder and configure recovery from the WAL archive.",
        ),
    ] = None,
    to_time: Annotated[
        str | None,
        typer.Option(
            "--to-time",
            help="With --to-datadir: recover to this time, e.g. "
            '"2026-11-30 14:03:12+01" (local time unless it names an offset).',
        ),
    ] = None,
    to_lsn: Annotated[
        str | None, typer.Option("--to-lsn", help="With --to-datadir: recover to this LSN.")
    ] = None,
    start: Annotated[
        bool,
        typer.Option(
            "--start",
            help="With --to-datadir: start the cluster, run recovery, report the moment reached.",
        ),
    ] = False,
    port: Annotated[
        int | None, typer.Option("--port", help="With --to-datadir: the cluster's port.")
    ] = None,
    to_xid: ToXidOption = None,
    to_restore_point: ToRestorePointOption = None,
    to_timeline: ToTimelineOption = None,
) -> None:
    """Restore a backup: plan, confirmation, safety backup, staged restore, verification, swap.

    With --to-datadir: point-in-time recovery of a PostgreSQL cluster (base backup + WAL)."""
    if to_datadir is not None:
        from strongroom.cli.pitr_cmd import restore_to_datadir

        if to or before or table:
            raise UsageError("--to-datadir goes without --to, --before and --table")
        restore_to_datadir(
            backup_id,
            to_datadir,
            to_time=to_time,
            to_lsn=to_lsn,
            to_xid=to_xid,
            to_restore_point=to_restore_point,
            to_timeline=to_timeline,
            target=target,
            start=start,
            port=port,
            config=config,
            repo=repo,
            key_file=key_file,
            s3_endpoint=s3_endpoint,
        )
        return
    if to_time or to_lsn or to_xid or to_restore_point or to_timeline or start or port is not None:
        raise UsageError(f"{PITR_ONLY} go with --to-datadir")
    if not to:
        raise UsageError("say where to restore: --to DATABASE_URL")
    if (backup_id is None) == (before is None):
        raise UsageError("give a backup ID (or latest), or --before TIME")
    if into_schema and not table:
        raise UsageError("--into-schema goes with --table")
    by_time = before is not None or backup_id == "latest"
    if include_safety and not by_time:
        raise UsageError("--include-safety goes with latest or --before")
    options = restore_options(
        create_roles, skip_missing_roles, skip_superuser_objects, rewrite_definers
    )
    settings = _settings(config, repo, key_file, s3_endpoint)
    configured = configured_urls(settings)
    repository = location(repo, key_file, s3_endpoint, config).open()
    engine = open_engine(to)
    if by_time:
        source = source_target(repository, engine, configured=configured, given=target)
        if before is not None:
            manifest = newest_good_before(repository, before, source, include_safety=include_safety)
            chosen = f"the newest good backup of target {source} started before {before}"
        else:
            manifest = latest_of(repository, source, include_safety=include_safety)
            chosen = f"the newest backup of target {source}"
        chosen += " (safety backups included)" if include_safety else ""
    else:
        manifest = repository.resolve(str(backup_id))
        chosen = "named by its id"
    if manifest.dump_format == PHYSICAL_FORMAT:
        raise UsageError(
            f"backup {manifest.backup_id} is a base backup of a whole cluster: restore it "
            "with --to-datadir PATH (and --to-time, --to-lsn or latest)"
        )
    if table:
        _restore_tables(repository, manifest, engine, table, into_schema, dry_run)
        return
    dest = destination_target(
        repository, engine, configured=configured, given=target, backup=manifest
    )
    perform_restore(
        repository,
        manifest,
        engine,
        dry_run=dry_run,
        yes=yes,
        safety_backup=not no_safety_backup,
        drop_old=drop_old,
        options=options,
        target=dest,
        chosen=chosen,
        settings=settings,
    )


def rollback(
    to: Annotated[str, typer.Option("--to", help="The database to roll back.")] = "",
    dry_run: DryRunOption = False,
    yes: YesOption = False,
    no_safety_backup: NoSafetyOption = False,
    drop_old: DropOldOption = False,
    create_roles: CreateRolesOption = False,
    skip_missing_roles: SkipRolesOption = False,
    skip_superuser_objects: SkipSuperuserOption = False,
    rewrite_definers: RewriteDefinersOption = False,
    target: Annotated[
        str | None,
        typer.Option(
            "--target",
            help="The target the database belongs to, when several could be (see restore).",
        ),
    ] = None,
    config: ConfigOption = None,
    repo: RepoOption = None,
    key_file: KeyFileOption = None,
    s3_endpoint: S3EndpointOption = None,
) -> None:
    """Undo the last completed restore into a database (restores its safety backup).

    A second rollback undoes the first."""
    if not to:
        raise UsageError("say which database to roll back: --to DATABASE_URL")
    options = restore_options(
        create_roles, skip_missing_roles, skip_superuser_objects, rewrite_definers
    )
    settings = _settings(config, repo, key_file, s3_endpoint)
    repository = location(repo, key_file, s3_endpoint, config).open()
    engine = open_engine(to)
    dest = destination_target(
        repository, engine, configured=configured_urls(settings), given=target
    )
    if target is not None and dest.name != target.strip():
        raise UsageError(
            f"{engine.describe()} belongs to target {dest.name!r} ({dest.basis}), "
            f"not {target.strip()!r}"
        )
    choice = find_rollback(
        repository,
        dest.name,
        destination_fingerprint(repository, engine),
        legacy_targets=(engine.database_name(),),
    )
    perform_restore(
        repository,
        choice.manifest,
        engine,
        dry_run=dry_run,
        yes=yes,
        safety_backup=not no_safety_backup,
        drop_old=drop_old,
        options=options,
        target=dest,
        rollback=choice,
        settings=settings,
    )


def _settings(
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


def _restore_tables(
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
