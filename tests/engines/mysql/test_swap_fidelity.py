"""The safe restore's swap re-creates views, triggers, routines and events in the target
without ever naming the staged database, and undoes itself when that step fails."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pymysql
import pytest

from strongroom.engines.mysql import MysqlEngine
from strongroom.engines.mysql import swap as swap_module
from strongroom.errors import RestoreFailed
from tests.fixtures.mariadb import MariaDbServer, fill_sample
from tests.helpers import cli_ok, run_cli

APP_PASSWORD = "app-pw-Q7"


def _name(url: str) -> str:
    return url.rsplit("/", 1)[1]


@pytest.fixture()
def app_user(mariadb_server: MariaDbServer, mysql_db: str) -> Iterator[str]:
    """An application account with ALL on the test database only."""
    user = f"app_{uuid.uuid4().hex[:8]}"
    mariadb_server.query(None, f"CREATE USER '{user}'@'%' IDENTIFIED BY '{APP_PASSWORD}'")
    mariadb_server.query(None, f"GRANT ALL ON `{_name(mysql_db)}`.* TO '{user}'@'%'")
    try:
        yield user
    finally:
        mariadb_server.query(None, f"DROP USER IF EXISTS '{user}'@'%'")


def _as_app(server: MariaDbServer, user: str, database: str, statements: list[str]) -> None:
    """Run statements through the application's own connection (so it is the definer)."""
    conn = pymysql.connect(
        ssl_disabled=True,
        host=server.host,
        port=server.port,
        user=user,
        password=APP_PASSWORD,
        database=database,
        charset="utf8mb4",
        autocommit=True,
    )
    with conn, conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)


def _shop(server: MariaDbServer, user: str, name: str) -> None:
    """The issue's shop, every object created by the application account; bodies refer to
    the tables both unqualified and qualified with the database's own name."""
    _as_app(
        server,
        user,
        name,
        [
            "CREATE TABLE products (id INT PRIMARY KEY, name VARCHAR(40), price INT)",
            "CREATE TABLE price_log (id INT AUTO_INCREMENT PRIMARY KEY, product INT, price INT)",
            "INSERT INTO products VALUES (1, 'pen', 2), (2, 'lamp', 40), (3, 'mug', 8),"
            " (4, 'desk', 300)",
            "CREATE VIEW cheap AS SELECT id, name FROM products WHERE price < 10",
            # (not a view on ``cheap``: restoring that into the staged database fails
            # with 1356 as long as the definer has no rights there)
            f"CREATE VIEW cheap_names AS SELECT p.name FROM `{name}`.products p"
            f" LEFT JOIN price_log l ON l.product = p.id"
            f" WHERE p.price < 10 AND p.name <> '`{name}`.x' GROUP BY p.name",
            f"CREATE TRIGGER log_price AFTER UPDATE ON products FOR EACH ROW"
            f" INSERT INTO `{name}`.price_log (product, price) VALUES (NEW.id, NEW.price)",
            "CREATE TRIGGER no_free BEFORE INSERT ON products FOR EACH ROW"
            " SET NEW.price = GREATEST(NEW.price, 1)",
            f"CREATE FUNCTION cheapest() RETURNS INT READS SQL DATA"
            f" RETURN (SELECT MIN(price) FROM `{name}`.products)",
            "CREATE FUNCTION n_cheap() RETURNS INT READS SQL DATA"
            " RETURN (SELECT COUNT(*) FROM cheap)",
            "CREATE PROCEDURE reprice(IN pid INT, IN amount INT)"
            " UPDATE products SET price = amount WHERE id = pid",
            f"CREATE EVENT trim_log ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 00:00:00'"
            f" DISABLE DO DELETE FROM `{name}`.price_log WHERE id < 0",
            "CREATE EVENT trim_log2 ON SCHEDULE EVERY 1 HOUR STARTS '2030-01-01 00:00:00'"
            " DISABLE DO DELETE FROM price_log WHERE price < 0",
        ],
    )


def _definitions(server: MariaDbServer, name: str) -> dict[str, Any]:
    """``SHOW CREATE`` of every view, trigger, routine and event (without timestamps)."""
    found: dict[str, Any] = {}
    views = server.query(
        None,
        "SELECT TABLE_NAME FROM information_schema.VIEWS WHERE TABLE_SCHEMA = %s",
        (name,),
    )
    for (view,) in views:
        found[f"view {view}"] = server.query(name, f"SHOW CREATE VIEW `{view}`")[0]
    for (trigger,) in server.query(
        None,
        "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA=%s",
        (name,),
    ):
        row = server.query(name, f"SHOW CREATE TRIGGER `{trigger}`")[0]
        found[f"trigger {trigger}"] = row[:5]  # not the creation time
    for routine, kind in server.query(
        None,
        "SELECT ROUTINE_NAME, ROUTINE_TYPE FROM information_schema.ROUTINES"
        " WHERE ROUTINE_SCHEMA=%s",
        (name,),
    ):
        found[f"{kind.lower()} {routine}"] = server.query(name, f"SHOW CREATE {kind} `{routine}`")[
            0
        ]
    for (event,) in server.query(
        None, "SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA=%s", (name,)
    ):
        found[f"event {event}"] = server.query(name, f"SHOW CREATE EVENT `{event}`")[0]
    return found


def _state(server: MariaDbServer, name: str) -> dict[str, Any]:
    """Everything a user can see of the database: objects, rows, definers, foreign keys."""
    tables = server.query(
        None,
        "SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s"
        " ORDER BY TABLE_NAME",
        (name,),
    )
    rows = {
        table: server.query(name, f"SELECT * FROM `{table}` ORDER BY 1")
        for table, _ in tables
        if table not in ("customers",)  # float/blob heavy: covered by the checksum below
    }
    fks = server.query(
        None,
        "SELECT CONSTRAINT_NAME, TABLE_NAME, REFERENCED_TABLE_SCHEMA, REFERENCED_TABLE_NAME"
        " FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = %s"
        " AND REFERENCED_TABLE_NAME IS NOT NULL ORDER BY 1",
        (name,),
    )
    return {
        "tables": tables,
        "rows": rows,
        "stats": MysqlEngine(server.url(name)).table_stats(),
        "definitions": _definitions(server, name),
        "foreign keys": fks,
    }


def _no_staged_name(definitions: dict[str, Any]) -> None:
    for what, row in definitions.items():
        assert not any("_sr_" in str(v) for v in row), (what, row)


# --- the rewrite itself (no server) ------------------------------------------------------
def _view(text: str, charset: str = "utf8mb4") -> swap_module.Definition:
    return swap_module.Definition("VIEW", "v", text.encode(), None, charset, "x")


def test_only_the_servers_quoted_qualifiers_of_the_staged_name_are_rewritten():
    staged = "shop_sr_1a2b3c4d"
    text = (
        "CREATE VIEW `v` AS select `shop_sr_1a2b3c4d`.`products`.`id` AS `id`,"
        " 'shop_sr_1a2b3c4d.x' AS `a`, `shop_sr_1a2b3c4dx`.`t`.`c` AS `b`,"
        ' "shop_sr_1a2b3c4d"."t"."c" AS `c` from `products`'
    )
    out = swap_module.retarget(_view(text), staged, "shop").statement.decode()
    assert out == (
        "CREATE VIEW `v` AS select `shop`.`products`.`id` AS `id`,"
        " 'shop_sr_1a2b3c4d.x' AS `a`, `shop_sr_1a2b3c4dx`.`t`.`c` AS `b`,"
        ' "shop"."t"."c" AS `c` from `products`'
    )
    # names that need quoting are matched in the server's escaped form, in any charset
    odd = swap_module.retarget(
        _view("select `a``b é_sr_00000000`.`t`.`c`", "latin1"), "a`b é_sr_00000000", "a`b é"
    )
    assert odd.statement == "select `a``b é`.`t`.`c`".encode()
    # what cannot be rewritten is refused before anything changes
    left = swap_module.SchemaObjects(views=[_view(text)])
    with pytest.raises(RestoreFailed, match="names the staged database"):
        swap_module.retarget_all(left, staged, "shop")


# --- the issue: objects made by a user who has rights on its own database only ---------
def test_restore_and_rollback_keep_objects_the_application_created(
    mariadb_server, mysql_db, app_user, tmp_path
):
    name = _name(mysql_db)
    _shop(mariadb_server, app_user, name)
    source = _definitions(mariadb_server, name)
    assert len(source) == 9 and all(f"`{app_user}`@`%`" in str(r) for r in source.values())
    env = {
        "STRONGROOM_REPO": str(tmp_path / "repo"),
        "STRONGROOM_KEY_FILE": str(tmp_path / "repo.key"),
    }
    cli_ok(run_cli("init", env=env))
    cli_ok(run_cli("backup", mysql_db, env=env))
    _as_app(
        mariadb_server,
        app_user,
        name,
        ["CALL reprice(1, 50)", "DELETE FROM products WHERE id = 3"],
    )
    changed = _state(mariadb_server, name)
    assert mariadb_server.query(name, "SELECT * FROM cheap") == []

    out = cli_ok(run_cli("restore", "latest", "--to", mysql_db, "--yes", env=env))
    assert "verified" in out
    restored = _definitions(mariadb_server, name)
    assert restored == source
    _no_staged_name(restored)
    assert mariadb_server.query(name, "SELECT * FROM cheap ORDER BY id") == [
        (1, "pen"),
        (3, "mug"),
    ]
    assert mariadb_server.query(name, "SELECT name FROM cheap_names ORDER BY 1") == [
        ("mug",),
        ("pen",),
    ]
    assert mariadb_server.query(name, "SELECT COUNT(*) FROM price_log")[0][0] == 0
    # the application's own account uses them: definer rights on the target are enough
    _as_app(mariadb_server, app_user, name, ["CALL reprice(4, 5)"])
    assert mariadb_server.query(name, "SELECT cheapest(), n_cheap()")[0] == (2, 3)
    assert mariadb_server.query(name, "SELECT product, price FROM price_log") == [(4, 5)]
    assert not [d for d in mariadb_server.databases() if "_sr_" in d]
    kept = re.search(r"kept as (\S+);", out)
    assert kept is not None
    old = kept.group(1)
    assert mariadb_server.query(old, "SELECT COUNT(*) FROM products")[0][0] == 3

    out = cli_ok(run_cli("rollback", "--to", mysql_db, "--yes", env=env))
    assert "verified" in out
    back = _state(mariadb_server, name)
    _no_staged_name(back["definitions"])
    assert back == changed
    assert not [d for d in mariadb_server.databases() if "_sr_" in d]


# --- all or nothing: a failure while re-creating objects puts the target back ----------
def _staged_copy(server: MariaDbServer, url: str) -> tuple[MysqlEngine, MysqlEngine]:
    engine = MysqlEngine(url)
    with engine.dump() as running:
        data = running.stream.read()
        running.finish()
    staged = engine.staging()
    staged.restore([data])
    return engine, staged


def _change_live(server: MariaDbServer, user: str, name: str) -> None:
    """The live database drifts from the backup: rows, a view of its own, a view and a
    function redefined, an event dropped."""
    server.query(name, "DELETE FROM orders WHERE id > 100")
    _as_app(
        server,
        user,
        name,
        [
            "UPDATE products SET price = 7 WHERE id = 2",
            "CREATE VIEW live_only AS SELECT name FROM products WHERE price > 100",
            "CREATE OR REPLACE VIEW cheap AS SELECT id, name, price FROM products WHERE price < 9",
            "DROP FUNCTION cheapest",
            "CREATE FUNCTION cheapest() RETURNS INT READS SQL DATA"
            " RETURN (SELECT MAX(price) FROM products)",
            "DROP EVENT trim_log2",
        ],
    )


def _assert_as_before(server: MariaDbServer, name: str, before: dict[str, Any]) -> None:
    assert _state(server, name) == before
    assert server.query(name, "SELECT * FROM cheap ORDER BY id") == [
        (1, "pen", 2),
        (2, "lamp", 7),
        (3, "mug", 8),
    ]
    server.query(name, "UPDATE products SET price = 9 WHERE id = 1")  # its trigger is back
    last = "SELECT product, price FROM price_log ORDER BY id DESC LIMIT 1"
    assert server.query(name, last) == [(1, 9)]
    assert not [d for d in server.databases() if d.startswith(f"{name}_old_")]


@pytest.mark.parametrize("keep_old", [True, False])
def test_a_view_that_cannot_be_created_leaves_the_target_as_it_was(
    mariadb_server, mysql_db, app_user, keep_old
):
    name = _name(mysql_db)
    other = f"{name}_other"
    fill_sample(mariadb_server, name, customers=40)
    _shop(mariadb_server, app_user, name)
    mariadb_server.query(None, f"CREATE DATABASE `{other}`")
    mariadb_server.execute(other, ["CREATE TABLE t (x INT)", "INSERT INTO t VALUES (1)"])
    mariadb_server.query(name, f"CREATE VIEW from_other AS SELECT x FROM `{other}`.t")
    engine, staged = _staged_copy(mariadb_server, mysql_db)
    mariadb_server.query(name, "DROP VIEW from_other")
    mariadb_server.drop_database(other)  # the restored view can no longer be created
    _change_live(mariadb_server, app_user, name)
    before = _state(mariadb_server, name)

    with pytest.raises(RestoreFailed) as info:
        engine.swap_in(staged, keep_old=keep_old)
    message = str(info.value)
    assert f"creating the views failed (Table '{other}.t' doesn't exist)" in message, message
    assert "the original database is unchanged" in message, message
    # the restored tables went back to the staged copy (the restore flow drops it)
    assert mariadb_server.query(staged.database_name(), "SELECT COUNT(*) FROM orders")[0][0] == (
        120
    )
    staged.drop()
    _assert_as_before(mariadb_server, name, before)


def test_a_failure_at_the_last_object_undoes_triggers_views_routines_and_events(
    mariadb_server, mysql_db, app_user, monkeypatch
):
    name = _name(mysql_db)
    fill_sample(mariadb_server, name, customers=40)
    _shop(mariadb_server, app_user, name)
    engine, staged = _staged_copy(mariadb_server, mysql_db)
    _change_live(mariadb_server, app_user, name)
    before = _state(mariadb_server, name)

    real_create = swap_module.create
    calls: list[str] = []

    def create(cur: Any, database: str, definition: Any, *, replace: bool = False) -> None:
        if definition.kind == "EVENT" and database == name and not calls:
            calls.append(definition.name)  # the restored events come last: fail the first
            raise pymysql.err.OperationalError(1044, "Access denied (forced by the test)")
        real_create(cur, database, definition, replace=replace)

    monkeypatch.setattr(swap_module, "create", create)
    with pytest.raises(RestoreFailed, match="forced by the test") as info:
        engine.swap_in(staged, keep_old=True)
    assert calls and "the original database is unchanged" in str(info.value)
    staged.drop()
    monkeypatch.undo()
    _assert_as_before(mariadb_server, name, before)

    # the same restore succeeds once nothing is in the way
    engine, staged = _staged_copy(mariadb_server, mysql_db)
    assert engine.swap_in(staged, keep_old=False) is None
    _no_staged_name(_definitions(mariadb_server, name))
