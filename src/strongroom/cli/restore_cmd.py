"""strongroom restore / rollback"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from strongroom.cli.options import KeyFileOption, RepoOption, S3EndpointOption, location
from strongroom.cli.pitr_cmd import PITR_ONLY, ToRestorePointOption, ToTimelineOption, ToXidOption
from strongroom.cli.pitr_database_cmd import DatabaseOption, OsUserOption, restore_database_at
from strongroom.cli.restore_flow import (
    configured_urls,
    load_settings,
    perform_restore,
    print_comparison,
    print_plan,
    restore_options,
    restore_selected_tables,
)
from strongroom.engines import open_engine
from strongroom.errors import UsageError
from strongroom.services.restore_choice import (
    destination_fingerprint,
    destination_target,
    find_rollback,
    latest_of,
    newest_good_before,
    source_target,
)

__all__ = ["perform_restore", "print_comparison", "print_plan", "restore", "rollback"]

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
            help="With --to-datadir or --database: recover to this time, e.g. "
            '"2026-11-30 14:03:12+01" (local time unless it names an offset).',
        ),
    ] = None,
    to_lsn: Annotated[
        str | None, typer.Option("--to-lsn", help="With --to-datadir or --database: to this LSN.")
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
    database: DatabaseOption = None,
    os_user: OsUserOption = None,
) -> None:
    """Restore a backup: plan, confirmation, safety backup, staged restore, verification, swap.

    With --to-datadir: point-in-time recovery of a PostgreSQL cluster (base backup + WAL).
    With --database: one database (or --table) as of a moment, into the live server."""
    if database is not None:
        if to_datadir is not None or before or start or port is not None:
            raise UsageError("--database goes without --to-datadir, --before, --start and --port")
        if to_xid or to_restore_point or to_timeline:
            raise UsageError("--database recovers to --to-time, --to-lsn or latest")
        restore_database_at(
            backup_id,
            to,
            database=database,
            os_user=os_user,
            to_time=to_time,
            to_lsn=to_lsn,
            target=target,
            table=table,
            into_schema=into_schema,
            dry_run=dry_run,
            yes=yes,
            safety_backup=not no_safety_backup,
            drop_old=drop_old,
            create_roles=create_roles,
            skip_missing_roles=skip_missing_roles,
            skip_superuser_objects=skip_superuser_objects,
            config=config,
            repo=repo,
            key_file=key_file,
            s3_endpoint=s3_endpoint,
        )
        return
    if os_user is not None:
        raise UsageError("--os-user goes with --database")
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
    settings = load_settings(config, repo, key_file, s3_endpoint)
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
    if manifest.is_base_backup:  # (pg_basebackup's format: engines.postgresql.physical)
        raise UsageError(
            f"backup {manifest.backup_id} is a base backup of a whole cluster: restore it "
            "with --to-datadir PATH (and --to-time, --to-lsn or latest)"
        )
    if table:
        restore_selected_tables(repository, manifest, engine, table, into_schema, dry_run)
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
    settings = load_settings(config, repo, key_file, s3_endpoint)
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
