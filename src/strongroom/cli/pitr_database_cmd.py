"""strongroom restore --to-time T --database D --to URL: one database (or one table) of a
PostgreSQL cluster as it was at a moment, restored into the live server through the safe
restore.

Called by ``restore`` (cli/restore_cmd.py) when ``--database`` is given. The throwaway
cluster: services/pitr_database.py; the plan: services/pitr_database_plan.py."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from strongroom.cli.options import location
from strongroom.cli.output import human_seconds, progress_sink, stdout
from strongroom.cli.pitr_cmd import strongroom_command, wal_config_text
from strongroom.cli.restore_flow import (
    configured_urls,
    load_settings,
    perform_restore,
    restore_options,
    restore_selected_tables,
)
from strongroom.errors import UsageError

if TYPE_CHECKING:
    from strongroom.engines.base import Engine
    from strongroom.engines.postgresql.throwaway import OsUser
    from strongroom.services.pitr_database_plan import PitrDatabasePlan

DatabaseOption = Annotated[
    str | None,
    typer.Option(
        "--database",
        help="Point-in-time restore of one database: recover a throwaway cluster from the "
        "base backup and WAL to --to-time/--to-lsn/latest, dump this database from it and "
        "restore that into --to (plan, confirmation, safety backup, verification, swap).",
    ),
]
OsUserOption = Annotated[
    str | None,
    typer.Option(
        "--os-user",
        help="With --database, as root: the OS user that runs the throwaway cluster "
        "(default: the owner of the server's data directory).",
    ),
]


def _print_plan(plan: PitrDatabasePlan, engine: Engine, tables: list[str] | None) -> None:
    facts = plan.facts
    stdout.print("point-in-time restore plan", markup=False)
    stdout.print(f"  moment         {plan.recovery.describe()}", markup=False)
    stdout.print(
        f"  base backup    {plan.base.backup_id} (target {plan.base.target}, ended "
        f"{facts['stop_time']}, LSN {facts['stop_lsn']}, timeline {facts['timeline']})",
        markup=False,
    )
    stdout.print(f"  WAL            {plan.wal.describe()}: all archived", markup=False)
    stdout.print(
        f"  throwaway      a cluster in a private temp folder, run as OS user "
        f"{plan.os_user.name} ({plan.os_user_basis}); always removed",
        markup=False,
    )
    what = f"table(s) {', '.join(tables)} of database" if tables else "database"
    stdout.print(
        f"  dump           {what} {plan.database}, filed under target "
        f"{plan.destination.name} with tags {', '.join(plan.tags)}",
        markup=False,
    )
    stdout.print(f"  then restore   into {engine.describe()} (the plan follows)", markup=False)


def _check_user_reads(user: OsUser, paths: list[Path]) -> None:
    """As root for another user: ``UsageError`` (exit 2) naming the first of ``paths`` (the
    configuration, key file and local repository ``restore_command`` reads) that ``user``
    cannot read, before anything is recovered (else recovery stops on a missing
    checkpoint, which names no cause)."""
    if os.geteuid() != 0 or user.uid == os.geteuid():
        return
    try:
        groups = os.getgrouplist(user.name, user.gid)
    except (KeyError, OSError):
        groups = [user.gid]
    for path in paths:
        resolved = path.resolve()
        test = ["test", "-r", str(resolved)]
        if resolved.is_dir():
            test += ["-a", "-x", str(resolved)]
        checked = subprocess.run(
            test, user=user.uid, group=user.gid, extra_groups=groups, check=False
        )
        if checked.returncode != 0:
            raise UsageError(
                f"OS user {user.name} (who runs the throwaway cluster and its "
                f"restore_command) cannot read {resolved}: give it read access, or choose "
                "another --os-user"
            )


def restore_database_at(
    backup_id: str | None,
    to: str,
    *,
    database: str,
    os_user: str | None,
    to_time: str | None,
    to_lsn: str | None,
    target: str | None,
    table: list[str] | None,
    into_schema: str | None,
    dry_run: bool,
    yes: bool,
    safety_backup: bool,
    drop_old: bool,
    create_roles: bool,
    skip_missing_roles: bool,
    skip_superuser_objects: bool,
    config: str | None,
    repo: str | None,
    key_file: Path | None,
    s3_endpoint: str | None,
) -> None:
    """Recover ``database`` as of ``to_time`` / ``to_lsn`` / the end of the WAL (``latest``
    or a base backup's id as ``backup_id``) in a throwaway cluster, dump it into the
    repository and restore that dump into ``to`` (whole, or ``table`` beside the live data
    with ``into_schema``). ``UsageError`` for contradicting options, ``BackupNotFound`` for
    a moment before the oldest base backup."""
    # psycopg and the PITR services only when such a restore runs (not for restore --help)
    from strongroom.engines import open_engine
    from strongroom.engines.postgresql.physical import RecoveryTarget
    from strongroom.services.pitr import parse_lsn, parse_target_time
    from strongroom.services.pitr_database import recover_and_dump
    from strongroom.services.pitr_database_plan import check_tables, plan_pitr_database

    if not to:
        raise UsageError("--database restores into a live server: say where with --to DATABASE_URL")
    if to_time is not None and to_lsn is not None:
        raise UsageError("choose one of --to-time and --to-lsn")
    if to_time is None and to_lsn is None and backup_id is None:
        raise UsageError("--database needs the moment: --to-time T, --to-lsn L or latest")
    if into_schema and not table:
        raise UsageError("--into-schema goes with --table")
    options = restore_options(create_roles, skip_missing_roles, skip_superuser_objects)
    when = parse_target_time(to_time) if to_time is not None else None
    lsn = parse_lsn(to_lsn) if to_lsn is not None else None
    recovery = RecoveryTarget(
        time=when.isoformat(sep=" ") if when is not None else None,
        lsn=to_lsn.strip() if to_lsn is not None else None,
    )
    settings = load_settings(config, repo, key_file, s3_endpoint)
    configured = configured_urls(settings)
    repository = location(repo, key_file, s3_endpoint, config).open()
    engine = open_engine(to)
    plan = plan_pitr_database(
        repository,
        engine,
        reference=backup_id,
        base_target=target,
        when=when,
        lsn=lsn,
        recovery=recovery,
        database=database,
        os_user=os_user,
        configured=configured,
    )
    if table:  # a dry run only previews: the names are read, the live tables not looked at
        check_tables(engine, table, into_schema, look=not dry_run)
    _print_plan(plan, engine, table)
    found = location(repo, key_file, s3_endpoint, config)
    _check_user_reads(
        plan.os_user,
        [
            *([Path(config)] if config else []),
            *([Path(found.key_file)] if found.key_file is not None else []),
            *([Path(found.location)] if found.location and "://" not in found.location else []),
        ],
    )
    if dry_run:
        stdout.print("dry run: nothing was recovered or changed")
        return
    state = engine.inspect() if not yes and not table and not sys.stdin.isatty() else None
    if state is not None and state.exists and not state.empty:  # refuse before recovering
        raise UsageError(
            f"refusing to replace {engine.describe()} without confirmation: run on a terminal "
            "to type its name, or pass --yes"
        )
    if config:
        wal_config, wal_text = str(Path(config).resolve()), None
    else:
        wal_config, wal_text = None, wal_config_text(repo, key_file, s3_endpoint)
    user = getattr(engine, "user", None)
    roles = (str(user()) if callable(user) else "", os.environ.get("PGUSER", ""), "postgres")
    dumped = recover_and_dump(
        repository,
        plan,
        strongroom=strongroom_command(),
        wal_config=wal_config,
        wal_config_text=wal_text,
        roles=roles,
        step=lambda line: stdout.print(f"  {line}", markup=False),
        progress=progress_sink(),
    )
    stdout.print(
        f"throwaway cluster removed; lay down {human_seconds(dumped.lay_down_seconds)}, "
        f"recovery {human_seconds(dumped.recovery_seconds)}, dump "
        f"{human_seconds(dumped.dump_seconds)}",
        markup=False,
    )
    reached = dumped.outcome.reached or "the base backup's end"
    if table:
        restore_selected_tables(repository, dumped.manifest, engine, table, into_schema, False)
        return
    clock = time.monotonic()
    perform_restore(
        repository,
        dumped.manifest,
        engine,
        dry_run=False,
        yes=yes,
        safety_backup=safety_backup,
        drop_old=drop_old,
        options=options,
        target=plan.destination,
        chosen=f"dumped from a throwaway cluster recovered to {reached} "
        f"(base backup {plan.base.backup_id} + WAL)",
        settings=settings,
    )
    stdout.print(
        f"point-in-time restore of {plan.database} done: lay down "
        f"{human_seconds(dumped.lay_down_seconds)}, recovery "
        f"{human_seconds(dumped.recovery_seconds)}, dump {human_seconds(dumped.dump_seconds)}, "
        f"safe restore {human_seconds(time.monotonic() - clock)}",
        markup=False,
    )
