"""Where a MySQL/MariaDB database is and how to reach it: the URL, connections, the
private option file of the client tools, and finding those tools.

URLs: ``mysql://user:pass@host:port/db`` or ``mariadb://…``; ``?unix_socket=/path`` (or
``?socket=``) connects through a Unix socket. Percent-encoded parts are UTF-8; the password
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
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote_to_bytes, urlsplit, urlunsplit

import pymysql

from strongroom import tempfiles
from strongroom.engines.mysql.tools import (
    BINDIR_ENV,
    error_code,
    error_text,
    find_tool,
    option_value,
)
from strongroom.errors import DatabaseAuthFailed, DatabaseUnreachable, UnsupportedDatabaseUrl
from strongroom.redaction import redact_text, redact_url

logger = logging.getLogger("strongroom.engines.mysql")

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


_INVALID_URL = (
    "invalid MySQL URL: write mysql://user:password@host:port/database and "
    "percent-encode special characters (# / ? @ : space) in the user and password"
)


def _decode(text: str, what: str, shown: str) -> str:
    """A percent-decoded URL part; its bytes must be UTF-8 and hold no NUL (the option
    file of the client tools cannot carry one). The message never shows the part."""
    try:
        value = unquote_to_bytes(text).decode("utf-8")
    except UnicodeDecodeError:
        raise UnsupportedDatabaseUrl(
            f"the {what} in the MySQL URL {shown} is not valid UTF-8 once percent-decoded: "
            "percent-encode its UTF-8 bytes (e.g. ä as %C3%A4)"
        ) from None
    if "\0" in value:
        raise UnsupportedDatabaseUrl(
            f"the {what} in the MySQL URL {shown} holds a NUL character (%00), "
            "which the MySQL client tools cannot take"
        )
    return value


def parse_url(url: str) -> ConnParams:
    """Parse ``mysql://`` / ``mariadb://`` URLs (``UnsupportedDatabaseUrl`` if malformed)."""
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port or 3306
        username, password, hostname = parts.username, parts.password, parts.hostname
    except ValueError:  # the text may hold pieces of the password: do not show it
        raise UnsupportedDatabaseUrl(_INVALID_URL) from None
    if parts.scheme.lower() not in ("mysql", "mariadb"):
        raise UnsupportedDatabaseUrl(f"not a MySQL URL: {shown}")
    database = _decode(parts.path.lstrip("/"), "database name", shown)
    if not database or "/" in database:
        raise UnsupportedDatabaseUrl(f"MySQL URL {shown} must name one database: …/dbname")
    try:
        query = parse_qs(parts.query, keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise UnsupportedDatabaseUrl(
            f"the parameters of the MySQL URL {shown} are not valid UTF-8 once percent-decoded"
        ) from None
    socket = next((query[k][-1] for k in _URL_PARAMS_SOCKET if query.get(k)), None)
    if socket and "\0" in socket:
        raise UnsupportedDatabaseUrl(f"the socket path in the MySQL URL {shown} holds a NUL")
    for key in query:
        if key not in _URL_PARAMS_SOCKET:
            logger.warning("ignoring the URL parameter %r (strongroom reads only unix_socket)", key)
    return ConnParams(
        user=_decode(username, "user", shown) if username else getpass.getuser(),
        password=_decode(password, "password", shown) if password is not None else None,
        host=hostname or "localhost",
        port=port,
        socket=socket or None,
        database=database,
    )


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
        self, url: str, *, tool_dirs: Sequence[str | os.PathLike[str]] | None = None
    ) -> None:
        """``tool_dirs``: look for the client tools only there (default: the folder in
        ``$STRONGROOM_MYSQL_BINDIR``, else ``PATH``)."""
        self.url = url
        self.params = parse_url(url)
        written = urlsplit(url).password  # parse_url has checked that urlsplit works
        self._secrets = tuple({secret for secret in (self.params.password, written) if secret})
        if tool_dirs is None and os.environ.get(BINDIR_ENV):
            tool_dirs = [os.environ[BINDIR_ENV]]
        self.tool_dirs = None if tool_dirs is None else [Path(d) for d in tool_dirs]

    # --- naming and redaction ---------------------------------------------------------
    def redact(self, text: str) -> str:
        """``text`` with URL passwords and this connection's password removed (as
        written in the URL, percent-encoded, and decoded)."""
        return redact_text(text, self._secrets)

    def describe(self) -> str:
        """The URL with its password redacted."""
        return self.redact(redact_url(self.url))

    def database_name(self) -> str:
        return self.params.database

    def host_port(self) -> str:
        """``host:port`` (or the socket path), for messages."""
        p = self.params
        return p.socket if p.socket else f"{p.host}:{p.port}"

    def where(self) -> str:
        return f"database {self.database_name()} at {self.host_port()}"

    def sibling_url(self, name: str) -> str:
        """The URL of another database on the same server, with the same credentials."""
        parts = urlsplit(self.url)
        return urlunsplit(parts._replace(path="/" + quote(name, safe="")))

    def sibling(self, name: str) -> MysqlConnection:
        """The same server, credentials and tools, another database."""
        return MysqlConnection(self.sibling_url(name), tool_dirs=self.tool_dirs)

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
