"""MySQL/MariaDB engine: ``mariadb-dump``/``mysqldump --single-transaction`` with table
statistics from the same snapshot (see ``mysql_dump``); restore through the ``mariadb``/
``mysql`` client into a staged database, swapped in with one ``RENAME TABLE``
(see ``mysql_objects``).

URLs: ``mysql://user:pass@host:port/db`` or ``mariadb://…``; ``?unix_socket=/path`` (or
``?socket=``) connects through a Unix socket. The password never reaches a command line:
the client tools read a private option file (mode 0600, ``--defaults-file`` so no other
option file can override it), removed when the tool has finished. Messages are redacted.
"""

from __future__ import annotations

import getpass
import logging
import os
import secrets
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit, urlunsplit

import pymysql

from strongroom.engines.base import (
    Engine,
    PlanChecks,
    RestoreOptions,
    RunningDump,
    TableStats,
    TargetState,
)
from strongroom.engines.mysql_stats import (
    count_rows_only,
    count_tables,
    list_tables,
    quote_ident,
)
from strongroom.engines.mysql_tools import (
    BINDIR_ENV,
    CLIENT_TOOLS,
    DUMP_TOOLS,
    error_code,
    error_text,
    find_tool,
    limit_name,
    option_value,
    pipe_into,
)
from strongroom.engines.tools import exit_description, first_line
from strongroom.errors import (
    DatabaseAuthFailed,
    DatabaseUnreachable,
    RestoreFailed,
    TargetNotEmpty,
    UnsupportedDatabaseUrl,
    UsageError,
)
from strongroom.redaction import redact_text, redact_url

logger = logging.getLogger("strongroom.engines.mysql")

KIND = "mysql"
CONNECT_TIMEOUT = 10
LOCK_WAIT_SECONDS = 60  # DDL (RENAME, DROP) waits this long for tables in use, then fails
_URL_PARAMS_SOCKET = ("unix_socket", "socket")
_ACCESS_DENIED = 1045
_DB_ACCESS_DENIED = 1044
_UNKNOWN_DATABASE = 1049


@dataclass(frozen=True)
class ConnParams:
    """Where and as whom to connect, parsed from the URL."""

    user: str
    password: str | None
    host: str
    port: int
    socket: str | None
    database: str


def parse_url(url: str) -> ConnParams:
    """Parse ``mysql://`` / ``mariadb://`` URLs (``UnsupportedDatabaseUrl`` if malformed)."""
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port or 3306
    except ValueError:  # the text may hold pieces of the password: do not show it
        raise UnsupportedDatabaseUrl(
            "invalid MySQL URL: write mysql://user:password@host:port/database and "
            "percent-encode special characters (# / ? @ : space) in the user and password"
        ) from None
    if parts.scheme.lower() not in ("mysql", "mariadb"):
        raise UnsupportedDatabaseUrl(f"not a MySQL URL: {shown}")
    database = unquote(parts.path.lstrip("/"))
    if not database or "/" in database:
        raise UnsupportedDatabaseUrl(f"MySQL URL {shown} must name one database: …/dbname")
    query = parse_qs(parts.query, keep_blank_values=True)
    socket = next((query[k][-1] for k in _URL_PARAMS_SOCKET if query.get(k)), None)
    for key in query:
        if key not in _URL_PARAMS_SOCKET:
            logger.warning("ignoring the URL parameter %r (strongroom reads only unix_socket)", key)
    return ConnParams(
        user=unquote(parts.username) if parts.username else getpass.getuser(),
        password=unquote(parts.password) if parts.password is not None else None,
        host=parts.hostname or "localhost",
        port=port,
        socket=socket or None,
        database=database,
    )


class MysqlEngine:
    """A MySQL or MariaDB database reachable through a ``mysql://``/``mariadb://`` URL."""

    kind = KIND

    def __init__(
        self,
        url: str,
        *,
        tool_dirs: Sequence[str | os.PathLike[str]] | None = None,
        create_like: str | None = None,
    ) -> None:
        """``tool_dirs``: look for the client tools only there (default: the folder in
        ``$STRONGROOM_MYSQL_BINDIR``, else ``PATH``). ``create_like``: a database whose
        character set and collation a database created here copies (staging)."""
        self._url = url
        self.params = parse_url(url)
        if tool_dirs is None and os.environ.get(BINDIR_ENV):
            tool_dirs = [os.environ[BINDIR_ENV]]
        self._tool_dirs = None if tool_dirs is None else [Path(d) for d in tool_dirs]
        self._create_like = create_like

    # --- naming and redaction ---------------------------------------------------------
    def redact(self, text: str) -> str:
        """``text`` with URL passwords and this engine's password removed."""
        password = self.params.password
        return redact_text(text, (password,) if password else ())

    def describe(self) -> str:
        """The URL with its password redacted."""
        return self.redact(redact_url(self._url))

    def database_name(self) -> str:
        return self.params.database

    def host_port(self) -> str:
        """``host:port`` (or the socket path), for messages."""
        p = self.params
        return p.socket if p.socket else f"{p.host}:{p.port}"

    def where(self) -> str:
        return f"database {self.database_name()} at {self.host_port()}"

    def sibling(self, name: str, *, create_like: str | None = None) -> MysqlEngine:
        """The same server and credentials, another database."""
        parts = urlsplit(self._url)
        url = urlunsplit(parts._replace(path="/" + quote(name, safe="")))
        return MysqlEngine(url, tool_dirs=self._tool_dirs, create_like=create_like)

    # --- connections and tools --------------------------------------------------------
    def connect_raw(self, database: str | None = None) -> pymysql.connections.Connection[Any]:
        """An autocommit connection in UTC; raises PyMySQL's own errors."""
        p = self.params
        return pymysql.connect(
            user=p.user,
            password=p.password or "",
            host=p.host,
            port=p.port,
            unix_socket=p.socket,
            database=database,
            charset="utf8mb4",
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT,
            init_command=f"SET time_zone = '+00:00', lock_wait_timeout = {LOCK_WAIT_SECONDS}",
            program_name="strongroom",
        )

    def connect(self, database: str | None = None) -> pymysql.connections.Connection[Any]:
        """Like ``connect_raw``; connection failures become strongroom errors."""
        try:
            return self.connect_raw(database)
        except pymysql.Error as exc:
            raise self.connect_error(exc, database) from None

    def connect_error(
        self, exc: BaseException, database: str | None
    ) -> DatabaseAuthFailed | DatabaseUnreachable:
        code = error_code(exc)
        if code == _ACCESS_DENIED:
            return DatabaseAuthFailed(
                f"authentication failed for user {self.params.user} at {self.describe()}"
            )
        if code == _DB_ACCESS_DENIED:
            return DatabaseAuthFailed(
                f"user {self.params.user} may not use database {database} at {self.host_port()}"
            )
        if code == _UNKNOWN_DATABASE:
            return DatabaseUnreachable(f"database {database} does not exist at {self.host_port()}")
        reason = self.redact(error_text(exc)) or type(exc).__name__
        return DatabaseUnreachable(f"cannot reach MySQL at {self.host_port()}: {reason}")

    def option_file_text(self) -> str:
        """The ``[client]`` option group the child tools read (holds the password)."""
        p = self.params
        lines = ["[client]", f"user={option_value(p.user)}"]
        if p.password is not None:
            lines.append(f"password={option_value(p.password)}")
        if p.socket:
            lines += [f"socket={option_value(p.socket)}", "protocol=SOCKET"]
        else:
            lines += [f"host={option_value(p.host)}", f"port={p.port}", "protocol=TCP"]
        return "\n".join(lines) + "\n"

    def write_option_file(self) -> Path:
        """A new private option file; the caller removes it."""
        fd, name = tempfile.mkstemp(prefix="strongroom-my-", suffix=".cnf")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(self.option_file_text())
        return Path(name)

    @contextmanager
    def option_file(self) -> Iterator[Path]:
        path = self.write_option_file()
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)

    def tool(self, names: Sequence[str]) -> tuple[Path, str]:
        """The first runnable tool of ``names`` and its ``--version`` text."""
        return find_tool(names, self._tool_dirs)

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
        from strongroom.engines.mysql_dump import start_dump

        return start_dump(self)

    # --- Engine protocol: restore -----------------------------------------------------
    def _schema(self, cur: Any, name: str) -> tuple[str, str] | None:
        """(character set, collation) of a database, or ``None`` if it does not exist."""
        cur.execute(
            "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME"
            " FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s",
            (name,),
        )
        row = cur.fetchone()
        return (str(row[0]), str(row[1])) if row else None

    def _contents(self) -> tuple[bool, int, int, int | None]:
        """(exists, tables, other objects, size in bytes) of the target database."""
        name = self.database_name()
        with self.connect() as conn, conn.cursor() as cur:
            if self._schema(cur, name) is None:
                return False, 0, 0, None
            cur.execute(
                "SELECT SUM(TABLE_TYPE <> 'VIEW'), SUM(TABLE_TYPE = 'VIEW'),"
                " SUM(DATA_LENGTH + INDEX_LENGTH) FROM information_schema.TABLES"
                " WHERE TABLE_SCHEMA = %s",
                (name,),
            )
            tables, views, size = cur.fetchone() or (0, 0, 0)
            others = int(views or 0)
            for query in (
                "SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = %s",
                "SELECT COUNT(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = %s",
                "SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = %s",
            ):
                cur.execute(query, (name,))
                row = cur.fetchone()
                others += int(row[0]) if row else 0
        return True, int(tables or 0), others, int(size) if size is not None else None

    def _target_exists(self) -> bool:
        """Whether the target exists; raise ``TargetNotEmpty`` if it holds anything."""
        exists, tables, others, _ = self._contents()
        if exists and (tables or others):
            what = f"{tables} tables" + (f", {others} other objects" if others else "")
            raise TargetNotEmpty(
                f"{self.where()} is not empty ({what}); restore into a new database or "
                "replace it with restore (which swaps a verified copy in)"
            )
        return exists

    def check_restore_target(self) -> None:
        """Raise ``TargetNotEmpty`` unless the target database is missing or empty."""
        self._target_exists()

    def create_database(self, like: str | None = None) -> None:
        """Create this database (character set and collation of ``like`` if it exists)."""
        name = self.database_name()
        try:
            with self.connect() as conn, conn.cursor() as cur:
                shape = self._schema(cur, like) if like else None
                options = f" CHARACTER SET {shape[0]} COLLATE {shape[1]}" if shape else ""
                logger.info("creating database %s at %s", name, self.host_port())
                cur.execute(f"CREATE DATABASE {quote_ident(name)}{options}")
        except pymysql.Error as exc:
            base = like or name
            raise RestoreFailed(
                f"cannot create {self.where()}: {self.redact(error_text(exc))}; restores are "
                f"staged in new databases named {base}_…, so the user needs CREATE, DROP and "
                f"ALTER there (e.g. GRANT ALL ON `{base}\\_%`.*)"
            ) from None

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
        database; a failure drops the database if it was created here."""
        del size_hint, tables_hint, state, options  # a stream holds everything
        exists = self._target_exists()
        client, _ = self.tool(CLIENT_TOOLS)
        if not exists:
            self.create_database(like=self._create_like)
        try:
            returncode, stderr = self.run_client(client, source, self.database_name())
        except BaseException as exc:
            outcome = self._after_failure(not exists)
            exc.add_note(f"restore into {self.where()} stopped; {outcome}")
            logger.info("restore into %s stopped; %s", self.where(), outcome)
            raise
        if returncode != 0:
            reason = first_line(stderr, prefer="error") or exit_description(returncode)
            outcome = self._after_failure(not exists)
            raise RestoreFailed(
                f"{client.name} failed for {self.where()}: {self.redact(reason)}; {outcome}"
            )
        logger.info("restored %s", self.where())

    def _after_failure(self, created: bool) -> str:
        if not created:
            return "the database existed before and was left as it is (partially restored)"
        problem = self.drop_database()
        if problem is None:
            return "the new database was dropped"
        return f"the new database could not be dropped ({problem})"

    def run_client(self, client: Path, source: Iterable[bytes], database: str) -> tuple[int, str]:
        """Pipe ``source`` into the ``mariadb``/``mysql`` client; (exit status, stderr)."""
        logger.info("restoring into database %s with %s", database, client)
        with self.option_file() as options:
            command = [
                str(client),
                f"--defaults-file={options}",  # must come first
                f"--database={database}",
                "--batch",
                "--binary-mode",
                "--default-character-set=utf8mb4",
                "--max-allowed-packet=1G",
            ]
            return pipe_into(command, source)

    # --- statistics and checks ----------------------------------------------------------
    def table_stats(self) -> list[TableStats]:
        """Row counts and checksums of the database's tables now (one snapshot)."""
        name = self.database_name()
        with self.connect(name) as conn, conn.cursor() as cur:
            cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            try:
                return count_tables(cur, name, list_tables(cur, name))
            finally:
                cur.execute("ROLLBACK")

    def plan_checks(self, state: Mapping[str, Any] | None, options: RestoreOptions) -> PlanChecks:
        """Nothing to check: the dump holds everything this engine restores."""
        del state, options
        return PlanChecks()

    def inspect(self) -> TargetState:
        """Whether the database exists, is empty, its size and its tables' row counts."""
        exists, tables, others, size = self._contents()
        if not exists:
            return TargetState(exists=False, empty=True, size_bytes=None)
        stats: list[TableStats] = []
        if tables:
            name = self.database_name()
            with self.connect(name) as conn, conn.cursor() as cur:
                stats = count_rows_only(cur, name, list_tables(cur, name))
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
        """A new database ``<name>_sr_<8 hex>`` beside the target, created like it."""
        name = limit_name(self.database_name(), f"_sr_{secrets.token_hex(4)}")
        return self.sibling(name, create_like=self.database_name())

    def swap_in(self, staged: Engine, *, keep_old: bool) -> str | None:
        """Move the staged tables (and views, triggers, routines, events) into the target;
        the target's own go to ``<name>_old_<UTC time>`` (dropped unless ``keep_old``)."""
        if not isinstance(staged, MysqlEngine):
            raise TypeError("a MySQL target can only take a MySQL staged database")
        from strongroom.engines.mysql_objects import swap_databases

        now = time.time()  # milliseconds too: two swaps within one second must not collide
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f"{int(now * 1000) % 1000:03d}"
        old_name = limit_name(self.database_name(), f"_old_{stamp}")
        return swap_databases(self, staged.database_name(), old_name, keep_old=keep_old)

    def drop_database(self, name: str | None = None) -> str | None:
        """Drop a database (default: this one); ``None`` on success, else the reason."""
        name = name or self.database_name()
        try:
            with self.connect() as conn, conn.cursor() as cur:
                if self._schema(cur, name) is None:  # IF EXISTS still needs DROP rights
                    return None
                logger.info("dropping database %s at %s", name, self.host_port())
                cur.execute(f"DROP DATABASE {quote_ident(name)}")
        except (pymysql.Error, DatabaseAuthFailed, DatabaseUnreachable) as exc:
            reason = self.redact(error_text(exc))
            logger.error("could not drop database %s: %s", name, reason)
            return reason
        return None

    def drop(self) -> None:
        """Drop this database; missing is fine."""
        problem = self.drop_database()
        if problem is not None:
            raise RestoreFailed(f"could not drop {self.where()}: {problem}")
