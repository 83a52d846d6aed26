"""Recognise which engine a database URL belongs to."""

from __future__ import annotations

import enum
from pathlib import Path

from strongroom.errors import UnsupportedDatabaseUrl
from strongroom.redaction import redact_url

SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")


class EngineKind(enum.Enum):
    POSTGRESQL = "postgresql"
    MYSQL = "mysql"
    SQLITE = "sqlite"


def engine_kind(url: str) -> EngineKind:
    """Classify ``url``: ``postgres(ql)://``, ``mysql://``, ``mariadb://``,
    ``sqlite:///abs/path`` or a ``.db`` path."""
    lowered = url.lower()
    if lowered.startswith(("postgres://", "postgresql://")):
        return EngineKind.POSTGRESQL
    if lowered.startswith(("mysql://", "mariadb://")):
        return EngineKind.MYSQL
    if lowered.startswith("sqlite:"):
        return EngineKind.SQLITE
    if "://" not in url and url.lower().endswith(SQLITE_SUFFIXES):
        return EngineKind.SQLITE
    raise UnsupportedDatabaseUrl(
        f"unsupported database URL {redact_url(url)!r}: use postgresql://…, "
        "mysql://…, mariadb://…, sqlite:///absolute/path, or a path ending .db, .sqlite or .sqlite3"
    )


def sqlite_path(url: str) -> Path:
    """The file path of a SQLite URL (``sqlite:///abs/path``) or plain path."""
    if url.lower().startswith("sqlite:"):
        rest = url[len("sqlite:") :]
        if not rest.startswith("///"):
            raise UnsupportedDatabaseUrl(
                f"SQLite URL {url!r} must be sqlite:///absolute/path (three slashes)"
            )
        path = rest[2:].split("?", 1)[0]
        if not path or path == "/":
            raise UnsupportedDatabaseUrl(f"SQLite URL {url!r} names no file")
        return Path(path)
    return Path(url).expanduser().absolute()
