"""The plan of a point-in-time restore of one database: which base backup, which moment,
which database of it, which OS user runs the throwaway cluster, which target the dump is
filed under. Everything here is checked before anything is written (docs/design.md,
"Point-in-time restore of one database")."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from strongroom.engines.base import Engine
from strongroom.engines.postgresql.connection import PostgresServer
from strongroom.engines.postgresql.physical import RecoveryTarget
from strongroom.engines.postgresql.throwaway import OsUser
from strongroom.engines.postgresql.toc import parse_table_name
from strongroom.errors import TargetNotEmpty, UsageError
from strongroom.repository.manifest import Manifest
from strongroom.repository.repository import Repository
from strongroom.services.pitr import choose_base_backup, physical_facts
from strongroom.services.recovery_plan import RecoveryPlan, plan_recovery
from strongroom.services.restore_choice import (
    PITR_BASE_TAG,
    PITR_TAG,
    DestinationTarget,
    destination_target,
)


@dataclass(frozen=True)
class PitrDatabasePlan:
    """What ``restore --to-time T --database D --to URL`` will do."""

    base: Manifest  # the base backup recovered from
    facts: dict[str, Any]  # its physical facts (stream, LSNs, databases, version)
    database: str  # the database dumped from the throwaway cluster
    recovery: RecoveryTarget
    os_user: OsUser  # runs the throwaway cluster
    os_user_basis: str  # how it was chosen, for the plan
    destination: DestinationTarget  # the dump is filed under it
    wal: RecoveryPlan  # the WAL recovery reads, all archived

    @property
    def tags(self) -> tuple[str, ...]:
        """The dump's tags: ``latest``/``--before`` never choose it."""
        return (PITR_TAG, f"{PITR_BASE_TAG}{self.base.backup_id}")


def _data_directory_owner(engine: Engine) -> tuple[OsUser | None, str]:
    """The owner of the live server's data directory when it is on this machine and the
    role may read ``data_directory``; else ``None`` and why not."""
    if not isinstance(engine, PostgresServer):
        return None, "the destination is not a PostgreSQL server"
    try:
        with engine.connect_raw("postgres") as conn:
            row = conn.execute("SELECT current_setting('data_directory')").fetchone()
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return None, f"cannot read its data_directory ({engine.redact(reason)})"
    folder = Path(str(row[0])) if row else None
    if folder is None:
        return None, "it names no data directory"
    with contextlib.suppress(OSError):
        return OsUser.of_uid(folder.stat().st_uid), f"owner of {folder}"
    return None, f"its data directory {folder} is not on this machine"


def choose_os_user(engine: Engine, given: str | None) -> tuple[OsUser, str]:
    """The OS user the throwaway cluster runs as, and how it was chosen: this process's
    user; as root ``given`` (``--os-user``) or the owner of the live server's data
    directory. ``UsageError`` (exit 2) when root cannot tell, or a user other than this
    one is asked for without root."""
    if os.geteuid() != 0:
        me = OsUser.current()
        if given is not None and given != me.name:
            raise UsageError(
                f"--os-user {given!r} needs root: run as {given!r} itself (this runs as "
                f"{me.name!r})"
            )
        return me, "this process's user"
    if given is not None:
        user = OsUser.named(given)
        if user.uid == 0:
            raise UsageError("--os-user root: PostgreSQL does not run as root")
        return user, "--os-user"
    owner, basis = _data_directory_owner(engine)
    if owner is None or owner.uid == 0:
        why = basis if owner is None else "its data directory belongs to root"
        raise UsageError(
            "as root, say which OS user runs the throwaway cluster: --os-user NAME (the "
            f"owner of the PostgreSQL data directory); it cannot be told from the server: {why}"
        )
    return owner, f"the server's data directory ({basis})"


def plan_pitr_database(
    repo: Repository,
    engine: Engine,
    *,
    reference: str | None,
    base_target: str | None,
    when: datetime | None,
    lsn: int | None,
    recovery: RecoveryTarget,
    database: str,
    os_user: str | None,
    configured: Mapping[str, str] | None = None,
) -> PitrDatabasePlan:
    """Check and plan: the base backup (``services.pitr.choose_base_backup``: the one
    ``reference`` names, else the newest of ``base_target`` ending before the moment),
    that it holds ``database`` (``UsageError`` naming the ones it holds), the OS user,
    the archived WAL on the way (``services.recovery_plan.plan_recovery``: a gap exit 7,
    an LSN past the archive exit 5) and the destination's target. ``BackupNotFound``
    (exit 3) for a moment before the oldest base backup."""
    if engine.kind != "postgresql":
        raise UsageError("--database restores a PostgreSQL database: --to must be postgresql://…")
    if base_target is None and reference in (None, "latest"):
        targets = sorted({m.target for m in repo.list_backups() if m.is_base_backup})
        if len(targets) > 1:
            raise UsageError(
                "base backups of several clusters are in the repository: say which with "
                f"--target ({', '.join(targets)})"
            )
    base = choose_base_backup(repo, reference, base_target, when, lsn)
    facts = physical_facts(repo, base)
    databases = [str(name) for name in facts.get("databases", [])]
    if database not in databases:
        raise UsageError(
            f"base backup {base.backup_id} holds no database {database!r}; it holds "
            f"{', '.join(databases) or 'none'} (a database created after a base backup is in "
            "none taken before it: recover it from a later base backup)"
        )
    wal = plan_recovery(repo, facts, target_lsn=lsn)
    user, basis = choose_os_user(engine, os_user)
    destination = destination_target(repo, engine, configured=configured)
    return PitrDatabasePlan(base, facts, database, recovery, user, basis, destination, wal)


def check_tables(
    engine: Engine, tables: list[str], into_schema: str | None, *, look: bool = True
) -> None:
    """Before anything is recovered: every ``--table`` name readable (``UsageError``,
    exit 2) and none of them already in the live database where it would go (its own
    schema, or ``into_schema``): ``TargetNotEmpty`` (exit 5), as the restore would after
    the recovery (only when ``look``). A destination that cannot be read yet is left to
    the restore."""
    names = [parse_table_name(text) for text in tables]
    if not look or not isinstance(engine, PostgresServer):
        return
    try:
        with engine.connect_raw() as conn:
            for schema, table in names:
                where = into_schema or schema
                row = conn.execute(
                    "SELECT to_regclass(format('%%I.%%I', %s::text, %s::text)) IS NOT NULL",
                    (where, table),
                ).fetchone()
                if row is not None and row[0]:
                    raise TargetNotEmpty(
                        f'table "{where}"."{table}" already exists in {engine.describe()}: '
                        "an existing table is never overwritten; choose another --into-schema"
                    )
    except psycopg.Error:
        return
