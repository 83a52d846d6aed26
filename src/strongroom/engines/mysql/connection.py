"""Where a MySQL/MariaDB database is and how to reach it: the URL, connections, the
private option file of the client tools, and finding those tools.

URLs (parsed by :func:`strongroom.engines.urls.parse_database_url`):
``mysql://user:pass@host:port/db``, ``mariadb://…``, ``mysql2://…``, ``mysql+pymysql://…``;
``?unix_socket=/path`` (or ``?socket=``) connects through a Unix socket; TLS parameters
(``ssl-mode``, ``ssl={"rejectUnauthorized":true}``, ``ssl-ca``, …) reach PyMySQL and the
client tools' option file. Percent-encoded parts are UTF-8; the password
goes to the server as its UTF-8 bytes, both from PyMySQL (which would otherwise encode it
as latin-1) and from the client tools (which read it from a UTF-8 option file), so an
account created with ``IDENTIFIED BY 'pässwort'`` over a utf8mb4 connection logs in
either way. The password never reaches a command line:
the client tools read a private option file (mode 0600, ``--defaults-file`` so no other
option file can override it), removed when the tool has finished. Messages are redacted.

``MysqlConnection`` is what the helper modules (dump, restore, swap, tables) take: one
database on one server, with no engine behaviour.
"""

from __future__ import annotations

import getpass
import logging
import os
import ssl
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymysql

from strongroom import tempfiles
from strongroom.engines.mysql.tools import (
    BINDIR_ENV,
    DUMP_TOOLS,
    error_code,
    error_text,
    find_tool,
    option_value,
)
from strongroom.engines.urls import DatabaseUrl, EngineKind, parse_database_url
from strongroom.errors import DatabaseAuthFailed, DatabaseUnreachable, UnsupportedDatabaseUrl
from strongroom.redaction import redact_text

logger = logging.getLogger("strongroom.engines.mysql")

CONNECT_TIMEOUT = 10
LOCK_WAIT_SECONDS = 60  # DDL (RENAME, DROP) waits this long for tables in use, then fails
_ACCESS_DENIED = 1045
_DB_ACCESS_DENIED = 1044
_UNKNOWN_DATABASE = 1049


@dataclass(frozen=True)
class ConnParams:
    """Where and as whom to connect (from a :class:`DatabaseUrl`)."""

    user: str
    password: str | None
    host: str
    port: int
    socket: str | None
    database: str
    ssl_mode: str | None = None  # DISABLED, PREFERRED, REQUIRED, VERIFY_CA, VERIFY_IDENTITY
    ssl_ca: str | None = None
    ssl_cert: str | None = None
    ssl_key: str | None = None
    connect_timeout: int = CONNECT_TIMEOUT


def parse_url(url: str | DatabaseUrl) -> ConnParams:
    """The connection parameters of a MySQL URL (``UnsupportedDatabaseUrl`` if it is not
    one, or is malformed); see :func:`strongroom.engines.urls.parse_database_url`."""
    parsed = url if isinstance(url, DatabaseUrl) else parse_database_url(url)
    if parsed.kind is not EngineKind.MYSQL:
        raise UnsupportedDatabaseUrl(f"not a MySQL URL: {parsed.redacted()}")
    return conn_params(parsed)


def conn_params(url: DatabaseUrl) -> ConnParams:
    timeout = url.params.get("connect_timeout")
    return ConnParams(
        user=url.user or getpass.getuser(),
        password=url.password.reveal() if url.password is not None else None,
        host=url.host or "localhost",
        port=url.port or 3306,
        socket=url.socket,
        database=url.database or "",
        ssl_mode=url.params.get("ssl_mode"),
        ssl_ca=url.params.get("ssl_ca"),
        ssl_cert=url.params.get("ssl_cert"),
        ssl_key=url.params.get("ssl_key"),
        connect_timeout=int(timeout) if timeout else CONNECT_TIMEOUT,
    )


def ssl_context(p: ConnParams) -> ssl.SSLContext | None:
    """The TLS context PyMySQL uses for ``p.ssl_mode`` (``None``: PyMySQL's default)."""
    if p.ssl_mode in (None, "DISABLED", "PREFERRED") and not (p.ssl_cert or p.ssl_key):
        return None
    verify = p.ssl_mode in ("VERIFY_CA", "VERIFY_IDENTITY")
    context = ssl.create_default_context(cafile=p.ssl_ca if verify else None)
    context.check_hostname = p.ssl_mode == "VERIFY_IDENTITY"
    if not verify:
        context.verify_mode = ssl.CERT_NONE
    if p.ssl_cert:
        context.load_cert_chain(p.ssl_cert, p.ssl_key)
    return context


def tls_options(p: ConnParams, mariadb: bool) -> list[str]:
    """The option-file lines for the URL's TLS parameters, in the dialect of the client
    tools (MariaDB's clients know ``ssl``/``ssl-verify-server-cert``, MySQL's ``ssl-mode``)."""
    lines = [
        f"{name}={option_value(value)}"
        for name, value in (("ssl-ca", p.ssl_ca), ("ssl-cert", p.ssl_cert), ("ssl-key", p.ssl_key))
        if value
    ]
    if p.ssl_mode is None:
        return lines
    if not mariadb:
        return [*lines, f"ssl-mode={p.ssl_mode}"]
    if p.ssl_mode == "DISABLED":
        return ["skip-ssl"]
    if p.ssl_mode == "PREFERRED":
        return lines
    verify = p.ssl_mode in ("VERIFY_CA", "VERIFY_IDENTITY")
    return [*lines, "ssl", "ssl-verify-server-cert" if verify else "skip-ssl-verify-server-cert"]


class OptionFile:
    """The ``[client]`` option file a client tool reads with ``--defaults-file=<path>``.

    Where the system has ``memfd_create`` (Linux) it lives in memory only: ``path`` is
    ``/dev/fd/<fd>``, the child gets the descriptor (``pass_fds``), and a killed process
    leaves no password behind. Elsewhere it is a mode-0600 file in the process's private
    temp folder (``tempfiles``), removed by ``close``, or at the next start of strongroom
    if the process was killed."""

    def __init__(self, path: Path, fd: int | None) -> None:
        self.path = path
        self.fd = fd

    @property
    def pass_fds(self) -> tuple[int, ...]:
        return (self.fd,) if self.fd is not None else ()

    def close(self) -> None:
        if self.fd is not None:
            with suppress(OSError):
                os.close(self.fd)
            self.fd = None
        else:
            self.path.unlink(missing_ok=True)


class MysqlConnection:
    """One database on one MySQL/MariaDB server: connections to it and its client tools."""

    def __init__(
        self,
        url: str | DatabaseUrl,
        *,
        tool_dirs: Sequence[str | os.PathLike[str]] | None = None,
    ) -> None:
        """``tool_dirs``: look for the client tools only there (default: the folder in
        ``$STRONGROOM_MYSQL_BINDIR``, else ``PATH``)."""
        self.dburl = url if isinstance(url, DatabaseUrl) else parse_database_url(url)
        self.params = parse_url(self.dburl)
        self._secrets = (self.params.password,) if self.params.password else ()
        if tool_dirs is None and os.environ.get(BINDIR_ENV):
            tool_dirs = [os.environ[BINDIR_ENV]]
        self.tool_dirs = None if tool_dirs is None else [Path(d) for d in tool_dirs]

    # --- naming and redaction ---------------------------------------------------------
    def redact(self, text: str) -> str:
        """``text`` without this connection's password (nor any other known secret)."""
        return redact_text(text, self._secrets)

    def describe(self) -> str:
        """The URL's display form (no part of the password)."""
        return self.dburl.redacted()

    def database_name(self) -> str:
        return self.params.database

    def host_port(self) -> str:
        """``host:port`` (or the socket path), for messages."""
        p = self.params
        return p.socket if p.socket else f"{p.host}:{p.port}"

    def where(self) -> str:
        return f"database {self.database_name()} at {self.host_port()}"

    def sibling(self, name: str) -> MysqlConnection:
        """The same server, credentials and tools, another database."""
        return MysqlConnection(self.dburl.with_database(name), tool_dirs=self.tool_dirs)

    # --- connections ------------------------------------------------------------------
    def connect_raw(self, database: str | None = None) -> pymysql.connections.Connection[Any]:
        """An autocommit connection in UTC; raises PyMySQL's own errors.

        The password goes as UTF-8 bytes: PyMySQL encodes a text password as latin-1,
        which fails on characters outside latin-1 and sends other bytes than the client
        tools (and than the server hashed) for any non-ASCII one."""
        p = self.params
        return pymysql.connect(
            user=p.user,
            password=(p.password or "").encode("utf-8"),
            host=p.host,
            port=p.port,
            unix_socket=p.socket,
            database=database,
            charset="utf8mb4",
            autocommit=True,
            connect_timeout=p.connect_timeout,
            ssl=ssl_context(p),
            ssl_disabled=True if p.ssl_mode == "DISABLED" else None,
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

    # --- client tools -----------------------------------------------------------------
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
        if p.ssl_mode or p.ssl_ca or p.ssl_cert or p.ssl_key:
            lines += tls_options(p, mariadb="mariadb" in self.tool(DUMP_TOOLS)[1].lower())
        return "\n".join(lines) + "\n"

    def write_option_file(self) -> OptionFile:
        """A new private option file (see :class:`OptionFile`); the caller closes it."""
        data = self.option_file_text().encode("utf-8")  # the clients take the bytes as-is
        if hasattr(os, "memfd_create"):
            try:
                fd = os.memfd_create("strongroom-my.cnf", 0)  # not inheritable; see pass_fds
            except OSError:  # ENOSYS: an old kernel, or a sandbox that forbids it
                logger.debug("memfd_create failed; the option file goes to a private folder")
            else:
                try:
                    os.fchmod(fd, 0o600)  # the clients ignore a world-writable option file
                    os.write(fd, data)
                except BaseException:
                    os.close(fd)
                    raise
                return OptionFile(Path(f"/dev/fd/{fd}"), fd)
        fd, name = tempfile.mkstemp(prefix="my-", suffix=".cnf", dir=tempfiles.private_dir())
        with os.fdopen(fd, "wb") as handle:  # mkstemp: mode 0600
            handle.write(data)
        return OptionFile(Path(name), None)

    @contextmanager
    def option_file(self) -> Iterator[OptionFile]:
        options = self.write_option_file()
        try:
            yield options
        finally:
            options.close()

    def tool(self, names: Sequence[str]) -> tuple[Path, str]:
        """The first runnable tool of ``names`` and its ``--version`` text."""
        return find_tool(names, self.tool_dirs)
