"""Portable PostgreSQL checksums (engines/postgres_checksum.py) on the real throwaway server.

A *type matrix* (one table per type, with NULLs) is dumped with the real engine and
restored into other databases of the same cluster (so every enum, type, function and
operator gets a new OID), one of them with other session settings and another default
collation: every table's row count and checksum must equal the dump's. Then, per type,
changing one value of one row must change that table's checksum.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from strongroom.engines.base import DumpResult, TableStats, checksum_method
from strongroom.engines.postgresql import PostgresEngine
from strongroom.engines.postgresql.stats import (
    CHECKSUMS_ENV,
    LARGE_OBJECTS,
    PORTABLE_BASE_TYPES,
    SESSION_SETTINGS,
    large_object_stats,
    list_tables,
    parallel_table_stats,
    plan_tables,
    prepare_session,
    run_plan,
    snapshot_table_stats,
)
from strongroom.errors import RowSecurityBlocked
from tests.fixtures.postgres import PG_USER, PgServer, unique_db_name

CHUNK = 64 * 1024
MIB = 1 << 20


@dataclass(frozen=True)
class Case:
    """One table ``public."tm_<key>" (id int PRIMARY KEY, v <type>)``: its values (SQL
    literals, one row each, then a NULL row) and a different value for row 1."""

    key: str
    type: str
    values: tuple[str, ...]
    change: str
    min_version: int = 14
    needs: str = ""  # "icu" or an extension name


def case(
    key: str, type_: str, values: list[str], change: str, *, min_version: int = 14, needs: str = ""
) -> Case:
    return Case(key, type_, tuple(values), change, min_version, needs)


CASES: list[Case] = [
    case("int2", "int2", ["-32768", "0", "32767"], "1"),
    case("int4", "int4", ["-2147483648", "0", "2147483647"], "1"),
    case("int8", "int8", ["-9223372036854775808", "0", "9223372036854775807"], "1"),
    case(
        "float4",
        "float4",
        ["1.5", "'NaN'", "'-0'", "'Infinity'", "'-Infinity'", "3.4028235e38", "1e-45"],
        "1.5000001",
    ),
    case(
        "float8",
        "float8",
        ["0.1", "'NaN'", "'-0'", "'Infinity'", "'-Infinity'", "1.7976931348623157e308", "5e-324"],
        "0.10000000000000002",
    ),
    case(
        "numeric",
        "numeric",
        ["1.0", "123.456", "'NaN'", "-0.000001", "'Infinity'", "'-Infinity'", "1e100"],
        "1.01",
    ),
    case("numeric_scaled", "numeric(12,4)", ["1.5", "-99999999.9999", "0"], "1.5001"),
    case("money", "money", ["12.34", "-0.01", "92233720368547758.07"], "12.35"),
    case(
        "text",
        "text",
        [
            "'hello'",
            "''",
            "'ünïcødé ✓ 日本'",
            "E'tab\\tnew\\nline \\\\ \"q\"'",
            "repeat('x', 9000)",
        ],
        "'hellO'",
    ),
    case("varchar", "varchar(20)", ["'abc'", "''", "'ünï'"], "'abd'"),
    case("bpchar", "char(5)", ["'ab'", "'abcde'", "''"], "'abc'"),
    case("char", '"char"', ["'a'", "'Z'", "'\\'"], "'b'"),
    case("name", "name", ["'pg_class'", "'Some Name'"], "'pg_type'"),
    case("bytea", "bytea", ["'\\x00ff'", "''", "decode(repeat('ab', 5000), 'hex')"], "'\\x00fe'"),
    case("bool", "bool", ["true", "false"], "false"),
    case(
        "date",
        "date",
        ["'2024-02-29'", "'infinity'", "'-infinity'", "'4713-01-01 BC'", "'5874897-12-31'"],
        "'2024-03-01'",
    ),
    case("time", "time", ["'00:00'", "'23:59:59.999999'", "'24:00'"], "'00:00:00.000001'"),
    case("timetz", "timetz", ["'12:00+05:30'", "'00:00-12'"], "'12:00+05'"),
    case(
        "timestamp",
        "timestamp",
        ["'2024-01-01 12:34:56.789'", "'infinity'", "'-infinity'", "'0099-12-31 23:59:59 BC'"],
        "'2024-01-01 12:34:56.788'",
    ),
    case(
        "timestamptz",
        "timestamptz",
        ["'2024-01-01 12:34:56.789+02'", "'infinity'", "'2000-06-30 23:00 America/New_York'"],
        "'2024-01-01 12:34:56.789+03'",
    ),
    case(
        "interval",
        "interval",
        ["'1 year 2 mons 3 days 04:05:06.789'", "'-1 day'", "'0'", "'P1Y2M'"],
        "'1 year 2 mons 3 days 04:05:06.788'",
    ),
    case(
        "uuid",
        "uuid",
        ["'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'", "'00000000-0000-0000-0000-000000000000'"],
        "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12'",
    ),
    case(
        "json",
        "json",
        ['\'{"b": 1, "a": [1, 2.50]}\'', "'null'", "'\"ünï\"'", '\'{"a":1,   "a":2}\''],
        '\'{"b": 1, "a": [1, 2.5]}\'',
    ),
    case(
        "jsonb",
        "jsonb",
        ['\'{"b": 1, "a": [1, 2.5, "x", null, true]}\'', "'[]'", "'\"ünï\"'"],
        '\'{"b": 1, "a": [1, 2.5, "x", null, false]}\'',
    ),
    case("xml", "xml", ["'<a b=\"1\">text</a>'", "'<r/>'"], "'<a b=\"2\">text</a>'"),
    case("inet", "inet", ["'192.168.0.1/24'", "'::1'", "'10.0.0.1'"], "'192.168.0.2/24'"),
    case("cidr", "cidr", ["'192.168.0.0/24'", "'2001:db8::/32'"], "'192.168.0.0/25'"),
    case("macaddr", "macaddr", ["'08:00:2b:01:02:03'"], "'08:00:2b:01:02:04'"),
    case("macaddr8", "macaddr8", ["'08:00:2b:01:02:03:04:05'"], "'08:00:2b:01:02:03:04:06'"),
    case("point", "point", ["'(1.5,-2)'", "'(0.1,1e300)'"], "'(1.5,-2.0000000000000004)'"),
    case("line", "line", ["'{1,-1,0}'"], "'{1,-1,1}'"),
    case("lseg", "lseg", ["'[(0,0),(1,1)]'"], "'[(0,0),(1,2)]'"),
    case("box", "box", ["'(1,1),(0,0)'"], "'(1,2),(0,0)'"),
    case("path", "path", ["'[(0,0),(1,1),(2,0)]'", "'((0,0),(1,1),(2,0))'"], "'[(0,0),(1,1)]'"),
    case("polygon", "polygon", ["'((0,0),(1,1),(2,0))'"], "'((0,0),(1,1),(3,0))'"),
    case("circle", "circle", ["'<(0,0),1.5>'"], "'<(0,0),1.25>'"),
    case("bit", "bit(8)", ["B'10101010'", "B'00000000'"], "B'10101011'"),
    case("varbit", "varbit", ["B'1'", "B''", "B'1010101010101'"], "B'0'"),
    case(
        "tsvector",
        "tsvector",
        ["'a fat cat:3A sat'", "to_tsvector('english', 'The quick brown foxes')"],
        "'a fat cat:3B sat'",
    ),
    case("tsquery", "tsquery", ["'fat & (rat | cat)'", "'!a <-> b:*'"], "'fat & (rat | bat)'"),
    case("int4range", "int4range", ["'[1,10)'", "'empty'", "'(,5]'"], "'[1,11)'"),
    case("int8range", "int8range", ["'[1,10)'", "'(,)'"], "'[2,10)'"),
    case("numrange", "numrange", ["'[1.5,2.5]'", "'(0,)'"], "'[1.5,2.6]'"),
    case(
        "tsrange",
        "tsrange",
        ["'[2024-01-01,2024-02-01)'", "'[2024-01-01,infinity)'"],
        "'[2024-01-01,2024-02-02)'",
    ),
    case(
        "tstzrange",
        "tstzrange",
        ["'[2024-01-01 00:00+00,2024-02-01 00:00+00)'"],
        "'[2024-01-01 00:00+01,2024-02-01 00:00+00)'",
    ),
    case("daterange", "daterange", ["'[2024-01-01,2024-02-01)'", "'empty'"], "'[2024-01-02,)'"),
    case("int4multirange", "int4multirange", ["'{[1,3),[5,8)}'", "'{}'"], "'{[1,3),[5,9)}'"),
    case("int8multirange", "int8multirange", ["'{[1,3)}'"], "'{[1,4)}'"),
    case("nummultirange", "nummultirange", ["'{[1.5,2.5]}'"], "'{[1.5,2.75]}'"),
    case("datemultirange", "datemultirange", ["'{[2024-01-01,2024-02-01)}'"], "'{}'"),
    case("tsmultirange", "tsmultirange", ["'{[2024-01-01,2024-02-01)}'"], "'{}'"),
    case(
        "tstzmultirange",
        "tstzmultirange",
        ["'{[2024-01-01 00:00+00,2024-02-01 00:00+00)}'"],
        "'{[2024-01-01 00:00+02,2024-02-01 00:00+00)}'",
    ),
    case("pg_lsn", "pg_lsn", ["'0/16B3748'", "'FFFFFFFF/FFFFFFFF'"], "'0/16B3749'"),
    case("oid", "oid", ["1259", "0", "4294967295"], "1"),
    case("xid", "xid", ["'7'", "'4294967295'"], "'8'"),
    case("xid8", "xid8", ["'7'", "'18446744073709551615'"], "'8'"),
    case("cid", "cid", ["'7'", "'0'"], "'8'"),
    case("tid", "tid", ["'(0,1)'", "'(4294967295,65535)'"], "'(0,2)'"),
    case("int2vector", "int2vector", ["'1 2 3'", "''"], "'1 2 4'"),
    case("oidvector", "oidvector", ["'1 2 3'"], "'1 2 4'"),
    case("aclitem", "aclitem", [f"'{PG_USER}=arwdDxt/{PG_USER}'"], f"'{PG_USER}=r/{PG_USER}'"),
    case(
        "regclass",
        "regclass",
        ["'public.\"User\"'", "'pg_class'", "'app.\"Things\"'"],
        "'pg_type'",
    ),
    case(
        "regtype",
        "regtype",
        ["'public.\"Role\"'", "'integer'", "'public.\"Role\"[]'", "'public.member'"],
        "'bigint'",
    ),
    case("regproc", "regproc", ["'public.my_fn'", "'now'"], "'clock_timestamp'"),
    case(
        "regprocedure",
        "regprocedure",
        ["'public.my_fn(integer)'", "'lower(text)'"],
        "'upper(text)'",
    ),
    case("regoper", "regoper", ["'public.<~~>'", "'||/'"], "'|/'"),
    case(
        "regoperator",
        "regoperator",
        ["'public.<~~>(integer,integer)'", "'+(integer,integer)'"],
        "'-(integer,integer)'",
    ),
    case("regnamespace", "regnamespace", ["'app'", "'pg_catalog'", "'public'"], "'pg_toast'"),
    case("regrole", "regrole", [f"'{PG_USER}'", "'pg_monitor'"], "'pg_signal_backend'"),
    case("regconfig", "regconfig", ["'english'", "'public.my_cfg'"], "'simple'"),
    case("regdictionary", "regdictionary", ["'simple'", "'public.my_dict'"], "'english_stem'"),
    case("regcollation", "regcollation", ["'\"C\"'", "'public.my_coll'"], "'\"POSIX\"'"),
    case("int4_array", "int4[]", ["'{1,2,NULL}'", "'{}'", "'{{1,2},{3,4}}'"], "'{1,2,3}'"),
    case("text_array", "text[]", ["'{a,\"b c\",NULL}'", "'{}'"], "'{a,\"b d\",NULL}'"),
    case("numeric_array", "numeric[]", ["'{1.5,NaN}'"], "'{1.5,2}'"),
    case(
        "timestamptz_array",
        "timestamptz[]",
        ["'{\"2024-01-01 00:00+00\",infinity}'"],
        "'{\"2024-01-01 00:00+01\",infinity}'",
    ),
    case("jsonb_array", "jsonb[]", ["ARRAY['{\"a\": 1}'::jsonb, '[]']"], "ARRAY['{}'::jsonb]"),
    case("float8_array", "float8[]", ["'{0.1,NaN,-Infinity}'"], "'{0.1,NaN,Infinity}'"),
    case("json_array", "json[]", ["ARRAY['{\"a\": 1}'::json]"], "ARRAY['{\"a\":1}'::json]"),
    case("enum", 'public."Role"', ["'admin'", "'user'", "'Guest'"], "'user'"),
    case("enum_array", 'public."Role"[]', ["'{admin,user}'", "'{}'"], "'{user,admin}'"),
    case("enum_domain", "public.role_d", ["'admin'", "'user'"], "'user'"),
    case("enum_domain_array", "public.role_d[]", ["'{admin}'"], "'{user}'"),
    case("text_domain", "public.email", ["'a@example.com'", "'b@x'"], "'c@example.com'"),
    case(
        "composite_enum",
        "public.member",
        ["ROW('ann', 'admin', '2024-01-01 00:00+00', 1.5)::public.member"],
        "ROW('ann', 'user', '2024-01-01 00:00+00', 1.5)::public.member",
    ),
    case(
        "composite_plain", "public.pair", ["ROW(1, 'x')::public.pair"], "ROW(1, 'y')::public.pair"
    ),
    case(
        "composite_array",
        "public.member[]",
        ["ARRAY[ROW('bo', 'Guest', 'infinity', 'NaN')::public.member]"],
        "ARRAY[ROW('bo', 'admin', 'infinity', 'NaN')::public.member]",
    ),
    case(
        "table_rowtype",
        'public."User"',
        ["ROW(1, 'u@x', 'admin', '{user}', '2024-01-01 00:00+00', 7, 2)::public.\"User\""],
        "ROW(1, 'u@x', 'user', '{user}', '2024-01-01 00:00+00', 7, 2)::public.\"User\"",
    ),
    case("enum_range", "public.role_range", ["'[admin,user)'", "'empty'"], "'[admin,Guest)'"),
    case(
        "enum_multirange",
        "public.role_multirange",
        ["'{[admin,user)}'"],
        "'{[admin,Guest)}'",
    ),
    case("float_range", "public.floatrange", ["'[1.5,2.5)'", "'(,0.1]'"], "'[1.5,2.75)'"),
    case(
        "icu_nondeterministic",
        'text COLLATE public."ci"',
        ["'Abc'", "'straße'", "''"],
        "'abc'",  # equal to 'Abc' under the case-insensitive collation
        needs="icu",
    ),
    case(
        "icu_nondeterministic_array",
        'text[] COLLATE public."ci"',
        ["'{Abc,x}'"],
        "'{abc,x}'",
        needs="icu",
    ),
    case("icu_deterministic", 'text COLLATE "und-x-icu"', ["'Abc'", "'ä'"], "'abc'", needs="icu"),
    case("citext", "citext", ["'Abc'", "'x'"], "'abc'", needs="citext"),
    case("hstore", "hstore", ["'a=>1, b=>\"x y\"'"], "'a=>1, b=>\"x z\"'", needs="hstore"),
    case("ltree", "ltree", ["'top.science.astronomy'"], "'top.science'", needs="ltree"),
    case("cube", "cube", ["'(1,2),(3,4)'"], "'(1,2),(3,5)'", needs="cube"),
]

SCHEMA_SQL = """
CREATE SCHEMA app;
CREATE TYPE public."Role" AS ENUM ('admin', 'user', 'Guest');
CREATE DOMAIN public.role_d AS public."Role" CHECK (VALUE <> 'Guest');
CREATE DOMAIN public.email AS text CHECK (VALUE LIKE '%@%');
CREATE TYPE public.member AS (name text, role public."Role", since timestamptz, score float8);
CREATE TYPE public.pair AS (a int, b text);
CREATE TYPE public.role_range AS RANGE (subtype = public."Role");
CREATE TYPE public.floatrange AS RANGE (subtype = float8);
CREATE FUNCTION public.my_fn(integer) RETURNS integer LANGUAGE sql AS 'SELECT $1';
CREATE FUNCTION public.my_op(integer, integer) RETURNS boolean LANGUAGE sql AS 'SELECT $1 < $2';
CREATE OPERATOR public.<~~> (LEFTARG = integer, RIGHTARG = integer, FUNCTION = public.my_op);
CREATE TEXT SEARCH DICTIONARY public.my_dict (TEMPLATE = simple);
CREATE TEXT SEARCH CONFIGURATION public.my_cfg (COPY = english);
CREATE COLLATION public.my_coll FROM "C";
CREATE TABLE public."User" (
    id int PRIMARY KEY,
    email text NOT NULL,
    role public."Role" NOT NULL DEFAULT 'user',
    roles public."Role"[],
    created timestamptz,
    "camelCase" int,
    doubled int GENERATED ALWAYS AS (id * 2) STORED
);
INSERT INTO public."User" (id, email, role, roles, created, "camelCase")
    SELECT g, 'user' || g || '@example.com',
           (ARRAY['admin', 'user', 'Guest'])[1 + g % 3]::public."Role",
           ARRAY['user']::public."Role"[],
           '2024-01-01 00:00+00'::timestamptz + g * interval '1 hour',
           CASE WHEN g % 5 = 0 THEN NULL ELSE g END
    FROM generate_series(1, 500) g;
CREATE TABLE app."Things" ("Id" bigint, "Kind" public."Role", "Tags" text[], "Payload" jsonb);
INSERT INTO app."Things"
    SELECT g, 'Guest', ARRAY['t' || g], jsonb_build_object('n', g) FROM generate_series(1, 50) g;
-- a physical column order that pg_restore does not reproduce: inheritance, partitions
CREATE TABLE public.parent_t (a int, z text);
CREATE TABLE public.child_t (b text) INHERITS (public.parent_t);
ALTER TABLE public.parent_t ADD COLUMN c public."Role";
INSERT INTO public.child_t (a, z, b, c) VALUES (1, 'z', 'b', 'admin'), (2, NULL, 'bb', 'Guest');
CREATE TABLE public.part_p (a int, b text, r public."Role") PARTITION BY LIST (a);
CREATE TABLE public.part_c (r public."Role", b text, a int);
ALTER TABLE public.part_p ATTACH PARTITION public.part_c FOR VALUES IN (1, 2, 3);
INSERT INTO public.part_p VALUES (1, 'x', 'admin'), (2, 'y', 'Guest'), (3, NULL, NULL);
CREATE TABLE public.parent_plain (a int, z text);
CREATE TABLE public.child_plain (b int) INHERITS (public.parent_plain);
ALTER TABLE public.parent_plain ADD COLUMN c int;
INSERT INTO public.child_plain (a, z, b, c) VALUES (1, 'z', 2, 3), (4, NULL, 5, 6);
-- a dropped column, and a table without columns
CREATE TABLE public.dropped_t (a int, gone text, b public."Role");
INSERT INTO public.dropped_t VALUES (1, 'x', 'user'), (2, 'y', 'admin');
ALTER TABLE public.dropped_t DROP COLUMN gone;
CREATE TABLE public.no_columns ();
INSERT INTO public.no_columns DEFAULT VALUES;
INSERT INTO public.no_columns DEFAULT VALUES;
"""


@dataclass
class Matrix:
    server: PgServer
    source: str  # database names
    target: str
    dump: Path
    result: DumpResult
    cases: list[Case]
    skipped: dict[str, str]  # case key -> why


def table_of(case: Case) -> str:
    return f"public.tm_{case.key}"


def create_cases(server: PgServer, dbname: str) -> tuple[list[Case], dict[str, str]]:
    """The schema and the type matrix in ``dbname``; the cases created and those skipped."""
    version = server.version * 10000
    icu = bool(server.query(dbname, "SELECT 1 FROM pg_collation WHERE collprovider = 'i'"))
    available = {r[0] for r in server.query(dbname, "SELECT name FROM pg_available_extensions")}
    script = [SCHEMA_SQL]
    if icu:
        script.append(
            "CREATE COLLATION public.ci "
            "(provider = icu, locale = 'und-u-ks-level2', deterministic = false);"
        )
    created, skipped = [], {}
    for c in CASES:
        if version < c.min_version * 10000:
            skipped[c.key] = f"needs PostgreSQL {c.min_version}"
            continue
        if c.needs == "icu" and not icu:
            skipped[c.key] = "no ICU"
            continue
        if c.needs and c.needs != "icu":
            if c.needs not in available:
                skipped[c.key] = f"no extension {c.needs}"
                continue
            script.append(f"CREATE EXTENSION IF NOT EXISTS {c.needs};")
        rows = ", ".join(f"({i}, {v})" for i, v in enumerate(c.values, start=1))
        script.append(
            f'CREATE TABLE public."tm_{c.key}" (id int PRIMARY KEY, v {c.type});'
            f'INSERT INTO public."tm_{c.key}" VALUES {rows}, ({len(c.values) + 1}, NULL);'
        )
        created.append(c)
    server.psql(dbname, "\n".join(script))
    return created, skipped


def add_large_objects(server: PgServer, dbname: str) -> None:
    server.psql(
        dbname,
        "SELECT lo_from_bytea(0, convert_to(repeat('large object ', 1000), 'UTF8'));"
        f"SELECT lo_from_bytea(0, decode(repeat('00ff', {MIB // 2}), 'hex'));"  # exactly 1 MiB
        f"SELECT lo_from_bytea(0, decode(repeat('0123456789', {5 * MIB // 10}), 'hex'));"
        "SELECT lo_create(0);",  # empty
    )


def dump_to_file(engine: PostgresEngine, path: Path) -> DumpResult:
    with engine.dump() as running, path.open("wb") as out:
        while block := running.stream.read(CHUNK):
            out.write(block)
        return running.finish()


def chunks_of(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            yield block


def connector(url: str) -> Callable[[], psycopg.Connection[Any]]:
    return lambda: psycopg.connect(url, autocommit=True)


def by_name(stats: list[TableStats]) -> dict[str, TableStats]:
    return {t.name: t for t in stats}


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


# --- row-level security ------------------------------------------------------------------
def role_url(server: PgServer, role: str, password: str, dbname: str) -> str:
    return f"postgresql://{role}:{password}@{server.host}:{server.port}/{dbname}"


@pytest.fixture
def roles(pg_server: PgServer) -> Iterator[Callable[..., str]]:
    """Makes uniquely named roles; drops them (and what they own) at the end."""
    made: list[str] = []

    def make(prefix: str, options: str = "LOGIN") -> str:
        role = f"{prefix}_{uuid.uuid4().hex[:10]}"
        pg_server.psql("postgres", f"CREATE ROLE {role} {options}")
        made.append(role)
        return role

    try:
        yield make
    finally:
        dbs = [r[0] for r in pg_server.query("postgres", "SELECT datname FROM pg_database")]
        for role in reversed(made):
            for db in dbs:
                if db == "template0":
                    continue
                owned = pg_server.query(
                    "postgres",
                    "SELECT 1 FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba"
                    " WHERE d.datname = %s AND r.rolname = %s",
                    (db, role),
                )
                if owned:
                    pg_server.drop_database(db)
                    continue
                if pg_server.database_exists(db):
                    pg_server.psql(db, f"DROP OWNED BY {role}")
            pg_server.psql("postgres", f"DROP ROLE IF EXISTS {role}")


RLS_SQL = """
CREATE SCHEMA "Vault";
CREATE TABLE public.secrets (id int PRIMARY KEY, who text NOT NULL, note text);
INSERT INTO public.secrets SELECT g, CASE WHEN g % 3 = 0 THEN 'alice' ELSE 'bob' END, 'n' || g
    FROM generate_series(1, 30) g;
CREATE TABLE "Vault"."Notes" (id int, body text);
INSERT INTO "Vault"."Notes" SELECT g, 'body ' || g FROM generate_series(1, 12) g;
CREATE TABLE public.open_t (id int);
INSERT INTO public.open_t SELECT generate_series(1, 5);
ALTER TABLE public.secrets ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.secrets FORCE ROW LEVEL SECURITY;
CREATE POLICY only_alice ON public.secrets USING (who = 'alice');
ALTER TABLE "Vault"."Notes" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "Vault"."Notes" FORCE ROW LEVEL SECURITY;  -- no policy: hides every row
"""


def forced(server: PgServer, dbname: str) -> dict[str, tuple[bool, bool]]:
    rows = server.query(
        dbname,
        "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class"
        " WHERE relname IN ('secrets', 'Notes')",
    )
    return {str(r[0]): (bool(r[1]), bool(r[2])) for r in rows}


def test_forced_rls_restored_by_a_non_superuser_owner_is_verified(
    pg_server: PgServer, pg_db: str, pg_new_db: str, roles: Callable[..., str], tmp_path: Path
) -> None:
    password = "rls-" + uuid.uuid4().hex
    owner = roles("sr_rls_owner", f"LOGIN CREATEDB PASSWORD '{password}'")
    source = pg_db.rsplit("/", 1)[1]
    pg_server.psql(source, RLS_SQL)
    pg_server.psql(
        source,
        f"ALTER TABLE public.secrets OWNER TO {owner};"
        f'ALTER TABLE "Vault"."Notes" OWNER TO {owner};',
    )
    with pytest.raises(RowSecurityBlocked, match="secrets"):  # the owner sees only 10 rows
        PostgresEngine(role_url(pg_server, owner, password, source)).table_stats()
    path = tmp_path / "rls.dump"
    result = dump_to_file(PostgresEngine(pg_db), path)  # as the superuser: every row
    assert by_name(result.tables)["public.secrets"].rows == 30
    target_name = pg_new_db.rsplit("/", 1)[1]
    target = PostgresEngine(role_url(pg_server, owner, password, target_name))
    target.restore(chunks_of(path))
    assert pg_server.query(
        "postgres",
        "SELECT r.rolname FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba"
        " WHERE d.datname = %s",
        (target_name,),
    ) == [(owner,)]
    assert target.table_stats() == result.tables
    # the policies are still forced afterwards, and still hide rows from the owner
    assert forced(pg_server, target_name) == {"secrets": (True, True), "Notes": (True, True)}
    with psycopg.connect(role_url(pg_server, owner, password, target_name)) as conn:
        assert conn.execute("SELECT count(*) FROM public.secrets").fetchone() == (10,)
    # a database this engine did not restore: never altered, a clear error instead
    fresh = PostgresEngine(role_url(pg_server, owner, password, target_name))
    with pytest.raises(RowSecurityBlocked) as raised:
        fresh.table_stats()
    message = str(raised.value)
    assert "public.secrets" in message
    assert "Vault.Notes" in message
    assert "BYPASSRLS" in message
    assert owner in message
    assert raised.value.exit_code == 5
    assert forced(pg_server, target_name) == {"secrets": (True, True), "Notes": (True, True)}


def test_forced_rls_lifted_as_a_member_of_the_owner(
    pg_server: PgServer, pg_db: str, roles: Callable[..., str]
) -> None:
    password = "rls-" + uuid.uuid4().hex
    table_owner = roles("sr_rls_team", "NOLOGIN")
    member = roles("sr_rls_member", f"LOGIN NOINHERIT PASSWORD '{password}'")
    outsider = roles("sr_rls_outsider", f"LOGIN PASSWORD '{password}'")
    dbname = pg_db.rsplit("/", 1)[1]
    pg_server.psql(dbname, RLS_SQL)
    pg_server.psql(
        dbname,
        f"""
        GRANT {table_owner} TO {member};
        ALTER TABLE public.secrets OWNER TO {table_owner};
        ALTER TABLE "Vault"."Notes" OWNER TO {table_owner};
        ALTER TABLE "Vault"."Notes" NO FORCE ROW LEVEL SECURITY;  -- enabled, not forced
        GRANT USAGE ON SCHEMA "Vault" TO {table_owner}, {member}, {outsider};
        GRANT SELECT ON ALL TABLES IN SCHEMA public, "Vault" TO {member}, {outsider};
        """,
    )
    expected = snapshot_stats(pg_db)
    as_member = connector(role_url(pg_server, member, password, dbname))
    assert parallel_table_stats(as_member, workers=2, lift_forced_rls=True) == expected
    assert forced(pg_server, dbname) == {"secrets": (True, True), "Notes": (True, False)}
    with pytest.raises(RowSecurityBlocked, match="secrets"):
        parallel_table_stats(as_member, workers=2)
    as_outsider = connector(role_url(pg_server, outsider, password, dbname))
    with pytest.raises(RowSecurityBlocked, match=table_owner):
        parallel_table_stats(as_outsider, workers=2, lift_forced_rls=True)
    assert forced(pg_server, dbname) == {"secrets": (True, True), "Notes": (True, False)}


def snapshot_stats(url: str) -> list[TableStats]:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        try:
            return snapshot_table_stats(conn)
        finally:
            conn.execute("ROLLBACK")


def test_snapshot_stats_refuse_tables_hidden_by_policies(
    pg_server: PgServer, pg_db: str, roles: Callable[..., str]
) -> None:
    password = "rls-" + uuid.uuid4().hex
    reader = roles("sr_rls_reader", f"LOGIN PASSWORD '{password}'")
    dbname = pg_db.rsplit("/", 1)[1]
    pg_server.psql(dbname, RLS_SQL)
    pg_server.psql(
        dbname,
        f'GRANT USAGE ON SCHEMA "Vault" TO {reader};'
        f'GRANT SELECT ON ALL TABLES IN SCHEMA public, "Vault" TO {reader};',
    )
    with pytest.raises(RowSecurityBlocked, match="BYPASSRLS"):
        snapshot_stats(role_url(pg_server, reader, password, dbname))
    pg_server.psql("postgres", f"ALTER ROLE {reader} BYPASSRLS")
    assert snapshot_stats(role_url(pg_server, reader, password, dbname)) == snapshot_stats(pg_db)
