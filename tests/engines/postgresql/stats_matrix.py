"""The type matrix of the portable PostgreSQL checksum tests (test_stats.py): one table per
type (with NULLs) and a different value for row 1, the schema around it, and the small helpers
that build, dump and restore it on the real throwaway server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from strongroom.engines.base import DumpResult, TableStats
from strongroom.engines.postgresql import PostgresEngine
from tests.fixtures.postgres import PG_USER, PgServer

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
