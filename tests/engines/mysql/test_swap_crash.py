"""A MySQL/MariaDB swap killed at each step boundary is settled by the next command.

The real command line restores a backup of an application-shaped database (``_shop``:
tables, views, triggers, routines, events, all made by the application's account) over a
live, changed copy with ``STRONGROOM_TEST_KILL_AT=<step>`` (SIGKILL right after the
journal entry for that step is committed); the journal left on the server is checked (so
the kill landed where it should); then the next command (``backup``, ``restore
--dry-run`` or ``recover``) runs as a new process and must print one line about the swap
and leave the target exactly as it was or exactly restored (rows and ``SHOW CREATE`` of
every object), with no staged copy and no old copy beyond the one a completed swap keeps;
then a backup works. One more case kills the client while its swap waits for a metadata
lock: the recovery ends the dead client's session so its queued statement never runs.
"""

from __future__ import annotations

import re
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymysql
import pytest

from strongroom.engines import swap_journal
from strongroom.engines.mysql import MysqlEngine, swap_store
from strongroom.engines.swap_journal import JournalEntry
from strongroom.services.backup import run_backup
from strongroom.services.repository_access import RepositoryLocation
from tests.engines.mysql.definers_helpers import _start, _wait_for_lock
from tests.engines.mysql.test_swap_fidelity import APP_PASSWORD, _as_app, _definitions, _shop
from tests.fixtures.mariadb import MariaDbServer
from tests.helpers import cli_ok, run_cli

PREFIX = "swc"


@dataclass(frozen=True)
class World:
    env: dict[str, str]
    backup_id: str
    restored: Any  # the state the backup restores (its database name normalized)
    source: str
    user: str
    home: Path


def state(server: MariaDbServer, name: str, source: str | None = None) -> Any:
    """Tables, every row and ``SHOW CREATE`` of every object, the name (and ``source``,
    which a restored string literal keeps) normalized."""
    tables = server.query(
        None,
        "SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s"
        " ORDER BY TABLE_NAME",
        (name,),
    )
    rows = {t: server.query(name, f"SELECT * FROM `{t}` ORDER BY 1") for t, _ in tables}
    found = repr((tables, rows, sorted(_definitions(server, name).items())))
    return found.replace(name, "<DB>").replace(source or name, "<DB>")


def journals(server: MariaDbServer) -> list[JournalEntry]:
    rows = server.query(
        None,
        "SELECT TABLE_SCHEMA FROM information_schema.TABLES WHERE TABLE_NAME = %s",
        (swap_store.TABLE,),
    )
    found = []
    for (schema,) in rows:
        for (text,) in server.query(schema, f"SELECT entry FROM `{swap_store.TABLE}`"):
            found.append(swap_journal.decode(text if isinstance(text, str) else text.decode()))
    return found


def siblings(server: MariaDbServer, name: str) -> list[str]:
    return sorted(d for d in server.databases() if d.startswith(f"{name}_"))


def _drop_all(server: MariaDbServer, name: str) -> None:
    for other in [name, *siblings(server, name)]:
        server.drop_database(other)


@pytest.fixture(scope="module")
def world(mariadb_server: MariaDbServer, tmp_path_factory) -> Iterator[World]:
    """An application account with rights on ``swc_…`` databases and a repository holding
    one backup of its shop."""
    folder = tmp_path_factory.mktemp("mysql-swap-crash")
    env = {
        "STRONGROOM_REPO": str(folder / "repo"),
        "STRONGROOM_KEY_FILE": str(folder / "repo.key"),
    }
    user = f"app_{uuid.uuid4().hex[:8]}"
    server = mariadb_server
    server.query(None, f"CREATE USER '{user}'@'%' IDENTIFIED BY '{APP_PASSWORD}'")
    server.query(None, f"GRANT ALL ON `{PREFIX}\\_%`.* TO '{user}'@'%'")
    source = f"{PREFIX}_src_{uuid.uuid4().hex[:8]}"
    server.query(None, f"CREATE DATABASE `{source}`")
    try:
        _shop(server, user, source)
        cli_ok(run_cli("init", env=env))
        out = cli_ok(run_cli("backup", server.url(source), env=env))
        found = re.search(r"backup (\S+) complete", out)
        assert found is not None, out
        yield World(
            env, found.group(1), state(server, source), source, user, folder / "second-host"
        )
    finally:
        _drop_all(server, source)
        server.query(None, f"DROP USER IF EXISTS '{user}'@'%'")


def live_database(server: MariaDbServer, world: World) -> tuple[str, Any]:
    """A live shop that drifted from the backup (rows, a trigger dropped, a view added)."""
    name = f"{PREFIX}_live_{uuid.uuid4().hex[:8]}"
    server.query(None, f"CREATE DATABASE `{name}`")
    _shop(server, world.user, name)
    _as_app(
        server,
        world.user,
        name,
        [
            "UPDATE products SET price = price + 1",
            "DELETE FROM products WHERE id = 3",
            "DROP TRIGGER no_free",
            "CREATE VIEW dear AS SELECT id FROM products WHERE price > 100",
        ],
    )
    return name, state(server, name)


CASES = [
    # step, --drop-old, the next command, what it must do to the swap
    ("close", False, "backup", "undid"),
    ("rename_away", False, "plan", "undid"),
    ("rename_in", True, "recover", "undid"),
    ("finish", False, "recover", "completed"),
    ("drop_old", True, "backup", "completed"),
]


def _next_command(command: str, url: str, world: World) -> str:
    env = {**world.env, "HOME": str(world.home), "XDG_STATE_HOME": str(world.home / "state")}
    if command == "backup":
        result = run_cli("backup", url, env=env)
    elif command == "plan":
        result = run_cli("restore", world.backup_id, "--to", url, "--dry-run", env=env)
    else:
        result = run_cli("recover", "--to", url, env=env)
    cli_ok(result)
    return result.stdout.decode() + result.stderr.decode()


@pytest.mark.parametrize(("step", "drop_old", "command", "verb"), CASES)
def test_a_restore_killed_at_each_step_of_its_swap_is_settled_by_the_next_command(
    mariadb_server, world, step, drop_old, command, verb
):
    server = mariadb_server
    name, before = live_database(server, world)
    url = server.url(name)
    try:
        args = ["restore", world.backup_id, "--to", url, "--yes", "--no-safety-backup"]
        if drop_old:
            args.append("--drop-old")
        killed = run_cli(*args, env={**world.env, swap_journal.TEST_KILL_ENV: step})
        assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()

        ours = [e for e in journals(server) if e.target == name]
        assert [e.step.value for e in ours] == [step]
        assert ours[0].keep_old is not drop_old
        assert (state(server, name) == before) is (step in ("close", "rename_away"))

        out = _next_command(command, url, world)
        lines = [line for line in out.splitlines() if "interrupted swap into" in line]
        assert len(lines) == 1, out
        assert f"{verb} the interrupted swap into database {name} " in lines[0]
        assert f"(stopped at step {step})" in lines[0]

        assert [e for e in journals(server) if e.target == name] == []
        left = siblings(server, name)
        if verb == "undid":
            assert state(server, name) == before
            assert left == []
        else:
            assert state(server, name, world.source) == world.restored
            assert left == ([] if drop_old else [ours[0].old])
            if not drop_old:  # the kept copy holds the target's tables as they were
                rows = server.query(ours[0].old, "SELECT * FROM products ORDER BY 1")
                assert len(rows) == 3
        if command != "backup":
            repository = RepositoryLocation(
                world.env["STRONGROOM_REPO"], key_file=Path(world.env["STRONGROOM_KEY_FILE"])
            ).open()
            assert run_backup(repository, MysqlEngine(url)).manifest.raw_size > 0
    finally:
        _drop_all(server, name)


def test_a_client_killed_while_its_swap_waits_for_a_lock_never_runs_the_queued_statement(
    mariadb_server, world
):
    """The killed client's session still waits (holding the swap lock); the recovery ends
    it, so its DROP TRIGGER never runs, and undoes the swap."""
    server = mariadb_server
    name, before = live_database(server, world)
    url = f"mysql://{world.user}:{APP_PASSWORD}@{server.host}:{server.port}/{name}"
    blocker = server.connect(name, autocommit=False)
    try:
        with blocker.cursor() as cur:
            cur.execute("START TRANSACTION")
            cur.execute("SELECT * FROM products")
            cur.fetchall()
        proc = _start(
            world.env, "restore", world.backup_id, "--to", url, "--no-safety-backup", "--yes"
        )
        try:
            _wait_for_lock(server, "DROP TRIGGER", proc)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=30)
        out = _next_command("recover", url, world)  # while the lock is still held
        assert "undid the interrupted swap into database" in out, out
    finally:
        blocker.rollback()
        blocker.close()
    time.sleep(0.5)  # anything still queued would run now
    assert state(server, name) == before
    assert siblings(server, name) == []
    try:
        _drop_all(server, name)
    except pymysql.Error:
        pass
