"""Issue 13, input 3: DEFINERs the restoring account cannot set, or that do not exist on the
server. The plan lists them and refuses; ``--rewrite-definers`` gives those objects the
restoring account as definer, says so, and leaves every other definer as it was."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pymysql
import pytest

from strongroom.engines.mysql import definers
from tests.fixtures.mariadb import MariaDbServer
from tests.helpers import cli_fails, cli_ok, repository_env, run_cli

PW = "pw-Definer-9"


def _name(url: str) -> str:
    return url.rsplit("/", 1)[1]


def _url(server: MariaDbServer, user: str, database: str) -> str:
    return f"mysql://{user}:{PW}@{server.host}:{server.port}/{database}"


def _run_as(server: MariaDbServer, user: str, database: str, statements: list[str]) -> None:
    conn = pymysql.connect(
        ssl_disabled=True,
        host=server.host,
        port=server.port,
        user=user,
        password=PW,
        database=database,
        charset="utf8mb4",
        autocommit=True,
    )
    with conn, conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)


@pytest.fixture()
def accounts(mariadb_server: MariaDbServer, mysql_db: str) -> Iterator[tuple[str, str]]:
    """(application account, second account), both with ALL on the database and on the
    databases a restore stages beside it (``<name>\\_%``), neither with SET USER."""
    name = _name(mysql_db)
    tag = uuid.uuid4().hex[:6]
    made = [f"app_{tag}", f"report_{tag}"]
    for user in made:
        mariadb_server.query(None, f"CREATE USER '{user}'@'%' IDENTIFIED BY '{PW}'")
        mariadb_server.query(None, f"GRANT ALL ON `{name}`.* TO '{user}'@'%'")
        mariadb_server.query(None, f"GRANT ALL ON `{name}\\_%`.* TO '{user}'@'%'")
    try:
        yield made[0], made[1]
    finally:
        for user in made:
            mariadb_server.query(None, f"DROP USER IF EXISTS '{user}'@'%'")


def _definers(server: MariaDbServer, name: str) -> dict[str, str]:
    with server.connect(name) as conn, conn.cursor() as cur:
        return {f"{o.kind.lower()} {o.name}": o.definer for o in definers.capture(cur, name)}


def _shop(server: MariaDbServer, app: str, other: str, name: str) -> None:
    _run_as(
        server,
        app,
        name,
        [
            "CREATE TABLE products (id INT PRIMARY KEY, name VARCHAR(40), price INT)",
            "CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, what VARCHAR(40))",
            "INSERT INTO products VALUES (1, 'pen', 2), (2, 'lamp', 40)",
            "CREATE VIEW cheap AS SELECT id, name FROM products WHERE price < 10",
            "CREATE TRIGGER audit_insert AFTER INSERT ON products FOR EACH ROW"
            " INSERT INTO audit (what) VALUES (NEW.name)",
        ],
    )
    _run_as(
        server,
        other,
        name,
        [
            "CREATE VIEW dear AS SELECT id, name FROM products WHERE price >= 10",
            # a body line that looks like a dump's definer clause must stay as written
            "CREATE PROCEDURE note()\nBEGIN\n  SELECT 'x\nCREATE DEFINER=`root`@`%` PROCEDURE"
            " y' AS a;\nEND",
            "CREATE FUNCTION n_dear() RETURNS INT READS SQL DATA"
            " RETURN (SELECT COUNT(*) FROM dear)",
            "CREATE TRIGGER audit_update AFTER UPDATE ON products FOR EACH ROW"
            " INSERT INTO audit (what) VALUES (CONCAT('upd ', NEW.name))",
            "CREATE EVENT tidy ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 00:00:00' DISABLE"
            " DO DELETE FROM audit WHERE id < 0",
        ],
    )


def test_rewrite_touches_only_the_dump_tools_definer_clauses(mariadb_server, mysql_db, accounts):
    from strongroom.engines.mysql import MysqlEngine

    app, other = accounts
    name = _name(mysql_db)
    _shop(mariadb_server, app, other, name)
    with MysqlEngine(mysql_db).dump() as running:
        dump = running.stream.read()
        result = running.finish()
    recorded = definers.from_state(result.state)
    assert recorded is not None
    assert {f"{o.kind.lower()} {o.name}": o.definer for o in recorded} == {
        "view cheap": f"{app}@%",
        "trigger audit_insert": f"{app}@%",
        "view dear": f"{other}@%",
        "procedure note": f"{other}@%",
        "function n_dear": f"{other}@%",
        "trigger audit_update": f"{other}@%",
        "event tidy": f"{other}@%",
    }
    wanted = f"{other}@%"
    whole = b"".join(definers.rewrite([dump], lambda d: d == wanted))
    # every clause of the other account went (5 objects), the application's stayed (2)
    assert whole.count(f"DEFINER=`{other}`@`%`".encode()) == 0
    assert whole.count(b"DEFINER=CURRENT_USER") == 5
    assert whole.count(f"DEFINER=`{app}`@`%`".encode()) == 2
    # the routine body's look-alike line is untouched; nothing else changed
    assert b"\nCREATE DEFINER=`root`@`%` PROCEDURE y' AS a;" in whole
    assert whole.replace(b"DEFINER=CURRENT_USER", f"DEFINER=`{other}`@`%`".encode()) == dump
    # pieces of any size give the same stream
    pieces = [dump[i : i + 7] for i in range(0, len(dump), 7)]
    assert b"".join(definers.rewrite(pieces, lambda d: d == wanted)) == whole
    assert b"".join(definers.rewrite([dump], lambda d: False)) == dump


def test_the_plan_lists_definers_the_account_cannot_set_and_the_option_rewrites_them(
    mariadb_server, mysql_db, accounts, tmp_path
):
    app, other = accounts
    name = _name(mysql_db)
    _shop(mariadb_server, app, other, name)
    env = repository_env(tmp_path)
    cli_ok(run_cli("init", env=env))
    cli_ok(run_cli("backup", mysql_db, env=env))
    before = _definers(mariadb_server, name)
    _run_as(mariadb_server, app, name, ["DELETE FROM products WHERE id = 2"])

    # the application's own account restores: it cannot read the other account's routines
    # (which the safety backup and the swap copy): refused before anything happens
    as_app = _url(mariadb_server, app, name)
    err = cli_fails(
        run_cli("restore", "latest", "--to", as_app, "--yes", env=env),
        2,
        r"cannot read the definition of \S+ \(function n_dear, procedure note\) .*"
        r"GRANT SELECT ON mysql.proc",
    )
    mariadb_server.query(None, f"GRANT SELECT ON mysql.proc TO '{app}'@'%'")
    # then: it may not name the other account as definer
    plan = run_cli("restore", "latest", "--to", as_app, "--dry-run", env=env)
    err = cli_fails(plan, 2, r"cannot create objects with another account as definer")
    assert f"another account as definer (it lacks SET USER/SUPER): {other}@% (event tidy," in err
    assert "view dear" in err and "--rewrite-definers" in err
    listed = err.split("SET USER/SUPER): ", 1)[1].split(";", 1)[0]
    assert f"{app}@%" not in listed  # its own objects are fine
    assert f"the target's objects of {other}@% (event tidy" in err  # could not be put back
    refused = run_cli("restore", "latest", "--to", as_app, "--yes", env=env)
    cli_fails(refused, 2, r"nothing was changed")
    assert mariadb_server.query(name, "SELECT id FROM products") == [(1,)]

    out = cli_ok(
        run_cli("restore", "latest", "--to", as_app, "--rewrite-definers", "--yes", env=env)
    )
    assert f"definers rewritten to the restoring account {app}@%" in out
    assert "verified" in out
    after = _definers(mariadb_server, name)
    assert after == {k: (f"{app}@%" if v == f"{other}@%" else v) for k, v in before.items()}
    assert mariadb_server.query(name, "SELECT id FROM products ORDER BY id") == [(1,), (2,)]
    # the rewritten objects work for the application
    _run_as(mariadb_server, app, name, ["UPDATE products SET price = 41 WHERE id = 2"])
    assert mariadb_server.query(name, "SELECT n_dear()") == [(1,)]
    assert ("upd lamp",) in mariadb_server.query(name, "SELECT what FROM audit")
    assert not [d for d in mariadb_server.databases() if "_sr_" in d]

    # an account that may set any definer keeps them all
    out = cli_ok(run_cli("restore", "latest", "--to", mysql_db, "--dry-run", env=env))
    assert "definers kept" in out


def test_a_definer_missing_on_this_server_is_refused_then_rewritten(
    mariadb_server, mysql_db, accounts, tmp_path
):
    app, other = accounts
    name = _name(mysql_db)
    _shop(mariadb_server, app, other, name)
    env = repository_env(tmp_path)
    cli_ok(run_cli("init", env=env))
    cli_ok(run_cli("backup", mysql_db, env=env))
    # a second server where the report account does not exist: here, the account is gone
    mariadb_server.query(None, f"DROP USER '{other}'@'%'")
    copy = f"{name}_copy"
    target = mariadb_server.url(copy)
    try:
        err = cli_fails(
            run_cli("restore", "latest", "--target", name, "--to", target, "--yes", env=env),
            2,
            r"definer accounts missing on this server",
        )
        assert f"missing on this server: {other}@% (" in err and "trigger audit_update" in err
        assert not mariadb_server.database_exists(copy)
        out = cli_ok(
            run_cli(
                "restore",
                "latest",
                "--target",
                name,
                "--to",
                target,
                "--rewrite-definers",
                "--yes",
                env=env,
            )
        )
        assert "definers rewritten to the restoring account" in out
        restored = _definers(mariadb_server, copy)
        assert other not in " ".join(restored.values())
        assert restored["view cheap"] == f"{app}@%"  # exists here: kept
        # the objects work: no "The user specified as a definer does not exist"
        mariadb_server.query(copy, "UPDATE products SET price = 3 WHERE id = 1")
        assert mariadb_server.query(copy, "SELECT COUNT(*) FROM dear") == [(1,)]
        assert mariadb_server.query(copy, "SELECT what FROM audit") == [("upd pen",)]
    finally:
        mariadb_server.drop_database(copy)
