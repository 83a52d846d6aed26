"""Database URLs: parsed once into a :class:`DatabaseUrl`, which engines, messages and
redaction use (README.md, "Database URLs", has the table of accepted forms).

``parse_database_url`` reads every form popular frameworks and hosts write:

* ``postgres://``, ``postgresql://``, ``pgsql://`` (dj-database-url), SQLAlchemy dialects
  (``postgresql+psycopg2://``, ``+asyncpg``, …), libpq ``key=value`` strings;
* ``mysql://``, ``mariadb://``, ``mysql2://`` (Rails), ``mysql+pymysql://`` and friends;
* ``sqlite:////abs``, ``sqlite:///rel`` (see :mod:`strongroom.engines.url_params` for the
  rule that keeps ``sqlite:///abs`` working), ``file:./dev.db`` (Prisma), a plain path.

The userinfo of a network URL ends at the *last* ``@`` before the host, so a password
written with a raw ``@``, ``:``, ``/``, ``#``, ``?`` or ``%`` is read whole. A password
is percent-decoded only when it could have been written percent-encoded (no raw ``@ / ? #``
or space, and every ``%`` starts an escape). The password becomes a
:class:`~strongroom.redaction.Secret` at once, registered for redaction in all output.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from strongroom.engines.url_params import mysql_url, parse_conninfo, postgres_url, sqlite_file
from strongroom.engines.url_value import DatabaseUrl, EngineKind, decode, split_query
from strongroom.errors import UnsupportedDatabaseUrl
from strongroom.redaction import Secret, redact_url

__all__ = [
    "SQLITE_SUFFIXES",
    "DatabaseUrl",
    "EngineKind",
    "engine_kind",
    "parse_database_url",
    "sqlite_path",
]

SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")


_DIALECTS = {
    "postgres": EngineKind.POSTGRESQL,
    "postgresql": EngineKind.POSTGRESQL,
    "pgsql": EngineKind.POSTGRESQL,
    "postgis": EngineKind.POSTGRESQL,
    "mysql": EngineKind.MYSQL,
    "mysql2": EngineKind.MYSQL,
    "mariadb": EngineKind.MYSQL,
    "mysqlgis": EngineKind.MYSQL,
    "sqlite": EngineKind.SQLITE,
    "sqlite3": EngineKind.SQLITE,
    "file": EngineKind.SQLITE,
}
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
_CONNINFO = re.compile(r"\s*[A-Za-z_]+\s*=")
_HOSTPORT = re.compile(
    r"(?:\[[0-9A-Za-z:.%]*\]|[A-Za-z0-9._~%!$&'()*+;=-]*)(?::[0-9]*)?"
    r"(?:,(?:\[[0-9A-Za-z:.%]*\]|[A-Za-z0-9._~%!$&'()*+;=-]*)(?::[0-9]*)?)*"
)
_BAD_PORT = re.compile(r"(?:\[[0-9A-Za-z:.%]*\]|[A-Za-z0-9._~%-]*):[^:@\[\]]*")  # host:x
_MAYBE_ENCODED = re.compile(r"(?:[^%@/?#\s]|%[0-9A-Fa-f]{2})*")
_UNSUPPORTED = (
    "use postgresql://…, mysql://…, mariadb://…, sqlite:////absolute/path, "
    "file:./dev.db, a libpq key=value string, or a path ending .db, .sqlite or .sqlite3"
)


def dialect(text: str) -> str | None:
    """``postgresql+asyncpg://…`` -> ``postgresql``; ``None`` for text with no scheme."""
    match = _SCHEME.match(text)
    if not match or (len(match.group(1)) == 1 and text[1:2] == ":"):  # C:\ on Windows
        return None
    return match.group(1).split("+", 1)[0].lower()


def engine_kind(url: str | DatabaseUrl) -> EngineKind:
    """The engine of ``url`` from its scheme alone (``UnsupportedDatabaseUrl`` if none)."""
    if isinstance(url, DatabaseUrl):
        return url.kind
    name = dialect(url.strip())
    if name is not None and name in _DIALECTS:
        return _DIALECTS[name]
    if name is None or "://" not in url:
        stripped = url.strip()
        if _CONNINFO.match(stripped):
            return EngineKind.POSTGRESQL
        if stripped.lower().endswith(SQLITE_SUFFIXES):
            return EngineKind.SQLITE
    raise UnsupportedDatabaseUrl(f"unsupported database URL {_shown(url)}: {_UNSUPPORTED}")


def _shown(text: str) -> str:
    """``text`` for a message about a form strongroom cannot read, so never parsed: only
    its scheme when it has one, nothing when it may hold a password (``@``, ``=``)."""
    stripped = text.strip()
    if "://" in stripped:
        return repr(stripped.split("://", 1)[0][:40] + "://…")
    if "@" in stripped or "=" in stripped:
        return "(not shown: it may hold a password)"
    return repr(redact_url(stripped))


def _password(written: str, shown: str) -> Secret:
    """The password as meant: percent-decoded only if it could be percent-encoded text."""
    if _MAYBE_ENCODED.fullmatch(written) and "%" in written:
        Secret(written)  # registered before decoding can fail
        return Secret(decode(written, "password", shown), written)
    if "\0" in written:
        raise UnsupportedDatabaseUrl(f"the password in the URL {shown} holds a NUL character")
    return Secret(written)


@dataclass(frozen=True)
class _Network:
    """The pieces of ``scheme://userinfo@hostport/path?query``, not yet decoded."""

    scheme: str
    user: str | None
    password: Secret | None
    hostport: str
    path: str
    query: str


def _split_network(text: str, scheme: str) -> _Network:
    rest = text.split("://", 1)[1]
    shown = f"{scheme}://…"
    user: str | None = None
    password: Secret | None = None
    hostpart = rest
    for at in (i for i in range(len(rest) - 1, -1, -1) if rest[i] == "@"):
        userinfo, tail = rest[:at], rest[at + 1 :]
        name = userinfo.split(":", 1)[0]
        if re.search(r"[/?#\s]", name):
            continue  # a user holds none of these: this '@' is in a path or query
        host_end = re.search(r"[/?#]", tail)
        if not _HOSTPORT.fullmatch(tail[: host_end.start()] if host_end else tail):
            continue
        name, colon, written = userinfo.partition(":")
        if colon:
            password = _password(written, shown)
        user = decode(name, "user", shown) if name else None
        hostpart = tail
        break
    host_end = re.search(r"[/?#]", hostpart)
    hostport = hostpart[: host_end.start()] if host_end else hostpart
    after = hostpart[len(hostport) :]
    if not _HOSTPORT.fullmatch(hostport):
        tails = [rest, *(rest[i + 1 :] for i, c in enumerate(rest) if c == "@")]
        if any(_BAD_PORT.fullmatch(re.split(r"[/?#]", tail, maxsplit=1)[0]) for tail in tails):
            raise UnsupportedDatabaseUrl(
                f"the port in the URL {scheme}://… is not a number from 1 to 65535: write "
                f"{scheme}://user:password@host:5432/database"
            )
        raise UnsupportedDatabaseUrl(
            f"cannot read the host of the URL {scheme}://…: write "
            f"{scheme}://user:password@host:port/database"
        )
    path, _, query = after.partition("?")
    if not path.startswith("/") and path:  # '#…': a fragment, nothing strongroom uses
        path = ""
    path = path.split("#", 1)[0]
    query = query.split("#", 1)[0]
    return _Network(scheme, user, password, hostport, path, query)


def _split_hostport(hostport: str, shown: str) -> tuple[str | None, int | None, str | None]:
    """``(host, port, ports)``: ``ports`` is the comma list of a multi-host URL."""
    hosts: list[str] = []
    ports: list[str] = []
    for item in hostport.split(","):
        if item.startswith("["):
            host, _, port = item[1:].partition("]")
            port = port[1:]
        else:
            host, _, port = item.partition(":")
        hosts.append(decode(host, "host", shown))
        ports.append(port)
    if any(p and not 0 < int(p) <= 65535 for p in ports):  # digits: _HOSTPORT
        raise UnsupportedDatabaseUrl(f"the port in the URL {shown} is not a number from 1 to 65535")
    joined = ",".join(hosts) or None
    if len(ports) == 1:
        return joined, int(ports[0]) if ports[0] else None, None
    return joined, None, ",".join(ports)


def parse_database_url(text: str) -> DatabaseUrl:
    """Parse any accepted form (``UnsupportedDatabaseUrl`` with one line if it cannot)."""
    stripped = text.strip()
    kind = engine_kind(stripped)
    if kind is EngineKind.SQLITE:
        return DatabaseUrl(kind, dialect(stripped) or "sqlite", path=sqlite_file(stripped))
    if "://" not in stripped:
        return parse_conninfo(stripped)
    scheme = stripped.split("://", 1)[0]
    net = _split_network(stripped, scheme.lower())
    shown = f"{net.scheme}://…"
    host, port, ports = _split_hostport(net.hostport, shown)
    database = decode(net.path[1:], "database name", shown) if len(net.path) > 1 else None
    query = split_query(net.query, shown)
    if ports is not None:
        query.append(("port", ports))
    base = DatabaseUrl(
        kind, net.scheme, host, port, net.user, net.password, database, None, {}, None
    )
    if kind is EngineKind.POSTGRESQL:
        return postgres_url(base, query)
    return mysql_url(base, query)


def sqlite_path(url: str | DatabaseUrl) -> Path:
    """The file path of a SQLite URL or of a plain path (any name: staged files too)."""
    if isinstance(url, DatabaseUrl):
        if url.path is None:
            raise UnsupportedDatabaseUrl(f"{url.redacted()} is not a SQLite database")
        return url.path
    return sqlite_file(url.strip())
