"""Hostile cases against the issue-13 fixes: SQLite restore attributes, non-ASCII MySQL
passwords, and the MySQL swap's retarget / undo."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import unicodedata
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pymysql
import pytest

from strongroom.engines.mysql import MysqlEngine
from strongroom.engines.mysql import swap as swap_module
from strongroom.engines.mysql.connection import MysqlConnection
from strongroom.engines.sqlite import SqliteEngine
from strongroom.errors import DatabaseAuthFailed, RestoreFailed
from strongroom.repository.keys import KeySource
from strongroom.repository.repository import Repository
from strongroom.services.backup import run_backup
from strongroom.services.restore import run_restore
from strongroom.storage.memory import MemoryStorage
from tests.fixtures.mariadb import MariaDbServer, fill_sample, unique_db_name
from tests.helpers import make_sqlite_db, sqlite_counts

# --- (a) SQLite ---------------------------------------------------------------------------


@pytest.fixture()
def repo(tmp_path: Path) -> Repository:
    storage = MemoryStorage()
    Repository.init(storage, key_file=tmp_path / "k")
    return Repository.open(storage, KeySource(key_file=tmp_path / "k"))


@pytest.fixture()
def root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")


@pytest.fixture()
def folder() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="strongroom-attack-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _attrs(path: Path) -> tuple[int, int, int]:
    info = path.stat()
    return info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)


def _backup_then_grow(repo: Repository, live: Path) -> Any:
    backup = run_backup(repo, SqliteEngine(str(live))).manifest
    make_sqlite_db(live, users=20, orders=20, seed=7)
    return backup


@pytest.mark.parametrize("mode", [0o4750, 0o2770, 0o1640, 0o6644, 0o440, 0o000])
@pytest.mark.parametrize("keep_old", [True, False])
def test_special_mode_bits_survive(repo, root, folder, mode, keep_old):
    live = make_sqlite_db(folder / "app.db", users=50, orders=50)
    backup = _backup_then_grow(repo, live)
    os.chown(live, 54321, 54322)  # a uid/gid that /etc/passwd does not know
    live.chmod(mode)
    before = _attrs(live)
    report = run_restore(repo, backup, SqliteEngine(str(live)), keep_old=keep_old)
    assert report.ok and report.swapped
    assert _attrs(live) == before
    assert sqlite_counts(live) == {"users": 50, "orders": 50}
    assert (report.old_kept_as is not None) == keep_old
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []


def test_a_symlinked_target_restores_the_file_it_points_to(repo, root, folder):
    real_dir = folder / "real"
    real_dir.mkdir()
    real = make_sqlite_db(real_dir / "app.db", users=50, orders=50)
    link = folder / "app.db"
    link.symlink_to(real)
    backup = run_backup(repo, SqliteEngine(str(link))).manifest
    make_sqlite_db(real, users=20, orders=20, seed=7)
    report = run_restore(repo, backup, SqliteEngine(str(link)), keep_old=False)
    assert report.ok and report.swapped
    # either the link still points at the (now restored) database, or the restore refuses
    assert link.is_symlink()
    assert sqlite_counts(real) == {"users": 50, "orders": 50}


def test_a_symlinked_target_attributes_come_from_the_real_file(repo, root, folder):
    """Whatever happens to the link, the file now at the name has the real file's owner."""
    real = make_sqlite_db(folder / "real.db", users=50, orders=50)
    os.chown(real, 54321, 54321)
    real.chmod(0o640)
    link = folder / "app.db"
    link.symlink_to(real)
    backup = run_backup(repo, SqliteEngine(str(link))).manifest
    report = run_restore(repo, backup, SqliteEngine(str(link)), keep_old=False)
    assert report.ok
    assert _attrs(link) == (54321, 54321, 0o640)


def test_a_hard_linked_target_other_name_keeps_the_old_inode(repo, root, folder):
    """Documented behaviour of a rename swap: the other name is not the restored file.
    Its owner and mode are untouched and it still opens."""
    live = make_sqlite_db(folder / "app.db", users=50, orders=50)
    backup = _backup_then_grow(repo, live)
    other = folder / "alias.db"
    os.link(live, other)
    os.chown(live, 54321, 54321)
    live.chmod(0o600)
    report = run_restore(repo, backup, SqliteEngine(str(live)), keep_old=True)
    assert report.ok
    assert _attrs(live) == (54321, 54321, 0o600)
    assert _attrs(other) == (54321, 54321, 0o600)
    assert sqlite_counts(live) == {"users": 50, "orders": 50}
    assert sqlite_counts(other) == {"users": 70, "orders": 70}
    assert os.stat(other).st_nlink == 2  # alias + the kept old-… link


def _as_user(uid: int, gid: int, action: Any) -> tuple[int, str]:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        code, message = 1, ""
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            message = action()
            code = 0
        except BaseException as exc:
            message = f"{type(exc).__name__}: {exc}"
        finally:
            os.write(write_end, message.encode())
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        message = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), message


def test_a_target_in_a_folder_the_user_cannot_write_fails_cleanly(repo, root, folder):
    """As an unprivileged user whose database sits in a folder it cannot write: a clear
    failure, the target untouched, no exit 70 traceback."""
    live = make_sqlite_db(folder / "app.db", users=50, orders=50)
    backup = _backup_then_grow(repo, live)
    os.chown(live, 54321, 54321)
    live.chmod(0o666)
    folder.chmod(0o755)  # root's folder
    before = live.read_bytes()

    def restore() -> str:
        try:
            run_restore(repo, backup, SqliteEngine(str(live)), safety_backup=False)
        except RestoreFailed as exc:
            return f"RestoreFailed: {exc}"
        return "restored"

    code, message = _as_user(54321, 54321, restore)
    assert code == 0, message
    assert message.startswith("RestoreFailed"), message
    assert live.read_bytes() == before


# --- (b) passwords --------------------------------------------------------------------------


@pytest.fixture()
def make_account(mariadb_server: MariaDbServer) -> Iterator[Any]:
    made: list[tuple[str, str]] = []

    def make(user: str, password: str) -> str:
        database = unique_db_name("pw")
        mariadb_server.create_database(database)
        with mariadb_server.connect() as conn, conn.cursor() as cur:
            cur.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", (user, password))
            cur.execute(f"GRANT ALL ON `{database}`.* TO %s@'%%'", (user,))
        made.append((user, database))
        return database

    yield make
    for user, database in made:
        mariadb_server.query(None, "DROP USER IF EXISTS %s@'%%'", (user,))
        mariadb_server.drop_database(database)


def _url(server: MariaDbServer, user: str, password: str, database: str) -> str:
    return (
        f"mysql://{quote(user, safe='')}:{quote(password, safe='')}"
        f"@{server.host}:{server.port}/{database}"
    )


WEIRD = {
    "nfd": unicodedata.normalize("NFD", "Crème brûlée"),
    "nfc": unicodedata.normalize("NFC", "Crème brûlée"),
    "emoji-zwj": "🔑👨‍👩‍👧🏳️‍🌈x",
    "combining-only": "\u0301\u0308\u20dd",
    "rtl": "كلمة\u200fسر",
}


@pytest.mark.parametrize("password", list(WEIRD.values()), ids=list(WEIRD))
def test_odd_unicode_passwords_log_in_and_back_up(mariadb_server, make_account, password):
    user = f"u_{uuid.uuid4().hex[:8]}"
    database = make_account(user, password)
    engine = MysqlEngine(_url(mariadb_server, user, password, database))
    engine.check()
    with engine.dump() as running:
        running.stream.read()
        running.finish()


def test_nfc_and_nfd_are_different_passwords(mariadb_server, make_account):
    user = f"u_{uuid.uuid4().hex[:8]}"
    nfc = unicodedata.normalize("NFC", "é")
    database = make_account(user, nfc)
    with pytest.raises(DatabaseAuthFailed):
        MysqlEngine(_url(mariadb_server, user, unicodedata.normalize("NFD", nfc), database)).check()


def test_a_user_name_that_is_only_non_ascii(mariadb_server, make_account, tmp_path):
    user = "ünïcødé_€"
    password = "pässwört€"
    database = make_account(user, password)
    mariadb_server.execute(database, ["CREATE TABLE t (id INT)", "INSERT INTO t VALUES (1)"])
    engine = MysqlEngine(_url(mariadb_server, user, password, database))
    engine.check()
    with engine.dump() as running:
        data = running.stream.read()
        running.finish()
    assert b"CREATE TABLE" in data


@pytest.mark.parametrize("password", ["50%off", "100%", "%zz", "%%", "a%2"])
def test_a_percent_not_followed_by_hex_is_taken_literally(mariadb_server, make_account, password):
    user = f"u_{uuid.uuid4().hex[:8]}"
    database = make_account(user, password)
    url = f"mysql://{user}:{password}@{mariadb_server.host}:{mariadb_server.port}/{database}"
    conn = MysqlConnection(url)
    assert conn.params.password == password
    assert password not in conn.describe()
    MysqlEngine(url).check()


# --- (c) MySQL swap ---------------------------------------------------------------------


def _dbname(url: str) -> str:
    return url.rsplit("/", 1)[1]


def _staged_copy(url: str) -> tuple[MysqlEngine, MysqlEngine]:
    engine = MysqlEngine(url)
    with engine.dump() as running:
        data = running.stream.read()
        running.finish()
    staged = engine.staging()
    staged.restore([data])
    return engine, staged


def _objects(server: MariaDbServer, name: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for (view,) in server.query(
        None, "SELECT TABLE_NAME FROM information_schema.VIEWS WHERE TABLE_SCHEMA=%s", (name,)
    ):
        found[f"view {view}"] = server.query(name, f"SHOW CREATE VIEW `{view}`")[0][1]
    for (trg,) in server.query(
        None,
        "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA=%s",
        (name,),
    ):
        found[f"trigger {trg}"] = server.query(name, f"SHOW CREATE TRIGGER `{trg}`")[0][2]
    for routine, kind in server.query(
        None,
        "SELECT ROUTINE_NAME, ROUTINE_TYPE FROM information_schema.ROUTINES"
        " WHERE ROUTINE_SCHEMA=%s",
        (name,),
    ):
        found[f"{kind} {routine}"] = server.query(name, f"SHOW CREATE {kind} `{routine}`")[0][2]
    return found


def test_literals_and_comments_naming_the_target_or_a_fake_staged_name_are_kept(
    mariadb_server, mysql_db
):
    name = _dbname(mysql_db)
    fake = f"`{name}_sr_deadbeef`."
    mariadb_server.execute(
        name,
        [
            "CREATE TABLE t (id INT PRIMARY KEY, s VARCHAR(200))",
            f"INSERT INTO t VALUES (1, '{fake}x')",
            f"CREATE VIEW v AS SELECT id, '`{name}`.t' AS a, '{fake}t' AS b,"
            f" `{name}`.t.s AS c FROM `{name}`.t WHERE s <> '`{name}`.'",
            f"CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW"
            f" SET NEW.s = CONCAT('{fake}', '`{name}`.', NEW.s)",
            f"CREATE FUNCTION f() RETURNS VARCHAR(200) DETERMINISTIC /* {fake}t */"
            f" RETURN CONCAT('{fake}', '-- `{name}`.x')",
        ],
    )
    before = _objects(mariadb_server, name)
    engine, staged = _staged_copy(mysql_db)
    mariadb_server.query(name, "DELETE FROM t")
    assert engine.swap_in(staged, keep_old=False) is None
    assert _objects(mariadb_server, name) == before
    assert mariadb_server.query(name, "SELECT a, b, c FROM v") == [
        (f"`{name}`.t", f"{fake}t", f"{fake}x")
    ]
    mariadb_server.query(name, "INSERT INTO t VALUES (2, 'y')")
    assert mariadb_server.query(name, "SELECT s FROM t WHERE id = 2") == [(f"{fake}`{name}`.y",)]
    assert mariadb_server.query(name, "SELECT f()") == [(f"{fake}-- `{name}`.x",)]


@pytest.fixture(params=["we`ird", "do.t", "b`a.c`k"])
def odd_db(request, mariadb_server: MariaDbServer) -> Iterator[str]:
    name = f"{unique_db_name('o')}{request.param}"
    quoted = name.replace("`", "``")
    mariadb_server.query(None, f"CREATE DATABASE `{quoted}` CHARACTER SET utf8mb4")
    try:
        yield name
    finally:
        for other in mariadb_server.databases():
            if other.startswith(name):
                mariadb_server.query(None, f"DROP DATABASE `{other.replace('`', '``')}`")


def test_a_database_name_with_a_backtick_or_a_dot_swaps(mariadb_server, odd_db):
    q = odd_db.replace("`", "``")
    mariadb_server.execute(
        odd_db,
        [
            "CREATE TABLE t (id INT PRIMARY KEY)",
            "INSERT INTO t VALUES (1), (2)",
            f"CREATE VIEW v AS SELECT id FROM `{q}`.t",
            "CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW SET NEW.id = NEW.id + 0",
            f"CREATE FUNCTION f() RETURNS INT READS SQL DATA RETURN (SELECT COUNT(*) FROM `{q}`.t)",
        ],
    )
    url = mariadb_server.url(quote(odd_db, safe=""))
    before = _objects(mariadb_server, odd_db)
    engine, staged = _staged_copy(url)
    mariadb_server.query(odd_db, "DELETE FROM t")
    assert engine.swap_in(staged, keep_old=False) is None
    assert _objects(mariadb_server, odd_db) == before
    assert mariadb_server.query(odd_db, "SELECT f(), (SELECT COUNT(*) FROM v)") == [(2, 2)]
    assert not [d for d in mariadb_server.databases() if d.startswith(odd_db) and d != odd_db]


def _shop_with_function_view(server: MariaDbServer, name: str) -> None:
    server.execute(
        name,
        [
            "CREATE TABLE t (id INT PRIMARY KEY)",
            "INSERT INTO t VALUES (1), (2), (3)",
            "CREATE FUNCTION twice(x INT) RETURNS INT DETERMINISTIC RETURN x * 2",
            "CREATE VIEW doubled AS SELECT twice(id) AS d FROM t",
        ],
    )


def test_a_view_calling_a_function_missing_from_the_live_database_restores(
    mariadb_server, mysql_db
):
    name = _dbname(mysql_db)
    _shop_with_function_view(mariadb_server, name)
    engine, staged = _staged_copy(mysql_db)
    mariadb_server.execute(name, ["DROP VIEW doubled", "DROP FUNCTION twice"])
    engine.swap_in(staged, keep_old=False)
    assert mariadb_server.query(name, "SELECT d FROM doubled ORDER BY d") == [(2,), (4,), (6,)]


@pytest.mark.parametrize("keep_old", [True, False])
def test_undo_keeps_a_view_that_calls_a_function_of_the_target(
    mariadb_server, mysql_db, monkeypatch, keep_old
):
    name = _dbname(mysql_db)
    _shop_with_function_view(mariadb_server, name)
    mariadb_server.execute(
        name,
        [
            "CREATE EVENT e ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01' DISABLE DO DELETE FROM t"
            " WHERE id < 0"
        ],
    )
    engine, staged = _staged_copy(mysql_db)
    mariadb_server.query(name, "DELETE FROM t WHERE id = 3")
    before = _objects(mariadb_server, name)
    real_create = swap_module.create
    failed: list[str] = []

    def create(cur: Any, database: str, definition: Any, *, replace: bool = False) -> None:
        if definition.kind == "EVENT" and database == name and not failed:
            failed.append(definition.name)  # the restored event: fail once, in step 4
            raise pymysql.err.OperationalError(1044, "forced by the test")
        real_create(cur, database, definition, replace=replace)

    monkeypatch.setattr(swap_module, "create", create)
    with pytest.raises(RestoreFailed, match="forced by the test") as info:
        engine.swap_in(staged, keep_old=keep_old)
    monkeypatch.undo()
    staged.drop()
    assert "the original database is unchanged" in str(info.value), str(info.value)
    assert _objects(mariadb_server, name) == before


@pytest.mark.parametrize("keep_old", [True, False])
def test_undo_that_itself_fails_says_where_the_tables_are(
    mariadb_server, mysql_db, monkeypatch, keep_old
):
    name = _dbname(mysql_db)
    fill_sample(mariadb_server, name, customers=10)
    engine, staged = _staged_copy(mysql_db)
    real_create = swap_module.create
    real_rename = swap_module.rename_statement
    renames: list[str] = []

    def create(cur: Any, database: str, definition: Any, *, replace: bool = False) -> None:
        if database == name and definition.kind in ("PROCEDURE", "FUNCTION", "EVENT"):
            raise pymysql.err.OperationalError(1044, "forced create failure")
        real_create(cur, database, definition, replace=replace)

    def rename(moves: Any) -> str:
        renames.append("x")
        if len(renames) == 2:  # the undo's own RENAME
            return "RENAME TABLE `no_such_db_zz`.`nope` TO `no_such_db_zz`.`nope2`"
        return real_rename(moves)

    monkeypatch.setattr(swap_module, "create", create)
    monkeypatch.setattr(swap_module, "rename_statement", rename)
    with pytest.raises(RestoreFailed) as info:
        engine.swap_in(staged, keep_old=keep_old)
    monkeypatch.undo()
    message = str(info.value)
    assert "putting the original back failed too" in message, message
    olds = [d for d in mariadb_server.databases() if d.startswith(f"{name}_old_")]
    assert len(olds) == 1 and f"the original tables are in {olds[0]}" in message, message
    # the original rows really are there
    assert mariadb_server.query(olds[0], "SELECT COUNT(*) FROM orders")[0][0] > 0
    staged.drop()


def test_a_trigger_with_a_block_comment_restores(mariadb_server, mysql_db):
    name = _dbname(mysql_db)
    mariadb_server.execute(
        name,
        [
            "CREATE TABLE t (id INT PRIMARY KEY, s VARCHAR(20))",
            "CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW /* note */ SET NEW.s = 'x'",
        ],
    )
    engine, staged = _staged_copy(mysql_db)
    assert engine.swap_in(staged, keep_old=False) is None
