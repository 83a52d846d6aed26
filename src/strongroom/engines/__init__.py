"""Database engines, chosen from the URL.

The names below load on first use (PEP 562 ``__getattr__``): ``wal-push``, which PostgreSQL
runs once per WAL segment, imports ``engines.postgresql.wal`` and must not pay for the URL
parser and the engines' base classes."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from strongroom.engines.base import DumpResult, Engine, RunningDump, TableStats
    from strongroom.engines.urls import (
        DatabaseUrl,
        EngineKind,
        engine_kind,
        parse_database_url,
    )

_LAZY = {
    "DumpResult": "strongroom.engines.base",
    "Engine": "strongroom.engines.base",
    "RunningDump": "strongroom.engines.base",
    "TableStats": "strongroom.engines.base",
    "DatabaseUrl": "strongroom.engines.urls",
    "EngineKind": "strongroom.engines.urls",
    "engine_kind": "strongroom.engines.urls",
    "parse_database_url": "strongroom.engines.urls",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "DatabaseUrl",
    "DumpResult",
    "Engine",
    "EngineKind",
    "RunningDump",
    "TableStats",
    "engine_kind",
    "open_engine",
    "parse_database_url",
    "serverless_scratch",
]


def open_engine(url: str | DatabaseUrl) -> Engine:
    """Return the engine that serves ``url``, parsed once here (raises
    ``UnsupportedDatabaseUrl``)."""
    from strongroom.engines.urls import DatabaseUrl, EngineKind, parse_database_url

    parsed = url if isinstance(url, DatabaseUrl) else parse_database_url(url)
    kind = parsed.kind
    if kind is EngineKind.POSTGRESQL:
        from strongroom.engines.postgresql import PostgresEngine

        return PostgresEngine(parsed)
    if kind is EngineKind.MYSQL:
        from strongroom.engines.mysql import MysqlEngine

        return MysqlEngine(parsed)
    from strongroom.engines.sqlite import SqliteEngine

    return SqliteEngine(parsed)


def serverless_scratch(kind: str, name: str) -> Engine | None:
    """A throwaway database ``name`` of engine ``kind`` that needs no server (SQLite: a file
    in this process's private temp folder, swept if the process is killed), or ``None`` for
    engines that live on a server."""
    from strongroom.engines.urls import EngineKind

    if kind != EngineKind.SQLITE.value:
        return None
    from strongroom.engines.sqlite import SqliteEngine
    from strongroom.tempfiles import private_dir

    return SqliteEngine(str(private_dir() / f"{name}.db"))
