"""Database engines, chosen from the URL."""

from __future__ import annotations

from strongroom.engines.base import DumpResult, Engine, RunningDump, TableStats
from strongroom.engines.urls import EngineKind, engine_kind

__all__ = [
    "DumpResult",
    "Engine",
    "EngineKind",
    "RunningDump",
    "TableStats",
    "engine_kind",
    "open_engine",
    "serverless_scratch",
]


def open_engine(url: str) -> Engine:
    """Return the engine that serves ``url`` (raises ``UnsupportedDatabaseUrl``)."""
    kind = engine_kind(url)
    if kind is EngineKind.POSTGRESQL:
        from strongroom.engines.postgresql import PostgresEngine

        return PostgresEngine(url)
    if kind is EngineKind.MYSQL:
        from strongroom.engines.mysql import MysqlEngine

        return MysqlEngine(url)
    from strongroom.engines.sqlite import SqliteEngine

    return SqliteEngine(url)


def serverless_scratch(kind: str, name: str) -> Engine | None:
    """A throwaway database ``name`` of engine ``kind`` that needs no server (SQLite: a file
    in this process's private temp folder, swept if the process is killed), or ``None`` for
    engines that live on a server."""
    if kind != EngineKind.SQLITE.value:
        return None
    from strongroom.engines.sqlite import SqliteEngine
    from strongroom.tempfiles import private_dir

    return SqliteEngine(f"sqlite://{private_dir() / name}.db")
