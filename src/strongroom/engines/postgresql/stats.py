"""Row counts and content checksums of PostgreSQL tables and large objects.

One scan per table gives the row count and an order-independent content checksum: the sum
(numeric, so it cannot overflow) of a 64-bit hash of each row. The dump records them inside
its snapshot (:func:`snapshot_table_stats`); a restore or drill recomputes them on the
restored copy (:func:`parallel_table_stats`) and compares.

The checksum must be equal wherever the same rows are restored: in another database, on
another server of the same major version. So each row is hashed in a *portable form*:

* the columns are taken by name (byte order), not by position, so a column order that a
  restore changes (inheritance, partitions attached with another column order) does not
  matter; dropped columns are skipped, generated columns are included;
* a column of a *hash-portable* type is hashed by its type's own hash function: built-in
  base types whose hash depends only on the value (integers, floats, numeric, text and
  friends, bytea, bool, date/time types, interval, uuid, jsonb, inet/cidr, macaddr(8),
  oid, xid, tid, pg_lsn), arrays, domains, ranges and multiranges of those;
  text under a non-deterministic collation (whose hash comes from ICU) is hashed
  ``COLLATE "C"`` (its bytes);
* every other column is hashed in its *text form* as its output function writes it
  (``ROW(col)::text COLLATE "C"``): enums (their hash is of an OID), reg* types, aclitem,
  composites, ranges over such types, types without a hash function (json, xml, money,
  geometric types, bit, tsvector...), every type outside ``pg_catalog``; the settings the
  text forms depend on are pinned by :func:`prepare_session`.

The row hash is ``hash_record_extended(ROW(<columns>), 0)`` (PostgreSQL 14+). Older servers
hash the text form of that row instead (``hashtextextended``). A checksum reads
``<method>:<sum>``; the method names the algorithm and the server's major version (e.g.
``pgrow2.pg15``), because hash functions and text forms may change between major
versions: callers compare two checksums only when ``engines.base.checksum_method`` gives the same
method for both (backups made before this module have ``rec64sum:``/``h64sum:`` checksums,
computed on a form that was not portable).

Values equal under their type's equality hash alike (``0``/``-0``, numeric ``1.0``/``1.00``,
interval ``'1 day'``/``'24 hours'``); pg_dump/pg_restore reproduce each exactly.

Large objects (``(large objects)``): their count and a checksum over (OID, content), read
with ``lo_get`` in 1 MiB pieces (pg_restore keeps their OIDs).

Row-level security: :func:`prepare_session` sets ``row_security = off``, so a table whose
policies would hide rows from the current user raises instead of counting fewer rows.
On a database strongroom has just restored itself, :func:`parallel_table_stats` with
``lift_forced_rls=True`` lifts a forced policy inside a transaction that it rolls back.

``STRONGROOM_PG_CHECKSUMS=0`` counts rows only (no checksums), to measure their cost.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from strongroom.engines.base import TableStats
from strongroom.errors import DatabaseError, RowSecurityBlocked

logger = logging.getLogger("strongroom.engines.postgresql.stats")

LARGE_OBJECTS = "(large objects)"
CHECKSUMS_ENV = "STRONGROOM_PG_CHECKSUMS"

# Schemas that are never user data.
USER_NAMESPACES = """
    SELECT n.oid, n.nspname FROM pg_namespace n
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg\\_toast%'
      AND n.nspname NOT LIKE 'pg\\_temp\\_%'
"""

# Ordinary tables (partitions included, partitioned parents not: they hold no rows of
# their own), skipping temporary tables and tables that belong to an extension.
_TABLE_FILTER = """
    FROM pg_class c JOIN ns ON ns.oid = c.relnamespace
    WHERE c.relkind = 'r' AND c.relpersistence <> 't'
      AND NOT EXISTS (
        SELECT 1 FROM pg_depend d
        WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
"""
TABLES_SQL = f"""
    WITH ns AS ({USER_NAMESPACES})
    SELECT ns.nspname, c.relname
    {_TABLE_FILTER}
    ORDER BY 1, 2
"""
# The same tables with what row-level security needs: (oid, schema, name, owner,
# FORCE ROW LEVEL SECURITY, whether policies apply to the current user).
_TABLE_DETAILS_SQL = f"""
    WITH ns AS ({USER_NAMESPACES})
    SELECT c.oid::int8, ns.nspname, c.relname, pg_get_userbyid(c.relowner),
           c.relforcerowsecurity, row_security_active(c.oid)
    {_TABLE_FILTER}
    ORDER BY 2, 3
"""
_COLUMNS_SQL = """
    SELECT a.attrelid::int8, a.attname, a.atttypid::int8, {nondeterministic}
    FROM pg_attribute a
    LEFT JOIN pg_collation co ON co.oid = a.attcollation
    WHERE a.attrelid = ANY(%s::oid[]) AND a.attnum > 0 AND NOT a.attisdropped
"""
_TYPE_SQL = """
    SELECT t.typtype, t.typnamespace = 'pg_catalog'::regnamespace, t.typname, t.typcategory,
           t.typelem::int8, t.typlen, t.typbasetype::int8,
           r.rngsubtype::int8, coalesce(rc.collisdeterministic, true), mr.rngtypid::int8,
           EXISTS (SELECT 1 FROM pg_type e WHERE e.oid = t.typelem AND e.typarray = t.oid)
    FROM pg_type t
    LEFT JOIN pg_range r ON r.rngtypid = t.oid
    LEFT JOIN pg_collation rc ON rc.oid = r.rngcollation
    LEFT JOIN pg_range mr ON mr.rngmultitypid = t.oid
    WHERE t.oid = %s::oid
"""

# Built-in base types whose hash function depends only on the value (never on an OID, a
# locale or a library version), checked against the server by the tests. Their arrays,
# domains, ranges and multiranges are portable too.
PORTABLE_BASE_TYPES = frozenset(
    {
        "bool",
        "bpchar",
        "bytea",
        "char",
        "cid",
        "cidr",
        "date",
        "float4",
        "float8",
        "inet",
        "int2",
        "int4",
        "int8",
        "interval",
        "jsonb",
        "macaddr",
        "macaddr8",
        "name",
        "numeric",
        "oid",
        "pg_lsn",
        "text",
        "tid",
        "time",
        "timestamp",
        "timestamptz",
        "timetz",
        "uuid",
        "varchar",
        "xid",
        "xid8",
    }
)

ROW_METHOD = "pgrow2"  # hash_record_extended over a ROW of portable columns (14+)
TEXT_METHOD = "pgtext2"  # hashtextextended of the text form of that ROW (before 14)
LARGE_OBJECT_METHOD = "pglo2"  # hashes of (OID, offset, 1 MiB piece) of every large object
LO_PIECE = 1 << 20

# Session settings the text forms depend on, and those a long scan must not trip over.
SESSION_SETTINGS: tuple[tuple[str, str], ...] = (
    ("TimeZone", "UTC"),
    ("DateStyle", "ISO, YMD"),
    ("IntervalStyle", "postgres"),
    ("extra_float_digits", "3"),
    ("bytea_output", "hex"),
    ("lc_monetary", "C"),
    ("search_path", "pg_catalog"),  # reg* values print schema-qualified
    ("row_security", "off"),  # a policy that would hide rows raises instead
    ("statement_timeout", "0"),
    ("idle_in_transaction_session_timeout", "0"),
)


def method_name(algorithm: str, server_version: int) -> str:
    """``pgrow2`` on server_version 150004 -> ``pgrow2.pg15``."""
    return f"{algorithm}.pg{server_version // 10000}"


def checksums_enabled() -> bool:
    """False when ``STRONGROOM_PG_CHECKSUMS`` is ``0``/``false``/``no``/``off`` (count only)."""
    value = os.environ.get(CHECKSUMS_ENV, "").strip().lower()
    return value not in ("0", "false", "no", "off")


def prepare_session(conn: psycopg.Connection[Any]) -> None:
    """Pin the session settings the checksums depend on (see :data:`SESSION_SETTINGS`).

    Session-level ``set_config(name, value, false)``: it works inside the dump's read-only
    REPEATABLE READ transaction as well as on an autocommit connection (inside a
    transaction, a rollback of that transaction undoes it). Call it on every connection
    before counting; :func:`snapshot_table_stats` and :func:`parallel_table_stats` call it
    themselves, so calling it earlier too is harmless."""
    settings = list(SESSION_SETTINGS)
    if conn.info.server_version >= 170000:
        settings.append(("transaction_timeout", "0"))
    query = sql.SQL("SELECT {}").format(
        sql.SQL(", ").join(sql.SQL("set_config(%s, %s, false)") for _ in settings)
    )
    conn.execute(query, [v for pair in settings for v in pair])


# --- the plan of one table ------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    name: str
    type_oid: int
    nondeterministic: bool  # its collation is non-deterministic (ICU, e.g. case-insensitive)


@dataclass(frozen=True)
class TableInfo:
    oid: int
    schema: str
    name: str
    owner: str
    force_rls: bool
    rls_active: bool  # row-level security policies apply to the current user

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class TablePlan:
    table: TableInfo
    query: sql.Composed  # SELECT count(*), checksum (or count(*) alone)
    method: str | None  # None: row count only
    text_columns: tuple[str, ...] = ()  # columns hashed in their text form


class TypeClassifier:
    """Whether a type's own hash function is portable (see the module docstring); cached."""

    def __init__(self, cur: psycopg.Cursor[Any]) -> None:
        self._cur = cur
        self._cache: dict[int, bool] = {}

    def portable(self, type_oid: int) -> bool:
        if type_oid in self._cache:
            return self._cache[type_oid]
        self._cache[type_oid] = False  # no type contains itself, but never loop
        result = self._classify(type_oid)
        self._cache[type_oid] = result
        return result

    def _classify(self, type_oid: int) -> bool:
        row = self._cur.execute(_TYPE_SQL, (type_oid,)).fetchone()
        if row is None:
            return False
        kind, builtin, name, category, elem, length, base, subtype, deterministic, rng, array = row
        if kind == "d":
            return self.portable(int(base))
        if kind == "r":
            return bool(deterministic) and subtype is not None and self.portable(int(subtype))
        if kind == "m":
            return rng is not None and self.portable(int(rng))
        if kind != "b":
            return False  # enums, composites, pseudo-types
        if category == "A" and elem and length == -1 and (array or builtin):
            return self.portable(int(elem))  # arrays (and int2vector, oidvector)
        return bool(builtin) and str(name) in PORTABLE_BASE_TYPES  # not extension types


def column_expression(column: Column, portable: bool) -> sql.Composable:
    """The column as it goes into the row hash: itself, or its text form.

    The text form is the type's output function, as ``COPY`` (and so ``pg_dump``) writes
    it: ``ROW(col)::text`` calls it even where a cast to text is binary-coercible and would
    show the stored bytes instead (``xml`` keeps a ``<?xml version="1.0"?>`` declaration
    that its output function, and so a restored copy, drops)."""
    ident = sql.SQL("t.{}").format(sql.Identifier(column.name))
    if not portable:
        return sql.SQL('(ROW({})::text COLLATE "C")').format(ident)
    if column.nondeterministic:
        return sql.SQL('({} COLLATE "C")').format(ident)
    return ident


def _table_ref(table: TableInfo) -> sql.Composable:
    return sql.SQL("{}.{} AS t").format(sql.Identifier(table.schema), sql.Identifier(table.name))


def plan_table(
    table: TableInfo,
    columns: Sequence[Column],
    classifier: TypeClassifier | None,
    *,
    server_version: int,
    checksums: bool = True,
) -> TablePlan:
    """The count-and-checksum query of one table (``classifier`` on 14+ only)."""
    if not checksums:
        query = sql.SQL("SELECT count(*), NULL FROM {}").format(_table_ref(table))
        return TablePlan(table, query, None)
    ordered = sorted(columns, key=lambda c: c.name.encode())
    if server_version < 140000 or classifier is None:
        items: list[sql.Composable] = [
            sql.SQL("t.{}").format(sql.Identifier(c.name)) for c in ordered
        ]
        row_hash = sql.SQL('hashtextextended((ROW({})::text COLLATE "C"), 0)').format(
            sql.SQL(", ").join(items)
        )
        method = method_name(TEXT_METHOD, server_version)
        text_columns = tuple(c.name for c in ordered)
    else:
        portable = [classifier.portable(c.type_oid) for c in ordered]
        items = [column_expression(c, p) for c, p in zip(ordered, portable, strict=True)]
        row_hash = sql.SQL("hash_record_extended(ROW({}), 0)").format(sql.SQL(", ").join(items))
        method = method_name(ROW_METHOD, server_version)
        text_columns = tuple(c.name for c, p in zip(ordered, portable, strict=True) if not p)
    query = sql.SQL("SELECT count(*), coalesce(sum({}), 0) FROM {}").format(
        row_hash, _table_ref(table)
    )
    return TablePlan(table, query, method, text_columns)


def list_tables(cur: psycopg.Cursor[Any]) -> list[TableInfo]:
    """The user tables (as :data:`TABLES_SQL`) with their row-level security state."""
    return [
        TableInfo(int(r[0]), str(r[1]), str(r[2]), str(r[3]), bool(r[4]), bool(r[5]))
        for r in cur.execute(_TABLE_DETAILS_SQL).fetchall()
    ]


def plan_tables(
    cur: psycopg.Cursor[Any],
    tables: Sequence[TableInfo],
    *,
    checksums: bool | None = None,
    server_version: int | None = None,
) -> list[TablePlan]:
    """The queries of ``tables``: reads their columns and classifies the column types.

    ``checksums`` defaults to :func:`checksums_enabled`; ``server_version`` (default: the
    server's) may name an older version to get its form (the text form before 14)."""
    if checksums is None:
        checksums = checksums_enabled()
    connected = cur.connection.info.server_version
    version = connected if server_version is None else server_version
    columns: dict[int, list[Column]] = {t.oid: [] for t in tables}
    if checksums and tables:
        nondeterministic = (
            "coalesce(NOT co.collisdeterministic, false)" if connected >= 120000 else "false"
        )
        query = _COLUMNS_SQL.format(nondeterministic=nondeterministic)
        for relid, name, type_oid, nondet in cur.execute(query, ([t.oid for t in tables],)):
            columns[int(relid)].append(Column(str(name), int(type_oid), bool(nondet)))
    classifier = TypeClassifier(cur) if version >= 140000 else None
    return [
        plan_table(t, columns[t.oid], classifier, server_version=version, checksums=checksums)
        for t in tables
    ]


def run_plan(cur: psycopg.Cursor[Any], plan: TablePlan) -> TableStats:
    """Row count and checksum of one table, inside the caller's transaction."""
    row = cur.execute(plan.query).fetchone()
    if row is None:
        return TableStats(plan.table.qualified, 0)
    checksum = f"{plan.method}:{row[1]}" if plan.method is not None else None
    return TableStats(plan.table.qualified, int(row[0]), checksum)


# --- large objects ----------------------------------------------------------------------

# Every large object contributes (OID, offset, piece) rows for its 1 MiB pieces, read with
# lo_get (which needs SELECT on the object, as its owner has; pg_largeobject itself is for
# superusers only). An empty object still gives one (OID, 0, '') row.
_LARGE_OBJECTS_SQL = """
    WITH RECURSIVE piece(id, off, len, h) AS (
        SELECT m.oid, 0::int8, length(d.data), {hash_first}
        FROM pg_largeobject_metadata m CROSS JOIN LATERAL lo_get(m.oid, 0, {size}) AS d(data)
      UNION ALL
        SELECT p.id, p.off + {size}, length(d.data), {hash_next}
        FROM piece p CROSS JOIN LATERAL lo_get(p.id, p.off + {size}, {size}) AS d(data)
        WHERE p.len = {size}
    )
    SELECT count(*) FILTER (WHERE off = 0), coalesce(sum(h), 0) FROM piece
"""


def _large_objects_query(server_version: int, piece: int = LO_PIECE) -> str:
    if server_version >= 140000:
        first = "hash_record_extended(ROW(m.oid, 0::int8, d.data), 0)"
        following = f"hash_record_extended(ROW(p.id, p.off + {piece}, d.data), 0)"
    else:
        first = "hashtextextended(concat_ws(':', m.oid, 0, encode(sha256(d.data), 'hex')), 0)"
        following = (
            f"hashtextextended(concat_ws(':', p.id, p.off + {piece}, "
            "encode(sha256(d.data), 'hex')), 0)"
        )
    return _LARGE_OBJECTS_SQL.format(hash_first=first, hash_next=following, size=piece)


def large_object_stats(
    cur: psycopg.Cursor[Any], *, checksums: bool | None = None, piece: int = LO_PIECE
) -> TableStats | None:
    """``(large objects)``: their count and checksum, or ``None`` when there are none."""
    row = cur.execute("SELECT count(*) FROM pg_largeobject_metadata").fetchone()
    count = int(row[0]) if row else 0
    if count == 0:
        return None
    if checksums is None:
        checksums = checksums_enabled()
    if not checksums:
        return TableStats(name=LARGE_OBJECTS, rows=count)
    version = cur.connection.info.server_version
    try:
        row = cur.execute(_large_objects_query(version, piece).encode()).fetchone()
    except psycopg.errors.InsufficientPrivilege as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatabaseError(
            f"cannot read the large objects to checksum them ({reason}); count them as a "
            "superuser or as their owner"
        ) from None
    assert row is not None
    method = method_name(LARGE_OBJECT_METHOD, version)
    return TableStats(name=LARGE_OBJECTS, rows=int(row[0]), checksum=f"{method}:{row[1]}")


# --- row-level security -------------------------------------------------------------------


def _check_visible(tables: Iterable[TableInfo], *, lifting: bool, user: str = "") -> None:
    """Raise :class:`RowSecurityBlocked` if policies apply to the current user on any of
    ``tables`` (unless ``lifting``: they will be lifted table by table)."""
    hidden = [t for t in tables if t.rls_active]
    if not hidden or lifting:
        return
    names = ", ".join(t.qualified for t in hidden[:5]) + (", ..." if len(hidden) > 5 else "")
    owners = sorted({t.owner for t in hidden})
    forced = any(t.force_rls for t in hidden)
    who = f"user {user}" if user else "the current user"
    raise RowSecurityBlocked(
        f"row-level security policies of {names} apply to {who}: counting would miss the "
        "rows they hide; verify as a superuser or a role with BYPASSRLS"
        + (
            f", or as the tables' owner ({', '.join(owners)})"
            + (" once FORCE ROW LEVEL SECURITY is lifted" if forced else "")
        )
    )


def _lifted(cur: psycopg.Cursor[Any], plan: TablePlan) -> TableStats:
    """Count a table whose policies apply to the current user, in a database strongroom
    restored itself: inside a transaction that is always rolled back, act as its owner
    (``SET LOCAL ROLE`` when the current user is a member of the owner role that does not
    inherit its privileges) and ``ALTER TABLE ... NO FORCE ROW LEVEL SECURITY``."""
    table = plan.table
    version = cur.connection.info.server_version
    cur.execute("BEGIN")
    try:
        row = cur.execute(
            "SELECT current_user, pg_has_role(%s, 'USAGE'), pg_has_role(%s, %s)",
            (table.owner, table.owner, "SET" if version >= 160000 else "MEMBER"),
        ).fetchone()
        assert row is not None
        user, owner_privileges, may_become_owner = str(row[0]), bool(row[1]), bool(row[2])
        if not (owner_privileges or may_become_owner):
            raise RowSecurityBlocked(
                f"row-level security policies of {table.qualified} apply to user {user}, "
                f"which is not a member of its owner {table.owner}: counting would miss the "
                "rows they hide; verify as a superuser, a role with BYPASSRLS or a member of "
                f"role {table.owner}"
            )
        try:
            if not owner_privileges:
                cur.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(table.owner)))
            if table.force_rls:
                cur.execute(
                    sql.SQL("ALTER TABLE {}.{} NO FORCE ROW LEVEL SECURITY").format(
                        sql.Identifier(table.schema), sql.Identifier(table.name)
                    )
                )
            active = cur.execute("SELECT row_security_active(%s::oid)", (table.oid,)).fetchone()
            if active and active[0]:
                raise RowSecurityBlocked(
                    f"row-level security policies of {table.qualified} still apply after "
                    f"lifting them as {table.owner}; verify as a superuser or a role with "
                    "BYPASSRLS"
                )
            logger.info("counting %s with its row-level security lifted", table.qualified)
            return run_plan(cur, plan)
        except psycopg.errors.InsufficientPrivilege as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RowSecurityBlocked(
                f"row-level security policies of {table.qualified} apply to user {user} and "
                f"could not be lifted as its owner {table.owner} ({reason}); verify as a "
                "superuser or a role with BYPASSRLS"
            ) from None
    finally:
        with suppress(psycopg.Error):
            cur.execute("ROLLBACK")


# --- all tables ---------------------------------------------------------------------------


def snapshot_table_stats(
    conn: psycopg.Connection[Any], should_stop: Callable[[], bool] = lambda: False
) -> list[TableStats]:
    """Row counts and checksums of all user tables (``schema.table``) plus ``(large
    objects)``, on ``conn`` inside its current transaction (the dump's snapshot).

    Callers should call :func:`prepare_session` on ``conn`` before counting; this function
    calls it too (session-level settings, harmless to repeat). Raises
    :class:`RowSecurityBlocked` if row-level security would hide rows of a table."""
    prepare_session(conn)
    stats: list[TableStats] = []
    with conn.cursor() as cur:
        tables = list_tables(cur)
        user_row = cur.execute("SELECT current_user").fetchone()
        _check_visible(tables, lifting=False, user=str(user_row[0]) if user_row else "")
        for plan in plan_tables(cur, tables):
            if should_stop():
                return stats
            stats.append(run_plan(cur, plan))
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
    """The same statistics as :func:`snapshot_table_stats`, scanning tables (and large
    objects) in parallel on up to ``workers`` autocommit connections made by ``connect``,
    each table in its own read-only transaction (for a restored copy that nobody else
    writes to). Every connection is prepared with :func:`prepare_session`.

    ``lift_forced_rls``: only for a database strongroom has just restored itself (nobody
    else uses it): tables whose row-level security policies apply to the current user are
    counted with them lifted inside a rolled-back transaction (see :func:`_lifted`). Without
    it, or when they cannot be lifted, :class:`RowSecurityBlocked` is raised."""
    with connect() as conn:
        prepare_session(conn)
        with conn.cursor() as cur:
            tables = list_tables(cur)
            user_row = cur.execute("SELECT current_user").fetchone()
            _check_visible(
                tables, lifting=lift_forced_rls, user=str(user_row[0]) if user_row else ""
            )
            plans = plan_tables(cur, tables)
            row = cur.execute("SELECT EXISTS (SELECT 1 FROM pg_largeobject_metadata)").fetchone()
            has_large_objects = bool(row and row[0])
    local = threading.local()
    connections: list[psycopg.Connection[Any]] = []
    lock = threading.Lock()

    def measure(plan: TablePlan | None) -> TableStats | None:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = connect()
            with lock:
                connections.append(conn)
            prepare_session(conn)
            local.conn = conn
        with conn.cursor() as cur:
            if plan is not None and plan.table.rls_active:
                return _lifted(cur, plan)
            cur.execute("BEGIN READ ONLY")
            try:
                return run_plan(cur, plan) if plan is not None else large_object_stats(cur)
            finally:
                with suppress(psycopg.Error):
                    cur.execute("ROLLBACK")

    jobs: list[TablePlan | None] = list(plans)
    if has_large_objects:
        jobs.insert(0, None)  # large objects first: often the longest job
    count = max(1, min(workers, len(jobs)))
    try:
        with ThreadPoolExecutor(max_workers=count, thread_name_prefix="sr-stats") as pool:
            results = list(pool.map(measure, jobs))
    finally:
        for conn in connections:
            with suppress(psycopg.Error):
                conn.close()
    stats = [s for s in results if s is not None]
    return sorted(stats, key=lambda s: s.name)
