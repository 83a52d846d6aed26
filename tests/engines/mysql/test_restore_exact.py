"""Issue 13, "must hold" for MySQL/MariaDB: a restore gives back an application-shaped
database exactly (``tests/fixtures/mysql_app.py``: built by the application's own account,
fingerprinted without strongroom's code), in place, under another name beside the
original, after the original is gone, and by a non-root account; and a copy under another
name never reads or writes the original. The staged load is in
``test_restore_exact_staging.py``, the qualifier rewrite in ``test_restore_exact_rewrite.py``."""

from __future__ import annotations

import re
import time
from typing import Any

import pymysql
import pytest

from strongroom.engines.mysql import swap as swap_module
from strongroom.errors import RestoreFailed
from tests.engines.mysql.restore_exact_helpers import (
    App,
    Dump,
    _dump,
    _name,
    _stage,
    _tick_rows,
    app,
    env,
    scheduler,
)
from tests.fixtures.mariadb import MariaDbServer
from tests.fixtures.mysql_app import (
    APP_CHARSET,
    APP_COLLATION,
    create_app_account,
    differences,
    drop_app_account,
    fingerprint,
)
from tests.helpers import cli_ok, run_cli

__all__ = ["app", "env", "scheduler"]  # fixtures


def _as_app(app: App, database: str, statements: list[str]) -> list[Any]:
    """Run statements through the application's own connection; the last one's rows."""
    with app.account.connect(database) as conn, conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)
        return list(cur.fetchall()) if cur.description else []


def _drift(app: App) -> None:
    """The live database moves on after the backup: rows, objects and definitions."""
    _as_app(
        app,
        app.name,
        [
            "CALL place_order(3, 4, 2, @oid)",
            "DELETE FROM orders WHERE id < 20",
            "UPDATE products SET price = price + 1, photo = NULL WHERE id < 10",
            "DROP TRIGGER orders_aa",
            "CREATE OR REPLACE VIEW v_products AS SELECT id FROM products",
            "DROP EVENT tick",
            "ALTER EVENT purge_audit ENABLE",
            "DROP FUNCTION label",
            "CREATE TABLE live_only (x INT PRIMARY KEY)",
            "ALTER TABLE `we``ird` AUTO_INCREMENT = 77",
            "ALTER DATABASE CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
        ],
    )


def _no_leftovers(server: MariaDbServer) -> None:
    assert not [d for d in server.databases() if "_sr_" in d]


# --- 3a: replace in place ----------------------------------------------------------------
def test_replacing_in_place_gives_back_the_backup_exactly(mariadb_server, app, env):
    cli_ok(run_cli("backup", app.url, env=env))
    before = fingerprint(mariadb_server, app.name)
    assert before["database"] == [(APP_CHARSET, APP_COLLATION)]
    assert [r[3:] for r in before["trigger order"] if r[2] == "INSERT" and r[0] == "orders"] == [
        (1, "orders_mm"),
        (2, "orders_zz"),
        (3, "orders_aa"),
    ]
    _drift(app)
    assert differences(before, fingerprint(mariadb_server, app.name))

    out = cli_ok(run_cli("restore", "latest", "--to", app.url, "--yes", env=env))
    assert "verified" in out
    assert differences(before, fingerprint(mariadb_server, app.name)) == []
    _no_leftovers(mariadb_server)

    # the replaced database kept beside it works on its own tables, never on the live ones
    kept = re.search(r"kept as (\S+);", out)
    assert kept is not None
    old = kept.group(1)
    live_audit = mariadb_server.query(app.name, "SELECT COUNT(*) FROM audit")[0][0]
    old_audit = mariadb_server.query(old, "SELECT COUNT(*) FROM audit")[0][0]
    _as_app(app, old, ["CALL place_order(1, 5, 1, @oid)"])  # orders_aa was dropped by _drift
    assert mariadb_server.query(app.name, "SELECT COUNT(*) FROM audit")[0][0] == live_audit
    assert mariadb_server.query(old, "SELECT COUNT(*) FROM audit")[0][0] == old_audit + 2
    placed = "SELECT COUNT(*) FROM orders WHERE note = 'via place_order'"
    assert mariadb_server.query(old, placed)[0][0] == 2  # the drift's order and this one


# --- 3b / 3c: under another name ---------------------------------------------------------
def _copy_name(app: App) -> str:
    return f"{app.name}_copy"  # within the app's `<db>\_%` grant, dropped with the test db


def _create_like_source(server: MariaDbServer, name: str) -> None:
    """An empty database with the source's character set."""
    server.query(
        None, f"CREATE DATABASE `{name}` CHARACTER SET {APP_CHARSET} COLLATE {APP_COLLATION}"
    )


def _assert_works_on_its_own(app: App, copy: str, *, original_exists: bool) -> None:
    """Views, triggers, routines and events of ``copy`` read and write ``copy`` only."""
    server = app.server
    if original_exists:  # the original moves on: nothing the copy shows may follow it
        server.execute(
            app.name,
            [
                "DELETE FROM orders",
                "DELETE FROM audit",
                "UPDATE products SET price = 0.01, stock = 999",
                "ALTER EVENT tick DISABLE",
            ],
        )
    # views
    expected = server.query(
        copy, "SELECT id, ROUND(price * 1.25, 2) FROM products WHERE stock > 0 ORDER BY id"
    )
    assert (
        expected and server.query(copy, "SELECT id, gross FROM v_products ORDER BY id") == expected
    )
    assert server.query(copy, "SELECT COUNT(*) FROM v_order_totals")[0][0] > 100
    # functions: one reads `db`.orders, one returns a string holding the original's name
    customer, total = server.query(
        copy, "SELECT customer_id, SUM(total) FROM orders GROUP BY 1 ORDER BY 2 DESC LIMIT 1"
    )[0]
    assert total > 0
    assert server.query(copy, f"SELECT customer_total({customer})")[0][0] == total
    assert server.query(copy, "SELECT label('x')")[0][0] == f"{app.name}.label: x"
    # a procedure and the triggers it sets off, as the application calls them
    audit = server.query(copy, "SELECT COUNT(*) FROM audit")[0][0]
    price, stock = server.query(copy, "SELECT price, stock FROM products WHERE id = 7")[0]
    oid = _as_app(app, copy, ["CALL place_order(2, 7, 3, @oid)", "SELECT @oid"])[0][0]
    assert server.query(copy, "SELECT total FROM orders WHERE id = %s", (oid,)) == [(price * 3,)]
    assert server.query(copy, "SELECT stock FROM products WHERE id = 7")[0][0] == max(stock - 3, 0)
    assert server.query(copy, "SELECT what FROM audit WHERE id > %s ORDER BY id", (audit,)) == [
        (f"order {oid} mm",),
        (f"order {oid} zz ✓",),
        (f"order {oid} aa",),
    ]
    if original_exists:
        assert server.query(app.name, "SELECT COUNT(*) FROM audit")[0][0] == 0
        assert server.query(app.name, "SELECT COUNT(*) FROM orders")[0][0] == 0
        assert server.query(app.name, "SELECT DISTINCT stock FROM products") == [(999,)]
    # an enabled event runs against the copy (the scheduler is on for a moment)
    server.query(None, "SET GLOBAL event_scheduler = ON")
    deadline = time.monotonic() + 6
    while not _tick_rows(server, copy) and time.monotonic() < deadline:
        time.sleep(0.2)
    server.query(None, "SET GLOBAL event_scheduler = OFF")
    assert _tick_rows(server, copy) == [f"tick from {copy}"]
    if original_exists:
        assert _tick_rows(server, app.name) == []


def _fingerprints_match(app: App, before: dict[str, Any], copy: str) -> None:
    assert differences(before, fingerprint(app.server, copy)) == []


def test_copies_beside_the_original_and_after_it_are_exact_and_use_their_own_tables(
    mariadb_server, app, env, scheduler
):
    cli_ok(run_cli("backup", app.url, env=env))
    before = fingerprint(mariadb_server, app.name)
    for copy, original_exists in ((f"{app.name}_copy", True), (f"{app.name}_copy2", False)):
        if original_exists:
            _create_like_source(mariadb_server, copy)
        else:  # and no database there: the restore creates it in the backup's character set
            mariadb_server.drop_database(app.name)
        restore = ("restore", "latest", "--target", app.name, "--to", mariadb_server.url(copy))
        cli_ok(run_cli(*restore, env=env))
        _no_leftovers(mariadb_server)
        _fingerprints_match(app, before, copy)
        _assert_works_on_its_own(app, copy, original_exists=original_exists)


def test_the_swap_points_a_copys_objects_at_the_copy(mariadb_server, app, scheduler):
    """The restore's engine steps with the source's name given to the swap, as the restore
    service gives it: beside the original, then after it is gone."""
    before = fingerprint(mariadb_server, app.name)
    data = _dump(app.url)
    for copy, original_exists in ((f"{app.name}_copy", True), (f"{app.name}_copy2", False)):
        if original_exists:  # an empty database in the server's default character set
            mariadb_server.query(None, f"CREATE DATABASE `{copy}`")
        else:  # none: the staged database has the backup's, the swap creates it like that
            mariadb_server.drop_database(app.name)
        engine, staged = _stage(mariadb_server.url(copy), data)
        assert engine.swap_in(staged, keep_old=False, source_database=app.name) is None
        _no_leftovers(mariadb_server)
        _fingerprints_match(app, before, copy)
        _assert_works_on_its_own(app, copy, original_exists=original_exists)


def test_without_the_source_name_a_copys_trigger_writes_into_the_original(mariadb_server, app):
    """Without the source's name (the swap's ``source_database``) the copy's trigger
    bodies still name the original."""
    copy = _copy_name(app)
    _create_like_source(mariadb_server, copy)
    engine, staged = _stage(mariadb_server.url(copy), _dump(app.url))
    assert engine.swap_in(staged, keep_old=False) is None
    count = "SELECT COUNT(*) FROM audit"
    before = mariadb_server.query(app.name, count)[0][0]
    copied = mariadb_server.query(copy, count)[0][0]
    mariadb_server.query(copy, "INSERT INTO orders (customer_id, placed_at) VALUES (2, NOW())")
    # orders_mm names `audit`, orders_zz and orders_aa name `<original>`.audit
    assert mariadb_server.query(app.name, count)[0][0] == before + 2
    assert mariadb_server.query(copy, count)[0][0] == copied + 1


def test_an_ambiguous_qualifier_makes_the_swap_refuse_before_anything_changes(
    mariadb_server, mysql_db
):
    name = _name(mysql_db)
    mariadb_server.execute(
        name,
        [
            f"CREATE TABLE `{name}` (id INT PRIMARY KEY, n INT)",
            "CREATE TABLE audit (id INT)",
            f"CREATE TRIGGER t AFTER INSERT ON `{name}` FOR EACH ROW"
            f" INSERT INTO audit SELECT MAX({name}.id) FROM {name}.audit",
        ],
    )
    copy = f"{name}_copy"
    engine, staged = _stage(mariadb_server.url(copy), _dump(mysql_db))
    try:
        with pytest.raises(RestoreFailed, match=f"{name}.id could be either") as info:
            engine.swap_in(staged, keep_old=False, source_database=name)
        assert "the original database is unchanged" in str(info.value)
        assert not mariadb_server.database_exists(copy)
        assert mariadb_server.query(staged.database_name(), "SHOW TABLES")
    finally:
        staged.drop()


def test_the_database_character_set_comes_back_under_a_new_name_and_in_place(
    mariadb_server, mysql_db, monkeypatch
):
    name = _name(mysql_db)
    mariadb_server.execute(
        name,
        [
            f"ALTER DATABASE `{name}` CHARACTER SET {APP_CHARSET} COLLATE {APP_COLLATION}",
            "CREATE FUNCTION f() RETURNS INT DETERMINISTIC RETURN 1",
            "CREATE EVENT e ON SCHEDULE EVERY 1 DAY STARTS '2031-01-01' DISABLE DO SELECT 1",
        ],
    )
    copy = f"{name}_copy"
    dump = _dump(mysql_db)
    assert dump.state is not None
    assert dump.state["schema"] == {"character_set": APP_CHARSET, "collation": APP_COLLATION}
    engine, staged = _stage(mariadb_server.url(copy), dump)  # as restore does
    assert _shape(mariadb_server, staged.database_name()) == (APP_CHARSET, APP_COLLATION)
    engine.swap_in(staged, keep_old=False, source_database=name)
    assert _shape(mariadb_server, copy) == (APP_CHARSET, APP_COLLATION)
    assert mariadb_server.query(copy, "SHOW CREATE FUNCTION f")[0][-1] == APP_COLLATION

    # in place, after the original's default changed: the backup's comes back, and the
    # function is re-created under it; a swap that must be undone puts the changed one back
    mariadb_server.execute(name, [f"ALTER DATABASE `{name}` CHARACTER SET utf8mb4"])
    changed = _shape(mariadb_server, name)
    engine, staged = _stage(mysql_db, dump)
    real, failed = swap_module.create, []

    def create(cur: Any, database: str, definition: Any, **kw: Any) -> None:
        if definition.kind == "EVENT" and not failed:  # the restored events come last
            failed.append(definition.name)
            raise pymysql.err.OperationalError(1044, "no events today")
        real(cur, database, definition, **kw)

    monkeypatch.setattr(swap_module, "create", create)
    with pytest.raises(RestoreFailed, match="the original database is unchanged"):
        engine.swap_in(staged, keep_old=False, source_database=name)
    assert _shape(mariadb_server, name) == changed
    monkeypatch.undo()
    staged.drop()
    engine, staged = _stage(mysql_db, dump)
    engine.swap_in(staged, keep_old=False, source_database=name)
    assert _shape(mariadb_server, name) == (APP_CHARSET, APP_COLLATION)
    assert mariadb_server.query(name, "SHOW CREATE FUNCTION f")[0][-1] == APP_COLLATION
    # a backup that recorded none (older versions): staged like the target, as before
    engine, staged = _stage(mariadb_server.url(f"{name}_old"), Dump(dump.data, None))
    assert _shape(mariadb_server, staged.database_name()) == ("utf8mb4", "utf8mb4_general_ci")
    staged.drop()


def _shape(server: MariaDbServer, name: str) -> tuple[str, str] | None:
    rows = server.query(
        None,
        "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME"
        " FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s",
        (name,),
    )
    return (rows[0][0], rows[0][1]) if rows else None


# --- 3d: a restoring account that is not root ----------------------------------------------
def test_the_application_account_backs_up_and_restores_its_own_database(mariadb_server, app, env):
    """The account has ALL on `<db>`.* and `<db>\\_%`.* (what a restore needs: staged and
    replaced databases are named ``<db>_…``), no global privilege."""
    grants = mariadb_server.query(None, f"SHOW GRANTS FOR '{app.account.user}'@'%'")
    assert len(grants) == 3 and "ON *.*" in grants[0][0] and "USAGE" in grants[0][0]
    url = app.account.url(app.name)
    cli_ok(run_cli("backup", url, env=env))
    before = fingerprint(mariadb_server, app.name)
    _drift(app)
    out = cli_ok(run_cli("restore", "latest", "--to", url, "--yes", env=env))
    assert "verified" in out
    assert differences(before, fingerprint(mariadb_server, app.name)) == []
    _no_leftovers(mariadb_server)


# --- the backup of a latin1 table ------------------------------------------------------------
def test_a_latin1_table_with_a_text_column_backs_up(mariadb_server, mysql_db):
    name = _name(mysql_db)
    mariadb_server.execute(
        name,
        [
            f"ALTER DATABASE `{name}` CHARACTER SET latin1 COLLATE latin1_swedish_ci",
            "CREATE TABLE posts (id INT PRIMARY KEY, title VARCHAR(80), body TEXT)",
            "INSERT INTO posts VALUES (1, 'Café', 'Smörgåsbord')",
        ],
    )
    assert b"Sm\xc3\xb6rg" in _dump(mysql_db).data


# --- what stays broken (each fails before the swap; engine steps as the restore runs them) --
def test_views_of_an_account_limited_to_its_own_database_restore(mariadb_server, mysql_db):
    name = _name(mysql_db)
    account = create_app_account(mariadb_server, [name], staging=False)
    try:
        with account.connect(name) as conn, conn.cursor() as cur:
            for statement in (
                "CREATE TABLE t (id INT PRIMARY KEY)",
                "CREATE FUNCTION twice(x INT) RETURNS INT DETERMINISTIC RETURN 2 * x",
                "CREATE VIEW v AS SELECT id FROM t",
                "CREATE VIEW v_on_v AS SELECT id FROM v",
                "CREATE VIEW v_calls AS SELECT twice(id) AS d FROM t",
            ):
                cur.execute(statement)
        grants_before = mariadb_server.query(None, "SELECT * FROM mysql.db ORDER BY 1, 2, 3")
        engine, staged = _stage(mysql_db, _dump(mysql_db))
        # the rights lent to the definer for the load are taken back at once
        assert mariadb_server.query(None, "SELECT * FROM mysql.db ORDER BY 1, 2, 3") == (
            grants_before
        )
        assert engine.swap_in(staged, keep_old=False, source_database=name) is None
        with account.connect(name) as conn, conn.cursor() as cur:
            cur.execute("INSERT INTO t VALUES (3)")
            cur.execute("SELECT (SELECT id FROM v_on_v), (SELECT d FROM v_calls)")
            assert cur.fetchone() == (3, 6)
    finally:
        drop_app_account(mariadb_server, account)
