"""Database engines, chosen from the URL."""

from __future__ import annotations

from strongroom.engines.base import DumpResult, Engine, RunningDump, TableStats
from strongroom.engines.urls import DatabaseUrl, EngineKind, engine_kind, parse_database_url

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
    if kind != EngineKind.SQLITE.value:
        return None
    from strongroom.engines.sqlite import SqliteEngine
    from strongroom.tempfiles import private_dir

    return SqliteEngine(str(private_dir() / f"{name}.db"))
