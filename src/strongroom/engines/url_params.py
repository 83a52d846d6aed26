"""What the parts of a database URL mean to each engine: URL parameters (kept, mapped,
or dropped with an info line), the SQLite path rules, libpq ``key=value`` strings, and
the refusal of transaction-mode connection poolers. Used by
:func:`strongroom.engines.urls.parse_database_url` only.

SQLite ``sqlite:///p`` (three slashes, ``p`` not starting with ``/``, ``.`` or ``~``)
means ``/p`` for strongroom since its first release and ``./p`` for SQLAlchemy. The rule:
``/p`` if that file exists; else ``./p`` if that file exists; else (neither exists yet)
``/p`` if its folder exists and the folder of ``./p`` does not; else ``./p``.
``sqlite:////p`` is always ``/p``, ``sqlite:///./p`` always ``./p``.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import replace
from functools import cache
from pathlib import Path

from strongroom.engines.url_value import DatabaseUrl, EngineKind
from strongroom.errors import UnsupportedDatabaseUrl
from strongroom.redaction import Secret, redact_text, register_secret

logger = logging.getLogger("strongroom.engines.urls")

SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
POOLER_PARAM = "strongroom_allow_pooler"
POOLER_ENV = "STRONGROOM_ALLOW_POOLER"
POOLER_PORT = 6543  # Supabase's (and many PgBouncer set-ups') transaction-mode port
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}

# Parameters of other programs' connection pools and drivers: dropped, named at info.
_PRISMA = {
    "connection_limit",
    "pool_timeout",
    "socket_timeout",
    "statement_cache_size",
    "sslaccept",
    "sslidentity",
    "max_connection_lifetime",
    "max_idle_connection_lifetime",
}
_APP_PG = _PRISMA | {
    # Rails (database.yml keys in DATABASE_URL), Django, SQLAlchemy/asyncpg, node-postgres
    "pool",
    "timeout",
    "encoding",
    "reconnect",
    "prepared_statements",
    "advisory_locks",
    "reaping_frequency",
    "checkout_timeout",
    "idle_timeout",
    "statement_limit",
    "variables",
    "schema_search_path",
    "min_messages",
    "conn_max_age",
    "conn_health_checks",
    "prepared_statement_cache_size",
    "server_settings",
    "command_timeout",
    "max",
    "idletimeoutmillis",
    "connectiontimeoutmillis",
}
_SSLMODES = {
    "disable": "disable",
    "allow": "allow",
    "prefer": "prefer",
    "require": "require",
    "verify-ca": "verify-ca",
    "verify-full": "verify-full",
    "no-verify": "require",  # node-postgres
}


@cache
def libpq_keywords() -> frozenset[str]:
    """The connection keywords of the libpq psycopg uses."""
    from psycopg import pq

    return frozenset(o.keyword.decode() for o in pq.Conninfo.get_defaults())


def _dropped(names: Iterable[str], why: str) -> None:
    names = sorted(set(names))
    if names:
        logger.info(
            "ignoring the URL parameter%s %s (%s)", "s" * (len(names) > 1), ", ".join(names), why
        )


# --- PostgreSQL -------------------------------------------------------------------------
def postgres_url(base: DatabaseUrl, query: list[tuple[str, str]]) -> DatabaseUrl:
    """``base`` with the URL's query applied: libpq keywords kept, others dropped."""
    known = libpq_keywords()
    fields: dict[str, object] = {}
    params: dict[str, str] = {}
    flags: dict[str, str] = {}
    framework: list[str] = []
    unknown: list[str] = []
    for key, value in query:
        lowered = key.lower()
        if lowered in ("host", "port", "user", "dbname", "password"):
            fields[lowered] = value
        elif lowered in known:
            params[lowered] = value
        elif lowered in ("ssl", "pgbouncer", "schema", POOLER_PARAM):
            flags[lowered] = value
        elif lowered in _APP_PG:
            framework.append(f"{key}={value}" if lowered != "sslidentity" else key)
        else:
            unknown.append(key)
    return _postgres(base, fields, params, flags, framework, unknown)


def _postgres(
    base: DatabaseUrl,
    fields: dict[str, object],
    params: dict[str, str],
    flags: dict[str, str],
    framework: list[str],
    unknown: list[str],
) -> DatabaseUrl:
    if "sslpassword" in params:
        register_secret(params["sslpassword"])
    url = base
    if "password" in fields:
        url = replace(url, password=Secret(str(fields["password"])))
    if "user" in fields:
        url = replace(url, user=str(fields["user"]) or None)
    if "dbname" in fields:
        url = replace(url, database=str(fields["dbname"]) or None)
    if "port" in fields:
        port = str(fields["port"])
        _check_ports(port, url)
        if port.isdigit():
            url = replace(url, port=int(port))
        elif port:
            params["port"] = port  # a comma list for several hosts
    host = str(fields["host"]) if "host" in fields else url.host
    if host and host.startswith("/") and "," not in host:
        url = replace(url, host=None, socket=host)
    else:
        url = replace(url, host=host or None)
    ssl = flags.get("ssl", "").lower()
    if ssl and "sslmode" not in params:
        mode = "require" if ssl in _TRUE else "disable" if ssl in _FALSE else _SSLMODES.get(ssl)
        if mode:
            params["sslmode"] = mode
        else:
            framework.append(f"ssl={flags['ssl']}")
    if "sslmode" in params:
        params["sslmode"] = _SSLMODES.get(params["sslmode"].lower(), params["sslmode"])
    if "schema" in flags:
        logger.info(
            "the URL parameter schema=%s names the application's schema; a backup covers "
            "the whole database (every schema)",
            flags["schema"],
        )
    _dropped(framework, "meant for the application's driver or connection pool")
    if unknown:
        logger.warning(
            "ignoring the URL parameter%s %s: PostgreSQL's client library does not know %s",
            "s" * (len(unknown) > 1),
            ", ".join(sorted(set(unknown))),
            "them" if len(unknown) > 1 else "it",
        )
    url = replace(url, params=params)
    _refuse_pooler(url, flags)
    return url


def _check_ports(ports: str, url: DatabaseUrl) -> None:
    """Each port of ``ports`` (a comma list for several hosts) is empty or 1 to 65535 in
    ASCII digits (``str.isdigit`` also takes ``²`` and ``٣``)."""
    for port in ports.split(","):
        port = port.strip()
        if port and not (port.isascii() and port.isdigit() and 0 < int(port) <= 65535):
            shown = "a libpq connection string" if url.conninfo else f"the URL {url.scheme}://…"
            raise UnsupportedDatabaseUrl(
                f"the port in {shown} is not a number from 1 to 65535: write e.g. port=5432"
            )


def _refuse_pooler(url: DatabaseUrl, flags: dict[str, str]) -> None:
    """A transaction-mode pooler hands each statement to any server connection: pg_dump's
    snapshot, session settings and locks do not hold. Refuse, naming the direct way."""
    pgbouncer = flags.get("pgbouncer", "").lower() in _TRUE
    ports = {url.port, *(int(p) for p in url.params.get("port", "").split(",") if p.strip())}
    if not pgbouncer and POOLER_PORT not in ports:
        return
    allowed = flags.get(POOLER_PARAM, os.environ.get(POOLER_ENV, "")).lower() in _TRUE
    why = "pgbouncer=true" if pgbouncer else f"port {POOLER_PORT}"
    if allowed:
        logger.info("the URL looks like a connection pooler (%s); allowed by the user", why)
        return
    host = url.host or "localhost"
    user = url.user or ""
    if "pooler.supabase.com" in host.lower() and user.startswith("postgres."):
        ref = user.split(".", 1)[1]
        direct = f"db.{ref}.supabase.co:5432 as user postgres (Supabase's direct connection)"
    elif "pooler.supabase.com" in host.lower():
        direct = "db.<project ref>.supabase.co:5432 (Supabase's direct connection)"
    else:
        direct = f"port 5432 on the same host ({host}:5432)"
        if pgbouncer:
            direct = f"the database server itself without pgbouncer=true, e.g. {direct}"
    raise UnsupportedDatabaseUrl(
        f"{url.redacted()} goes through a transaction-mode connection pooler ({why}), "
        f"which cannot run pg_dump correctly: use the direct connection, {direct} "
        f"(if this pooler runs in session mode, add ?{POOLER_PARAM}=1 or set {POOLER_ENV}=1)"
    )


# the text after a password keyword up to the next ``key=`` (all of it may be the password)
_SECRET_VALUE = re.compile(
    r"(?i)(?:password|sslpassword|oauth_client_secret)\s*=\s*(.*?)(?=\s+\w+\s*=|$)", re.S
)


def parse_conninfo(text: str) -> DatabaseUrl:
    """A libpq ``key=value`` string (``host=db port=5432 dbname=shop password='…'``)."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        raw = conninfo_to_dict(text)
    except psycopg.Error as exc:
        reason = redact_text(str(exc).strip().splitlines()[0] if str(exc).strip() else "")
        # libpq quotes the word it stopped at: with ``password=my secret`` that is
        # ``secret``, a piece of the password no parse has registered yet
        quoted = " ".join(m[1] for m in _SECRET_VALUE.finditer(text))
        reason = re.sub(r'"([^"]*)"', lambda m: '"…"' if m[1] in quoted else m[0], reason)
        raise UnsupportedDatabaseUrl(f"invalid libpq connection string: {reason}") from None
    values = {k: str(v) for k, v in raw.items() if v is not None}
    fields: dict[str, object] = {
        k: values.pop(k) for k in ("host", "port", "user", "dbname", "password") if k in values
    }
    base = DatabaseUrl(EngineKind.POSTGRESQL, "postgresql", conninfo=True)
    return _postgres(base, fields, values, {}, [], [])


# --- MySQL ------------------------------------------------------------------------------
_MY_MODES = {
    "disabled": "DISABLED",
    "disable": "DISABLED",
    "preferred": "PREFERRED",
    "prefer": "PREFERRED",
    "required": "REQUIRED",
    "require": "REQUIRED",
    "verify_ca": "VERIFY_CA",
    "verify_identity": "VERIFY_IDENTITY",
    "verify_full": "VERIFY_IDENTITY",
}
_MY_FILES = {
    "ssl_ca": "ssl_ca",
    "sslca": "ssl_ca",
    "sslrootcert": "ssl_ca",
    "ssl_cert": "ssl_cert",
    "sslcert": "ssl_cert",
    "ssl_key": "ssl_key",
    "sslkey": "ssl_key",
}


def _my_ssl(value: str) -> str | None:
    """``ssl=`` as Node's mysql/mysql2 and PHP stacks write it -> an ``ssl-mode``."""
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return "REQUIRED"
    if lowered in _FALSE:
        return "DISABLED"
    if lowered.startswith("{"):
        try:
            options = json.loads(value)
        except ValueError:
            return None
        if isinstance(options, dict):
            return "REQUIRED" if options.get("rejectUnauthorized") is False else "VERIFY_IDENTITY"
    return _MY_MODES.get(lowered.replace("-", "_"))


def mysql_url(base: DatabaseUrl, query: list[tuple[str, str]]) -> DatabaseUrl:
    """``base`` with the URL's query applied: socket, TLS and connect timeout kept (as
    ``ssl_mode``, ``ssl_ca``, ``ssl_cert``, ``ssl_key``, ``connect_timeout``); others
    dropped with an info line."""
    shown = f"{base.scheme}://…"
    if not base.database or "/" in base.database:
        raise UnsupportedDatabaseUrl(
            f"MySQL URL {base.redacted()} must name one database: …/dbname"
        )
    params: dict[str, str] = {}
    socket: str | None = None
    dropped: list[str] = []
    for key, value in query:
        name = key.lower().replace("-", "_")
        if name in ("unix_socket", "socket", "socketpath"):
            if "\0" in value:
                raise UnsupportedDatabaseUrl(
                    f"the socket path in the MySQL URL {shown} holds a NUL"
                )
            socket = value or None
            continue
        if name in _MY_FILES:
            params[_MY_FILES[name]] = value
            continue
        if name in ("connect_timeout", "connecttimeout") and value.isdigit():
            # Prisma and PHP write seconds; Node's mysql/mysql2 (connectTimeout) milliseconds
            seconds = int(value) if name == "connect_timeout" else -(-int(value) // 1000)
            params["connect_timeout"] = str(max(1, seconds))
            continue
        mode: str | None = None
        if name in ("ssl_mode", "sslmode"):
            mode = _MY_MODES.get(value.lower().replace("-", "_"))
        elif name == "ssl":
            mode = _my_ssl(value)
        elif name == "sslaccept":  # Prisma
            mode = {"strict": "VERIFY_IDENTITY", "accept_invalid_certs": "REQUIRED"}.get(value)
        if mode is None:
            dropped.append(f"{key}={value}")
        else:
            params["ssl_mode"] = mode
    if "ssl_ca" in params and "ssl_mode" not in params:
        params["ssl_mode"] = "VERIFY_CA"  # as the MySQL client does for --ssl-ca alone
    _dropped(
        dropped,
        "strongroom connects with utf8mb4 in UTC and reads only the socket, "
        "TLS and connect-timeout parameters",
    )
    return replace(base, socket=socket, params=params)


# --- SQLite -----------------------------------------------------------------------------
def _refuse_windows_path(text: str) -> None:
    """``sqlite:///C:/app.db`` (SQLAlchemy on Windows) would be the relative ``./C:/app.db``
    here: refuse it rather than back up or restore into a folder named ``C:``."""
    scheme, colon, rest = text.partition(":")
    if len(scheme) == 1 and colon and rest[:1] in ("/", "\\"):
        drive = text
    elif scheme.split("+", 1)[0].lower() in ("sqlite", "sqlite3", "file") and _DRIVE.match(rest):
        drive = rest.lstrip("/")
    else:
        return
    raise UnsupportedDatabaseUrl(
        f"{redact_text(text)!r} names a Windows path ({drive[:3]}…): write the path of the "
        "SQLite file on this machine, e.g. sqlite:////srv/app/app.db"
    )


def _no_query(text: str) -> str:
    return text.split("?", 1)[0]


def _three_slashes(rest: str) -> Path:
    """``sqlite:///rest``: see the module docstring."""
    absolute, relative = Path("/" + rest), Path.cwd() / rest
    if absolute == relative or absolute.exists():
        return absolute
    if relative.exists():
        return relative
    if absolute.parent.is_dir() and not relative.parent.is_dir():
        return absolute
    return relative


_DRIVE = re.compile(r"/*[A-Za-z]:[/\\]")  # C:/… or C:\… (after sqlite:///, file:)


def sqlite_file(text: str) -> Path:
    """The file a SQLite URL (``sqlite:``, ``sqlite3:``, ``file:``) or plain path names."""
    _refuse_windows_path(text)
    scheme, colon, rest = text.partition(":")
    name = scheme.split("+", 1)[0].lower()
    if not colon or len(scheme) == 1 or name not in ("sqlite", "sqlite3", "file"):
        return Path(text).expanduser().absolute()  # a plain path
    rest = _no_query(rest)
    if rest.startswith("////"):
        path: Path | None = Path(rest[3:])
    elif rest.startswith("///"):
        inner = rest[3:]
        if not inner or inner == ":memory:":
            path = None
        elif name == "file":
            path = Path("/" + inner)
        elif inner.startswith((".", "~")):
            path = Path(inner).expanduser().absolute()
        else:
            path = _three_slashes(inner)
    elif rest.startswith("//"):
        inner = rest[2:]
        path = Path(inner) if inner.startswith("/") else None
    else:
        path = Path(rest).expanduser().absolute() if rest and rest != ":memory:" else None
    if path is None:
        raise UnsupportedDatabaseUrl(
            f"the SQLite URL {redact_text(text)!r} names no file (an in-memory database "
            "cannot be backed up): write sqlite:////absolute/path or sqlite:///relative/path"
        )
    return path
