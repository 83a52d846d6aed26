"""Issue 13, "must hold" for MySQL/MariaDB: the staged load of a restore acts on the staged
database only (``engines/mysql/staging.py``), on the real MariaDB: events loaded into the
staged database or a drill copy never fire, triggers with qualified names and comments in
routine and trigger bodies restore."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from strongroom.engines.mysql import MysqlEngine
from strongroom.repository.repository import Repository
from strongroom.services.backup import run_backup
from strongroom.services.drill import verify_by_restore
from strongroom.services.repository_access import RepositoryLocation
from tests.engines.mysql.restore_exact_helpers import (
    _dump,
    _name,
    _stage,
    _tick_rows,
    app,
    env,
    scheduler,
)
from tests.fixtures.mariadb import MariaDbServer
from tests.fixtures.mysql_app import differences, fingerprint
from tests.helpers import repository_env

__all__ = ["app", "env", "scheduler"]  # fixtures


# --- the staged load acts on the staged database only (engines/mysql/staging.py) --------------
def test_events_loaded_into_the_staged_database_do_not_fire_against_the_original(
    mariadb_server, app, scheduler
):
    dump = _dump(app.url)
    assert dump.state is not None
    assert dump.state["events"] == {"purge_audit": "DISABLED", "tick": "ENABLED"}
    app.server.query(app.name, "ALTER EVENT tick DISABLE")  # the original's own stays quiet
    mariadb_server.query(None, "SET GLOBAL event_scheduler = ON")
    engine, staged = _stage(app.url, dump)
    try:
        deadline = time.monotonic() + 3  # tick runs every second
        while time.monotonic() < deadline and not _tick_rows(mariadb_server, app.name):
            time.sleep(0.2)
        assert _tick_rows(mariadb_server, app.name) == []
        # nor may it change the staged copy before it is verified
        assert _tick_rows(mariadb_server, staged.database_name()) == []
        assert _event_statuses(mariadb_server, staged.database_name()) == {
            "purge_audit": "DISABLED",
            "tick": "DISABLED",
        }
        assert staged.event_statuses == {"purge_audit": "DISABLED", "tick": "ENABLED"}
    finally:
        mariadb_server.query(None, "SET GLOBAL event_scheduler = OFF")
    # the swap gives each event the status it was backed up with
    engine.swap_in(staged, keep_old=False, source_database=app.name)
    assert _event_statuses(mariadb_server, app.name) == {
        "purge_audit": "DISABLED",
        "tick": "ENABLED",
    }


def _event_statuses(server: MariaDbServer, database: str) -> dict[str, str]:
    rows = server.query(
        None,
        "SELECT EVENT_NAME, STATUS FROM information_schema.EVENTS WHERE EVENT_SCHEMA = %s",
        (database,),
    )
    return {str(name): str(status) for name, status in rows}


def test_a_drill_copy_never_runs_an_event(mariadb_server, app, scheduler, tmp_path):
    """A restore drill loads into a scratch database beside the original and drops it:
    with the event scheduler on, its copy of ``tick`` (which writes into the original)
    must never run."""
    env = repository_env(tmp_path)
    location = RepositoryLocation(env["STRONGROOM_REPO"], key_file=Path(env["STRONGROOM_KEY_FILE"]))
    Repository.init(location.storage(), key_file=Path(env["STRONGROOM_KEY_FILE"]))
    repo = location.open()
    manifest = run_backup(repo, MysqlEngine(app.url)).manifest
    app.server.query(app.name, "ALTER EVENT tick DISABLE")
    seen: dict[str, str] = {}

    class Scratch(MysqlEngine):
        def table_stats(self) -> Any:  # the drill verifies right after loading
            time.sleep(2.5)  # tick runs every second
            seen.update(_event_statuses(mariadb_server, self.database_name()))
            seen["ticks"] = str(_tick_rows(mariadb_server, self.database_name()))
            return super().table_stats()

    scratch = Scratch(mariadb_server.url(f"{app.name}_drill"))
    mariadb_server.query(None, "SET GLOBAL event_scheduler = ON")
    try:
        result = verify_by_restore(repo, manifest, scratch)
    finally:
        mariadb_server.query(None, "SET GLOBAL event_scheduler = OFF")
    assert result.ok, result.detail
    assert seen == {"purge_audit": "DISABLED", "tick": "DISABLED", "ticks": "[]"}
    assert _tick_rows(mariadb_server, app.name) == []
    assert not mariadb_server.database_exists(f"{app.name}_drill")


def test_a_trigger_with_a_qualified_name_restores(mariadb_server, mysql_db):
    """``CREATE TRIGGER db.t … ON db.t`` (as MySQL Workbench writes them) replays into the
    staged database, not the original: in place, under another name, and once the
    original is gone, with the text as it was written (quoted or not)."""
    name = _name(mysql_db)
    mariadb_server.execute(
        name,
        [
            "CREATE TABLE t (id INT PRIMARY KEY, s VARCHAR(40))",
            "CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, what VARCHAR(40))",
            f"CREATE TRIGGER `{name}`.`t_bi` BEFORE INSERT ON `{name}`.`t` FOR EACH ROW"
            " SET NEW.s = 'x'",
            f"CREATE TRIGGER {name} . t_ai AFTER INSERT ON {name}.t FOR EACH ROW"
            f" INSERT INTO {name}.audit (what) VALUES (CONCAT('{name}.t ', NEW.id))",
        ],
    )
    before = fingerprint(mariadb_server, name)
    dump = _dump(mysql_db)
    engine, staged = _stage(mysql_db, dump)  # in place: "Trigger already exists" before
    engine.swap_in(staged, keep_old=False, source_database=name)
    assert differences(before, fingerprint(mariadb_server, name)) == []
    for copy in (f"{name}_copy", f"{name}_copy2"):
        if copy.endswith("2"):
            mariadb_server.drop_database(name)  # unknown table before
        engine, staged = _stage(mariadb_server.url(copy), dump)
        engine.swap_in(staged, keep_old=False, source_database=name)
        assert differences(before, fingerprint(mariadb_server, copy)) == []
        mariadb_server.query(copy, "INSERT INTO t (id) VALUES (7)")
        assert mariadb_server.query(copy, "SELECT s FROM t WHERE id = 7") == [("x",)]
        assert mariadb_server.query(copy, "SELECT what FROM audit") == [(f"{name}.t 7",)]
    assert mariadb_server.query(f"{name}_copy", "SELECT COUNT(*) FROM audit") == [(1,)]


def test_comments_in_routine_and_trigger_bodies_are_restored(mariadb_server, mysql_db):
    name = _name(mysql_db)
    body = "BEGIN\n  -- why: see #12\n  RETURN 1; /* one */ # done\nEND"
    trigger = "BEGIN\n  -- x\n  SET NEW.id = NEW.id /* y */ + 0; # z\nEND"
    mariadb_server.execute(
        name,
        [
            f"CREATE FUNCTION f() RETURNS INT DETERMINISTIC {body}",
            "CREATE TABLE t (id INT PRIMARY KEY)",
            f"CREATE TRIGGER t_bi BEFORE INSERT ON t FOR EACH ROW {trigger}",
        ],
    )
    before = fingerprint(mariadb_server, name)
    engine, staged = _stage(mysql_db, _dump(mysql_db))
    shown = mariadb_server.query(staged.database_name(), "SHOW CREATE FUNCTION f")[0][2]
    assert body in shown
    engine.swap_in(staged, keep_old=False, source_database=name)
    assert differences(before, fingerprint(mariadb_server, name)) == []
    assert trigger in mariadb_server.query(name, "SHOW CREATE TRIGGER t_bi")[0][2]
