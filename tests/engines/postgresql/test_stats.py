"""Portable PostgreSQL checksums (engines/postgres_checksum.py) on the real throwaway server.

A *type matrix* (one table per type, with NULLs) is dumped with the real engine and
restored into other databases of the same cluster (so every enum, type, function and
operator gets a new OID), one of them with other session settings and another default
collation: every table's row count and checksum must equal the dump's. Then, per type,
changing one value of one row must change that table's checksum."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from strongroom.engines.base import TableStats, checksum_method
from strongroom.engines.postgresql import PostgresEngine
from strongroom.engines.postgresql.stats import (
    CHECKSUMS_ENV,
    LARGE_OBJECTS,
    PORTABLE_BASE_TYPES,
    SESSION_SETTINGS,
    large_object_stats,
    list_tables,
    plan_tables,
    prepare_session,
    run_plan,
)
from tests.engines.postgresql.stats_matrix import (
    CASES,
    MIB,
    Case,
    Matrix,
    add_large_objects,
    by_name,
    chunks_of,
    create_cases,
    dump_to_file,
    table_of,
)
from tests.fixtures.postgres import PgServer, unique_db_name


@pytest.fixture(scope="module")
def matrix(pg_server: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Matrix]:
    """The type matrix in a source database, dumped, and restored into a new database."""
    source, target = unique_db_name("mx_src"), unique_db_name("mx_dst")
    pg_server.create_database(source)
    try:
        cases, skipped = create_cases(pg_server, source)
        add_large_objects(pg_server, source)
        path = tmp_path_factory.mktemp("checksum") / "matrix.dump"
        result = dump_to_file(PostgresEngine(pg_server.url(source)), path)
        PostgresEngine(pg_server.url(target)).restore(chunks_of(path))
        yield Matrix(pg_server, source, target, path, result, cases, skipped)
    finally:
        pg_server.drop_database(target)
        pg_server.drop_database(source)


# --- small pieces ---------------------------------------------------------------------------
def test_checksum_method_is_the_part_before_the_first_colon() -> None:
    assert checksum_method("pgrow2.pg15:-123") == "pgrow2.pg15"
    assert checksum_method("rec64sum:42") == "rec64sum"
    assert checksum_method("h64sum:1:2") == "h64sum"


def test_prepare_session_pins_settings_inside_the_dump_transaction(
    pg_server: PgServer, pg_db: str
) -> None:
    name = pg_db.rsplit("/", 1)[1]
    pg_server.psql(name, f"ALTER DATABASE {name} SET timezone = 'Asia/Tokyo'")
    with psycopg.connect(pg_db, autocommit=True) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        prepare_session(conn)
        for setting, value in SESSION_SETTINGS:
            row = conn.execute("SELECT current_setting(%s)", (setting,)).fetchone()
            assert row is not None
            assert row[0] == value, setting
        conn.execute("COMMIT")
        row = conn.execute("SELECT current_setting('TimeZone')").fetchone()
        assert row == ("UTC",)  # session-level: it outlives the transaction


def test_portable_base_types_have_an_extended_hash_function(pg_server: PgServer) -> None:
    with pg_server.connect() as conn:
        for name in sorted(PORTABLE_BASE_TYPES):
            query = sql.SQL("SELECT hash_record_extended(ROW(NULL::pg_catalog.{}), 0)")
            conn.execute(query.format(sql.Identifier(name)))


# --- the type matrix: equal after a restore -------------------------------------------------
def test_every_type_restores_with_an_equal_checksum(matrix: Matrix) -> None:
    expected = matrix.result.tables
    assert all(t.checksum for t in expected)
    assert {checksum_method(t.checksum or "") for t in expected if t.name != LARGE_OBJECTS} == {
        f"pgrow2.pg{matrix.server.version}"
    }
    names = {t.name for t in expected}
    for c in matrix.cases:
        assert table_of(c) in names
    assert {"public.User", "app.Things", "public.no_columns", LARGE_OBJECTS} <= names
    actual = by_name(PostgresEngine(matrix.server.url(matrix.target)).table_stats())
    assert sorted(actual) == sorted(names)
    differing = [n for n in sorted(names) if actual[n] != by_name(expected)[n]]
    assert differing == []


def test_restored_with_other_session_settings_and_collation_still_equal(
    matrix: Matrix,
) -> None:
    server = matrix.server
    name = unique_db_name("mx_cfg")
    icu = bool(server.query(matrix.source, "SELECT 1 FROM pg_collation WHERE collprovider = 'i'"))
    locale = (
        "LOCALE_PROVIDER icu ICU_LOCALE 'de-DE' LOCALE 'C.UTF-8'"
        if icu and server.version >= 15
        else "LOCALE 'C.UTF-8'"
    )
    with server.connect() as conn:
        try:
            conn.execute(f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' {locale}")
        except psycopg.Error:  # no C.UTF-8 locale here: the settings still differ
            conn.execute(f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8'")
    try:
        for setting in (
            "timezone = 'Asia/Tokyo'",
            "DateStyle = 'SQL, DMY'",
            "IntervalStyle = 'sql_standard'",
            "extra_float_digits = 0",
            "bytea_output = 'escape'",
            "search_path = app, public",
            "row_security = on",
        ):
            server.psql("postgres", f"ALTER DATABASE {name} SET {setting}")
        target = PostgresEngine(server.url(name))
        target.restore(chunks_of(matrix.dump))
        actual = by_name(target.table_stats())
        expected = by_name(matrix.result.tables)
        assert sorted(actual) == sorted(expected)
        assert [n for n in sorted(expected) if actual[n] != expected[n]] == []
    finally:
        server.drop_database(name)


def column_order(server: PgServer, dbname: str, table: str) -> list[str]:
    rows = server.query(
        dbname,
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0"
        " AND NOT attisdropped ORDER BY attnum",
        (table,),
    )
    return [str(r[0]) for r in rows]


def test_column_order_changed_by_the_restore_does_not_matter(matrix: Matrix) -> None:
    """pg_restore puts an inherited column added later before the child's own columns."""
    table = "public.child_plain"
    assert column_order(matrix.server, matrix.source, table) == ["a", "z", "b", "c"]
    assert column_order(matrix.server, matrix.target, table) == ["a", "z", "c", "b"]
    positional = f"SELECT sum(hash_record_extended(t, 0))::text FROM {table} t"
    assert matrix.server.query(matrix.source, positional) != matrix.server.query(
        matrix.target, positional
    )
    expected = by_name(matrix.result.tables)[table]
    assert stats_after(matrix.server, matrix.target, table, None) == expected


def test_old_checksums_of_enums_were_not_portable(matrix: Matrix) -> None:
    """The bug this module fixes: the hash of an enum is the hash of its OID."""
    query = "SELECT sum(hash_record_extended(t, 0))::text FROM public.tm_enum t"
    before = matrix.server.query(matrix.source, query)
    after = matrix.server.query(matrix.target, query)
    assert before != after


def test_text_fallback_before_14_is_portable_too(matrix: Matrix) -> None:
    """Servers before 14 hash the text form of the row; force that form here."""
    results = []
    for dbname in (matrix.source, matrix.target):
        with matrix.server.connect(dbname) as conn:
            prepare_session(conn)
            with conn.cursor() as cur:
                plans = plan_tables(cur, list_tables(cur), server_version=130011)
                results.append([run_plan(cur, p) for p in plans])
    assert results[0] == results[1]
    assert {checksum_method(t.checksum or "") for t in results[0]} == {"pgtext2.pg13"}
    assert len(results[0]) == len(matrix.result.tables) - 1  # all tables, no large objects


# --- the type matrix: one changed value changes the checksum -----------------------------
def stats_after(server: PgServer, dbname: str, table: str, change: str | None) -> TableStats:
    """The stats of ``table`` with ``change`` (SQL) applied inside a rolled-back
    transaction."""
    schema, name = table.split(".", 1)
    with server.connect(dbname) as conn:
        prepare_session(conn)
        with conn.cursor() as cur:
            cur.execute("BEGIN")
            try:
                if change is not None:
                    cur.execute("SET LOCAL search_path = public")
                    cur.execute(change.encode())
                    cur.execute("SET LOCAL search_path = pg_catalog")
                tables = [t for t in list_tables(cur) if (t.schema, t.name) == (schema, name)]
                (plan,) = plan_tables(cur, tables)
                return run_plan(cur, plan)
            finally:
                cur.execute("ROLLBACK")


@pytest.mark.parametrize("case", CASES, ids=[c.key for c in CASES])
def test_one_changed_value_changes_the_checksum(matrix: Matrix, case: Case) -> None:
    if case.key in matrix.skipped:
        pytest.skip(matrix.skipped[case.key])
    table = table_of(case)
    expected = by_name(matrix.result.tables)[table]
    assert stats_after(matrix.server, matrix.target, table, None) == expected
    changed = stats_after(
        matrix.server,
        matrix.target,
        table,
        f'UPDATE public."tm_{case.key}" SET v = {case.change} WHERE id = 1',
    )
    assert changed.rows == expected.rows
    assert changed.checksum != expected.checksum
    nulled = stats_after(
        matrix.server,
        matrix.target,
        table,
        f'UPDATE public."tm_{case.key}" SET v = NULL WHERE id = 1',
    )
    assert nulled.checksum != expected.checksum


@pytest.mark.parametrize(
    ("table", "change"),
    [
        ("public.User", "UPDATE public.\"User\" SET role = 'admin' WHERE id = 2"),
        ("public.User", 'UPDATE public."User" SET "camelCase" = 8 WHERE id = 7'),
        ("app.Things", 'UPDATE app."Things" SET "Kind" = \'user\' WHERE "Id" = 3'),
        ("public.child_t", "UPDATE public.child_t SET c = 'user' WHERE a = 1"),
        ("public.part_c", "UPDATE public.part_p SET r = 'user' WHERE a = 1"),
        ("public.dropped_t", "UPDATE public.dropped_t SET b = 'admin' WHERE a = 1"),
        ("public.parent_t", "INSERT INTO public.parent_t VALUES (1, 'x')"),
        ("public.no_columns", "INSERT INTO public.no_columns DEFAULT VALUES"),
    ],
)
def test_changes_in_named_tables_show(matrix: Matrix, table: str, change: str) -> None:
    expected = by_name(matrix.result.tables)[table]
    assert stats_after(matrix.server, matrix.target, table, None) == expected
    assert stats_after(matrix.server, matrix.target, table, change) != expected


def test_swapped_values_between_columns_show(pg_server: PgServer, pg_db: str) -> None:
    name = pg_db.rsplit("/", 1)[1]
    pg_server.psql(name, "CREATE TABLE s (a int, b int); INSERT INTO s VALUES (1, 2)")
    before = stats_after(pg_server, name, "public.s", None)
    after = stats_after(pg_server, name, "public.s", "UPDATE public.s SET a = 2, b = 1")
    assert before.checksum != after.checksum


# --- large objects -------------------------------------------------------------------------
def large_objects_after(server: PgServer, dbname: str, change: str | None) -> TableStats | None:
    with server.connect(dbname) as conn:
        prepare_session(conn)
        with conn.cursor() as cur:
            cur.execute("BEGIN")
            try:
                if change is not None:
                    cur.execute(change.encode())
                return large_object_stats(cur)
            finally:
                cur.execute("ROLLBACK")


def test_large_objects_restore_equal_and_one_changed_byte_shows(matrix: Matrix) -> None:
    expected = by_name(matrix.result.tables)[LARGE_OBJECTS]
    assert expected.rows == 4
    assert (expected.checksum or "").startswith("pglo2.pg")
    server, target = matrix.server, matrix.target
    assert large_objects_after(server, target, None) == expected
    oids = [r[0] for r in server.query(target, "SELECT oid FROM pg_largeobject_metadata")]
    sizes = {oid: server.query(target, "SELECT length(lo_get(%s))", (oid,))[0][0] for oid in oids}
    biggest = max(oids, key=lambda o: sizes[o])
    assert sizes[biggest] > 2 * MIB
    empty = min(oids, key=lambda o: sizes[o])
    for change in (
        f"SELECT lo_put({biggest}, {3 * MIB // 2}, '\\x00')",  # one byte in the second MiB
        f"SELECT lo_put({biggest}, 0, '\\x00')",  # the first byte
        f"SELECT lo_put({biggest}, {sizes[biggest]}, '\\x00')",  # one byte longer
        f"SELECT lo_put({empty}, 0, '\\x00')",  # the empty one gets a byte
    ):
        changed = large_objects_after(server, target, change)
        assert changed is not None
        assert changed.rows == expected.rows
        assert changed.checksum != expected.checksum, change
    # the same content under another OID is another large object
    moved = large_objects_after(
        server,
        target,
        f"SELECT lo_from_bytea(0, lo_get({empty})); SELECT lo_unlink({empty})",
    )
    assert moved is not None
    assert moved.checksum != expected.checksum


def test_large_objects_in_small_pieces(matrix: Matrix) -> None:
    """Piece boundaries: the same content read in 1000-byte pieces on both sides."""
    results = []
    for dbname in (matrix.source, matrix.target):
        with matrix.server.connect(dbname) as conn:
            prepare_session(conn)
            with conn.cursor() as cur:
                results.append(large_object_stats(cur, piece=1000))
    assert results[0] == results[1]
    assert results[0] != by_name(matrix.result.tables)[LARGE_OBJECTS]


# --- counting only ---------------------------------------------------------------------------
def test_checksums_can_be_switched_off(matrix: Matrix, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CHECKSUMS_ENV, "0")
    stats = PostgresEngine(matrix.server.url(matrix.target)).table_stats()
    assert [(t.name, t.rows) for t in stats] == [(t.name, t.rows) for t in matrix.result.tables]
    assert all(t.checksum is None for t in stats)
