"""PostgresEngine against a real throwaway PostgreSQL server (no mocked database)."""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from strongroom.engines.base import DumpResult, TableStats
from strongroom.engines.postgresql import PostgresEngine
from strongroom.engines.postgresql.stats import LARGE_OBJECTS
from strongroom.errors import (
    ChunkDamaged,
    DatabaseAuthFailed,
    DatabaseUnreachable,
    DumpFailed,
    RestoreFailed,
    TargetNotEmpty,
    ToolMissing,
)
from tests.fixtures.postgres import PG_PASSWORD, PgServer, free_port, unique_db_name

CHUNK = 64 * 1024
LO_SIZES = (200_000, 70_000, 1)
WEIRD_COL = '"Weird ""col"""'


def dbname_of(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def assert_no_secret(exc: BaseException, *secrets: str) -> None:
    text = "\n".join([str(exc), repr(exc.args), *getattr(exc, "__notes__", [])])
    for secret in (PG_PASSWORD, *secrets):
        assert secret not in text


def populate(server: PgServer, dbname: str, *, customers: int = 3000, invoices: int = 10000) -> str:
    """Fill ``dbname`` with schemas, an extension, large objects, bytea, jsonb, FKs…"""
    available = {row[0] for row in server.query(dbname, "SELECT name FROM pg_available_extensions")}
    extension = next((e for e in ("pgcrypto", "hstore", "citext") if e in available), "")
    ext_sql = f"CREATE EXTENSION {extension};" if extension else ""
    server.psql(
        dbname,
        f"""
        {ext_sql}
        CREATE SCHEMA billing;
        CREATE TABLE public.customers (
            id bigserial PRIMARY KEY,
            name text NOT NULL,
            meta jsonb NOT NULL,
            avatar bytea,
            created timestamptz NOT NULL DEFAULT '2025-01-01 00:00:00+00'
        );
        CREATE INDEX customers_tier ON public.customers ((meta->>'tier'));
        CREATE SEQUENCE billing.invoice_no START 1000;
        CREATE TABLE billing.invoices (
            id bigint PRIMARY KEY DEFAULT nextval('billing.invoice_no'),
            customer_id bigint NOT NULL REFERENCES public.customers (id),
            amount numeric(12, 2) NOT NULL,
            note text
        );
        CREATE TABLE billing.events (at date NOT NULL, kind text) PARTITION BY RANGE (at);
        CREATE TABLE billing.events_2025 PARTITION OF billing.events
            FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
        CREATE TABLE billing.events_2026 PARTITION OF billing.events
            FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
        CREATE TABLE public."Mixed Case" ({WEIRD_COL} int);
        CREATE TABLE public.empty_table (x int);
        CREATE MATERIALIZED VIEW billing.totals AS
            SELECT customer_id, sum(amount) AS total FROM billing.invoices GROUP BY 1;

        INSERT INTO public.customers (name, meta, avatar)
            SELECT 'customer ' || g || ' ünïcødé',
                   jsonb_build_object('tier', g % 3, 'tags', jsonb_build_array('a', g), 'n', g),
                   CASE WHEN g % 7 = 0 THEN NULL
                        ELSE decode(md5(g::text) || md5((g * 31)::text), 'hex') END
            FROM generate_series(1, {customers}) g;
        INSERT INTO billing.invoices (customer_id, amount, note)
            SELECT 1 + (g % {customers}), (g % 1000) / 7.0, repeat('x', g % 50)
            FROM generate_series(1, {invoices}) g;
        INSERT INTO billing.events
            SELECT DATE '2025-01-01' + (g % 700), 'k' || g FROM generate_series(1, 900) g;
        INSERT INTO public."Mixed Case" SELECT g FROM generate_series(1, 7) g;
        SELECT lo_from_bytea(0, convert_to(repeat('large object 1 ', {LO_SIZES[0]} / 15), 'UTF8'));
        SELECT lo_from_bytea(0, decode(repeat('00ff', {LO_SIZES[1]} / 2), 'hex'));
        SELECT lo_from_bytea(0, '\\x2a'::bytea);
        REFRESH MATERIALIZED VIEW billing.totals;
        """,
    )
    return extension


EXPECTED_TABLES = [
    ("billing", "events_2025"),
    ("billing", "events_2026"),
    ("billing", "invoices"),
    ("public", "Mixed Case"),
    ("public", "customers"),
    ("public", "empty_table"),
]


def rows_of(stats: list[TableStats]) -> list[tuple[str, int]]:
    """Names and row counts (checksums are compared by their own tests)."""
    return [(t.name, t.rows) for t in stats]


def counts_by_sql(server: PgServer, dbname: str) -> list[TableStats]:
    """Row counts computed independently of the engine."""
    stats = []
    for schema, table in EXPECTED_TABLES:
        (count,) = server.query(dbname, f'SELECT count(*) FROM "{schema}"."{table}"')[0]
        stats.append(TableStats(f"{schema}.{table}", count))
    (lo,) = server.query(dbname, "SELECT count(*) FROM pg_largeobject_metadata")[0]
    if lo:
        stats.append(TableStats(LARGE_OBJECTS, lo))
    return sorted(stats, key=lambda s: s.name)


def fingerprint(server: PgServer, dbname: str) -> dict[str, str]:
    """Content digests of a few tables and of the large objects."""
    queries = {
        "customers": "SELECT md5(string_agg(c::text, '|' ORDER BY id)) FROM public.customers c",
        "invoices": "SELECT md5(string_agg(i::text, '|' ORDER BY id)) FROM billing.invoices i",
        "events": "SELECT md5(string_agg(e::text, '|' ORDER BY at, kind)) FROM billing.events e",
        "mixed": 'SELECT string_agg("Weird ""col"""::text, \',\' ORDER BY 1) FROM "Mixed Case"',
        "large_objects": "SELECT string_agg(oid::text || ':' || md5(lo_get(oid)), ','"
        " ORDER BY oid) FROM pg_largeobject_metadata",
        "sequence": "SELECT last_value::text FROM billing.invoice_no",
        "bytea": "SELECT encode(avatar, 'hex') FROM public.customers WHERE id = 5",
        "jsonb": "SELECT meta::text FROM public.customers WHERE id = 5",
    }
    return {key: str(server.query(dbname, q)[0][0]) for key, q in queries.items()}


def dump_to_file(engine: PostgresEngine, path: Path) -> DumpResult:
    with engine.dump() as running, path.open("wb") as out:
        while block := running.stream.read(CHUNK):
            out.write(block)
        return running.finish()


def chunks_of(path: Path, size: int = CHUNK) -> Iterator[bytes]:
    with path.open("rb") as f:
        while block := f.read(size):
            yield block


# --- module fixtures: one populated source database and one dump of it ----------------
@pytest.fixture(scope="module")
def sample_db(pg_server: PgServer) -> Iterator[tuple[str, str]]:
    name = unique_db_name("sample")
    pg_server.create_database(name)
    try:
        extension = populate(pg_server, name)
        yield name, extension
    finally:
        pg_server.drop_database(name)


@pytest.fixture(scope="module")
def sample_dump(
    pg_server: PgServer, sample_db: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, DumpResult]:
    path = tmp_path_factory.mktemp("pgdump") / "sample.dump"
    result = dump_to_file(PostgresEngine(pg_server.url(sample_db[0])), path)
    return path, result


# --- dump ------------------------------------------------------------------------------
def test_dump_reports_per_table_row_counts(
    pg_server: PgServer, sample_db: tuple[str, str], sample_dump: tuple[Path, DumpResult]
) -> None:
    name, _ = sample_db
    path, result = sample_dump
    assert result.engine == "postgresql"
    assert result.database == name
    assert result.dump_format == "pg_dump-custom"
    assert result.server_version.split(".")[0] == str(pg_server.version)
    assert result.tool_version.startswith("pg_dump (PostgreSQL)")
    assert rows_of(result.tables) == rows_of(counts_by_sql(pg_server, name))
    assert all(t.checksum for t in result.tables if t.name != LARGE_OBJECTS)
    by_name = {t.name: t.rows for t in result.tables}
    assert by_name["public.customers"] == 3000
    assert by_name["billing.invoices"] == 10000
    assert by_name["billing.events_2025"] + by_name["billing.events_2026"] == 900
    assert by_name["public.Mixed Case"] == 7
    assert by_name["public.empty_table"] == 0
    assert by_name[LARGE_OBJECTS] == 3
    assert "billing.events" not in by_name  # partitioned parent: rows live in partitions
    assert "billing.totals" not in by_name  # materialized view
    assert path.read_bytes()[:5] == b"PGDMP"


def test_dump_is_uncompressed_custom_format_listed_by_pg_restore(
    pg_server: PgServer, sample_dump: tuple[Path, DumpResult]
) -> None:
    path, _ = sample_dump
    listing = subprocess.run(
        [str(pg_server.bin_dir / "pg_restore"), "--list", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "Compression: 0" in listing or "Compression: none" in listing
    assert "TABLE DATA billing invoices" in listing
    assert "TABLE DATA public Mixed Case" in listing
    assert "BLOBS" in listing or "LARGE OBJECT" in listing
    # Uncompressed: the customers' text is visible in the raw bytes (dedup-friendly).
    assert b"customer 1234 " in path.read_bytes()


def test_restore_into_new_database_reproduces_content(
    pg_server: PgServer,
    sample_db: tuple[str, str],
    sample_dump: tuple[Path, DumpResult],
    pg_new_db: str,
) -> None:
    source_name, extension = sample_db
    path, result = sample_dump
    target = PostgresEngine(pg_new_db)
    target.check_restore_target()  # missing is fine
    target.restore(chunks_of(path))
    target_name = dbname_of(pg_new_db)
    assert pg_server.database_exists(target_name)
    assert target.table_stats() == result.tables
    assert fingerprint(pg_server, target_name) == fingerprint(pg_server, source_name)
    if extension:
        assert pg_server.query(
            target_name, "SELECT 1 FROM pg_extension WHERE extname = %s", (extension,)
        )
    # foreign key, index and materialized view came along
    constraints = pg_server.query(
        target_name, "SELECT conname FROM pg_constraint WHERE contype = 'f'"
    )
    assert len(constraints) == 1
    assert pg_server.query(
        target_name, "SELECT 1 FROM pg_indexes WHERE indexname = 'customers_tier'"
    )
    (totals,) = pg_server.query(target_name, "SELECT count(*) FROM billing.totals")[0]
    assert totals == 3000
    # a restored target is no longer an acceptable restore target
    with pytest.raises(TargetNotEmpty):
        target.check_restore_target()


def test_restore_into_existing_empty_database(
    pg_server: PgServer, sample_dump: tuple[Path, DumpResult], pg_db: str
) -> None:
    path, result = sample_dump
    target = PostgresEngine(pg_db)
    target.check_restore_target()
    target.restore(chunks_of(path, 10_000))
    assert target.table_stats() == result.tables


def test_dump_uses_one_snapshot_for_data_and_counts(
    pg_server: PgServer, pg_db: str, pg_new_db: str, tmp_path: Path
) -> None:
    name = dbname_of(pg_db)
    populate(pg_server, name, customers=500, invoices=2000)
    before = counts_by_sql(pg_server, name)
    path = tmp_path / "snap.dump"
    with PostgresEngine(pg_db).dump() as running, path.open("wb") as out:
        # Writes committed after the dump started must not be in it (nor in its counts).
        with pg_server.connect(name) as conn:
            conn.execute(
                "INSERT INTO public.customers (name, meta) SELECT 'late', '{}' "
                "FROM generate_series(1, 250)"
            )
            conn.execute("DELETE FROM billing.invoices WHERE id % 2 = 0")
            conn.execute("SELECT lo_from_bytea(0, 'late')")
        while block := running.stream.read(CHUNK):
            out.write(block)
        result = running.finish()
    after = counts_by_sql(pg_server, name)
    assert after != before
    assert rows_of(result.tables) == rows_of(before)
    restored = PostgresEngine(pg_new_db)
    restored.restore(chunks_of(path))
    assert rows_of(restored.table_stats()) == rows_of(before)
    (late,) = pg_server.query(
        dbname_of(pg_new_db), "SELECT count(*) FROM customers WHERE name = 'late'"
    )[0]
    assert late == 0


def test_leaving_dump_early_stops_pg_dump_and_connection(
    pg_server: PgServer, sample_db: tuple[str, str]
) -> None:
    name, _ = sample_db
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="consumer gave up"):
        with PostgresEngine(pg_server.url(name)).dump() as running:
            assert running.stream.read(1000)[:5] == b"PGDMP"
            pid = running.pid  # type: ignore[attr-defined]
            raise RuntimeError("consumer gave up")
    assert time.monotonic() - started < 15
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        sessions = pg_server.query(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )[0][0]
        if sessions == 0:
            break
        time.sleep(0.1)
    assert sessions == 0


def test_finish_without_reading_the_stream_fails(pg_server: PgServer, pg_db: str) -> None:
    populate(pg_server, dbname_of(pg_db), customers=200, invoices=10)
    with PostgresEngine(pg_db).dump() as running, pytest.raises(DumpFailed, match="not read"):
        running.finish()


def test_pg_dump_failure_is_reported(pg_server: PgServer, pg_db: str) -> None:
    name = dbname_of(pg_db)
    role, role_pw = unique_db_name("role"), "limited-Pw-4711"
    pg_server.psql(name, "CREATE TABLE secret (x int); INSERT INTO secret VALUES (1);")
    pg_server.query("postgres", f"CREATE ROLE {role} LOGIN PASSWORD '{role_pw}'")
    try:
        url = f"postgresql://{role}:{role_pw}@127.0.0.1:{pg_server.port}/{name}"
        with pytest.raises(DumpFailed, match="permission denied") as info:
            with PostgresEngine(url).dump() as running:
                while running.stream.read(CHUNK):
                    pass
                running.finish()
        assert_no_secret(info.value, role_pw)
        assert "\n" not in str(info.value)
    finally:
        pg_server.query("postgres", f"DROP ROLE {role}")


# --- restore safety --------------------------------------------------------------------
def test_restore_into_non_empty_database_is_refused(
    pg_server: PgServer, sample_dump: tuple[Path, DumpResult], pg_db: str
) -> None:
    name = dbname_of(pg_db)
    pg_server.psql(name, "CREATE TABLE keep (v text); INSERT INTO keep VALUES ('precious');")
    target = PostgresEngine(pg_db)
    with pytest.raises(TargetNotEmpty, match=r"not empty \(1 tables\)") as info:
        target.check_restore_target()
    assert_no_secret(info.value)
    with pytest.raises(TargetNotEmpty):
        target.restore(chunks_of(sample_dump[0]))
    assert pg_server.query(name, "SELECT v FROM keep") == [("precious",)]
    assert rows_of(target.table_stats()) == [("public.keep", 1)]


def test_non_empty_counts_functions_and_schemas(pg_server: PgServer, pg_db: str) -> None:
    name = dbname_of(pg_db)
    pg_server.psql(name, "CREATE SCHEMA app;")
    with pytest.raises(TargetNotEmpty, match="0 tables, 1 other objects"):
        PostgresEngine(pg_db).check_restore_target()
    pg_server.psql(
        name, "DROP SCHEMA app; CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1';"
    )
    with pytest.raises(TargetNotEmpty):
        PostgresEngine(pg_db).check_restore_target()


def test_damaged_source_drops_the_created_database(
    pg_server: PgServer, sample_dump: tuple[Path, DumpResult], pg_new_db: str
) -> None:
    path, _ = sample_dump

    def damaged() -> Iterator[bytes]:
        for i, block in enumerate(chunks_of(path)):
            if i == 3:
                raise ChunkDamaged("chunk 3 is damaged")
            yield block

    with pytest.raises(ChunkDamaged, match="chunk 3 is damaged") as info:
        PostgresEngine(pg_new_db).restore(damaged())
    assert any("dropped" in note for note in getattr(info.value, "__notes__", []))
    assert_no_secret(info.value)
    assert not pg_server.database_exists(dbname_of(pg_new_db))


def test_garbage_input_fails_and_drops_the_created_database(
    pg_server: PgServer, pg_new_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="strongroom")
    with pytest.raises(RestoreFailed, match="pg_restore failed") as info:
        PostgresEngine(pg_new_db).restore([b"this is not a dump\n" * 1000] * 5)
    assert "new database was dropped" in str(info.value)
    assert "\n" not in str(info.value)
    assert_no_secret(info.value)
    assert PG_PASSWORD not in caplog.text
    assert not pg_server.database_exists(dbname_of(pg_new_db))


# --- errors ----------------------------------------------------------------------------
def test_describe_name_and_size(pg_server: PgServer, sample_db: tuple[str, str]) -> None:
    name, _ = sample_db
    engine = PostgresEngine(pg_server.url(name))
    assert engine.describe() == f"postgresql://strongroom:***@127.0.0.1:{pg_server.port}/{name}"
    assert engine.database_name() == name
    engine.check()
    size = engine.estimated_size()
    assert size is not None and size > 1_000_000


def test_unreachable_server(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="strongroom")
    port = free_port()
    engine = PostgresEngine(f"postgresql://strongroom:{PG_PASSWORD}@127.0.0.1:{port}/db")
    with pytest.raises(
        DatabaseUnreachable, match=f"cannot reach PostgreSQL at 127.0.0.1:{port}"
    ) as info:
        engine.check()
    assert "refused" in str(info.value).lower()
    assert "\n" not in str(info.value)
    assert_no_secret(info.value)
    with pytest.raises(DatabaseUnreachable):
        engine.dump().__enter__()
    assert PG_PASSWORD not in caplog.text


def test_wrong_password(pg_server: PgServer, pg_db: str, pg_new_db: str) -> None:
    wrong = "not-the-Right-pw-91"
    for url in (pg_db, pg_new_db):
        engine = PostgresEngine(pg_server.url(dbname_of(url), password=wrong))
        for action in (
            engine.check,
            engine.table_stats,
            engine.check_restore_target,
            lambda e=engine: e.restore([b"x"]),
            lambda e=engine: e.dump().__enter__(),
        ):
            with pytest.raises(
                DatabaseAuthFailed, match="authentication failed for user strongroom"
            ) as info:
                action()
            assert_no_secret(info.value, wrong)
            assert "***" in str(info.value)
    assert not pg_server.database_exists(dbname_of(pg_new_db))


def test_missing_database(pg_server: PgServer) -> None:
    engine = PostgresEngine(pg_server.url("no_such_db_here"))
    with pytest.raises(
        DatabaseUnreachable, match="database no_such_db_here does not exist at"
    ) as info:
        engine.check()
    assert_no_secret(info.value)


def test_missing_tools(pg_server: PgServer, pg_db: str, pg_new_db: str, tmp_path: Path) -> None:
    engine = PostgresEngine(pg_db, tool_dirs=[tmp_path])
    with pytest.raises(
        ToolMissing, match=r"pg_dump not found: .*apt-get install postgresql-client"
    ):
        engine.check()
    with pytest.raises(ToolMissing, match="pg_dump not found"):
        engine.dump().__enter__()
    target = PostgresEngine(pg_new_db, tool_dirs=[tmp_path])
    with pytest.raises(ToolMissing, match="pg_restore not found"):
        target.restore([b"x"])
    assert not pg_server.database_exists(dbname_of(pg_new_db))  # nothing created
    # the real tools' directory works
    PostgresEngine(pg_db, tool_dirs=[pg_server.bin_dir]).check()


def test_checksums_follow_content_and_fall_back_for_unhashable_types(
    pg_server: PgServer, pg_db: str
) -> None:
    name = pg_db.rsplit("/", 1)[1]
    pg_server.psql(
        name,
        "CREATE TABLE plain (id int PRIMARY KEY, note text, amount numeric(10,2));"
        "CREATE TABLE docs (id int, body json);"
        "INSERT INTO plain SELECT g, md5(g::text), g * 1.5 FROM generate_series(1, 500) g;"
        "INSERT INTO docs SELECT g, json_build_object('n', g) FROM generate_series(1, 50) g;",
    )
    engine = PostgresEngine(pg_db)
    first = {t.name: t for t in engine.table_stats()}
    assert first["public.plain"].checksum.startswith("pgrow2.")
    assert first["public.docs"].checksum.startswith("pgrow2.")  # json: its text form inside
    pg_server.psql(name, "UPDATE plain SET note = 'changed' WHERE id = 250")
    second = {t.name: t for t in engine.table_stats()}
    assert second["public.plain"].rows == first["public.plain"].rows
    assert second["public.plain"].checksum != first["public.plain"].checksum
    assert second["public.docs"] == first["public.docs"]
