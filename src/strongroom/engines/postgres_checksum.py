"""Row counts and content checksums of PostgreSQL tables and large objects.

One scan per table gives the row count and an order-independent content checksum: the sum
(numeric, so it cannot overflow) of a 64-bit hash of each row. The dump records them inside
its snapshot; a restore or drill recomputes them on the restored copy and compares.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from typing import Any

import psycopg
from psycopg import sql

from strongroom.engines.base import TableStats

logger = logging.getLogger("strongroom.engines.postgres_checksum")

LARGE_OBJECTS = "(large objects)"

# Schemas that are never user data.
USER_NAMESPACES = """
    SELECT n.oid, n.nspname FROM pg_namespace n
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg\\_toast%'
      AND n.nspname NOT LIKE 'pg\\_temp\\_%'
"""

# Ordinary tables (partitions included, partitioned parents not: they hold no rows of
# their own), skipping temporary tables and tables that belong to an extension.
TABLES_SQL = f"""
    WITH ns AS ({USER_NAMESPACES})
    SELECT ns.nspname, c.relname
    FROM pg_class c JOIN ns ON ns.oid = c.relnamespace
    WHERE c.relkind = 'r' AND c.relpersistence <> 't'
      AND NOT EXISTS (
        SELECT 1 FROM pg_depend d
        WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
    ORDER BY 1, 2
"""

_COUNT_AND_RECORD_HASH = (
    "SELECT count(*), coalesce(sum(hash_record_extended(t, 0)), 0) FROM {}.{} AS t"
)
_COUNT_AND_TEXT_HASH = (
    "SELECT count(*), coalesce(sum(hashtextextended(t::text, 0)), 0) FROM {}.{} AS t"
)
RECORD_HASH_PREFIX = "rec64sum:"
TEXT_HASH_PREFIX = "h64sum:"


def count_and_checksum(
    cur: psycopg.Cursor[Any], schema: str, name: str, *, server_version: int
) -> TableStats:
    """Row count and checksum of one table, inside the caller's transaction."""
    table = (sql.Identifier(schema), sql.Identifier(name))
    qualified = f"{schema}.{name}"
    if server_version >= 140000:
        cur.execute("SAVEPOINT strongroom_checksum")
        try:
            row = cur.execute(sql.SQL(_COUNT_AND_RECORD_HASH).format(*table)).fetchone()
            cur.execute("RELEASE SAVEPOINT strongroom_checksum")
            if row:
                return TableStats(qualified, int(row[0]), f"{RECORD_HASH_PREFIX}{row[1]}")
        except psycopg.errors.UndefinedFunction:
            cur.execute("ROLLBACK TO SAVEPOINT strongroom_checksum")
    row = cur.execute(sql.SQL(_COUNT_AND_TEXT_HASH).format(*table)).fetchone()
    if not row:
        return TableStats(qualified, 0)
    return TableStats(qualified, int(row[0]), f"{TEXT_HASH_PREFIX}{row[1]}")


def large_object_stats(cur: psycopg.Cursor[Any]) -> TableStats | None:
    """``(large objects)``: their count, or ``None`` when the database has none."""
    row = cur.execute("SELECT count(*) FROM pg_largeobject_metadata").fetchone()
    count = int(row[0]) if row else 0
    return TableStats(name=LARGE_OBJECTS, rows=count) if count > 0 else None


def snapshot_table_stats(
    conn: psycopg.Connection[Any], should_stop: Callable[[], bool] = lambda: False
) -> list[TableStats]:
    """Row counts and checksums of all user tables (``schema.table``) plus ``(large
    objects)``, on ``conn`` inside its current transaction (the dump's snapshot)."""
    stats: list[TableStats] = []
    version = conn.info.server_version
    with conn.cursor() as cur:
        tables = cur.execute(TABLES_SQL).fetchall()
        for schema, name in tables:
            if should_stop():
                return stats
            stats.append(count_and_checksum(cur, schema, name, server_version=version))
        large_objects = large_object_stats(cur)
        if large_objects is not None:
            stats.append(large_objects)
    return sorted(stats, key=lambda s: s.name)


def parallel_table_stats(
    connect: Callable[[], psycopg.Connection[Any]],
    *,
    workers: int,
    lift_forced_rls: bool = False,
) -> list[TableStats]:
    """The same statistics as :func:`snapshot_table_stats`, scanning tables in parallel on
    up to ``workers`` autocommit connections made by ``connect`` (for a restored copy that
    nobody else writes to)."""
    del lift_forced_rls  # TODO
    with connect() as conn:
        tables = conn.execute(TABLES_SQL).fetchall()
        version = conn.info.server_version
        with conn.cursor() as cur:
            large_objects = large_object_stats(cur)
    local = threading.local()
    connections: list[psycopg.Connection[Any]] = []
    lock = threading.Lock()

    def measure(schema: str, name: str) -> TableStats:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = connect()
            with lock:
                connections.append(conn)
            conn.execute("BEGIN READ ONLY")
        with conn.cursor() as cur:
            return count_and_checksum(cur, schema, name, server_version=version)

    count = max(1, min(workers, len(tables)))
    try:
        with ThreadPoolExecutor(max_workers=count, thread_name_prefix="sr-stats") as pool:
            stats = list(pool.map(lambda t: measure(t[0], t[1]), tables))
    finally:
        for conn in connections:
            with suppress(psycopg.Error):
                conn.close()
    if large_objects is not None:
        stats.append(large_objects)
    return sorted(stats, key=lambda s: s.name)
