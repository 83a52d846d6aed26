"""Portable PostgreSQL checksums (engines/postgres_checksum.py) and row-level security, on the
real throwaway server: forced RLS restored by a non-superuser owner is verified, lifted for a
member of the owner, and snapshot stats refuse tables hidden by policies."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from strongroom.engines.base import TableStats
from strongroom.engines.postgresql import PostgresEngine
from strongroom.engines.postgresql.stats import parallel_table_stats, snapshot_table_stats
from strongroom.errors import RowSecurityBlocked
from tests.engines.postgresql.stats_matrix import by_name, chunks_of, connector, dump_to_file
from tests.fixtures.postgres import PgServer


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
