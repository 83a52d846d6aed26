"""MySQL/MariaDB engine: ``mariadb-dump``/``mysqldump --single-transaction`` with table
statistics from the same snapshot (see ``dump``); restore through the ``mariadb``/
``mysql`` client into a staged database (see ``restore``), swapped in with one
``RENAME TABLE`` (see ``swap``).

The engine is thin: where the database is and how to reach it is a ``MysqlConnection``
(``connection``), which the helper modules take; URLs are described there.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pymysql

from strongroom.engines.base import (
    Engine,
    PlanChecks,
    RestoreOptions,
    RunningDump,
    SwapRecovery,
    TableStats,
    TargetState,
)
from strongroom.engines.mysql import definers, staging, swap_recovery
from strongroom.engines.mysql.connection import MysqlConnection, OptionFile
from strongroom.engines.mysql.dump import start_dump
from strongroom.engines.mysql.restore import (
    contents,
    create_database,
    drop_database,
    restore_dump,
    run_client,
    target_exists,
)
from strongroom.engines.mysql.stats import quote_ident, row_counts, snapshot_stats
from strongroom.engines.mysql.swap import swap_databases
from strongroom.engines.mysql.tables import restore_tables
from strongroom.engines.mysql.tools import DUMP_TOOLS, error_text, limit_name
from strongroom.engines.urls import DatabaseUrl
from strongroom.errors import DatabaseAuthFailed, DatabaseUnreachable, RestoreFailed, UsageError

logger = logging.getLogger("strongroom.engines.mysql")

KIND = "mysql"


class MysqlEngine:
    """A MySQL or MariaDB database reachable through a ``mysql://``/``mariadb://`` URL."""

    kind = KIND
    # event name (case-folded) -> its status in the backup, once ``restore`` loaded a dump
    event_statuses: dict[str, str] | None = None

    def __init__(
        self,
        url: str | DatabaseUrl,
        *,
        tool_dirs: Sequence[str | os.PathLike[str]] | None = None,
        create_like: str | None = None,
    ) -> None:
        """``tool_dirs``: look for the client tools only there (default: the folder in
        ``$STRONGROOM_MYSQL_BINDIR``, else ``PATH``). ``create_like``: a database whose
        character set and collation a database created here copies (staging)."""
        self.connection = MysqlConnection(url, tool_dirs=tool_dirs)
        self.params = self.connection.params
        self._create_like = create_like

    # --- naming and redaction ---------------------------------------------------------
    def redact(self, text: str) -> str:
        """``text`` with URL passwords and this engine's password removed."""
        return self.connection.redact(text)

    def describe(self) -> str:
        """The URL with its password redacted."""
        return self.connection.describe()

    def database_name(self) -> str:
        return self.connection.database_name()

    def host_port(self) -> str:
        """``host:port`` (or the socket path), for messages."""
        return self.connection.host_port()

    def where(self) -> str:
        return self.connection.where()

    def sibling(self, name: str, *, create_like: str | None = None) -> MysqlEngine:
        """The same server and credentials, another database."""
        db = self.connection
        return MysqlEngine(
            db.dburl.with_database(name), tool_dirs=db.tool_dirs, create_like=create_like
        )

    # --- connections and tools --------------------------------------------------------
    def connect_raw(self, database: str | None = None) -> pymysql.connections.Connection[Any]:
        """An autocommit connection in UTC; raises PyMySQL's own errors."""
        return self.connection.connect_raw(database)

    def connect(self, database: str | None = None) -> pymysql.connections.Connection[Any]:
        """Like ``connect_raw``; connection failures become strongroom errors."""
        return self.connection.connect(database)

    def connect_error(
        self, exc: BaseException, database: str | None
    ) -> DatabaseAuthFailed | DatabaseUnreachable:
        return self.connection.connect_error(exc, database)

    def option_file_text(self) -> str:
        """The ``[client]`` option group the child tools read (holds the password)."""
        return self.connection.option_file_text()

    def write_option_file(self) -> OptionFile:
        """A new private option file; the caller closes it."""
        return self.connection.write_option_file()

    def option_file(self) -> AbstractContextManager[OptionFile]:
        return self.connection.option_file()

    def tool(self, names: Sequence[str]) -> tuple[Path, str]:
        """The first runnable tool of ``names`` and its ``--version`` text."""
        return self.connection.tool(names)

    # --- Engine protocol: backup ------------------------------------------------------
    def check(self) -> None:
        """Raise ``ToolMissing``, ``DatabaseUnreachable`` or ``DatabaseAuthFailed`` early."""
        self.tool(DUMP_TOOLS)
        with self.connect(self.database_name()) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")

    def estimated_size(self) -> int | None:
        """The tables' data size (a plain dump is about as large)."""
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT SUM(DATA_LENGTH) FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s",
                (self.database_name(),),
            )
            row = cur.fetchone()
        return int(row[0]) if row and row[0] is not None else None

    def dump(self) -> AbstractContextManager[RunningDump]:
        """Start ``mariadb-dump``/``mysqldump`` with statistics from its snapshot."""
        return start_dump(self.connection)

    # --- Engine protocol: restore -----------------------------------------------------
    def check_restore_target(self) -> None:
        """Raise ``TargetNotEmpty`` unless the target database is missing or empty."""
        target_exists(self.connection)

    def create_database(self, like: str | None = None) -> None:
        """Create this database (character set and collation of ``like`` if it exists)."""
        create_database(self.connection, like)

    def restore(
        self,
        source: Iterable[bytes],
        *,
        size_hint: int | None = None,
        tables_hint: int | None = None,
        state: Mapping[str, Any] | None = None,
        options: RestoreOptions | None = None,
    ) -> None:
        """Feed a plain SQL dump into the client, into a new (created here) or empty
        staged or scratch database; a failure drops the database if it was created here.

        This database is only ever a staged copy (``staging``) or a drill's scratch one,
        so the dump goes through ``staging.Staging.rewrite``: its events are created
        disabled (their original statuses are kept in ``event_statuses`` for the swap)
        and qualifiers in trigger, routine and event names point here, never at the
        original. A new database gets the default character set and collation the
        backup recorded (``state``), else those of ``create_like``. With
        ``options.rewrite_definers`` the definers this account cannot set (or that do not
        exist here) become the restoring account (``definers.rewrite``; skipped when the
        backup's recorded definers need none). Definers without rights here get them for the
        load only (``definers.lent_rights``)."""
        del size_hint, tables_hint  # a stream holds everything else
        loader = staging.Staging(self.database_name(), staging.recorded_events(state))
        source = loader.rewrite(source)
        if options is not None and options.rewrite_definers:
            who = definers.account(self.connection)
            recorded = definers.from_state(state)
            if recorded is None or any(who.needs_rewrite(o.definer) for o in recorded):
                source = definers.rewrite(source, who.needs_rewrite)
        with definers.lent_rights(self.connection, definers.from_state(state)):
            restore_dump(
                self.connection,
                source,
                create_like=self._create_like,
                shape=staging.recorded_shape(state),
            )
        self.event_statuses = loader.statuses()

    def run_client(self, client: Path, source: Iterable[bytes], database: str) -> tuple[int, str]:
        """Pipe ``source`` into the ``mariadb``/``mysql`` client; (exit status, stderr)."""
        return run_client(self.connection, client, source, database)

    # --- statistics and checks ----------------------------------------------------------
    def restore_tables(
        self,
        source: Iterable[bytes],
        tables: Sequence[str],
        *,
        into: str | None,
        expected: Sequence[TableStats],
        source_database: str,
    ) -> list[str]:
        """The tables' sections of the verified stream into a scratch database, checked
        against ``expected``, then moved into place (``into``: a side database); see
        ``mysql.tables``."""
        return restore_tables(
            self.connection,
            source,
            tables,
            into,
            expected=expected,
            source_database=source_database,
        )

    def table_stats(self) -> list[TableStats]:
        """Row counts and checksums of the database's tables now (one snapshot)."""
        return snapshot_stats(self.connection)

    def plan_checks(self, state: Mapping[str, Any] | None, options: RestoreOptions) -> PlanChecks:
        """The definers of the backup's objects this account cannot set or that do not
        exist here (``definers.plan_checks``); the dump holds everything else."""
        return definers.plan_checks(self.connection, state, options)

    def inspect(self) -> TargetState:
        """Whether the database exists, is empty, its size and its tables' row counts."""
        exists, tables, others, size = contents(self.connection)
        if not exists:
            return TargetState(exists=False, empty=True, size_bytes=None)
        stats: list[TableStats] = []
        if tables:
            stats = row_counts(self.connection)
        return TargetState(True, not (tables or others), size, stats)

    def count_result_rows(self, query: str) -> int:
        """Run ``query`` in a read-only transaction; the number of rows it returned."""
        with self.connect(self.database_name()) as conn, conn.cursor() as cur:
            cur.execute("START TRANSACTION READ ONLY")
            try:
                cur.execute(query)
                return len(cur.fetchmany(1000)) if cur.description else 0
            except pymysql.Error as exc:
                raise UsageError(f"check query failed: {self.redact(error_text(exc))}") from None
            finally:
                cur.execute("ROLLBACK")

    # --- safe restore: a staged database beside the target, then RENAME TABLE ----------
    def staging(self) -> MysqlEngine:
        """A new database ``<name>_sr_<8 hex>`` beside the target; ``restore`` creates it
        with the backup's recorded character set and collation, else like the target."""
        name = limit_name(self.database_name(), f"_sr_{secrets.token_hex(4)}")
        return self.sibling(name, create_like=self.database_name())

    def swap_in(
        self, staged: Engine, *, keep_old: bool, source_database: str | None = None
    ) -> str | None:
        """Move the staged tables (and views, triggers, routines, events) into the target;
        the target's own go to ``<name>_old_<UTC time>`` (dropped unless ``keep_old``).
        ``source_database``: the backed-up database's name (the manifest's); qualifiers
        naming it in the restored definitions are re-pointed at the target (``swap``).
        Events come back with the statuses ``staged.restore`` recorded (it loaded them
        disabled)."""
        if not isinstance(staged, MysqlEngine):
            raise TypeError("a MySQL target can only take a MySQL staged database")
        now = time.time()  # milliseconds too: two swaps within one second must not collide
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f"{int(now * 1000) % 1000:03d}"
        old_name = limit_name(self.database_name(), f"_old_{stamp}")
        return swap_databases(
            self.connection,
            staged.database_name(),
            old_name,
            keep_old=keep_old,
            source=source_database,
            events=staged.event_statuses,
        )

    def drop_hint(self, kept: str) -> str:
        """``DROP DATABASE `name`;`` (back-quoted: MySQL names are case-sensitive here and
        may hold characters that need it)."""
        return f"DROP DATABASE {quote_ident(kept)};"

    def drop_database(self, name: str | None = None) -> str | None:
        """Drop a database (default: this one); ``None`` on success, else the reason."""
        return drop_database(self.connection, name)

    def recover_swaps(self) -> list[SwapRecovery]:
        """Settle every interrupted swap on this server (``Engine.recover_swaps``; the
        journals are tables in the ``<name>_old_<time>`` databases: ``swap_store``).
        Raises ``DatabaseUnreachable``/``DatabaseAuthFailed`` when it cannot look."""
        return swap_recovery.recover(self.connection)

    def drop(self) -> None:
        """Drop this database; missing is fine."""
        problem = self.drop_database()
        if problem is not None:
            raise RestoreFailed(f"could not drop {self.where()}: {problem}")
