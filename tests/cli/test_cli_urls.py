"""Database URLs as users write them, through the real CLI against the test servers
(issue 16): a raw ``@`` in a password reaches the server, framework URL forms work, and no
part of any password shows in stdout/stderr, in either log format, on success or failure."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from psycopg import sql

from tests.fixtures.mariadb import MariaDbServer
from tests.fixtures.postgres import PgServer, unique_db_name
from tests.helpers import (
    cli_fails,
    cli_ok,
    make_sqlite_db,
    owned_database,
    repository_env,
    run_cli,
    sqlite_counts,
)

RAW_AT = "Secr@tPart2@x:y/z#q?%41"
NASTY = [
    RAW_AT,
    'p@ss word\'s "q"',
    "ünïcödé€中",
    "100%",
    "***",
    "a",
    "percent",
]
_SPLIT = re.compile(r"[@:/#?%\s\"'*]+")


def assert_hidden(password: str, *results: object) -> str:
    """No form and no piece of ``password`` in the outputs; no word mangled."""
    text = ""
    for result in results:
        text += result.stdout.decode("utf-8", "replace") + result.stderr.decode("utf-8", "replace")  # type: ignore[attr-defined]
    forms = {password, quote(password, safe=""), quote(password), json.dumps(password)[1:-1]}
    for form in forms - {"***"}:  # "***" is also the placeholder that stands for a password
        if len(form) >= 4:
            assert form not in text, (form, text)
        else:  # a one-letter password: never a token of its own
            assert not re.search(rf"(?<![\w*]){re.escape(form)}(?![\w*])", text), (form, text)
    for piece in _SPLIT.split(password):
        if len(piece) >= 4:
            token = rf"(?<![\w]){re.escape(piece)}(?![\w])"
            assert not re.search(token, text), (piece, text)
    assert not re.search(r"\w\*\*\*|\*\*\*\w", text), text  # e.g. ***ercent
    return text


def _pg_account(server: PgServer, password: str) -> tuple[str, str]:
    return owned_database(server, password, "url", 25)


@pytest.fixture
def pg_cleanup(pg_server: PgServer) -> Iterator[list[tuple[str, str]]]:
    made: list[tuple[str, str]] = []
    yield made
    for kind, name in reversed(made):
        if kind == "db":
            pg_server.drop_database(name)
    for kind, name in made:
        if kind == "role":
            with pg_server.connect() as conn:
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def test_raw_at_password_backs_up_and_restores_postgresql(
    pg_server: PgServer, pg_cleanup: list[tuple[str, str]], tmp_path: Path
) -> None:
    role, db = _pg_account(pg_server, RAW_AT)
    copy = f"{db}_copy"
    pg_cleanup += [("role", role), ("db", db), ("db", copy)]
    env = repository_env(tmp_path)
    cli_ok(run_cli("init", env=env))
    where = f"{pg_server.host}:{pg_server.port}"
    # Prisma's form, password not percent-encoded
    source = f"postgresql://{role}:{RAW_AT}@{where}/{db}?schema=public&connection_limit=5"
    backup = run_cli("-v", "backup", source, "--target", "raw", env=env)
    out = cli_ok(backup)
    assert "complete" in out
    assert "whole database" in backup.stderr.decode()  # schema=public explained at info
    target = f"postgresql+psycopg2://{role}:{RAW_AT}@{where}/{copy}"
    restore = run_cli("-v", "--log-format", "json", "restore", "latest", "--to", target, env=env)
    assert "verified" in cli_ok(restore)
    assert pg_server.query(copy, "SELECT count(*) FROM t") == [(25,)]
    assert_hidden(RAW_AT, backup, restore)


def test_the_pooler_is_refused_in_one_line_and_can_be_allowed(tmp_path: Path) -> None:
    env = repository_env(tmp_path)
    cli_ok(run_cli("init", env=env))
    url = f"postgresql://app:{RAW_AT}@127.0.0.1:6543/shop?pgbouncer=true"
    refused = run_cli("backup", url, env=env)
    err = cli_fails(refused, 5, r"pooler.*127\.0\.0\.1:5432")
    assert_hidden(RAW_AT, refused)
    allowed = run_cli("backup", url, env={**env, "STRONGROOM_ALLOW_POOLER": "1"})
    assert allowed.returncode != 0 and "pooler" not in allowed.stderr.decode()
    assert "cannot reach PostgreSQL at 127.0.0.1:6543" in allowed.stderr.decode()
    assert "Part2" not in err


def test_sqlite_absolute_and_prisma_forms_back_up(tmp_path: Path) -> None:
    path = make_sqlite_db(tmp_path / "app.db", users=20, orders=40)
    env = repository_env(tmp_path)
    cli_ok(run_cli("init", env=env))
    cli_ok(run_cli("backup", f"sqlite:///{path}", "--target", "abs4", env=env))  # sqlite:////…
    cli_ok(run_cli("backup", f"file:{path}", "--target", "prisma", env=env))
    restored = tmp_path / "restored.db"
    cli_ok(
        run_cli("restore", "latest", "--target", "prisma", "--to", f"sqlite:///{restored}", env=env)
    )
    assert sqlite_counts(restored) == sqlite_counts(path)


# --- nasty passwords, both engines, both log formats, success and failure ----------------
def _mysql_account(server: MariaDbServer, password: str) -> tuple[str, str]:
    user = f"url_{uuid.uuid4().hex[:8]}"
    db = unique_db_name("url")
    server.create_database(db)
    server.query(None, "CREATE USER %s@'%%' IDENTIFIED BY %s", (user, password))
    server.query(None, f"GRANT ALL ON `{db}`.* TO %s@'%%'", (user,))
    server.query(db, "CREATE TABLE t (id INT PRIMARY KEY, v TEXT)")
    server.query(db, "INSERT INTO t VALUES (1, 'one'), (2, 'two')")
    return user, db


def _runs(env: dict[str, str], good: str, bad_port: str, bad_password: str) -> list[object]:
    results = []
    for fmt in ("human", "json"):
        ok = run_cli("-v", "--log-format", fmt, "backup", good, "--target", f"n{fmt}", env=env)
        cli_ok(ok)
        results.append(ok)
        for bad in (bad_port, bad_password):
            failed = run_cli("-v", "--log-format", fmt, "backup", bad, env=env)
            assert failed.returncode == 5, failed.stderr.decode()
            results.append(failed)
    return results


@pytest.mark.parametrize("password", NASTY, ids=range(len(NASTY)))
def test_nasty_postgresql_passwords_never_show(
    password: str, pg_server: PgServer, pg_cleanup: list[tuple[str, str]], tmp_path: Path
) -> None:
    role, db = _pg_account(pg_server, password)
    pg_cleanup += [("role", role), ("db", db)]
    env = repository_env(tmp_path)
    cli_ok(run_cli("init", env=env))
    host = pg_server.host

    def url(written: str, port: int) -> str:
        return f"postgresql://{role}:{written}@{host}:{port}/{db}?sslmode=disable&pool=5"

    results = _runs(
        env,
        url(password, pg_server.port),  # as typed, raw
        url(quote(password, safe=""), 1),  # percent-encoded, nothing listens on port 1
        url(quote(password + "x", safe=""), pg_server.port),  # authentication fails
    )
    text = assert_hidden(password, *results)
    assert "authentication failed" in text and "cannot reach PostgreSQL at" in text


@pytest.mark.parametrize("password", NASTY, ids=range(len(NASTY)))
def test_nasty_mysql_passwords_never_show(
    password: str, mariadb_server: MariaDbServer, tmp_path: Path
) -> None:
    user, db = _mysql_account(mariadb_server, password)
    try:
        env = repository_env(tmp_path)
        cli_ok(run_cli("init", env=env))
        host = mariadb_server.host

        def url(written: str, port: int) -> str:
            return f"mysql2://{user}:{written}@{host}:{port}/{db}?charset=utf8mb4&ssl-mode=DISABLED"

        results = _runs(
            env,
            url(password, mariadb_server.port),
            url(quote(password, safe=""), 1),
            url(quote(password + "x", safe=""), mariadb_server.port),
        )
        text = assert_hidden(password, *results)
        assert "authentication failed" in text and "cannot reach MySQL at" in text
        assert "charset=utf8mb4" in text  # the ignored parameter is named at info level
    finally:
        mariadb_server.query(None, "DROP USER IF EXISTS %s@'%%'", (user,))
        mariadb_server.drop_database(db)


def test_the_libpq_variables_alone_name_the_database(
    pg_server: PgServer, pg_db: str, tmp_path: Path
) -> None:
    """A `pg_dump` script's environment (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE)
    and no DATABASE_URL: `strongroom backup` backs that database up, and the password
    appears nowhere in the output."""
    name = pg_db.rsplit("/", 1)[1]
    pg_server.psql(name, "CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2);")
    env = {
        **repository_env(tmp_path),
        "PGHOST": pg_server.host,
        "PGPORT": str(pg_server.port),
        "PGUSER": pg_server.user,
        "PGPASSWORD": pg_server.password,
        "PGDATABASE": name,
    }
    cli_ok(run_cli("init", env=env))
    result = run_cli("backup", env=env)
    out = cli_ok(result)
    assert f"target       {name} " in out, out
    assert pg_server.password not in out + result.stderr.decode()
    listed = json.loads(cli_ok(run_cli("list", "--json", env=env)))
    assert [b["target"] for b in listed] == [name]
