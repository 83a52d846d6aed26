"""The MySQL/MariaDB engine against a real MariaDB server (started by the harness)."""

from __future__ import annotations

import logging
import os
import random
import stat
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pymysql
import pytest

from strongroom.engines import EngineKind, engine_kind, open_engine
from strongroom.engines.mysql import MysqlEngine, parse_url
from strongroom.engines.mysql.dump import dump_command
from strongroom.engines.mysql.tables import SectionFilter, restore_tables
from strongroom.errors import (
    DatabaseAuthFailed,
    DatabaseUnreachable,
    RestoreFailed,
    TargetNotEmpty,
    ToolMissing,
    UnsupportedDatabaseUrl,
    UsageError,
)
from tests.fixtures.mariadb import fill_sample, unique_db_name


def _dump(engine: MysqlEngine):
    with engine.dump() as running:
        data = running.stream.read()
        result = running.finish()
    return data, result, running


def _name(url: str) -> str:
    return url.rsplit("/", 1)[1]


# --- URLs, secrets, command lines (no server) --------------------------------------------
def test_urls_select_the_engine_and_never_show_the_password():
    assert engine_kind("mysql://u:p@h/db") is EngineKind.MYSQL
    assert engine_kind("MariaDB://u@h:3307/db") is EngineKind.MYSQL
    engine = open_engine("mariadb://app:s%40cr%3At@db.example:3307/shop")
    assert isinstance(engine, MysqlEngine)
    assert engine.params.password == "s@cr:t" and engine.params.port == 3307
    assert engine.database_name() == "shop"
    assert "s@cr:t" not in engine.describe() and "s%40cr" not in engine.describe()
    sock = parse_url("mysql://root@localhost/app?unix_socket=/run/mysqld/mysqld.sock")
    assert sock.socket == "/run/mysqld/mysqld.sock" and sock.password is None
    with pytest.raises(UnsupportedDatabaseUrl, match="one database"):
        parse_url("mysql://u:hunter2@h/")
    # issue 16: a raw '#' (or '@', '/', '?') in the password is read whole, not refused
    raw = parse_url("mysql://u:hun#ter2@h/db")
    assert (raw.password, raw.host, raw.database) == ("hun#ter2", "h", "db")


def test_the_password_goes_into_a_private_option_file_not_the_command_line(tmp_path):
    engine = MysqlEngine("mysql://u:p%22%23%5C%20x@127.0.0.1:3306/db")
    text = engine.option_file_text()
    assert 'password="p\\"#\\\\ x"' in text and "protocol=TCP" in text
    options = engine.write_option_file()
    try:  # in memory only: a killed process leaves no password on disk
        assert str(options.path).startswith("/dev/fd/") and options.pass_fds
        assert stat.S_IMODE(options.path.stat().st_mode) == 0o600
        assert options.path.read_text() == text
        assert not [p for p in Path(tempfile.gettempdir()).glob("strongroom-my-*")]
    finally:
        options.close()
    command = dump_command(Path("/usr/bin/mariadb-dump"), "mariadb-dump Ver 10.19", options, "db")
    assert command[1].startswith("--defaults-file=") and "--single-transaction" in command
    assert not any('p"#' in arg for arg in command)
    assert command[-2:] == ["--", "db"]


def test_dump_sections_are_selected_by_their_comment_lines():
    dump = (
        b"/*!40101 SET NAMES utf8mb4 */;\n--\n-- Table structure for table `a`\n--\n"
        b"CREATE TABLE `a` (x int);\nINSERT INTO `a` VALUES\n(1);\n"
        b"-- Table structure for table `we``ird`\nCREATE TABLE `we``ird` (y int);\n"
        b"-- Temporary table structure for view `v`\nCREATE VIEW `v` AS SELECT 1;\n"
        b"/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;\n-- Dump completed\n"
    )
    chunks = [dump[i : i + 7] for i in range(0, len(dump), 7)]
    selector = SectionFilter({"we`ird"})
    out = b"".join(selector.filter(chunks))
    assert b"CREATE TABLE `we``ird`" in out and b"SET NAMES" in out and b"TIME_ZONE" in out
    assert b"`a`" not in out and b"VIEW" not in out
    assert selector.tables == ["a", "we`ird"] and selector.views == ["v"]


# --- connection problems -----------------------------------------------------------------
def test_connection_problems_are_one_clear_error(mariadb_server, mysql_db, tmp_path):
    wrong = MysqlEngine(mariadb_server.url(_name(mysql_db), password="not-the-password"))
    with pytest.raises(DatabaseAuthFailed) as info:
        wrong.check()
    assert "not-the-password" not in str(info.value)
    with pytest.raises(DatabaseUnreachable, match=r"cannot reach MySQL at 127\.0\.0\.1:1"):
        MysqlEngine("mysql://u:hunter2@127.0.0.1:1/db").check()
    with pytest.raises(DatabaseUnreachable, match="does not exist"):
        MysqlEngine(mariadb_server.url("no_such_db_here")).check()
    with pytest.raises(ToolMissing, match="mariadb-dump or mysqldump not found"):
        MysqlEngine(mysql_db, tool_dirs=[tmp_path]).check()
    if mariadb_server.socket_path is not None:  # the client tools over a Unix socket
        url = (
            f"mariadb://{mariadb_server.user}:{mariadb_server.password}@localhost/"
            f"{_name(mysql_db)}?unix_socket={mariadb_server.socket_path}"
        )
        engine = MysqlEngine(url)
        assert engine.host_port() == str(mariadb_server.socket_path)
        _, result, running = _dump(engine)
        assert result.tables == [] and running.shared_snapshot


# --- backup, restore, verification, swap ---------------------------------------------------
def test_round_trip_of_every_kind_of_object_and_value(mariadb_server, mysql_db):
    name = _name(mysql_db)
    fill_sample(mariadb_server, name)
    engine = MysqlEngine(mysql_db)
    with engine.dump() as running:  # the dump blocks on its full pipe until read
        argv = Path(f"/proc/{running.pid}/cmdline").read_bytes().split(b"\0")
        options = Path(argv[1].split(b"=", 1)[1].decode())
        assert stat.S_IMODE(options.stat().st_mode) == 0o600
        assert mariadb_server.password.encode() not in b" ".join(argv)
        data = running.stream.read()
        result = running.finish()
    assert not options.exists()
    assert running.shared_snapshot
    assert b"CREATE DATABASE" not in data and b"\nUSE " not in data
    assert {t.name for t in result.tables} == {"audit", "customers", "orders"}
    assert {t.name: t.rows for t in result.tables} == {
        "audit": 900,
        "customers": 300,
        "orders": 900,
    }
    assert result.engine == "mysql" and "MariaDB" in result.server_version

    staged = engine.staging()
    assert staged.database_name().startswith(f"{name}_sr_")
    staged.restore([data[i : i + 65536] for i in range(0, len(data), 65536)])
    assert staged.table_stats() == result.tables  # counts and checksums, emoji and floats

    before = mariadb_server.query(name, "SELECT SUM(total) FROM orders")[0][0]
    mariadb_server.query(name, "DELETE FROM orders WHERE id > 100")
    old = engine.swap_in(staged, keep_old=True)
    assert old is not None and old.startswith(f"{name}_old_")
    assert not mariadb_server.database_exists(staged.database_name())
    assert engine.table_stats() == result.tables
    assert mariadb_server.query(name, "SELECT SUM(total) FROM orders")[0][0] == before
    assert mariadb_server.query(old, "SELECT COUNT(*) FROM orders")[0][0] == 100
    # triggers, views (one on another), routines and events came along and work
    mariadb_server.query(name, "CALL add_order(5000, 1, 150.00)")
    assert mariadb_server.query(name, "SELECT what FROM audit ORDER BY id DESC LIMIT 1")[0][0] == (
        "order 5000 ✓"
    )
    assert mariadb_server.query(name, "SELECT with_tax(10)")[0][0] == 12
    count = mariadb_server.query(name, "SELECT n FROM big_order_count")[0][0]
    assert (
        count == mariadb_server.query(name, "SELECT COUNT(*) FROM orders WHERE total > 100")[0][0]
    )
    events = mariadb_server.query(
        None, "SELECT EVENT_SCHEMA, STATUS FROM information_schema.EVENTS"
    )
    assert (name, "DISABLED") in events and (old, "DISABLED") in events
    # the old database is a working copy too: its view reads its own tables
    assert mariadb_server.query(old, "SELECT COUNT(*) FROM big_orders")[0][0] <= 100
    with pytest.raises(pymysql.err.IntegrityError):  # the foreign key follows the tables
        mariadb_server.query(name, "INSERT INTO orders VALUES (9999, 424242, 1, NULL)")

    again = engine.staging()
    again.restore([data])
    assert engine.swap_in(again, keep_old=False) is None
    assert {d for d in mariadb_server.databases() if d.startswith(f"{name}_")} == {old}


def test_a_damaged_stream_drops_the_database_it_created(mariadb_server, mysql_db):
    fill_sample(mariadb_server, _name(mysql_db), customers=50)
    engine = MysqlEngine(mysql_db)
    data, _, _ = _dump(engine)

    def damaged():
        yield data[: len(data) // 2]
        raise OSError("chunk 1234 is damaged")

    staged = engine.staging()
    with pytest.raises(OSError, match="damaged"):
        staged.restore(damaged())
    assert not mariadb_server.database_exists(staged.database_name())
    bad = engine.staging()
    with pytest.raises(RestoreFailed, match="new database was dropped"):
        bad.restore([b"CREATE TABLE broken (;\n"])
    assert not mariadb_server.database_exists(bad.database_name())
    with pytest.raises(TargetNotEmpty):
        engine.check_restore_target()


def test_statistics_come_from_the_dumps_snapshot_while_the_application_writes(
    mariadb_server, mysql_db, mysql_new_db
):
    name = _name(mysql_db)
    mariadb_server.execute(
        name,
        [
            "CREATE TABLE ledger (id INT AUTO_INCREMENT PRIMARY KEY, amount INT, pad CHAR(200))",
            "CREATE TABLE totals (id INT PRIMARY KEY, total BIGINT)",
            "INSERT INTO totals VALUES (1, 0)",
            "INSERT INTO ledger (amount, pad) SELECT seq % 100, REPEAT('x', 200)"
            " FROM seq_1_to_60000",
        ],
    )
    stop = threading.Event()
    commits = []

    def writer():
        with mariadb_server.connect(name, autocommit=False) as conn, conn.cursor() as cur:
            rng = random.Random(3)
            while not stop.is_set():
                amount = rng.randint(1, 9)
                cur.execute("INSERT INTO ledger (amount, pad) VALUES (%s, 'w')", (amount,))
                cur.execute("UPDATE totals SET total = total + %s WHERE id = 1", (amount,))
                conn.commit()
                commits.append(amount)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.2)
        data, result, running = _dump(MysqlEngine(mysql_db))
        during = len(commits)
        time.sleep(0.1)
    finally:
        stop.set()
        thread.join()
    assert running.shared_snapshot and len(commits) > during > 0
    restored = MysqlEngine(mysql_new_db)
    restored.restore([data])
    assert restored.table_stats() == result.tables


def test_without_reload_the_statistics_warn_and_myisam_is_named(mariadb_server, mysql_db, caplog):
    name = _name(mysql_db)
    mariadb_server.execute(
        name,
        [
            "CREATE TABLE t (id INT PRIMARY KEY) ENGINE=InnoDB",
            "CREATE TABLE legacy (id INT PRIMARY KEY) ENGINE=MyISAM",
            "INSERT INTO t VALUES (1), (2)",
        ],
    )
    user = f"limited_{os.getpid()}"
    password = "we\"ird #pw\\ 'x"  # the option file must quote and escape it
    mariadb_server.query(
        None, f"CREATE USER IF NOT EXISTS '{user}'@'%%' IDENTIFIED BY %s", (password,)
    )
    mariadb_server.query(None, f"GRANT ALL ON `{name}`.* TO '{user}'@'%'")
    try:
        host = f"{mariadb_server.host}:{mariadb_server.port}"
        url = f"mysql://{user}:{quote(password, safe='')}@{host}/{name}"
        with caplog.at_level(logging.WARNING, logger="strongroom.engines.mysql"):
            _, result, running = _dump(MysqlEngine(url))
    finally:
        mariadb_server.query(None, f"DROP USER '{user}'@'%'")
    assert not running.shared_snapshot
    assert "lacks the RELOAD privilege" in caplog.text and "legacy (MyISAM)" in caplog.text
    assert {t.name: t.rows for t in result.tables} == {"legacy": 0, "t": 2}


# --- single tables ---------------------------------------------------------------------------
def test_single_tables_in_place_and_into_another_database(mariadb_server, mysql_db):
    name = _name(mysql_db)
    fill_sample(mariadb_server, name, customers=40)
    engine = MysqlEngine(mysql_db)
    data, result, _ = _dump(engine)
    side = unique_db_name("side")
    try:
        restored = restore_tables(
            engine.connection,
            [data],
            ["orders"],
            side,
            expected=result.tables,
            source_database=name,
        )
        assert restored == [f"{side}.orders"]
        assert mariadb_server.query(side, "SELECT COUNT(*) FROM orders")[0][0] == 120
        # its trigger came along; its foreign key was left out (customers is not there)
        assert mariadb_server.query(side, "SHOW TRIGGERS")[0][0] == "orders_audit"
        assert "FOREIGN KEY" not in mariadb_server.query(side, "SHOW CREATE TABLE orders")[0][1]
        with pytest.raises(TargetNotEmpty, match="orders already exists"):
            restore_tables(engine.connection, [data], ["orders"], side)
        with pytest.raises(UsageError, match="nope is not in the dump"):
            restore_tables(engine.connection, [data], ["nope"], side)
        with pytest.raises(UsageError, match="view"):
            restore_tables(engine.connection, [data], ["big_orders"], side)

        mariadb_server.query(name, "DROP TABLE orders")
        restore_tables(engine.connection, [data], [f"{name}.orders"], expected=result.tables)
        assert mariadb_server.query(name, "SELECT COUNT(*) FROM orders")[0][0] == 120
        create = mariadb_server.query(name, "SHOW CREATE TABLE orders")[0][1]
        assert "fk_orders_customer" in create  # re-added: customers is in the database
        assert not [d for d in mariadb_server.databases() if "_tables_" in d]
    finally:
        mariadb_server.drop_database(side)
