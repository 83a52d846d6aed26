"""Row counts per table of every database of a cluster, for a base backup's manifest
(``backup --physical --row-counts``; docs/design.md, "Base backups").

A base backup copies files while the cluster runs, so no query sees the exact state it
recovers to. The counts are taken just before ``pg_basebackup`` starts, one
``REPEATABLE READ`` snapshot per database (every table of a database counted in the same
snapshot), with ``SELECT count(*) FROM ONLY table`` for each ordinary table and
materialized view (a partitioned table's rows are counted in its partitions). They record
what the cluster held at ``counted_at``: the size of each table to expect after a
restore to about that moment, and a check that a recovered copy holds the tables. They
cost one sequential scan of every table, which is why they are taken only when asked.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from strongroom.engines.postgresql.connection import PostgresServer
from strongroom.engines.tools import first_line
from strongroom.errors import DumpFailed

_TABLES = """
SELECT n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'm')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
ORDER BY 1, 2
"""


def table_key(schema: str, table: str) -> str:
    """``schema.table``, each part quoted as SQL needs it when it is not a plain lower-case
    name (so ``public."Orders"`` and a schema holding a dot are read back unambiguously)."""

    def part(name: str) -> str:
        plain = name.isidentifier() and name == name.lower() and name.isascii()
        return name if plain else '"' + name.replace('"', '""') + '"'

    return f"{part(schema)}.{part(table)}"


def count_database(server: PostgresServer, database: str) -> dict[str, int]:
    """``{"schema.table": rows}`` of one database, every table in one snapshot.

    Raises ``psycopg.Error`` (the caller names the database)."""
    with server.connect(database) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        with conn.transaction():
            names = conn.execute(_TABLES).fetchall()
            counts: dict[str, int] = {}
            for schema, table in names:
                query = sql.SQL("SELECT count(*) FROM ONLY {}.{}").format(
                    sql.Identifier(schema), sql.Identifier(table)
                )
                row = conn.execute(query).fetchone()
                counts[table_key(str(schema), str(table))] = int(row[0]) if row else 0
    return counts


def count_rows(server: PostgresServer, databases: list[str]) -> dict[str, Any]:
    """``{"counted_at": ISO time, "databases": {database: {"schema.table": rows}}}``.

    Raises ``DumpFailed`` naming the database whose tables could not be counted (no
    CONNECT or SELECT right for the backing-up role, a dropped database): a count that
    was asked for and is missing must not look like an empty database."""
    counted_at = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    result: dict[str, dict[str, int]] = {}
    for database in databases:
        try:
            result[database] = count_database(server, database)
        except psycopg.Error as exc:
            reason = server.redact(first_line(str(exc)))
            raise DumpFailed(
                f"cannot count the rows of database {database!r} for the base backup "
                f"(--row-counts): {reason}"
            ) from None
    return {"counted_at": counted_at, "databases": result}
