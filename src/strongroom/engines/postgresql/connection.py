"""Where a PostgreSQL database is and how to reach it: the URL, connections, client tools.

:class:`PostgresServer` is what every PostgreSQL module of strongroom reaches the server
through (the engine, the dump, pg_restore runs, single-table restores). The password never
reaches a command line: child tools get a conninfo string without it and ``PGPASSWORD`` in
their environment (:meth:`PostgresServer.child_env`). Every message raised or logged here is
redacted.
"""

from __future__ import annotations

import getpass
import glob
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from strongroom.engines.tools import first_line as _first_line
from strongroom.engines.tools import tool_candidates, tool_version
from strongroom.engines.urls import DatabaseUrl, EngineKind, parse_database_url
from strongroom.errors import (
    DatabaseAuthFailed,
    DatabaseUnreachable,
    ToolMissing,
    UnsupportedDatabaseUrl,
)
from strongroom.redaction import redact_text

logger = logging.getLogger("strongroom.engines.postgresql")

CONNECT_TIMEOUT = 10
DEBIAN_BIN_GLOB = "/usr/lib/postgresql/*/bin"
INSTALL_HINT = "install the PostgreSQL client tools (Debian: apt-get install postgresql-client)"
BINDIR_ENV = "STRONGROOM_PG_BINDIR"


def _major(version_text: str | None) -> int | None:
    """The major version in ``pg_dump (PostgreSQL) 15.4 (Debian …)``."""
    if not version_text:
        return None
    match = re.search(r"\)\s*(\d+)", version_text) or re.search(r"(\d+)", version_text)
    return int(match.group(1)) if match else None


def server_major(server_version_num: int) -> int:
    """150004 -> 15, 90624 -> 9."""
    return server_version_num // 10000


def _debian_bin_dirs() -> list[Path]:
    """``/usr/lib/postgresql/*/bin``, newest major version first."""

    def key(path: str) -> int:
        name = Path(path).parent.name
        return int(name) if name.isdigit() else -1

    return [Path(p) for p in sorted(glob.glob(DEBIAN_BIN_GLOB), key=key, reverse=True)]


def libpq_params(url: DatabaseUrl) -> dict[str, str]:
    """The libpq keywords of ``url`` without the password."""
    params = {
        "host": url.socket or url.host,
        "port": None if url.port is None else str(url.port),
        "user": url.user,
        "dbname": url.database,
    }
    return {k: v for k, v in params.items() if v is not None} | dict(url.params)


_NO_TIMEOUTS = "-c statement_timeout=0 -c lock_timeout=0 -c idle_in_transaction_session_timeout=0"


class PostgresServer:
    """A PostgreSQL database reachable through a ``postgres(ql)://`` URL or a libpq
    ``key=value`` string; raises ``UnsupportedDatabaseUrl`` for one that does not parse."""

    def __init__(
        self, url: str | DatabaseUrl, *, tool_dirs: Sequence[str | os.PathLike[str]] | None = None
    ):
        """``tool_dirs``: look for ``pg_dump``/``pg_restore`` only there (default: the folder
        in ``$STRONGROOM_PG_BINDIR``, else ``PATH``, then ``/usr/lib/postgresql/*/bin``,
        newest first)."""
        self.dburl = url if isinstance(url, DatabaseUrl) else parse_database_url(url)
        if self.dburl.kind is not EngineKind.POSTGRESQL:
            raise UnsupportedDatabaseUrl(f"not a PostgreSQL URL: {self.dburl.redacted()}")
        self._params: dict[str, str] = libpq_params(self.dburl)
        password = self.dburl.password
        self._password = password.reveal() if password is not None else None
        if tool_dirs is None and os.environ.get(BINDIR_ENV):
            tool_dirs = [os.environ[BINDIR_ENV]]
        self._tool_dirs = None if tool_dirs is None else [Path(d) for d in tool_dirs]

    # --- naming and redaction ---------------------------------------------------------
    def redact(self, text: str) -> str:
        """``text`` without this engine's password (nor any other known secret)."""
        secrets = tuple(s for s in (self._password, os.environ.get("PGPASSWORD")) if s)
        return redact_text(text, secrets)

    def describe(self) -> str:
        """The URL's display form (no part of the password)."""
        return self.dburl.redacted()

    def database_name(self) -> str:
        """The database named by the URL (libpq's defaults when it names none)."""
        return self._params.get("dbname") or os.environ.get("PGDATABASE") or self.user()

    def user(self) -> str:
        return self._params.get("user") or os.environ.get("PGUSER") or getpass.getuser()

    def host_port(self) -> str:
        """``host:port`` of the server, for messages."""
        host = self._params.get("host") or os.environ.get("PGHOST") or "localhost"
        port = self._params.get("port") or os.environ.get("PGPORT") or "5432"
        return f"{host}:{port}"

    def where(self) -> str:
        """``database X at host:port``."""
        return f"database {self.database_name()} at {self.host_port()}"

    def url_with_dbname(self, dbname: str) -> str:
        """The display form of another database on the same server."""
        return self.dburl.with_database(dbname).redacted()

    # --- connections and tools --------------------------------------------------------
    def conninfo(self, *, dbname: str | None = None, with_password: bool) -> str:
        params: dict[str, Any] = dict(self._params)
        if dbname is not None:
            params["dbname"] = dbname
        params.setdefault("connect_timeout", str(CONNECT_TIMEOUT))
        if with_password and self._password is not None:
            params["password"] = self._password
        return make_conninfo(**params)

    def child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self._password is not None:
            env["PGPASSWORD"] = self._password
        return env

    def connect_raw(self, dbname: str | None = None) -> psycopg.Connection[Any]:
        """An autocommit connection; raises psycopg's own errors."""
        conninfo = self.conninfo(dbname=dbname, with_password=True)
        if "application_name" not in self._params:
            conninfo = make_conninfo(conninfo, application_name="strongroom")
        # A database's own timeouts (ALTER DATABASE … SET statement_timeout = '1ms') must
        # not cut strongroom's statements short, not even the first one: startup options
        # take precedence over database and role settings. A pooler that refuses the
        # ``options`` startup parameter gets the SET below, retried if a timeout cuts it.
        options = (self._params.get("options", "") + " " + _NO_TIMEOUTS).strip()
        try:
            conn = psycopg.connect(make_conninfo(conninfo, options=options), autocommit=True)
        except psycopg.OperationalError as exc:
            if "options" not in str(exc).lower():
                raise
            conn = psycopg.connect(conninfo, autocommit=True)
        try:
            for attempt in range(5):
                try:
                    conn.execute(
                        "SELECT set_config('statement_timeout', '0', false),"
                        " set_config('lock_timeout', '0', false),"
                        " set_config('idle_in_transaction_session_timeout', '0', false)"
                    )
                    break
                except psycopg.errors.QueryCanceled:
                    if attempt == 4:
                        raise
        except BaseException:
            conn.close()
            raise
        return conn

    def connect(self, dbname: str | None = None) -> psycopg.Connection[Any]:
        """An autocommit connection; connection failures become strongroom errors."""
        try:
            return self.connect_raw(dbname)
        except psycopg.OperationalError as exc:
            raise self.connect_error(exc, dbname or self.database_name()) from None

    @staticmethod
    def is_missing_database(exc: BaseException) -> bool:
        text = str(exc).lower()
        return 'database "' in text and "does not exist" in text

    def connect_error(
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
                f"authentication failed for user {self.user()} at {self.describe()}"
            )
        if self.is_missing_database(exc):
            return DatabaseUnreachable(f"database {dbname} does not exist at {hp}")
        line = _first_line(text)
        if " failed: " in line:
            line = line.rsplit(" failed: ", 1)[1]
        line = re.sub(r"^(FATAL|ERROR):\s*", "", line) or "unknown error"
        return DatabaseUnreachable(f"cannot reach PostgreSQL at {hp}: {self.redact(line)}")

    def tool(self, name: str, server_major: int | None) -> tuple[Path, str]:
        """The tool to run and its ``--version`` text, preferring one as new as the server."""
        candidates = tool_candidates(name, self._tool_dirs, _debian_bin_dirs())
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

    def maintenance_connect(self) -> psycopg.Connection[Any]:
        try:
            return self.connect_raw("postgres")
        except psycopg.OperationalError as exc:
            if not self.is_missing_database(exc):
                raise self.connect_error(exc, "postgres") from None
        return self.connect("template1")

    def drop_database(self, name: str | None = None) -> str | None:
        """Drop the database (``name``, default this one), ending its sessions; return
        ``None`` on success, else the reason (logged)."""
        name = name or self.database_name()
        logger.info("dropping database %s at %s", name, self.host_port())
        try:
            with self.maintenance_connect() as conn:
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
            logger.error("could not drop database %s at %s: %s", name, self.host_port(), reason)
            return reason
        return None
