"""PostgreSQL engine: ``pg_dump -Fc -Z0`` sharing a snapshot with the row counts; ``pg_restore``.

The password never reaches a command line: child tools get a conninfo string without it and
``PGPASSWORD`` in their environment. Every message this module raises or logs is redacted.
"""

from __future__ import annotations

import getpass
import glob
import logging
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any, BinaryIO, cast
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from strongroom.engines.base import (
    DumpResult,
    Engine,
    PlanChecks,
    RestoreOptions,
    RunningDump,
    TableStats,
    TargetState,
)
from strongroom.engines.postgres_apply import (
    apply_database_state,
    classify_errors,
    create_database_sql,
    create_roles,
    drop_roles,
    refusal,
    restore_checks,
    skipped_roles,
)
from strongroom.engines.postgres_checksum import (
    TABLES_SQL,
    USER_NAMESPACES,
    parallel_table_stats,
    prepare_session,
    snapshot_table_stats,
)
from strongroom.engines.postgres_state import DatabaseState, RestoreChecks, capture_state
from strongroom.engines.tools import exit_description as _exit_description
from strongroom.engines.tools import first_line as _first_line
from strongroom.engines.tools import tool_version
from strongroom.errors import (
    DatabaseAuthFailed,
    DatabaseUnreachable,
    DumpFailed,
    RestoreFailed,
    TargetNotEmpty,
    ToolMissing,
    UnsupportedDatabaseUrl,
    UsageError,
)
from strongroom.redaction import redact_text, redact_url

logger = logging.getLogger("strongroom.engines.postgres")

KIND = "postgresql"
DUMP_FORMAT = "pg_dump-custom"
CONNECT_TIMEOUT = 10
PIPE_BUFFER = 1 << 20
DEBIAN_BIN_GLOB = "/usr/lib/postgresql/*/bin"
INSTALL_HINT = "install the PostgreSQL client tools (Debian: apt-get install postgresql-client)"
_STOP_TIMEOUT = 10.0

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


def _major(version_text: str | None) -> int | None:
    """The major version in ``pg_dump (PostgreSQL) 15.4 (Debian …)``."""
    if not version_text:
        return None
    match = re.search(r"\)\s*(\d+)", version_text) or re.search(r"(\d+)", version_text)
    return int(match.group(1)) if match else None


def _server_major(server_version_num: int) -> int:
    """150004 -> 15, 90624 -> 9."""
    return server_version_num // 10000


def _debian_bin_dirs() -> list[Path]:
    """``/usr/lib/postgresql/*/bin``, newest major version first."""

    def key(path: str) -> int:
        name = Path(path).parent.name
        return int(name) if name.isdigit() else -1

    return [Path(p) for p in sorted(glob.glob(DEBIAN_BIN_GLOB), key=key, reverse=True)]


class _RowCounter(threading.Thread):
    """Counts rows of every user table on the control connection (inside its snapshot)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        super().__init__(name="strongroom-pg-rowcount", daemon=True)
        self._conn = conn
        self._stop_event = threading.Event()
        self.tables: list[TableStats] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.tables = snapshot_table_stats(self._conn, self._stop_event.is_set)
        except BaseException as exc:  # reported by finish()
            self.error = exc

    def stop(self) -> None:
        """Ask the thread to stop and cancel a running count."""
        self._stop_event.set()
        if self.is_alive():
            try:
                if hasattr(self._conn, "cancel_safe"):
                    self._conn.cancel_safe(timeout=5)
                else:  # psycopg < 3.2
                    self._conn.cancel()
            except psycopg.Error:
                logger.debug("could not cancel the row count", exc_info=True)


class PostgresRunningDump:
    """A running ``pg_dump``; ``stream`` is its stdout."""

    def __init__(
        self,
        *,
        engine: PostgresEngine,
        proc: subprocess.Popen[bytes],
        stderr_file: IO[bytes],
        conn: psycopg.Connection[Any],
        counter: _RowCounter,
        server_version: str,
        tool_version: str,
        state: DatabaseState,
    ) -> None:
        self._engine = engine
        self._state = state
        self._proc = proc
        self._stderr_file = stderr_file
        self._conn = conn
        self._counter = counter
        self._server_version = server_version
        self._tool_version = tool_version
        self._result: DumpResult | None = None
        self._closed = False

    @property
    def stream(self) -> BinaryIO:
        """The raw, uncompressed ``pg_dump -Fc -Z0`` bytes."""
        return cast(BinaryIO, self._proc.stdout)

    @property
    def pid(self) -> int:
        """The process id of ``pg_dump`` (for diagnostics and tests)."""
        return self._proc.pid

    def finish(self) -> DumpResult:
        """Wait for ``pg_dump`` and the row counts; raise ``DumpFailed`` on any failure."""
        if self._result is not None:
            return self._result
        if self._closed:
            raise DumpFailed(f"the dump of {self._engine.where()} was already stopped")
        try:
            self._result = self._wait()
        finally:
            self.close()
        return self._result

    def _wait(self) -> DumpResult:
        where = self._engine.where()
        stdout = self._proc.stdout
        if stdout is not None and stdout.read(1):
            raise DumpFailed(
                f"the dump of {where} was not read to the end; read the stream to EOF first"
            )
        returncode = self._proc.wait()
        self._counter.join()
        count_error = None
        if self._counter.error is not None:
            count_error = self._engine.redact(_first_line(str(self._counter.error)))
        if returncode != 0:
            self._stderr_file.seek(0)
            stderr = self._stderr_file.read().decode("utf-8", "replace")
            reason = _first_line(stderr, prefer="error") or _exit_description(returncode)
            # A failed count aborts the snapshot's transaction, so pg_dump may then only
            # say it cannot import the snapshot: the count's error is the cause.
            cause = f"{count_error}; " if count_error else ""
            hint = ""
            if "row-level security" in f"{cause}{reason}":
                hint = (
                    "; row-level security applies to this role, so a dump would miss rows: "
                    "back up as a superuser or a role with BYPASSRLS"
                )
            raise DumpFailed(
                f"pg_dump failed for {where}: {cause}{self._engine.redact(reason)}"
                f" ({_exit_description(returncode)}){hint}"
            )
        if count_error is not None:
            raise DumpFailed(f"counting rows of {where} failed: {count_error}")
        try:
            self._conn.execute("COMMIT")
        except psycopg.Error as exc:
            reason = self._engine.redact(_first_line(str(exc)))
            raise DumpFailed(f"the snapshot of {where} could not be released: {reason}") from None
        return DumpResult(
            engine=KIND,
            database=self._engine.database_name(),
            server_version=self._server_version,
            tool_version=self._tool_version,
            dump_format=DUMP_FORMAT,
            tables=self._counter.tables,
            state=self._state.to_dict(),
        )

    def close(self) -> None:
        """Stop ``pg_dump`` if still running, stop the row count, close the connection."""
        if self._closed:
            return
        self._closed = True
        if self._proc.poll() is None:
            logger.debug("stopping pg_dump (pid %d)", self._proc.pid)
            self._proc.kill()
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        try:
            self._proc.wait(timeout=_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            logger.warning("pg_dump (pid %d) did not exit after kill", self._proc.pid)
        self._counter.stop()
        self._counter.join(timeout=_STOP_TIMEOUT)
        try:
            self._conn.close()
        except psycopg.Error:
            logger.debug("closing the control connection failed", exc_info=True)
        self._stderr_file.close()


BINDIR_ENV = "STRONGROOM_PG_BINDIR"


STATS_CONNECTIONS = 4
PARALLEL_RESTORE_MIN_BYTES = 64 * 1024 * 1024
MAX_RESTORE_JOBS = 4


def _parallel_jobs(size_hint: int | None, tables_hint: int | None = None) -> int:
    """How many ``pg_restore`` jobs to run: ``$STRONGROOM_RESTORE_JOBS`` if set; else 1
    (stream) for small dumps or when the temp folder cannot hold the dump; otherwise one
    per core, at most 4."""
    forced = os.environ.get("STRONGROOM_RESTORE_JOBS", "").strip()
    if forced:
        if not forced.isdigit():
            raise UsageError(f"STRONGROOM_RESTORE_JOBS must be a number, not {forced!r}")
        return max(1, int(forced))
    if size_hint is None or size_hint < PARALLEL_RESTORE_MIN_BYTES:
        return 1
    if tables_hint is not None and tables_hint < 2:
        return 1  # one table: nothing to run in parallel; streaming saves the temp file
    free = shutil.disk_usage(tempfile.gettempdir()).free
    if free < size_hint * 1.2:
        logger.info("not enough temp space for a parallel restore; streaming instead")
        return 1
    return max(1, min(MAX_RESTORE_JOBS, os.cpu_count() or 1))


def _limit_name(base: str, suffix: str) -> str:
    """``base + suffix`` cut to PostgreSQL's 63-byte identifier limit (suffix kept)."""
    room = 63 - len(suffix.encode())
    encoded = base.encode()[:room].decode("utf-8", "ignore")
    return encoded + suffix


def _rename(conn: psycopg.Connection[Any], old: str, new: str) -> None:
    conn.execute(
        sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new))
    )


class PostgresEngine:
    """A PostgreSQL database reachable through a ``postgres(ql)://`` URL."""

    kind = KIND

    def __init__(self, url: str, *, tool_dirs: Sequence[str | os.PathLike[str]] | None = None):
        """``tool_dirs``: look for ``pg_dump``/``pg_restore`` only there (default: the folder
        in ``$STRONGROOM_PG_BINDIR``, else ``PATH``, then ``/usr/lib/postgresql/*/bin``,
        newest first)."""
        self._url = url
        try:
            params = conninfo_to_dict(url)
        except psycopg.Error as exc:
            reason = redact_text(_first_line(str(exc)), self._secrets_of(url))
            raise UnsupportedDatabaseUrl(
                f"invalid PostgreSQL URL {redact_url(url)}: {reason}"
            ) from None
        self._params: dict[str, str] = {k: str(v) for k, v in params.items() if v is not None}
        self._password = self._params.pop("password", None)
        if tool_dirs is None and os.environ.get(BINDIR_ENV):
            tool_dirs = [os.environ[BINDIR_ENV]]
        self._tool_dirs = None if tool_dirs is None else [Path(d) for d in tool_dirs]
        self._restored_here = False  # set once restore() filled this database
        self._created_roles: list[str] = []  # by restore(), dropped again if it fails
        self._pending_state: tuple[DatabaseState, frozenset[str]] | None = None
        self.left_out: list[str] = []  # pg_restore errors accepted (skipped roles, …)

    # --- naming and redaction ---------------------------------------------------------
    @staticmethod
    def _secrets_of(url: str) -> tuple[str, ...]:
        try:
            password = urlsplit(url).password
        except ValueError:
            password = None
        return tuple(s for s in (password, os.environ.get("PGPASSWORD")) if s)

    def redact(self, text: str) -> str:
        """``text`` with URL passwords and this engine's password removed."""
        secrets = tuple(s for s in (self._password, os.environ.get("PGPASSWORD")) if s)
        return redact_text(text, secrets + self._secrets_of(self._url))

    def describe(self) -> str:
        """The URL with its password redacted."""
        return self.redact(redact_url(self._url))

    def database_name(self) -> str:
        """The database named by the URL (libpq's defaults when it names none)."""
        return self._params.get("dbname") or os.environ.get("PGDATABASE") or self._user()

    def _user(self) -> str:
        return self._params.get("user") or os.environ.get("PGUSER") or getpass.getuser()

    def host_port(self) -> str:
        """``host:port`` of the server, for messages."""
        host = self._params.get("host") or os.environ.get("PGHOST") or "localhost"
        port = self._params.get("port") or os.environ.get("PGPORT") or "5432"
        return f"{host}:{port}"

    def where(self) -> str:
        """``database X at host:port``."""
        return f"database {self.database_name()} at {self.host_port()}"

    def _url_with_dbname(self, dbname: str) -> str:
        try:
            parts = urlsplit(self._url)
            return self.redact(redact_url(urlunsplit(parts._replace(path="/" + quote(dbname)))))
        except ValueError:
            return dbname

    # --- connections and tools --------------------------------------------------------
    def _conninfo(self, *, dbname: str | None = None, with_password: bool) -> str:
        params: dict[str, Any] = dict(self._params)
        if dbname is not None:
            params["dbname"] = dbname
        params.setdefault("connect_timeout", str(CONNECT_TIMEOUT))
        if with_password and self._password is not None:
            params["password"] = self._password
        return make_conninfo(**params)

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self._password is not None:
            env["PGPASSWORD"] = self._password
        return env

    def _connect_raw(self, dbname: str | None = None) -> psycopg.Connection[Any]:
        """An autocommit connection; raises psycopg's own errors."""
        conninfo = self._conninfo(dbname=dbname, with_password=True)
        if "application_name" not in self._params:
            conninfo = make_conninfo(conninfo, application_name="strongroom")
        conn = psycopg.connect(conninfo, autocommit=True)
        try:  # a database's own timeouts must not cut strongroom's statements short
            conn.execute(
                "SELECT set_config('statement_timeout', '0', false),"
                " set_config('lock_timeout', '0', false),"
                " set_config('idle_in_transaction_session_timeout', '0', false)"
            )
        except BaseException:
            conn.close()
            raise
        return conn

    def _connect(self, dbname: str | None = None) -> psycopg.Connection[Any]:
        """An autocommit connection; connection failures become strongroom errors."""
        try:
            return self._connect_raw(dbname)
        except psycopg.OperationalError as exc:
            raise self._connect_error(exc, dbname or self.database_name()) from None

    @staticmethod
    def _is_missing_database(exc: BaseException) -> bool:
        text = str(exc).lower()
        return 'database "' in text and "does not exist" in text

    def _connect_error(
        self, exc: psycopg.OperationalError, dbname: str
    ) -> DatabaseAuthFailed | DatabaseUnreachable:
        text = str(exc)
        lowered = text.lower()
        hp = self.host_port()
        if (
            "password authentication failed" in lowered
            or "no password supplied" in lowered
            or "authentication failed" in lowered
            or ('role "' in lowered and "does not exist" in lowered)
        ):
            return DatabaseAuthFailed(
                f"authentication failed for user {self._user()} at {self.describe()}"
            )
        if self._is_missing_database(exc):
            return DatabaseUnreachable(f"database {dbname} does not exist at {hp}")
        line = _first_line(text)
        if " failed: " in line:
            line = line.rsplit(" failed: ", 1)[1]
        line = re.sub(r"^(FATAL|ERROR):\s*", "", line) or "unknown error"
        return DatabaseUnreachable(f"cannot reach PostgreSQL at {hp}: {self.redact(line)}")

    def _candidates(self, name: str) -> list[Path]:
        found: list[Path] = []
        if self._tool_dirs is not None:
            dirs = list(self._tool_dirs)
        else:
            which = shutil.which(name)
            if which:
                found.append(Path(which))
            dirs = _debian_bin_dirs()
        for directory in dirs:
            path = directory / name
            if path.is_file() and os.access(path, os.X_OK):
                found.append(path)
        unique: list[Path] = []
        seen: set[Path] = set()
        for path in found:
            real = path.resolve()
            if real not in seen:
                seen.add(real)
                unique.append(path)
        return unique

    def _tool(self, name: str, server_major: int | None) -> tuple[Path, str]:
        """The tool to run and its ``--version`` text, preferring one as new as the server."""
        candidates = self._candidates(name)
        if not candidates:
            raise ToolMissing(f"{name} not found: {INSTALL_HINT}")
        versions = [(path, tool_version(path)) for path in candidates]
        runnable = [(path, text) for path, text in versions if text is not None]
        if not runnable:
            raise ToolMissing(f"{name} found at {candidates[0]} does not run: {INSTALL_HINT}")
        if server_major is None:
            return runnable[0]
        for path, text in runnable:
            major = _major(text)
            if major is not None and major >= server_major:
                return path, text
        if name == "pg_dump":
            newest = max((_major(text) or 0) for _, text in runnable)
            raise ToolMissing(
                f"pg_dump {newest} cannot dump the PostgreSQL {server_major} server at "
                f"{self.host_port()}: install the client tools of version {server_major} "
                f"or newer (Debian: apt-get install postgresql-client-{server_major})"
            )
        return max(runnable, key=lambda pt: _major(pt[1]) or 0)

    # --- Engine protocol --------------------------------------------------------------
    def check(self) -> None:
        """Raise ``ToolMissing``, ``DatabaseUnreachable`` or ``DatabaseAuthFailed`` early."""
        self._tool("pg_dump", None)
        with self._connect() as conn:
            self._tool("pg_dump", _server_major(conn.info.server_version))

    def estimated_size(self) -> int | None:
        """``pg_database_size`` of the database (the dump is usually smaller)."""
        with self._connect() as conn:
            try:
                row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
            except psycopg.Error:
                logger.debug("pg_database_size failed", exc_info=True)
                return None
        return int(row[0]) if row and row[0] is not None else None

    @contextmanager
    def dump(self) -> Iterator[RunningDump]:
        """Start ``pg_dump`` on a snapshot exported by a control connection."""
        self._tool("pg_dump", None)
        running = self._start_dump()
        try:
            yield running
        finally:
            running.close()

    def _start_dump(self) -> PostgresRunningDump:
        conn = self._connect()
        try:
            tool, tool_version = self._tool("pg_dump", _server_major(conn.info.server_version))
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            version_row = conn.execute("SHOW server_version").fetchone()
            snapshot_row = conn.execute("SELECT pg_export_snapshot()").fetchone()
            prepare_session(conn)
            state = capture_state(conn)
        except psycopg.Error as exc:
            conn.close()
            reason = self.redact(_first_line(str(exc)))
            raise DumpFailed(f"cannot start the dump of {self.where()}: {reason}") from None
        except BaseException:
            conn.close()
            raise
        server_version = str(version_row[0]) if version_row else ""
        snapshot = str(snapshot_row[0]) if snapshot_row else ""
        command = [
            str(tool),
            "-Fc",
            "-Z0",
            f"--snapshot={snapshot}",
            "--no-password",
            "-d",
            self._conninfo(with_password=False),
        ]
        logger.info("dumping %s with %s", self.where(), tool)
        stderr_file = tempfile.TemporaryFile(prefix="strongroom-pg_dump-")  # noqa: SIM115 (owned by the dump)
        try:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr_file,
                bufsize=PIPE_BUFFER,
                env=self._child_env(),
            )
        except BaseException:
            stderr_file.close()
            conn.close()
            raise
        counter = _RowCounter(conn)
        running = PostgresRunningDump(
            engine=self,
            proc=proc,
            stderr_file=stderr_file,
            conn=conn,
            counter=counter,
            server_version=server_version,
            tool_version=tool_version,
            state=state,
        )
        try:
            counter.start()
        except BaseException:
            running.close()
            raise
        return running

    def _contents(self) -> tuple[bool, int, int, int | None]:
        """(exists, tables, other objects, size in bytes) of the target database."""
        try:
            conn = self._connect_raw()
        except psycopg.OperationalError as exc:
            if self._is_missing_database(exc):
                return False, 0, 0, None
            raise self._connect_error(exc, self.database_name()) from None
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
                f"{self._url_with_dbname(self.database_name() + '_restored')} — replacing a "
                "live database arrives with safe restore"
            )
        return True

    def check_restore_target(self) -> None:
        """Raise ``TargetNotEmpty`` unless the target database is missing or empty."""
        self._target_exists()

    def _maintenance_connect(self) -> psycopg.Connection[Any]:
        try:
            return self._connect_raw("postgres")
        except psycopg.OperationalError as exc:
            if not self._is_missing_database(exc):
                raise self._connect_error(exc, "postgres") from None
        return self._connect("template1")

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
    def _checks(self, state: DatabaseState) -> RestoreChecks:
        try:
            conn = self._connect_raw()
        except psycopg.OperationalError as exc:
            if not self._is_missing_database(exc):
                raise self._connect_error(exc, self.database_name()) from None
            conn = self._maintenance_connect()
        with conn:
            return restore_checks(conn, state)

    def plan_checks(self, state: Mapping[str, Any] | None, options: RestoreOptions) -> PlanChecks:
        """Roles the backup names that the server lacks, owners the restoring role cannot
        give objects to, superuser-only objects (see ``postgres_apply``)."""
        if state is None:
            return PlanChecks(
                lines=(
                    "this backup records no roles or database settings (taken by an older "
                    "strongroom): objects will be owned by the restoring role",
                )
            )
        self._check_may_replace()
        recorded = DatabaseState.from_dict(dict(state))
        checks = self._checks(recorded)
        lines = [
            f"database owner {recorded.owner}, {len(recorded.roles)} role(s) referred to, "
            f"{len(recorded.settings)} setting group(s), "
            + ("default privileges" if recorded.acl is None else f"{len(recorded.acl)} grant(s)")
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

    def _drop_database(self) -> str | None:
        """Drop the target database; return ``None`` on success, else the reason."""
        name = self.database_name()
        logger.warning("dropping %s", self.where())
        try:
            with self._maintenance_connect() as conn:
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = %s AND pid <> pg_backend_pid()",
                    (name,),
                )
                drop = sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name))
                if conn.info.server_version >= 130000:
                    drop = sql.SQL("{} WITH (FORCE)").format(drop)
                conn.execute(drop)
        except (psycopg.Error, DatabaseAuthFailed, DatabaseUnreachable) as exc:
            reason = self.redact(_first_line(str(exc)))
            logger.error("could not drop %s: %s", self.where(), reason)
            return reason
        return None

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
            checks = self._checks(recorded)
            refused = refusal(checks, options, self.host_port())
            if refused is not None:
                raise UsageError(refused)
            skip = skipped_roles(checks, options)
        exists = self._target_exists()
        preexisting = self._foreign_extensions() if exists else frozenset()
        created_roles: list[str] = []
        with self._maintenance_connect() as conn:
            tool, _ = self._tool("pg_restore", _server_major(conn.info.server_version))
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
                and (options.missing_roles == "create" or temporary)
            ):
                try:
                    created_roles = create_roles(conn, recorded, checks.missing_roles)
                except psycopg.Error as exc:
                    drop_roles(conn, created_roles)
                    raise RestoreFailed(
                        f"could not create the missing roles at {self.host_port()}: "
                        f"{self.redact(_first_line(str(exc)))}; nothing was restored"
                    ) from None
            if not exists:
                try:
                    self._create_database(conn, recorded)
                except BaseException:
                    drop_roles(conn, created_roles)
                    raise
        self._created_roles = created_roles
        created = not exists
        faithful = recorded is not None
        try:
            jobs = _parallel_jobs(size_hint, tables_hint)
            if jobs > 1:
                returncode, stderr = self._run_pg_restore_parallel(tool, source, jobs, faithful)
            else:
                returncode, stderr = self._run_pg_restore(tool, source, faithful)
        except BaseException as exc:
            outcome = self._after_failure(created)
            exc.add_note(f"restore into {self.where()} stopped; {outcome}")
            logger.error("restore into %s stopped; %s", self.where(), outcome)
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
            with self._connect() as conn:
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
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT extname FROM pg_extension"
                " WHERE NOT pg_has_role(current_user, extowner, 'USAGE')"
            ).fetchall()
        return frozenset(str(r[0]) for r in rows)

    def _after_failure(self, created: bool) -> str:
        if not created:
            outcome = "the database existed before and was left as it is (partially restored)"
        else:
            problem = self._drop_database()
            if problem is None:
                outcome = "the new database was dropped"
            else:
                outcome = f"the new database could not be dropped ({problem})"
        if self._created_roles:
            self.drop_created_roles()
        return outcome

    def drop_created_roles(self) -> None:
        """Drop the roles this engine's restore created (``--create-roles``), once the
        restored database is gone; roles still in use elsewhere are kept (logged)."""
        roles, self._created_roles = self._created_roles, []
        if not roles:
            return
        with self._maintenance_connect() as conn:
            left = drop_roles(conn, roles)
        if left:
            logger.warning("roles created for the restore were kept: %s", ", ".join(left))

    @staticmethod
    def _restore_flags(faithful: bool) -> list[str]:
        """Owners and privileges are restored when the backup recorded its roles (the
        checks ran); errors are then read and judged by ``classify_errors``."""
        if faithful:
            return ["--verbose", "--no-password"]
        return ["--no-owner", "--exit-on-error", "--no-password"]

    def _run_pg_restore_parallel(
        self, tool: Path, source: Iterable[bytes], jobs: int, faithful: bool = False
    ) -> tuple[int, str]:
        """Materialise the dump in a temp file, then ``pg_restore -j`` from it."""
        with tempfile.TemporaryDirectory(prefix="strongroom-restore-") as workdir:
            dump_file = Path(workdir) / "dump"
            with dump_file.open("wb") as handle:
                for data in source:  # every chunk is verified as it is read
                    handle.write(data)
            listing = subprocess.run(
                [str(tool), "--list", str(dump_file)], capture_output=True, check=False
            )
            data_entries = listing.stdout.count(b" TABLE DATA ")
            jobs = max(1, min(jobs, data_entries))
            logger.info("restoring into %s with %s -j %d", self.where(), tool, jobs)
            command = [
                str(tool),
                *self._restore_flags(faithful),
                f"--jobs={jobs}",
                "-d",
                self._conninfo(with_password=False),
                str(dump_file),
            ]
            result = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=self._child_env(),
                check=False,
            )
            return result.returncode, result.stderr.decode("utf-8", "replace")

    def _run_pg_restore(
        self, tool: Path, source: Iterable[bytes], faithful: bool = False
    ) -> tuple[int, str]:
        """Feed ``source`` to ``pg_restore``; return its exit status and stderr."""
        command = [
            str(tool),
            *self._restore_flags(faithful),
            "-d",
            self._conninfo(with_password=False),
        ]
        logger.info("restoring into %s with %s", self.where(), tool)
        with tempfile.TemporaryFile(prefix="strongroom-pg_restore-") as stderr_file:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=stderr_file,
                env=self._child_env(),
            )
            try:
                stdin = cast(IO[bytes], proc.stdin)
                iterator = iter(source)
                try:
                    for chunk in iterator:
                        try:
                            stdin.write(chunk)
                        except BrokenPipeError:
                            logger.debug("pg_restore closed its input early")
                            break
                finally:
                    close = getattr(iterator, "close", None)
                    if callable(close):
                        close()
                with suppress(BrokenPipeError):
                    stdin.close()
                returncode = proc.wait()
            except BaseException:
                if proc.poll() is None:
                    proc.kill()
                try:
                    proc.wait(timeout=_STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    logger.warning("pg_restore (pid %d) did not exit after kill", proc.pid)
                raise
            finally:
                if proc.stdin is not None and not proc.stdin.closed:
                    with suppress(BrokenPipeError):
                        proc.stdin.close()
            stderr_file.seek(0)
            stderr = stderr_file.read().decode("utf-8", "replace")
        return returncode, stderr

    # --- safe restore: staging beside the target, then a swap ---------------------------
    def inspect(self) -> TargetState:
        """Whether the database exists, is empty, its size and its tables."""
        exists, tables, others, size = self._contents()
        if not exists:
            return TargetState(exists=False, empty=True, size_bytes=None)
        return TargetState(True, not (tables or others), size, self._row_counts() if tables else [])

    def _row_counts(self) -> list[TableStats]:
        """Exact row counts only (the plan shows no checksums, so it does not pay for them)."""
        with self._connect() as conn:
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
        parts = urlsplit(self._url)
        if parts.scheme.startswith("postgres"):
            url = urlunsplit(parts._replace(path="/" + quote(dbname)))
        else:  # a key=value conninfo string
            url = make_conninfo(self._conninfo(dbname=dbname, with_password=True))
        return PostgresEngine(url, tool_dirs=self._tool_dirs)

    def staging(self) -> PostgresEngine:
        """A new database beside the target: ``<name>_sr_<random>`` (dropped on failure)."""
        return self.sibling(_limit_name(self.database_name(), f"_sr_{secrets.token_hex(4)}"))

    def swap_in(self, staged: Engine, *, keep_old: bool) -> str | None:
        """Rename the target to ``<name>_old_<UTC time>`` (terminating its sessions) and the
        staged database to the target's name; drop the old one unless ``keep_old``."""
        if not isinstance(staged, PostgresEngine):
            raise TypeError("a PostgreSQL target can only take a PostgreSQL staged database")
        name = self.database_name()
        old_name = _limit_name(name, f"_old_{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}")
        staged.give_recorded_state()
        with self._maintenance_connect() as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if exists:
                self._check_may_rename(conn, name)
                taken = conn.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", (old_name,)
                ).fetchone()
                if taken:  # two swaps within one second
                    old_name = _limit_name(old_name, f"_{secrets.token_hex(2)}")
                self._rename_away(conn, name, old_name)
            try:
                conn.execute(
                    sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                        sql.Identifier(staged.database_name()), sql.Identifier(name)
                    )
                )
            except psycopg.Error as exc:
                if exists:
                    with suppress(psycopg.Error):
                        _rename(conn, old_name, name)
                raise RestoreFailed(
                    f"could not rename the restored database into place: "
                    f"{self.redact(_first_line(str(exc)))}; the original {name} is unchanged"
                ) from None
        logger.warning("swapped the restored database into %s (old: %s)", self.where(), old_name)
        if exists and not keep_old:
            self.sibling(old_name).drop()
            return None
        return old_name if exists else None

    def give_recorded_state(self) -> None:
        """Give this (restored, verified, not yet swapped-in) database the backup's recorded
        owner, ACL, settings, comment and connection limit. Raises ``RestoreFailed``."""
        if self._pending_state is None:
            return
        recorded, skip = self._pending_state
        try:
            with self._maintenance_connect() as conn:
                apply_database_state(conn, self.database_name(), recorded, skip)
        except psycopg.Error as exc:
            raise RestoreFailed(
                f"could not give the restored {self.where()} the backup's owner, privileges "
                f"and settings: {self.redact(_first_line(str(exc)))}"
            ) from None
        self._pending_state = None

    def _check_may_replace(self) -> None:
        """Raise ``RestoreFailed`` now, before any work, if the target exists and this role
        could not swap a restored copy into its place."""
        with self._maintenance_connect() as conn:
            if conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (self.database_name(),)
            ).fetchone():
                self._check_may_rename(conn, self.database_name())

    def _check_may_rename(self, conn: psycopg.Connection[Any], name: str) -> None:
        row = conn.execute(
            "SELECT r.rolsuper OR pg_has_role(current_user, d.datdba, 'MEMBER'), r.rolcreatedb"
            " FROM pg_database d, pg_roles r WHERE d.datname = %s AND r.rolname = current_user",
            (name,),
        ).fetchone()
        if not row or not row[0] or not (row[1] or row[0]):
            raise RestoreFailed(
                f"user {self._user()} may not replace {self.where()}: it must own the database "
                "(with CREATEDB) or be a superuser; the original database is unchanged"
            )

    def _rename_away(self, conn: psycopg.Connection[Any], name: str, old_name: str) -> None:
        """Close the target to new sessions, end the current ones, rename it."""
        conn.execute(
            sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(sql.Identifier(name))
        )
        try:
            for attempt in range(10):
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = %s AND pid <> pg_backend_pid()",
                    (name,),
                )
                try:
                    _rename(conn, name, old_name)
                    break
                except psycopg.errors.ObjectInUse:
                    if attempt == 9:
                        raise
                    time.sleep(0.2)
        except psycopg.Error as exc:
            with suppress(psycopg.Error):
                conn.execute(
                    sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(
                        sql.Identifier(name)
                    )
                )
            raise RestoreFailed(
                f"could not take {self.where()} out of service: "
                f"{self.redact(_first_line(str(exc)))}; the original database is unchanged"
            ) from None
        conn.execute(
            sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(
                sql.Identifier(old_name)
            )
        )

    def count_result_rows(self, query: str) -> int:
        """Run ``query`` in a read-only transaction; the number of rows it returned."""
        with self._connect() as conn:
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
        engine's restore created for it (``--create-roles``) are dropped too."""
        problem = self._drop_database()
        if problem is not None:
            raise RestoreFailed(f"could not drop {self.where()}: {problem}")
        self.drop_created_roles()

    def table_stats(self) -> list[TableStats]:
        """Row counts and checksums of the database's tables now (same names as a dump's).

        Used to verify a restored copy, which nobody else writes to: the tables are scanned
        in parallel on up to ``STATS_CONNECTIONS`` connections (the dump's own statistics,
        by contrast, come from one connection inside the dump's snapshot). Tables with
        forced row-level security are read with the policy lifted inside a rolled-back
        transaction, but only in a database this engine restored itself."""
        return parallel_table_stats(
            self._connect, workers=STATS_CONNECTIONS, lift_forced_rls=self._restored_here
        )
