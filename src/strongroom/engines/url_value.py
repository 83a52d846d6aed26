"""The parsed form of a database URL: :class:`DatabaseUrl` (made by
:func:`strongroom.engines.urls.parse_database_url`), and the decoding rules its parts share."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import quote, unquote_to_bytes

from strongroom.errors import UnsupportedDatabaseUrl
from strongroom.redaction import Secret


class EngineKind(enum.Enum):
    POSTGRESQL = "postgresql"
    MYSQL = "mysql"
    SQLITE = "sqlite"


@dataclass(frozen=True)
class DatabaseUrl:
    """Where a database is and how to reach it, parsed from the text the user wrote.

    ``params`` are ready for the engine: libpq keywords for PostgreSQL (TLS parameters
    included), normalised options for MySQL (``ssl_mode``, ``ssl_ca``, …); parameters
    meant for other programs are already dropped (and named at info level). ``socket``:
    a Unix socket (MySQL) or socket folder (PostgreSQL). ``path``: the SQLite file."""

    kind: EngineKind
    scheme: str
    host: str | None = None
    port: int | None = None
    user: str | None = None
    password: Secret | None = None
    database: str | None = None
    socket: str | None = None
    params: Mapping[str, str] = field(default_factory=dict)
    path: Path | None = None
    conninfo: bool = False  # written as a libpq key=value string

    def with_database(self, name: str) -> DatabaseUrl:
        """The same server and credentials, another database."""
        return replace(self, database=name)

    def host_port(self) -> str:
        """``host:port`` (or the socket), for messages; ``localhost`` when none is given."""
        if self.socket:
            return self.socket
        host = self.host or "localhost"
        shown = f"[{host}]" if ":" in host else host
        return f"{shown}:{self.port}" if self.port is not None else shown

    def redacted(self) -> str:
        """The display form: never any part of the password (``***`` stands for it)."""
        if self.kind is EngineKind.SQLITE:
            return str(self.path)
        secret = _SECRET_PARAMS
        shown_params = {k: v for k, v in self.params.items() if k not in secret}
        if self.conninfo:
            pairs = {
                "host": self.socket or self.host,
                "port": None if self.port is None else str(self.port),
                "dbname": self.database,
                "user": self.user,
                "password": None if self.password is None else "***",
                **shown_params,
            }
            return " ".join(f"{k}={v}" for k, v in pairs.items() if v is not None)
        userinfo = quote(self.user or "", safe="")
        if self.password is not None:
            userinfo += ":***"
        host = "" if self.socket else (self.host or "")
        if ":" in host and "," not in host:
            host = f"[{host}]"
        netloc = f"{userinfo}@{host}" if userinfo else host
        if self.port is not None and not self.socket:
            netloc += f":{self.port}"
        text = f"{self.scheme}://{netloc}"
        if self.database is not None:
            text += "/" + quote(self.database, safe="")
        query = dict(shown_params)
        if self.socket:
            query["host" if self.kind is EngineKind.POSTGRESQL else "unix_socket"] = self.socket
        if query:
            text += "?" + "&".join(f"{k}={quote(v, safe='/:,')}" for k, v in query.items())
        return text

    def __str__(self) -> str:
        return self.redacted()


_SECRET_PARAMS = frozenset({"password", "sslpassword", "oauth_client_secret"})


def decode(text: str, what: str, shown: str) -> str:
    """A percent-decoded URL part; its bytes must be UTF-8 and hold no NUL. The message
    never shows the part."""
    try:
        value = unquote_to_bytes(text).decode("utf-8")
    except UnicodeDecodeError:
        raise UnsupportedDatabaseUrl(
            f"the {what} in the URL {shown} is not valid UTF-8 once percent-decoded: "
            "percent-encode its UTF-8 bytes (e.g. ä as %C3%A4)"
        ) from None
    if "\0" in value:
        raise UnsupportedDatabaseUrl(
            f"the {what} in the URL {shown} holds a NUL character (%00), "
            "which the database client tools cannot take"
        )
    return value


def split_query(query: str, shown: str) -> list[tuple[str, str]]:
    """``a=1&b=2`` -> ``[("a", "1"), ("b", "2")]``, percent-decoded (``+`` stays ``+``)."""
    pairs = []
    for item in query.split("&"):
        if not item:
            continue
        key, _, value = item.partition("=")
        pairs.append((decode(key, "parameter name", shown), decode(value, "parameter", shown)))
    return pairs
