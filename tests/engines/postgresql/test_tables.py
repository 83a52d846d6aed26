"""Restoring selected tables of a pg_dump file, against a real throwaway PostgreSQL server."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from strongroom.engines.postgresql import PostgresEngine
from strongroom.engines.postgresql.tables import (
    SCRATCH_PREFIX,
    TocEntry,
    parse_table_name,
    parse_toc,
    plan_restore,
    restore_tables,
)
from strongroom.errors import RestoreFailed, TargetNotEmpty, UsageError
from tests.fixtures.postgres import PG_PASSWORD, PgServer, unique_db_name

SCHEMA_SQL = """
CREATE SCHEMA billing;
CREATE FUNCTION public.normalise_name() RETURNS trigger LANGUAGE plpgsql
    AS $$BEGIN NEW.name := trim(NEW.name); RETURN NEW; END$$;
CREATE TABLE public.users (
    id serial PRIMARY KEY,
    email text NOT NULL UNIQUE,
    name text NOT NULL CONSTRAINT users_name_not_blank CHECK (name <> '')
);
CREATE INDEX users_name_idx ON public.users (name);
CREATE TRIGGER users_normalise BEFORE INSERT OR UPDATE ON public.users
    FOR EACH ROW EXECUTE FUNCTION public.normalise_name();
COMMENT ON TABLE public.users IS 'people';
CREATE TABLE public.orders (
    id bigserial PRIMARY KEY,
    user_id int NOT NULL REFERENCES public.users (id),
    total numeric(10, 2) NOT NULL
);
CREATE TABLE billing.invoices (
    no int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id bigint NOT NULL REFERENCES public.orders (id),
    amount numeric(10, 2)
);
INSERT INTO public.users (email, name)
    SELECT 'u' || g || '@example.com', '  user ' || g || ' ' FROM generate_series(1, 50) g;
INSERT INTO public.orders (user_id, total) SELECT 1 + g % 50, g FROM generate_series(1, 200) g;
INSERT INTO billing.invoices (order_id, amount) SELECT g, g * 2 FROM generate_series(1, 100) g;
"""

USERS = "SELECT id, email, name FROM {} ORDER BY id"


def populate(server: PgServer, dbname: str) -> None:
    server.psql(dbname, SCHEMA_SQL)


def dump(server: PgServer, dbname: str, path: Path) -> Path:
    """``pg_dump -Fc -Z0`` with the password in the environment only."""
    subprocess.run(
        [
            str(server.bin_dir / "pg_dump"),
            "-Fc",
            "-Z0",
            "-f",
            str(path),
            "-d",
            f"host={server.host} port={server.port} user={server.user} dbname={dbname}",
        ],
        env={**os.environ, "PGPASSWORD": server.password},
        check=True,
        capture_output=True,
    )
    return path


def dbname_of(url: str) -> str:
    return url.rsplit("/", 1)[1]


def one(server: PgServer, dbname: str, query: str, params: Any = None) -> Any:
    return server.query(dbname, query, params)[0][0]


def constraints(server: PgServer, dbname: str, table: str) -> dict[str, str]:
    rows = server.query(
        dbname,
        "SELECT conname, contype::text FROM pg_constraint WHERE conrelid = to_regclass(%s)",
        (table,),
    )
    return {name: kind for name, kind in rows}


def scratch_databases(server: PgServer) -> list[str]:
    rows = server.query(
        "postgres", "SELECT datname FROM pg_database WHERE datname LIKE %s", (SCRATCH_PREFIX + "%",)
    )
    return [r[0] for r in rows]


def assert_no_secret(exc: BaseException) -> None:
    text = "\n".join([str(exc), repr(exc.args), *getattr(exc, "__notes__", [])])
    assert PG_PASSWORD not in text


@pytest.fixture(scope="module")
def source(
    pg_server: PgServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """A populated database and a ``pg_dump -Fc -Z0`` file of it."""
    name = unique_db_name("src")
    pg_server.create_database(name)
    try:
        populate(pg_server, name)
        yield name, dump(pg_server, name, tmp_path_factory.mktemp("tables") / "src.dump")
    finally:
        pg_server.drop_database(name)


@pytest.fixture
def second_db(pg_server: PgServer) -> Iterator[str]:
    name = unique_db_name("db")
    url = pg_server.create_database(name)
    try:
        yield url
    finally:
        pg_server.drop_database(name)


# --- against the server ---------------------------------------------------------------
def test_one_table_into_new_database(
    pg_server: PgServer, pg_db: str, source: tuple[str, Path]
) -> None:
    src, path = source
    target = dbname_of(pg_db)

    assert restore_tables(PostgresEngine(pg_db), path, ["public.users"]) == ["public.users"]

    assert pg_server.query(target, USERS.format("public.users")) == pg_server.query(
        src, USERS.format("public.users")
    )
    assert constraints(pg_server, target, "public.users") == {
        "users_pkey": "p",
        "users_email_key": "u",
        "users_name_not_blank": "c",
    }
    assert one(pg_server, target, "SELECT to_regclass('public.users_name_idx')::text") == (
        "users_name_idx"
    )
    assert one(pg_server, target, "SELECT obj_description('public.users'::regclass)") == "people"
    triggers = pg_server.query(
        target,
        "SELECT tgname, tgfoid::regproc::text FROM pg_trigger"
        " WHERE tgrelid = 'public.users'::regclass AND NOT tgisinternal",
    )
    assert triggers == [("users_normalise", "normalise_name")]
    # The sequence continues after the restored ids and the trigger runs.
    assert pg_server.query(
        target, "INSERT INTO users (email, name) VALUES ('new@x', '  padded ') RETURNING id, name"
    ) == [(51, "padded")]
    with pytest.raises(psycopg.errors.UniqueViolation):
        pg_server.query(target, "INSERT INTO users (email, name) VALUES ('u1@example.com', 'x')")
    with pytest.raises(psycopg.errors.CheckViolation):
        pg_server.query(target, "INSERT INTO users (email, name) VALUES ('z@x', '   ')")
    for other in ("public.orders", "billing.invoices", "public.orders_id_seq"):
        assert one(pg_server, target, "SELECT to_regclass(%s)", (other,)) is None
    assert not pg_server.query(target, "SELECT 1 FROM pg_namespace WHERE nspname = 'billing'")


def test_foreign_key_only_with_its_referenced_table(
    pg_server: PgServer, pg_db: str, second_db: str, source: tuple[str, Path]
) -> None:
    _, path = source
    both, alone = dbname_of(pg_db), dbname_of(second_db)

    assert restore_tables(PostgresEngine(pg_db), path, ["public.users", "orders"]) == [
        "public.users",
        "public.orders",
    ]
    assert constraints(pg_server, both, "public.orders") == {
        "orders_pkey": "p",
        "orders_user_id_fkey": "f",
    }
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        pg_server.query(both, "INSERT INTO orders (user_id, total) VALUES (999, 1)")

    assert restore_tables(PostgresEngine(second_db), path, ["public.orders"]) == ["public.orders"]
    assert constraints(pg_server, alone, "public.orders") == {"orders_pkey": "p"}
    assert one(pg_server, alone, "SELECT count(*) FROM orders") == 200
    assert one(pg_server, alone, "SELECT to_regclass('public.users')") is None
    assert one(pg_server, alone, "SELECT nextval('orders_id_seq')") == 201


def test_identity_table_in_its_own_schema(
    pg_server: PgServer, pg_db: str, source: tuple[str, Path]
) -> None:
    _, path = source
    target = dbname_of(pg_db)

    assert restore_tables(PostgresEngine(pg_db), path, ["billing.invoices"]) == ["billing.invoices"]
    assert one(pg_server, target, "SELECT count(*) FROM billing.invoices") == 100
    assert constraints(pg_server, target, "billing.invoices") == {"invoices_pkey": "p"}
    assert pg_server.query(
        target, "INSERT INTO billing.invoices (order_id, amount) VALUES (1, 1) RETURNING no"
    ) == [(101,)]


def test_into_schema_next_to_live_data(pg_server: PgServer, pg_db: str, tmp_path: Path) -> None:
    live = dbname_of(pg_db)
    populate(pg_server, live)
    path = dump(pg_server, live, tmp_path / "live.dump")
    at_dump = pg_server.query(live, USERS.format("public.users"))
    pg_server.psql(
        live,
        "UPDATE users SET name = 'changed after dump' WHERE id = 1;"
        "INSERT INTO users (email, name) VALUES ('late@x', 'late');",
    )
    live_users = pg_server.query(live, USERS.format("public.users"))
    live_seq = one(pg_server, live, "SELECT last_value FROM public.users_id_seq")

    restored = restore_tables(
        PostgresEngine(pg_db),
        path,
        ["public.users", "public.orders", "billing.invoices"],
        into_schema="restored",
    )

    assert restored == ["restored.users", "restored.orders", "restored.invoices"]
    assert pg_server.query(live, USERS.format("restored.users")) == at_dump
    assert pg_server.query(live, USERS.format("public.users")) == live_users
    assert one(pg_server, live, "SELECT count(*) FROM restored.orders") == 200
    assert one(pg_server, live, "SELECT count(*) FROM restored.invoices") == 100
    # Keys point inside the restored schema; owned sequences moved with their tables.
    fks = pg_server.query(
        live,
        "SELECT conrelid::regclass::text, confrelid::regclass::text FROM pg_constraint"
        " WHERE contype = 'f' AND connamespace = 'restored'::regnamespace ORDER BY 1",
    )
    assert fks == [("restored.invoices", "restored.orders"), ("restored.orders", "restored.users")]
    assert one(pg_server, live, "SELECT pg_get_serial_sequence('restored.users', 'id')") == (
        "restored.users_id_seq"
    )
    assert one(pg_server, live, "SELECT pg_get_serial_sequence('restored.invoices', 'no')") == (
        "restored.invoices_no_seq"
    )
    assert one(pg_server, live, "SELECT to_regclass('restored.users_name_idx')::text") == (
        "restored.users_name_idx"
    )
    assert pg_server.query(
        live, "INSERT INTO restored.users (email, name) VALUES ('r@x', ' r ') RETURNING id, name"
    ) == [(51, "r")]
    assert one(pg_server, live, "SELECT last_value FROM public.users_id_seq") == live_seq
    assert scratch_databases(pg_server) == []

    # A second restore into the same schema is refused and changes nothing.
    with pytest.raises(TargetNotEmpty, match=r"restored\.users") as caught:
        restore_tables(PostgresEngine(pg_db), path, ["users"], into_schema="restored")
    assert "\n" not in str(caught.value)
    assert one(pg_server, live, "SELECT count(*) FROM restored.users") == 51
    assert scratch_databases(pg_server) == []


def test_failed_restore_into_schema_leaves_nothing(
    pg_server: PgServer, pg_db: str, tmp_path: Path
) -> None:
    live = dbname_of(pg_db)
    populate(pg_server, live)
    path = dump(pg_server, live, tmp_path / "live.dump")
    # The restored trigger needs the live function, which is gone now.
    pg_server.psql(live, "DROP FUNCTION public.normalise_name() CASCADE;")

    with pytest.raises(RestoreFailed, match="normalise_name") as caught:
        restore_tables(PostgresEngine(pg_db), path, ["users"], into_schema="restored")

    assert "\n" not in str(caught.value)
    assert_no_secret(caught.value)
    assert not pg_server.query(live, "SELECT 1 FROM pg_namespace WHERE nspname = 'restored'")
    assert scratch_databases(pg_server) == []


def test_unknown_table_is_a_usage_error(pg_server: PgServer, source: tuple[str, Path]) -> None:
    src, path = source
    with pytest.raises(UsageError, match=r"public\.nope") as caught:
        restore_tables(PostgresEngine(pg_server.url(src)), path, ["users", "nope"])
    message = str(caught.value)
    assert "\n" not in message
    assert "billing.invoices" in message and "public.users" in message
    assert scratch_databases(pg_server) == []


def test_existing_table_is_refused_and_nothing_changes(
    pg_server: PgServer, source: tuple[str, Path]
) -> None:
    src, path = source
    pg_server.psql(src, "UPDATE users SET name = 'live' WHERE id = 2;")
    before = pg_server.query(src, USERS.format("public.users"))
    tables_before = pg_server.query(
        src, "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace"
    )

    with pytest.raises(TargetNotEmpty, match=r"public\.users") as caught:
        restore_tables(PostgresEngine(pg_server.url(src)), path, ["public.users"])

    assert "\n" not in str(caught.value)
    assert_no_secret(caught.value)
    assert pg_server.query(src, USERS.format("public.users")) == before
    assert (
        pg_server.query(
            src, "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace"
        )
        == tables_before
    )


# --- the TOC logic alone (no server) ----------------------------------------------------
TOC = (
    ";\n; Selected TOC Entries:\n;\n3397; 0 0 ENCODING - ENCODING \n"
    + """\
6; 2615 16385 SCHEMA - billing strongroom
226; 1255 16386 FUNCTION public touch() strongroom
223; 1259 16433 TABLE billing events strongroom
;\tdepends on: 6
224; 1259 16436 TABLE billing events_2025 strongroom
;\tdepends on: 6 223
221; 1259 16426 SEQUENCE billing inv_no strongroom
;\tdepends on: 6
222; 1259 16427 TABLE billing things strongroom
;\tdepends on: 221 6
225; 1259 16441 TABLE public Mixed Case strongroom
218; 1259 16402 TABLE public orders strongroom
217; 1259 16401 SEQUENCE public orders_id_seq strongroom
;\tdepends on: 218
3401; 0 0 SEQUENCE OWNED BY public orders_id_seq strongroom
;\tdepends on: 217
216; 1259 16388 TABLE public users strongroom
3402; 0 0 COMMENT public TABLE users strongroom
;\tdepends on: 216
215; 1259 16387 SEQUENCE public users_id_seq strongroom
;\tdepends on: 216
3403; 0 0 SEQUENCE OWNED BY public users_id_seq strongroom
;\tdepends on: 215
3226; 0 0 TABLE ATTACH billing events_2025 strongroom
;\tdepends on: 224 223
3228; 2604 16405 DEFAULT public orders id strongroom
;\tdepends on: 218 217 218
3227; 2604 16391 DEFAULT public users id strongroom
;\tdepends on: 216 215 216
3393; 0 16436 TABLE DATA billing events_2025 strongroom
;\tdepends on: 224
3392; 0 16427 TABLE DATA billing things strongroom
;\tdepends on: 222
3394; 0 16441 TABLE DATA public Mixed Case strongroom
;\tdepends on: 225
3388; 0 16402 TABLE DATA public orders strongroom
;\tdepends on: 218
3386; 0 16388 TABLE DATA public users strongroom
;\tdepends on: 216
3404; 0 0 SEQUENCE SET billing inv_no strongroom
;\tdepends on: 221
3406; 0 0 SEQUENCE SET public orders_id_seq strongroom
;\tdepends on: 217
3407; 0 0 SEQUENCE SET public users_id_seq strongroom
;\tdepends on: 215
3237; 2606 16409 CONSTRAINT public orders orders_pkey strongroom
;\tdepends on: 218
3235; 2606 16396 CONSTRAINT public users users_pkey strongroom
;\tdepends on: 216
3233; 1259 16399 INDEX public users_name_idx strongroom
;\tdepends on: 216
3242; 2620 16400 TRIGGER public users users_touch strongroom
;\tdepends on: 226 216
3240; 2606 16410 FK CONSTRAINT public orders orders_user_id_fkey strongroom
;\tdepends on: 3235 216 218
"""
)


def _plan(
    names: list[str],
    existing: frozenset[str] = frozenset(),
    relations: frozenset[str] = frozenset(),
) -> tuple[set[int], list[str]]:
    toc = parse_toc(TOC)
    tables = {(e.schema, e.name): e for e in toc if e.desc == "TABLE"}
    wanted = [tables[parse_table_name(n)] for n in names]

    def exists(entry: TocEntry) -> bool:
        return entry.label() in existing

    plan = plan_restore(toc, wanted, exists, lambda s, n: f"{s}.{n}" in relations)
    return {e.dump_id for e in plan.entries}, [t.label() for t in plan.tables]


def test_toc_parsing_keeps_names_with_spaces_and_dependencies() -> None:
    entries = {e.dump_id: e for e in parse_toc(TOC)}
    assert (entries[225].desc, entries[225].schema, entries[225].name) == (
        "TABLE",
        "public",
        "Mixed Case",
    )
    assert entries[3394].desc == "TABLE DATA"
    assert entries[3401].desc == "SEQUENCE OWNED BY"
    assert entries[3240].deps == [3235, 216, 218]
    assert entries[6].name == "billing"


def test_toc_parsing_of_a_schema_name_with_spaces() -> None:
    toc = parse_toc(
        "7; 2615 16390 SCHEMA - odd schema strongroom\n"
        "230; 1259 16391 TABLE odd schema Mixed Case strongroom\n"
        ";\tdepends on: 7\n"
    )
    assert [(e.desc, e.schema, e.name, e.deps) for e in toc] == [
        ("SCHEMA", "-", "odd schema", []),
        ("TABLE", "odd schema", "Mixed Case", [7]),
    ]


def test_plan_follows_dependencies() -> None:
    ids, _ = _plan(["users"])
    # table, data, owned sequence and its ownership/value, default, key, index, trigger,
    # comment, and the trigger's function (missing from the target)
    assert ids == {216, 3386, 215, 3403, 3407, 3227, 3235, 3233, 3242, 3402, 226}
    ids, _ = _plan(["users"], existing=frozenset({"public.touch()"}))
    assert 226 not in ids
    ids, _ = _plan(["orders"])
    assert 3240 not in ids and {218, 3388, 217, 3228, 3237} <= ids
    ids, _ = _plan(["orders", "users"])
    assert 3240 in ids


def test_plan_brings_partitions_and_used_sequences() -> None:
    ids, tables = _plan(["billing.events"])
    assert tables == ["billing.events", "billing.events_2025"]
    assert {223, 224, 3226, 3393, 6} <= ids
    ids, tables = _plan(["billing.events_2025"])  # a partition alone: a standalone table
    assert tables == ["billing.events_2025"] and 3226 not in ids and 223 not in ids
    ids, _ = _plan(["billing.things"])
    assert {221, 3404, 6} <= ids  # the sequence its default uses, with its value
    ids, _ = _plan(["billing.things"], existing=frozenset({"billing.inv_no", "billing"}))
    assert not {221, 3404, 6} & ids  # a live sequence is used, never reset


def test_table_names() -> None:
    assert parse_table_name("users") == ("public", "users")
    assert parse_table_name("billing.invoices") == ("billing", "invoices")
    assert parse_table_name("public.Mixed Case") == ("public", "Mixed Case")
    assert parse_table_name('"my.schema"."a ""b"""') == ("my.schema", 'a "b"')
    for bad in ("", "x.", ".x", '"a"x'):
        with pytest.raises(UsageError):
            parse_table_name(bad)


def test_a_restored_table_is_verified_against_the_backups_statistics(
    pg_server: PgServer, pg_db: str, source: tuple[str, Path]
) -> None:
    """Through the engine: the table's rows and checksum are compared with the backup's
    (recorded in the source here); a difference is a VerificationMismatch naming it."""
    from strongroom.engines.base import TableStats
    from strongroom.errors import VerificationMismatch

    src, path = source
    recorded = {t.name: t for t in PostgresEngine(pg_server.url(src)).table_stats()}
    engine = PostgresEngine(pg_db)
    restored = engine.restore_tables(
        [path.read_bytes()],
        ["billing.invoices"],
        into=None,
        expected=[recorded["billing.invoices"]],
        source_database=src,
    )
    assert restored == ["billing.invoices"]
    wrong = TableStats("billing.invoices", recorded["billing.invoices"].rows + 1, None)
    with pytest.raises(VerificationMismatch, match=r"side2\.invoices differs .*billing\.invoices"):
        engine.restore_tables(
            [path.read_bytes()],
            ["billing.invoices"],
            into="side2",
            expected=[wrong],
            source_database=src,
        )
    bad_sum = TableStats(
        "billing.invoices", wrong.rows - 1, recorded["billing.invoices"].checksum + "1"
    )
    with pytest.raises(VerificationMismatch, match="other contents"):
        engine.restore_tables(
            [path.read_bytes()],
            ["billing.invoices"],
            into="side3",
            expected=[bad_sum],
            source_database=src,
        )
