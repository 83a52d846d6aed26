"""Hostile cases for faithful PostgreSQL restores: a restore killed while it creates roles or
while it restores in place, and two concurrent restores into one target.

Bugs found are kept as ``xfail(strict=True)`` tests naming the bug; the others protect
behaviour that held up under attack."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid

from psycopg import sql

from tests.engines.postgresql.fidelity_attack_helpers import (
    ID,
    Env,
    _exec,
    _new_db,
    _role,
    _roles_named,
    _url,
    cleanup,
    env,
)
from tests.fixtures.postgres import PgServer, unique_db_name
from tests.helpers import REPO_ROOT, STRONGROOM, cli_ok, run_cli

__all__ = ["cleanup", "env"]  # fixtures


def _bulk_source(
    pg_server: PgServer, cleanup: list[tuple[str, str, str]], env: Env
) -> tuple[str, str]:
    tag = uuid.uuid4().hex[:6]
    owner = _role(pg_server, cleanup, f"bulk_owner_{tag}")
    src = _new_db(pg_server, cleanup, unique_db_name("bulk"))
    _exec(
        pg_server,
        src,
        "CREATE TABLE big (id int, v text)",
        "INSERT INTO big SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 400000) g",
        sql.SQL("ALTER TABLE big OWNER TO {}").format(ID(owner)),
    )
    cli_ok(run_cli("backup", _url(pg_server, src), "--target", "bulk", env=env.env))
    return src, owner


def _start_cli(env: Env, *args: str) -> subprocess.Popen[bytes]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    full.update(env.env)
    return subprocess.Popen(
        [*STRONGROOM, *args],
        env=full,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _wait_for_staging(server: PgServer, prefix: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = server.query(
            "postgres",
            "SELECT 1 FROM pg_stat_activity WHERE datname LIKE %s"
            " AND application_name LIKE 'pg_restore%%'",
            (prefix + "_sr_%",),
        )
        if rows:
            return
        time.sleep(0.05)
    raise AssertionError("pg_restore never started")


def test_kill_during_restore_with_create_roles_leaves_no_roles(
    pg_server: PgServer, pg_server2: PgServer, env: Env, cleanup: list[tuple[str, str, str]]
) -> None:
    _src, owner = _bulk_source(pg_server, cleanup, env)
    cleanup.append(("role", "2", owner))
    target = unique_db_name("killed")
    cleanup.append(("db", "2", target))
    proc = _start_cli(
        env, "restore", "latest", "--to", _url(pg_server2, target), "--yes", "--create-roles"
    )
    try:
        _wait_for_staging(pg_server2, target)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert not pg_server2.database_exists(target)
    # the next (successful) restore must clean up after the killed one
    new = target + "_b"
    cli_ok(
        run_cli(
            "restore",
            "latest",
            "--to",
            _url(pg_server2, new),
            "--yes",
            "--skip-missing-roles",
            env=env.env,
        )
    )
    assert _roles_named(pg_server2, owner) == []


def test_kill_during_in_place_restore_leaves_target_usable(
    pg_server: PgServer, env: Env, cleanup: list[tuple[str, str, str]]
) -> None:
    src, _owner = _bulk_source(pg_server, cleanup, env)
    _exec(pg_server, src, "DELETE FROM big WHERE id < 10")
    proc = _start_cli(
        env, "restore", "latest", "--to", _url(pg_server, src), "--yes", "--no-safety-backup"
    )
    try:
        _wait_for_staging(pg_server, src)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    rows = pg_server.query(
        "postgres", "SELECT datallowconn FROM pg_database WHERE datname = %s", (src,)
    )
    assert rows == [(True,)]
    assert pg_server.query(src, "SELECT count(*) FROM big") == [(400000 - 9,)]
    # and a new restore still works afterwards
    cli_ok(
        run_cli(
            "restore",
            "latest",
            "--to",
            _url(pg_server, src),
            "--yes",
            "--no-safety-backup",
            env=env.env,
        )
    )
    assert pg_server.query(src, "SELECT count(*) FROM big") == [(400000,)]


def test_two_concurrent_restores_into_one_target(
    pg_server: PgServer, env: Env, cleanup: list[tuple[str, str, str]]
) -> None:
    src, _owner = _bulk_source(pg_server, cleanup, env)
    target = src + "_both"
    cleanup.append(("db", "1", target))
    args = ("restore", "latest", "--to", _url(pg_server, target), "--yes", "--drop-old")
    procs = [_start_cli(env, *args) for _ in range(2)]
    results = [(p.wait(timeout=120), p.stderr.read().decode() if p.stderr else "") for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes[0] == 0, results
    for code, err in results:
        assert code in (0, 5), err
        assert "Traceback" not in err
        if code:
            assert len([x for x in err.splitlines() if x.startswith("error:")]) == 1, err
    rows = pg_server.query(
        "postgres",
        "SELECT datname, datallowconn FROM pg_database WHERE datname LIKE %s",
        (target + "%",),
    )
    assert rows == [(target, True)]
    assert pg_server.query(target, "SELECT count(*) FROM big") == [(400000,)]
