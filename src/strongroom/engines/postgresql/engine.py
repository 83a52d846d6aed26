"""PostgreSQL engine: ``pg_dump -Fc -Z0`` sharing a snapshot with the row counts; ``pg_restore``.

The password never reaches a command line: child tools get a conninfo string without it and
``PGPASSWORD`` in their environment. Every message this module raises or logs is redacted.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from strongroom import tempfiles
from strongroom.engines.base import (
    Engine,
    PlanChecks,
    RestoreOptions,
    RunningDump,
    SwapRecovery,
    TableStats,
    TargetState,
)
from strongroom.engines.postgresql.connection import PostgresServer, server_major
from strongroom.engines.postgresql.dump import DUMP_FORMAT, KIND, start_dump
from strongroom.engines.postgresql.fidelity import (
    apply_database_state,
    classify_errors,
    clean_leftover_roles,
    create_database_sql,
    create_roles,
    drop_roles,
    hold_restore_guard,
    refusal,
    restore_checks,
    skipped_roles,
    unmark_roles,
)
from strongroom.engines.postgresql.restore import (
    parallel_jobs,
    run_pg_restore,
    run_pg_restore_parallel,
)
from strongroom.engines.postgresql.state import DatabaseState, RestoreChecks
from strongroom.engines.postgresql.stats import (
    TABLES_SQL,
    USER_NAMESPACES,
    parallel_table_stats,
)
from strongroom.engines.postgresql.swap import check_may_replace, recover, swap_into_place
from strongroom.engines.postgresql.swap_store import carries_journal, limit_name
from strongroom.engines.postgresql.tables import restore_tables, verify_tables
from strongroom.engines.tools import exit_description as _exit_description
from strongroom.engines.tools import first_line as _first_line
from strongroom.engines.urls import DatabaseUrl
from strongroom.errors import (
    DatabaseAuthFailed,
    DatabaseUnreachable,
    RestoreFailed,
    TargetNotEmpty,
    UsageError,
)
from strongroom.wording import counted

logger = logging.getLogger("strongroom.engines.postgresql")

__all__ = ["DUMP_FORMAT", "KIND", "PostgresEngine"]
STATS_CONNECTIONS = 4

# What makes a database "not empty": user relations, types, functions, schemas.
_CONTENTS_SQL = f"""
    WITH ns AS ({USER_NAMESPACES}),
    ext AS (SELECT classid, objid FROM pg_depend WHERE deptype = 'e')
    SELECT
      (SELECT count(*) FROM pg_class c JOIN ns ON ns.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p', 'f')
          AND NOT EXISTS (SELECT 1 FROM ext
                          WHERE ext.classid = 'pg_class'::regclass AND ext.objid = c.oid)),
      (SELECT count(*) FROM pg_class c JOIN ns ON ns.oid = c.relnamespace
        WHERE c.relkind NOT IN ('r', 'p', 'f')
          AND NOT EXISTS (SELECT 1 FROM ext
                          WHERE ext.classid = 'pg_class'::regclass AND ext.objid = c.oid))
      + (SELECT count(*) FROM pg_type t JOIN ns ON ns.oid = t.typnamespace
        WHERE t.typrelid = 0 AND t.typcategory <> 'A'
          AND NOT EXISTS (SELECT 1 FROM ext
                          WHERE ext.classid = 'pg_type'::regclass AND ext.objid = t.oid))
      + (SELECT count(*) FROM pg_proc p JOIN ns ON ns.oid = p.pronamespace
        WHERE NOT EXISTS (SELECT 1 FROM ext
                          WHERE ext.classid = 'pg_proc'::regclass AND ext.objid = p.oid))
      + (SELECT count(*) FROM ns
        WHERE ns.nspname <> 'public'
          AND NOT EXISTS (SELECT 1 FROM ext
                          WHERE ext.classid = 'pg_namespace'::regclass AND ext.objid = ns.oid))
      + (SELECT count(*) FROM pg_largeobject_metadata)
"""


class PostgresEngine(PostgresServer):
    """A PostgreSQL database reachable through a ``postgres(ql)://`` URL."""

    kind = KIND

    def __init__(
        self, url: str | DatabaseUrl, *, tool_dirs: Sequence[str | os.PathLike[str]] | None = None
    ):
        """``tool_dirs``: see :class:`PostgresServer`."""
        super().__init__(url, tool_dirs=tool_dirs)
        self._restored_here = False  # set once restore() filled this database
        self._created_roles: list[str] = []  # by restore(), dropped again if it fails
        self._pending_state: tuple[DatabaseState, frozenset[str]] | None = None
        self._guard: psycopg.Connection[Any] | None = None  # see _hold_guard
        self.left_out: list[str] = []  # pg_restore errors accepted (skipped roles, …)

    # --- Engine protocol --------------------------------------------------------------
    def check(self) -> None:
        """Raise ``ToolMissing``, ``DatabaseUnreachable`` or ``DatabaseAuthFailed`` early."""
        self.tool("pg_dump", None)
        with self.connect() as conn:
            self.tool("pg_dump", server_major(conn.info.server_version))

    def estimated_size(self) -> int | None:
        """``pg_database_size`` of the database (the dump is usually smaller)."""
        with self.connect() as conn:
            try:
                row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
            except psycopg.Error:
                logger.debug("pg_database_size failed", exc_info=True)
                return None
        return int(row[0]) if row and row[0] is not None else None

    @contextmanager
    def dump(self) -> Iterator[RunningDump]:
        """Start ``pg_dump`` on a snapshot exported by a control connection."""
        self.tool("pg_dump", None)
        running = start_dump(self)
        try:
            yield running
        finally:
            running.close()

    def _contents(self) -> tuple[bool, int, int, int | None]:
        """(exists, tables, other objects, size in bytes) of the target database."""
        try:
            conn = self.connect_raw()
        except psycopg.OperationalError as exc:
            if self.is_missing_database(exc):
                return False, 0, 0, None
            raise self.connect_error(exc, self.database_name()) from None
        with conn:
            row = conn.execute(_CONTENTS_SQL).fetchone()
            size_row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        tables, others = (int(row[0]), int(row[1])) if row else (0, 0)
        return True, tables, others, int(size_row[0]) if size_row else None

    def _target_exists(self) -> bool:
        """Whether the target database exists; raise ``TargetNotEmpty`` if it holds anything."""
        exists, tables, others, _ = self._contents()
        if not exists:
            return False
        if tables or others:
            what = f"{tables} tables" + (f", {others} other objects" if others else "")
            raise TargetNotEmpty(
                f"{self.where()} is not empty ({what}); restore into a new database, e.g. "
                f"{self.url_with_dbname(self.database_name() + '_restored')} — replacing a "
                "live database arrives with safe restore"
            )
        return True

    def check_restore_target(self) -> None:
        """Raise ``TargetNotEmpty`` unless the target database is missing or empty."""
        self._target_exists()

    def _create_database(
        self, conn: psycopg.Connection[Any], state: DatabaseState | None = None
    ) -> None:
        name = self.database_name()
        logger.info("creating database %s at %s", name, self.host_port())
        try:
            conn.execute(create_database_sql(name, state))
        except psycopg.Error as exc:
            hint = "create it (empty) first or grant the user CREATEDB"
            if state is not None and isinstance(exc, psycopg.errors.InvalidParameterValue):
                hint = (
                    f"the backup's database uses encoding {state.encoding} and locale "
                    f"{state.collate}/{state.ctype}: install that locale on the server"
                )
            raise RestoreFailed(
                f"cannot create {self.where()}: {self.redact(_first_line(str(exc)))}; {hint}"
            ) from None

    # --- what the backup needs of the server restored into ----------------------------
    def _clean_leftovers(self) -> None:
        """Drop what a killed restore with ``--create-roles`` left on this server."""
        try:
            with self.maintenance_connect() as conn:
                dropped = clean_leftover_roles(conn)
        except psycopg.Error:
            logger.debug("could not look for leftover roles", exc_info=True)
            return
        if dropped:
            logger.warning("dropped roles a killed restore had created: %s", ", ".join(dropped))

    def _checks(self, state: DatabaseState) -> RestoreChecks:
        try:
            conn = self.connect_raw()
        except psycopg.OperationalError as exc:
            if not self.is_missing_database(exc):
                raise self.connect_error(exc, self.database_name()) from None
            conn = self.maintenance_connect()
        with conn:
            return restore_checks(conn, state)

    def plan_checks(self, state: Mapping[str, Any] | None, options: RestoreOptions) -> PlanChecks:
        """Roles the backup names that the server lacks, owners the restoring role cannot
        give objects to, superuser-only objects (see ``postgresql.fidelity``)."""
        if state is None:
            return PlanChecks(
                lines=(
                    "this backup records no roles or database settings (taken by an older "
                    "strongroom): objects will be owned by the restoring role",
                )
            )
        check_may_replace(self)
        recorded = DatabaseState.from_dict(dict(state))
        checks = self._checks(recorded)
        lines = [
            f"database owner {recorded.owner}, {counted(len(recorded.roles), 'role')} "
            f"referred to, {counted(len(recorded.settings), 'setting group')}, "
            + (
                "default privileges"
                if recorded.acl is None
                else counted(len(recorded.acl), "grant")
            )
        ]
        if checks.missing_roles:
            fate = {
                "refuse": "must be decided (see below)",
                "create": "will be created NOLOGIN without password (--create-roles)",
                "skip": "ownership and privileges left out (--skip-missing-roles)",
            }[options.missing_roles]
            lines.append(f"missing roles: {', '.join(checks.missing_roles)}: {fate}")
        if checks.unassignable_owners:
            lines.append(
                f"owners {checks.restoring_role} cannot assign: "
                f"{', '.join(checks.unassignable_owners)}"
            )
        if checks.superuser_objects:
            fate = "left out" if options.skip_superuser_objects else "need a superuser"
            lines.append(f"superuser-only objects ({fate}): {', '.join(checks.superuser_objects)}")
        return PlanChecks(lines=tuple(lines), refusal=refusal(checks, options, self.host_port()))

    def restore(
        self,
        source: Iterable[bytes],
        *,
        size_hint: int | None = None,
        tables_hint: int | None = None,
        state: Mapping[str, Any] | None = None,
        options: RestoreOptions | None = None,
    ) -> None:
        """Restore a ``pg_dump -Fc`` stream into a new (created here) or empty database.

        With the backup's recorded ``state`` the database is created from ``template0``
        with the backup's encoding and locale, owners and privileges are restored, and the
        database's own owner, ACL and settings are kept for :meth:`swap_in`; the checks of
        :meth:`plan_checks` must pass first (``UsageError`` otherwise, nothing created).
        Large dumps (``size_hint`` over 64 MiB) with several tables are written to a temp
        file first and restored with parallel ``pg_restore -j`` (data loads and index
        builds of different tables at once), when the temp folder has room; smaller ones
        stream straight into ``pg_restore``."""
        options = options or RestoreOptions()
        recorded = DatabaseState.from_dict(dict(state)) if state is not None else None
        skip: frozenset[str] = frozenset()
        checks: RestoreChecks | None = None
        if recorded is not None:
            self._clean_leftovers()
            checks = self._checks(recorded)
            refused = refusal(checks, options, self.host_port())
            if refused is not None:
                raise UsageError(refused)
            skip = skipped_roles(checks, options)
        exists = self._target_exists()
        preexisting = self._foreign_extensions() if exists else frozenset()
        created_roles: list[str] = []
        with self.maintenance_connect() as conn:
            tool, _ = self.tool("pg_restore", server_major(conn.info.server_version))
            # --skip-missing-roles, where the role may create roles: the missing roles exist
            # during the restore only, so each statement about them runs (and never takes
            # a neighbour in the same TOC entry down with it); then their ownership goes to
            # the restoring role and their privileges are dropped (_retire_roles).
            temporary = bool(
                checks is not None
                and options.missing_roles == "skip"
                and checks.missing_roles
                and checks.can_create_roles
            )
            if (
                checks is not None
                and recorded is not None
                and checks.missing_roles
                and (options.missing_roles == "create" or temporary)
            ):
                self._hold_guard()
                try:
                    create_roles(
                        conn, recorded, checks.missing_roles, self.database_name(), created_roles
                    )
                except psycopg.Error as exc:
                    drop_roles(conn, created_roles)
                    self._release_guard()
                    raise RestoreFailed(
                        f"could not create the missing roles at {self.host_port()}: "
                        f"{self.redact(_first_line(str(exc)))}; nothing was restored"
                    ) from None
            if not exists:
                try:
                    self._create_database(conn, recorded)
                except BaseException:
                    drop_roles(conn, created_roles)
                    self._release_guard()
                    raise
        self._created_roles = created_roles
        created = not exists
        faithful = recorded is not None
        try:
            jobs = parallel_jobs(size_hint, tables_hint)
            if jobs > 1:
                returncode, stderr = run_pg_restore_parallel(self, tool, source, jobs, faithful)
            else:
                returncode, stderr = run_pg_restore(self, tool, source, faithful)
        except BaseException as exc:
            outcome = self._after_failure(created)
            exc.add_note(f"restore into {self.where()} stopped; {outcome}")
            dropped = outcome == "the new database was dropped"  # nothing left: not an error
            level = logging.INFO if dropped else logging.ERROR  # of its own (one line)
            logger.log(level, "restore into %s stopped; %s", self.where(), outcome)
            raise
        problem: str | None = None
        if faithful:
            errors = classify_errors(
                stderr,
                skip_roles=skip,
                preexisting_extensions=preexisting,
                skipped_superuser_objects=frozenset(checks.superuser_objects)
                if checks is not None and options.skip_superuser_objects
                else frozenset(),
            )
            if errors.fatal:
                problem = errors.fatal[0]
                if len(errors.fatal) > 1:
                    problem += f" (and {len(errors.fatal) - 1} more errors)"
            elif returncode not in (0, 1) or (returncode == 1 and not errors.accepted):
                problem = _first_line(stderr, prefer="error") or _exit_description(returncode)
            for accepted in errors.accepted:
                logger.warning("left out as agreed: %s", self.redact(accepted))
            self.left_out = [self.redact(a) for a in errors.accepted]
        elif returncode != 0:
            problem = _first_line(stderr, prefer="error") or _exit_description(returncode)
        if problem is not None:
            outcome = self._after_failure(created)
            raise RestoreFailed(
                f"pg_restore failed for {self.where()}: {self.redact(problem)}; {outcome}"
            )
        if temporary:
            self._retire_roles(created, list(created_roles))
        self._restored_here = True
        self._pending_state = (recorded, skip) if recorded is not None else None
        logger.info("restored %s", self.where())

    def _retire_roles(self, created: bool, roles: list[str]) -> None:
        """Give what ``roles`` own in the restored database to the restoring role, drop
        their privileges there (``REASSIGN OWNED``, ``DROP OWNED``), then drop the roles."""
        try:
            with self.connect() as conn:
                row = conn.execute(
                    "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
                ).fetchone()
                for role in roles:
                    name = sql.Identifier(role)
                    if not (row and row[0]):
                        conn.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(name))
                    conn.execute(sql.SQL("REASSIGN OWNED BY {} TO CURRENT_USER").format(name))
                    conn.execute(sql.SQL("DROP OWNED BY {}").format(name))
            self.drop_created_roles()
        except (psycopg.Error, DatabaseUnreachable, DatabaseAuthFailed) as exc:
            outcome = self._after_failure(created)
            raise RestoreFailed(
                f"could not leave out the skipped roles {', '.join(roles)} in {self.where()}: "
                f"{self.redact(_first_line(str(exc)))}; {outcome}"
            ) from None

    def _foreign_extensions(self) -> frozenset[str]:
        """Extensions already in the (empty) target that the restoring role does not own:
        pg_restore's statements about them (``COMMENT ON EXTENSION``) may fail harmlessly."""
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT extname FROM pg_extension"
                " WHERE NOT pg_has_role(current_user, extowner, 'USAGE')"
            ).fetchall()
        return frozenset(str(r[0]) for r in rows)

    def _after_failure(self, created: bool) -> str:
        if not created:
            outcome = "the database existed before and was left as it is (partially restored)"
        else:
            problem = self.drop_database()
            if problem is None:
                outcome = "the new database was dropped"
            else:
                outcome = f"the new database could not be dropped ({problem})"
        if self._created_roles:
            self.drop_created_roles()
        return outcome

    def _hold_guard(self) -> None:
        """Hold this restore's advisory lock on a connection of its own while roles it
        creates carry the marker (see ``fidelity.clean_leftover_roles``)."""
        if self._guard is None:
            self._guard = self.maintenance_connect()
            hold_restore_guard(self._guard, self.database_name())

    def _release_guard(self) -> None:
        guard, self._guard = self._guard, None
        if guard is not None:
            with suppress(psycopg.Error):
                guard.close()

    def drop_created_roles(self) -> None:
        """Drop the roles this engine's restore created (``--create-roles``), once the
        restored database is gone; roles still in use elsewhere are kept (logged)."""
        roles, self._created_roles = self._created_roles, []
        if not roles:
            self._release_guard()
            return
        with self.maintenance_connect() as conn:
            left = drop_roles(conn, roles)
        self._release_guard()
        if left:
            logger.warning("roles created for the restore were kept: %s", ", ".join(left))

    # --- safe restore: staging beside the target, then a swap ---------------------------
    def inspect(self) -> TargetState:
        """Whether the database exists, is empty, its size and its tables."""
        exists, tables, others, size = self._contents()
        if not exists:
            return TargetState(exists=False, empty=True, size_bytes=None)
        return TargetState(True, not (tables or others), size, self._row_counts() if tables else [])

    def _row_counts(self) -> list[TableStats]:
        """Exact row counts only (the plan shows no checksums, so it does not pay for them)."""
        with self.connect() as conn:
            stats = []
            for schema, name in conn.execute(TABLES_SQL).fetchall():
                query = sql.SQL("SELECT count(*) FROM {}.{}").format(
                    sql.Identifier(schema), sql.Identifier(name)
                )
                row = conn.execute(query).fetchone()
                stats.append(TableStats(f"{schema}.{name}", int(row[0]) if row else 0))
        return sorted(stats, key=lambda s: s.name)

    def sibling(self, dbname: str) -> PostgresEngine:
        """The same server and credentials, another database."""
        return PostgresEngine(self.dburl.with_database(dbname), tool_dirs=self._tool_dirs)

    def staging(self) -> PostgresEngine:
        """A new database beside the target: ``<name>_sr_<random>`` (dropped on failure)."""
        return self.sibling(limit_name(self.database_name(), f"_sr_{secrets.token_hex(4)}"))

    def swap_in(
        self, staged: Engine, *, keep_old: bool, source_database: str | None = None
    ) -> str | None:
        """Give the staged database the backup's recorded state, then swap it into this
        target's place (see ``postgresql.swap``); drop the old one unless ``keep_old``.
        (``source_database`` is not needed: a dump names no database.)"""
        del source_database
        if not isinstance(staged, PostgresEngine):
            raise TypeError("a PostgreSQL target can only take a PostgreSQL staged database")
        staged.give_recorded_state()
        existed, kept = swap_into_place(self, staged.database_name(), keep_old=keep_old)
        if not existed:
            logger.info("put the restored database in place as %s", self.where())
            return None
        logger.info(
            "swapped the restored database into %s (old: %s)", self.where(), kept or "dropped"
        )
        return kept

    def drop_hint(self, kept: str) -> str:
        """``DROP DATABASE name;`` with ``name`` double-quoted unless it is a plain
        lower-case identifier (PostgreSQL folds unquoted names to lower case)."""
        if re.fullmatch(r"[a-z_][a-z0-9_]*", kept) is None:
            kept = '"' + kept.replace('"', '""') + '"'
        return f"DROP DATABASE {kept};"

    def recover_swaps(self) -> list[SwapRecovery]:
        """Settle every interrupted swap on this server (``postgresql.swap.recover``;
        the contract is ``Engine.recover_swaps``)."""
        return recover(self)

    def give_recorded_state(self) -> None:
        """Give this (restored, verified, not yet swapped-in) database the backup's recorded
        owner, ACL, settings, comment and connection limit. Raises ``RestoreFailed``."""
        if self._pending_state is None:
            return
        recorded, skip = self._pending_state
        try:
            with self.maintenance_connect() as conn:
                apply_database_state(conn, self.database_name(), recorded, skip)
                unmark_roles(conn, self._created_roles)  # theirs now, whatever happens
            self._release_guard()
        except psycopg.Error as exc:
            raise RestoreFailed(
                f"could not give the restored {self.where()} the backup's owner, privileges "
                f"and settings: {self.redact(_first_line(str(exc)))}"
            ) from None
        self._pending_state = None

    def count_result_rows(self, query: str) -> int:
        """Run ``query`` in a read-only transaction; the number of rows it returned."""
        with self.connect() as conn:
            conn.execute("BEGIN READ ONLY")
            try:
                cursor = conn.execute(query.encode())
                return len(cursor.fetchmany(1000)) if cursor.description else 0
            except psycopg.Error as exc:
                raise UsageError(
                    f"check query failed: {self.redact(_first_line(str(exc)))}"
                ) from None
            finally:
                conn.execute("ROLLBACK")

    def drop(self) -> None:
        """Drop this database (terminating its sessions); missing is fine. Roles that this
        engine's restore created for it (``--create-roles``) are dropped too. A database
        that carries an interrupted swap's journal is kept (logged): only the recovery that
        settles the swap may drop it (``postgresql.swap``)."""
        if carries_journal(self, self.database_name()):
            logger.warning(
                "kept %s: it carries the journal of an interrupted swap, which the next "
                "strongroom command on this server settles",
                self.where(),
            )
            return
        problem = self.drop_database()
        if problem is not None:
            raise RestoreFailed(f"could not drop {self.where()}: {problem}")
        self.drop_created_roles()

    def restore_tables(
        self,
        source: Iterable[bytes],
        tables: Sequence[str],
        *,
        into: str | None,
        expected: Sequence[TableStats],
        source_database: str,
    ) -> list[str]:
        """The verified stream into a temp file, then the tables' TOC entries (see
        ``postgresql.toc`` and ``postgresql.tables``; ``into``: a side schema), then their
        rows and checksums compared with ``expected`` (``VerificationMismatch``)."""
        del source_database  # table names in the dump are schema-qualified
        with tempfiles.private_tempdir("tables-") as workdir:  # swept if killed
            dump_file = Path(workdir) / "dump"
            with dump_file.open("wb") as handle:
                for data in source:  # every chunk is verified as it is read
                    handle.write(data)
            restored = restore_tables(self, dump_file, tables, into)
        verify_tables(self, tables, into, expected)
        return restored

    def table_stats(self) -> list[TableStats]:
        """Row counts and checksums of the database's tables now (same names as a dump's).

        Used to verify a restored copy, which nobody else writes to: the tables are scanned
        in parallel on up to ``STATS_CONNECTIONS`` connections (the dump's own statistics,
        by contrast, come from one connection inside the dump's snapshot). Tables with
        forced row-level security are read with the policy lifted inside a rolled-back
        transaction, but only in a database this engine restored itself."""
        return parallel_table_stats(
            self.connect, workers=STATS_CONNECTIONS, lift_forced_rls=self._restored_here
        )
