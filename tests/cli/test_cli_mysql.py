"""The command line against a real MariaDB server: backup, the safe-restore contract, drills,
single tables and the bad-input cases."""

from __future__ import annotations

import json
import re

import pytest

from tests.fixtures.mariadb import fill_sample
from tests.helpers import cli_ok as _ok
from tests.helpers import run_cli


@pytest.fixture()
def env(tmp_path):
    return {
        "STRONGROOM_REPO": str(tmp_path / "repo"),
        "STRONGROOM_KEY_FILE": str(tmp_path / "repo.key"),
    }


def _fails(result, code, text):
    err = result.stderr.decode()
    assert result.returncode == code, err + result.stdout.decode()
    assert text in err, err
    assert "Traceback" not in err
    return err


def _count(server, name, table="orders"):
    return server.query(name, f"SELECT COUNT(*) FROM `{table}`")[0][0]


@pytest.fixture()
def live(mariadb_server, mysql_db, env):
    """A live database with one backup, changed afterwards (orders 900 -> 500)."""
    name = mysql_db.rsplit("/", 1)[1]
    fill_sample(mariadb_server, name)
    _ok(run_cli("init", env=env))
    out = _ok(run_cli("backup", mysql_db, "--tag", "daily", env=env))
    assert mariadb_server.password not in out
    mariadb_server.query(name, "DELETE FROM orders WHERE id > 500")
    return mysql_db, name


def test_backup_restore_swap_and_rollback(mariadb_server, live, mysql_new_db, env):
    url, name = live
    shown = json.loads(_ok(run_cli("show", "latest", "--json", env=env)))
    counts = {t["name"]: t["rows"] for t in shown["tables"]}
    assert counts == {"audit": 900, "customers": 300, "orders": 900}
    assert shown["engine"] == "mysql" and mariadb_server.password not in json.dumps(shown)
    out = _ok(run_cli("restore", "latest", "--to", mysql_new_db, env=env))
    assert "verified" in out and mariadb_server.password not in out
    assert _count(mariadb_server, mysql_new_db.rsplit("/", 1)[1]) == 900
    dump = run_cli("cat", "latest", env=env).stdout
    assert b"CREATE TABLE `orders`" in dump and b"CREATE DATABASE" not in dump

    _fails(run_cli("restore", "latest", "--to", url, env=env), 2, "without confirmation")
    out = _ok(run_cli("restore", "latest", "--to", url, "--dry-run", env=env))
    assert re.search(r"orders\s+500\s+900", out) and "dry run: nothing was changed" in out
    assert _count(mariadb_server, name) == 500

    out = _ok(run_cli("restore", "latest", "--to", url, "--yes", env=env))
    assert "safety backup" in out and "verified" in out
    old = re.search(r"kept as (\S+);", out).group(1)
    assert _count(mariadb_server, name) == 900 and _count(mariadb_server, old) == 500
    assert mariadb_server.query(name, "SELECT COUNT(*) FROM big_order_count")[0][0] > 0
    assert not [d for d in mariadb_server.databases() if "_sr_" in d]
    backups = json.loads(_ok(run_cli("list", "--json", env=env)))
    assert [b["tags"] for b in backups] == [["daily"], ["pre-restore"]]

    out = _ok(run_cli("rollback", "--to", url, "--yes", "--drop-old", env=env))
    assert "verified" in out and _count(mariadb_server, name) == 500
    assert len([d for d in mariadb_server.databases() if d.startswith(f"{name}_old_")]) == 1


def test_drill_single_table_and_a_damaged_chunk(mariadb_server, live, env, tmp_path):
    url, name = live
    checks = tmp_path / "checks.sql"
    checks.write_text(
        "-- orphans\nSELECT o.id FROM orders o LEFT JOIN customers c ON c.id = o.customer_id"
        " WHERE c.id IS NULL;\nSELECT id FROM customers WHERE email NOT LIKE '%@%';\n"
    )
    scratch = mariadb_server.url(f"{name}_drill")
    drill = ["verify", "latest", "--restore", "--scratch", scratch, "--check-sql", str(checks)]
    out = _ok(run_cli(*drill, env=env))
    assert "RTO" in out and "2 checks pass" in out
    assert not mariadb_server.database_exists(f"{name}_drill")

    side = f"{name}_side"
    args = ["restore", "latest", "--to", url, "--table", "orders", "--into-schema", side]
    out = _ok(run_cli(*args, env=env))
    assert f"{side}.orders" in out and "verified" in out
    assert _count(mariadb_server, side) == 900 and _count(mariadb_server, name) == 500
    _fails(run_cli(*args, env=env), 5, "already exists")
    _fails(run_cli("restore", "latest", "--to", url, "--table", "nope", env=env), 2, "nope")

    for chunk in (tmp_path / "repo" / "packs").rglob("*"):  # chunks in packs (issue 19)
        if chunk.is_file():  # damage a blob of every pack: whichever is read first fails
            data = bytearray(chunk.read_bytes())
            data[len(data) // 2] ^= 0x10
            chunk.write_bytes(bytes(data))
    restore = ["restore", "latest", "--to", url, "--yes", "--no-safety-backup"]
    err = _fails(run_cli(*restore, env=env), 7, "untouched")
    assert mariadb_server.password not in err and len(err.splitlines()) == 1
    assert _count(mariadb_server, name) == 500
    assert not [d for d in mariadb_server.databases() if d.startswith(f"{name}_sr_")]


def test_bad_input_is_one_line_without_the_password(mariadb_server, mysql_db, env, tmp_path):
    _ok(run_cli("init", env=env))
    name = mysql_db.rsplit("/", 1)[1]
    mariadb_server.execute(
        name, ["CREATE TABLE t (id INT PRIMARY KEY)", "INSERT INTO t VALUES (1)"]
    )
    wrong = mariadb_server.url(name, password="not-the-password")
    err = _fails(run_cli("backup", wrong, env=env), 5, "authentication failed")
    assert "not-the-password" not in err
    err = _fails(run_cli("backup", "mysql://u:hunter2@127.0.0.1:1/db", env=env), 5, "cannot reach")
    assert "hunter2" not in err
    _fails(run_cli("backup", mariadb_server.url("no_such_db"), env=env), 5, "does not exist")
    err = _fails(
        run_cli("backup", mysql_db, env={**env, "STRONGROOM_MYSQL_BINDIR": str(tmp_path)}),
        5,
        "mariadb-dump or mysqldump not found",
    )
    assert mariadb_server.password not in err
    assert json.loads(_ok(run_cli("list", "--json", env=env))) == []


def test_a_user_without_privileges_gets_a_clear_error(mariadb_server, mysql_db, env):
    name = mysql_db.rsplit("/", 1)[1]
    mariadb_server.execute(
        name,
        [
            "CREATE TABLE parent (id INT PRIMARY KEY)",
            "CREATE TABLE child (id INT PRIMARY KEY, p INT,"
            " FOREIGN KEY (p) REFERENCES parent (id))",
            "INSERT INTO parent VALUES (1), (2)",
            "INSERT INTO child VALUES (1, 1)",
        ],
    )
    _ok(run_cli("init", env=env))
    _ok(run_cli("backup", mysql_db, env=env))
    mariadb_server.query(name, "DELETE FROM child")
    host = f"{mariadb_server.host}:{mariadb_server.port}"
    try:
        # may read the target only: the staged database cannot even be created
        mariadb_server.query(None, "CREATE USER 'reader'@'%' IDENTIFIED BY 'pw-reader'")
        mariadb_server.query(None, f"GRANT SELECT ON `{name}`.* TO 'reader'@'%'")
        err = _fails(
            run_cli(
                "restore",
                "latest",
                "--to",
                f"mysql://reader:pw-reader@{host}/{name}",
                "--yes",
                "--no-safety-backup",
                env=env,
            ),
            5,
            "cannot create",
        )
        assert "untouched" in err and "pw-reader" not in err and len(err.splitlines()) == 1
        # may create the siblings but not alter the target: the swap fails, nothing changes
        mariadb_server.query(None, "CREATE USER 'helper'@'%' IDENTIFIED BY 'pw-helper'")
        mariadb_server.query(None, f"GRANT ALL ON `{name}\\_%`.* TO 'helper'@'%'")
        mariadb_server.query(None, f"GRANT SELECT ON `{name}`.* TO 'helper'@'%'")
        err = _fails(
            run_cli(
                "restore",
                "latest",
                "--to",
                f"mysql://helper:pw-helper@{host}/{name}",
                "--yes",
                "--no-safety-backup",
                env=env,
            ),
            5,
            "unchanged",
        )
        assert "denied" in err and "pw-helper" not in err
    finally:
        mariadb_server.query(None, "DROP USER IF EXISTS 'reader'@'%', 'helper'@'%'")
    assert _count(mariadb_server, name, "child") == 0
    assert _count(mariadb_server, name, "parent") == 2
    assert [d for d in mariadb_server.databases() if d.startswith(f"{name}_")] == []
