"""The fixtures and small helpers the faithful-restore attack modules
(tests/engines/postgresql/test_fidelity*_attacks.py) share: a repository environment,
databases and roles dropped after the test, URLs and statements on the real servers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql

from tests.fixtures.postgres import PgServer
from tests.helpers import cli_ok, repository_env, run_cli

ID = sql.Identifier


def _url(server: PgServer, db: str, user: str | None = None, pw: str | None = None) -> str:
    u = quote(user or server.user, safe="")
    p = quote(pw or server.password, safe="")
    return f"postgresql://{u}:{p}@{server.host}:{server.port}/{quote(db, safe='')}"


def _exec(server: PgServer, db: str, *statements: sql.Composable | str) -> None:
    with psycopg.connect(_url(server, db), autocommit=True) as conn:
        for s in statements:
            conn.execute(s if not isinstance(s, str) else s.encode())


class Env:
    def __init__(self, tmp_path: Path) -> None:
        self.env = repository_env(tmp_path)
        cli_ok(run_cli("init", env=self.env))


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


@pytest.fixture
def cleanup(pg_server: PgServer, pg_server2: PgServer) -> Iterator[list[tuple[str, str, str]]]:
    """Register ("db"|"role", server 1|2, name) to drop after the test."""
    items: list[tuple[str, str, str]] = []
    yield items
    servers = {"1": pg_server, "2": pg_server2}
    for kind, which, name in items:
        server = servers[which]
        if kind == "db":
            with server.connect() as conn:
                like = name.replace("_", r"\_") + "%"
                for (db,) in conn.execute(
                    "SELECT datname FROM pg_database WHERE datname LIKE %s", (like,)
                ).fetchall():
                    server.drop_database(db)
    for kind, which, name in items:
        if kind == "role":
            server = servers[which]
            with server.connect() as conn:
                for (db,) in conn.execute(
                    "SELECT datname FROM pg_database WHERE datallowconn"
                ).fetchall():
                    try:
                        with psycopg.connect(_url(server, db), autocommit=True) as c2:
                            c2.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(ID(name)))
                    except psycopg.Error:
                        pass
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(ID(name)))


def _new_db(
    server: PgServer, cleanup: list[tuple[str, str, str]], name: str, which: str = "1"
) -> str:
    server.create_database(name)
    cleanup.append(("db", which, name))
    return name


def _role(
    server: PgServer,
    cleanup: list[tuple[str, str, str]],
    name: str,
    which: str = "1",
    extra: str = "NOLOGIN",
) -> str:
    _exec(server, "postgres", sql.SQL("CREATE ROLE {} " + extra).format(ID(name)))
    cleanup.append(("role", which, name))
    return name


def _small_table(
    server: PgServer, db: str, schema: str = "public", owner: str | None = None
) -> None:
    stmts: list[sql.Composable] = []
    if schema != "public":
        stmts.append(sql.SQL("CREATE SCHEMA {}").format(ID(schema)))
    stmts.append(
        sql.SQL("CREATE TABLE {}.{} (id int PRIMARY KEY, v text)").format(ID(schema), ID('T ab"le'))
    )
    stmts.append(
        sql.SQL("INSERT INTO {}.{} SELECT g, md5(g::text) FROM generate_series(1, 200) g").format(
            ID(schema), ID('T ab"le')
        )
    )
    if owner:
        stmts.append(
            sql.SQL("ALTER TABLE {}.{} OWNER TO {}").format(ID(schema), ID('T ab"le'), ID(owner))
        )
    _exec(server, db, *stmts)


def _roles_named(server: PgServer, *names: str) -> list[str]:
    rows = server.query(
        "postgres", "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (list(names),)
    )
    return [r[0] for r in rows]
