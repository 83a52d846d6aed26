"""Issue 13, input 3, attacked: the swap of a restore with rewritten DEFINERs
(``--rewrite-definers``): its kept copy and its undo re-create the target's objects, a change
to the target between plan and restore, kill -9 while the staged database is created or while
the swap waits for a lock, on the real MariaDB the harness starts. Tests marked
``xfail(strict=True)`` show a bug (the reason says which); the others hold."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pymysql
import pytest

from strongroom.engines.mysql import MysqlEngine
from strongroom.engines.mysql import swap as swap_module
from strongroom.errors import RestoreFailed
from strongroom.services.backup import run_backup
from strongroom.services.restore import plan_restore, run_restore
from tests.engines.mysql.definers_helpers import (
    REWRITE,
    Crew,
    _definers,
    _dump,
    _no_password,
    _repository,
    _run_as,
    _shop,
    _start,
    _url,
    _wait_for_lock,
    crew,
)
from tests.fixtures.mariadb import MariaDbServer
from tests.helpers import run_cli

__all__ = ["crew"]  # fixtures

# --- the swap's kept copy and its undo re-create the target's objects ---------------------


def test_the_kept_old_database_holds_the_targets_objects_after_a_rewrite(
    mariadb_server, mysql_db, crew
):
    server, name = mariadb_server, crew.name
    _shop(crew)
    before = _definers(server, name)
    data, state = _dump(server, name)
    engine = MysqlEngine(_url(server, crew.app, name))
    staged = engine.staging()
    staged.restore([data], state=state, options=REWRITE)
    old = engine.swap_in(staged, keep_old=True)
    assert old is not None
    kept = _definers(server, old)
    assert set(kept) == set(before), f"missing in {old}: {set(before) - set(kept)}"


def test_an_undone_swap_puts_back_the_targets_views_of_another_definer(
    mariadb_server, mysql_db, crew, monkeypatch
):
    server, name = mariadb_server, crew.name
    _shop(crew)
    data, state = _dump(server, name)
    _run_as(server, crew.app, name, ["DELETE FROM products WHERE id = 1"])  # tell them apart
    before = _definers(server, name)
    engine = MysqlEngine(_url(server, crew.app, name))
    lines = engine.plan_checks(state, REWRITE).lines
    assert any("if the swap has to be undone" in line and "view dear" in line for line in lines)
    staged = engine.staging()
    staged.restore([data], state=state, options=REWRITE)

    real_create = swap_module.create

    def create(cur: Any, database: str, definition: Any, *, replace: bool = False) -> None:
        if definition.kind == "EVENT" and database == name:
            # the restored event comes last in step 4: fail it once, the swap is undone
            monkeypatch.setattr(swap_module, "create", real_create)
            raise pymysql.err.OperationalError(1205, "Lock wait timeout (forced by the test)")
        real_create(cur, database, definition, replace=replace)

    monkeypatch.setattr(swap_module, "create", create)
    with pytest.raises(RestoreFailed) as info:
        engine.swap_in(staged, keep_old=False)
    staged.drop()
    _no_password(info.value)
    assert server.query(name, "SELECT id FROM products") == [(2,)]
    assert set(_definers(server, name)) == set(before), str(info.value)
    assert "the original database is unchanged" in str(info.value)


def test_a_change_to_the_target_between_plan_and_restore(mariadb_server, mysql_db, crew, tmp_path):
    """The plan saw only the application's objects; another account adds one before the
    restore starts: the restore still completes and the target is the backup's."""
    server, name, app = mariadb_server, crew.name, crew.app
    _run_as(
        server,
        app,
        name,
        [
            "CREATE TABLE products (id INT PRIMARY KEY, name VARCHAR(40))",
            "INSERT INTO products VALUES (1, 'pen')",
            "CREATE VIEW names AS SELECT name FROM products",
        ],
    )
    _env, repo = _repository(tmp_path)
    manifest = run_backup(repo, MysqlEngine(server.url(name))).manifest
    engine = MysqlEngine(_url(server, app, name))
    plan = plan_restore(repo, manifest, engine, safety_backup=False)
    assert plan.checks.refusal is None
    _run_as(server, crew.other, name, ["CREATE VIEW sneaky AS SELECT id FROM products"])
    report = run_restore(repo, manifest, engine, plan=plan, keep_old=False)
    assert report.ok and report.swapped
    assert _definers(server, name) == {"view names": f"{app}@%"}
    assert not [d for d in server.databases() if d.startswith((f"{name}_sr_", f"{name}_old_"))]


def _target_state(server: MariaDbServer, name: str) -> tuple[Any, ...]:
    return (
        server.query(name, "SELECT * FROM products ORDER BY id"),
        _definers(server, name),
    )


def _kill_while_waiting(
    crew: Crew, tmp_path: Path, statement: str, hold: Callable[[Any], None]
) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """A restore with --rewrite-definers, killed (-9) while a statement starting with
    ``statement`` waits for a lock ``hold`` took; the target's state before and after."""
    server, name = crew.server, crew.name
    _shop(crew)
    env, repo = _repository(tmp_path)
    run_backup(repo, MysqlEngine(server.url(name)))
    _run_as(server, crew.app, name, ["DELETE FROM products WHERE id = 2"])
    before = _target_state(server, name)
    blocker = server.connect(name, autocommit=False)
    try:
        with blocker.cursor() as cur:
            hold(cur)
        proc = _start(
            env,
            "restore",
            "latest",
            "--to",
            _url(server, crew.app, name),
            "--rewrite-definers",
            "--no-safety-backup",
            "--yes",
        )
        try:
            _wait_for_lock(server, statement, proc)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=30)
    finally:
        blocker.rollback()
        with blocker.cursor() as cur:
            cur.execute("UNLOCK TABLES")
        blocker.close()
    # what the killed client's connection had sent runs once the lock is free
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and server.query(
        None,
        "SELECT 1 FROM information_schema.PROCESSLIST WHERE USER = %s AND COMMAND <> 'Sleep'",
        (crew.app,),
    ):
        time.sleep(0.05)
    return before, _target_state(server, name)


def test_kill_9_while_the_staged_database_is_created_leaves_the_target_intact(
    mariadb_server, mysql_db, crew, tmp_path
):
    def hold(cur: Any) -> None:
        cur.execute("FLUSH TABLES WITH READ LOCK")

    before, after = _kill_while_waiting(crew, tmp_path, "CREATE DATABASE", hold)
    assert after == before


def test_kill_9_while_the_swap_waits_for_a_lock_leaves_the_target_intact(
    mariadb_server, mysql_db, crew, tmp_path
):
    def hold(cur: Any) -> None:
        cur.execute("START TRANSACTION")
        cur.execute("SELECT * FROM products")
        cur.fetchall()

    before, _ = _kill_while_waiting(crew, tmp_path, "DROP TRIGGER", hold)
    # the queued DROP TRIGGER of the dead client ran once the lock was free: the next
    # command settles the interrupted swap from its journal (issue 14)
    env, _repo = _repository(tmp_path / "next")
    out = run_cli("recover", "--to", _url(crew.server, crew.app, crew.name), env=env)
    assert out.returncode == 0, out.stderr.decode() + out.stdout.decode()
    rows, definers_now = _target_state(crew.server, crew.name)
    assert rows == before[0]
    # every object is back; the undo re-created the other account's trigger with the
    # restoring account as definer, as the plan of a --rewrite-definers restore said
    assert definers_now == {
        k: (f"{crew.app}@%" if k == "trigger audit_update" else v) for k, v in before[1].items()
    }
    assert not [d for d in crew.server.databases() if d.startswith(f"{crew.name}_")]
