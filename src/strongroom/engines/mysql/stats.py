"""Row counts and content checksums of MySQL/MariaDB tables (one scan per table).

The checksum of a table is the sum (exact, ``DECIMAL``) over its rows of the first 64 bits
of ``MD5`` of a row image built on the server:

* every stored column, in column order, each part cast to ``BINARY`` (its bytes in the
  column's own character set, so columns of different character sets never need a common
  collation), joined by the byte ``0x1f``;
* ``QUOTE(col)`` for ordinary columns: the value's text form quoted and escaped, or the bare
  word ``NULL``, so ``NULL``, ``'NULL'`` and ``''`` all differ and no separator can be faked;
* ``IFNULL(MD5(col), 'N')`` for BLOB/TEXT/JSON/spatial columns (their raw bytes hashed first,
  so a row image never outgrows ``max_allowed_packet``);
* generated columns and system-versioning period columns are left out (they are derived,
  and a restore gives period columns new timestamps).

Text forms are what ``mysqldump`` writes, so a restored copy renders every value the same:
floats print the same digits they were dumped with, DECIMAL keeps its scale, TIMESTAMP is
read in UTC (every strongroom session sets ``time_zone = '+00:00'``), binary columns are
compared byte for byte. The sum does not depend on row order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from strongroom.engines.base import TableStats
from strongroom.engines.mysql.connection import MysqlConnection

# "md5bin64": the row image is built from binary strings (see the module docstring); the
# earlier "md5sum64" coerced text to one character set and failed with ERROR 1270 ("Illegal
# mix of collations") on a latin1 table with a TEXT column. Checksums of different methods
# are never compared (``engines.base.checksum_method``): older backups are checked on rows.
CHECKSUM_PREFIX = "md5bin64:"

_HASHED_TYPES = frozenset(
    {
        "tinyblob",
        "blob",
        "mediumblob",
        "longblob",
        "tinytext",
        "text",
        "mediumtext",
        "longtext",
        "json",
        "geometry",
        "point",
        "linestring",
        "polygon",
        "multipoint",
        "multilinestring",
        "multipolygon",
        "geometrycollection",
    }
)

# Tables RENAME TABLE moves; only the first two hold rows we count.
COUNTED_TYPES = ("BASE TABLE", "SYSTEM VERSIONED")
MOVABLE_TYPES = (*COUNTED_TYPES, "SEQUENCE")

# Engines whose tables take part in a --single-transaction snapshot.
TRANSACTIONAL_ENGINES = frozenset({"innodb", "xtradb", "rocksdb", "tokudb", "ndbcluster"})


def quote_ident(name: str) -> str:
    """A backquoted identifier."""
    return "`" + name.replace("`", "``") + "`"


@dataclass(frozen=True)
class TableShape:
    """A table and the columns its checksum covers: (name, data type)."""

    name: str
    engine: str | None
    columns: tuple[tuple[str, str], ...]


def _skipped_column(extra: str) -> bool:
    extra = extra.upper()
    return any(
        word in extra for word in ("GENERATED", "VIRTUAL", "PERSISTENT", "ROW START", "ROW END")
    )


def list_tables(cursor: Any, database: str) -> list[TableShape]:
    """The database's tables with rows (base and system-versioned), sorted by name."""
    cursor.execute(
        "SELECT TABLE_NAME, ENGINE FROM information_schema.TABLES"
        " WHERE TABLE_SCHEMA = %s AND TABLE_TYPE IN %s",
        (database, COUNTED_TYPES),
    )
    engines = {str(row[0]): (str(row[1]) if row[1] is not None else None) for row in cursor}
    cursor.execute(
        "SELECT TABLE_NAME, COLUMN_NAME, DATA_TYPE, EXTRA FROM information_schema.COLUMNS"
        " WHERE TABLE_SCHEMA = %s ORDER BY TABLE_NAME, ORDINAL_POSITION",
        (database,),
    )
    columns: dict[str, list[tuple[str, str]]] = {}
    for table, column, data_type, extra in cursor:
        if str(table) in engines and not _skipped_column(str(extra or "")):
            columns.setdefault(str(table), []).append((str(column), str(data_type).lower()))
    return [
        TableShape(name, engines[name], tuple(columns.get(name, ()))) for name in sorted(engines)
    ]


def non_transactional(shapes: Iterable[TableShape]) -> list[str]:
    """``table (ENGINE)`` of tables a --single-transaction dump cannot read consistently."""
    return [
        f"{s.name} ({s.engine})"
        for s in shapes
        if s.engine is not None and s.engine.lower() not in TRANSACTIONAL_ENGINES
    ]


def checksum_query(database: str, shape: TableShape) -> str:
    """``SELECT count, checksum`` of one table (see the module docstring)."""
    parts = [
        f"CAST(IFNULL(MD5({quote_ident(c)}), 'N') AS BINARY)"
        if kind in _HASHED_TYPES
        else f"CAST(QUOTE({quote_ident(c)}) AS BINARY)"
        for c, kind in shape.columns
    ] or ["''"]
    row = f"CONCAT_WS(x'1f', {', '.join(parts)})"
    return (
        f"SELECT COUNT(*), COALESCE(SUM(CAST(CONV(LEFT(MD5({row}), 16), 16, 10) AS UNSIGNED)), 0)"
        f" FROM {quote_ident(database)}.{quote_ident(shape.name)}"
    )


def count_tables(
    cursor: Any,
    database: str,
    shapes: Iterable[TableShape],
    should_stop: Callable[[], bool] = lambda: False,
) -> list[TableStats]:
    """Row count and checksum of each table (run inside a snapshot for consistency)."""
    stats: list[TableStats] = []
    for shape in shapes:
        if should_stop():
            break
        cursor.execute(checksum_query(database, shape))
        row = cursor.fetchone()
        rows, total = (int(row[0]), int(row[1])) if row else (0, 0)
        stats.append(TableStats(shape.name, rows, f"{CHECKSUM_PREFIX}{total}"))
    return sorted(stats, key=lambda s: s.name)


def count_rows_only(cursor: Any, database: str, shapes: Iterable[TableShape]) -> list[TableStats]:
    """Row counts without checksums (for the restore plan)."""
    stats = []
    for shape in shapes:
        cursor.execute(f"SELECT COUNT(*) FROM {quote_ident(database)}.{quote_ident(shape.name)}")
        row = cursor.fetchone()
        stats.append(TableStats(shape.name, int(row[0]) if row else 0))
    return stats


def snapshot_stats(db: MysqlConnection) -> list[TableStats]:
    """Row counts and checksums of the database of ``db`` now (one snapshot)."""
    name = db.database_name()
    with db.connect(name) as conn, conn.cursor() as cur:
        cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        try:
            return count_tables(cur, name, list_tables(cur, name))
        finally:
            cur.execute("ROLLBACK")


def row_counts(db: MysqlConnection) -> list[TableStats]:
    """Row counts (no checksums) of the database of ``db``, for the restore plan."""
    name = db.database_name()
    with db.connect(name) as conn, conn.cursor() as cur:
        return count_rows_only(cur, name, list_tables(cur, name))
