"""The PostgreSQL engine, one module per job.

``connection`` (URL, connections, client tools), ``dump`` (pg_dump on a snapshot shared with
the row counts), ``stats`` (portable table checksums), ``state`` (the database object and
roles a dump leaves out, recorded), ``fidelity`` (checks before a restore, roles, the
database object put back, pg_restore's errors judged), ``restore`` (pg_restore runs),
``swap`` (the staged database into the target's place), ``toc`` and ``tables`` (one table),
``engine`` (the ``Engine`` protocol, tying them together); ``wal`` and ``physical`` (WAL
names and base backups, for point-in-time recovery).

The engine is imported on first use (PEP 562): ``wal-push``, which PostgreSQL runs once per
WAL segment, needs only ``wal`` and must not pay for psycopg's import (~140 ms).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from strongroom.engines.postgresql.engine import DUMP_FORMAT, KIND, PostgresEngine

__all__ = ["DUMP_FORMAT", "KIND", "PostgresEngine"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from strongroom.engines.postgresql import engine

        return getattr(engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
