"""One suite every database engine must pass: PostgreSQL, MySQL/MariaDB and SQLite, each on
a real server (or file), driven through the services a user runs (backup, restore, rollback,
drill, the scheduler) rather than through engine internals."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pymysql
import pytest

from strongroom.config import parse_settings
from strongroom.engines import open_engine
from strongroom.engines.base import Engine
from strongroom.errors import ChunkDamaged
from strongroom.repository.keys import KeySource
from strongroom.repository.manifest import Manifest
from strongroom.repository.repository import Repository
from strongroom.repository.verifications import last_verifications
from strongroom.services import drill as drill_service
from strongroom.services.backup import run_backup
from strongroom.services.daemon import Daemon
from strongroom.services.drill import scratch_for, verify_by_restore
from strongroom.services.restore import (
    PRE_RESTORE_TAG,
    compare_tables,
    find_rollback_backup,
    run_restore,
)
from strongroom.storage.local import LocalStorage
from strongroom.tempfiles import private_dir
from tests.helpers import REPO_ROOT, STRONGROOM
from tests.services.test_daemon import SUNDAY_NOON, Clock

ENGINES = ["postgresql", "mysql", "sqlite"]

# The same logical sample on every engine: two tables, a foreign key, unicode text.
SCHEMA = [
    "CREATE TABLE customers (id INTEGER PRIMARY KEY, name VARCHAR(100) NOT NULL)",
    "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL,"
    " note VARCHAR(200), CONSTRAINT fk_orders_customer FOREIGN KEY (customer_id)"
    " REFERENCES customers (id))",
]
CUSTOMERS = [(i, f"Ünïcode {i} {'😀🎉'[i % 2]} ✓") for i in range(1, 21)]
ORDERS = [(i, (i % 20) + 1, "n" * (i % 7) or None) for i in range(1, 61)]
SAMPLE = {"customers": CUSTOMERS, "orders": ORDERS}
CHANGES = [
    "UPDATE customers SET name = 'changed ✓ 😀' WHERE id = 1",
    "DELETE FROM orders WHERE id > 50",
    "INSERT INTO customers (id, name) VALUES (99, 'nouveau ☃')",
]
CHANGED = {
    "customers": [(1, "changed ✓ 😀"), *CUSTOMERS[1:], (99, "nouveau ☃")],
    "orders": ORDERS[:50],
}
OLD_NAME = {
    "postgresql": r"_old_\d{8}_\d{6}\Z",  # lower case: no quotes needed in SQL
    "mysql": r"_old_\d{8}T\d{6}",
    "sqlite": r"\.db\.old-\d{8}T\d{6}Z",
}
STAGED_MARK = {"postgresql": "_sr_", "mysql": "_sr_", "sqlite": ".sr-"}


def _short(table: str) -> str:
    """``public.customers`` -> ``customers`` (engines with schemas qualify names)."""
    return table.rsplit(".", 1)[-1]


def connect(url: str) -> Any:
    """An autocommit DB-API connection to ``url`` (what an application would open)."""
    if url.startswith("postgresql://"):
        return psycopg.connect(url, autocommit=True)
    if url.startswith("mysql://"):
        parts = urlsplit(url)
        return pymysql.connect(
            ssl_disabled=True,
            host=parts.hostname,
            port=parts.port or 3306,
            user=parts.username,
            password=parts.password or "",
            database=parts.path.lstrip("/"),
            charset="utf8mb4",
            autocommit=True,
        )
    conn = sqlite3.connect(url[len("sqlite://") :], isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def execute(url: str, statements: list[str], rows: list[tuple[str, list[tuple[Any, ...]]]] = ()):
    """Run statements, then ``(insert, rows)`` batches, on ``url``."""
    with closing(connect(url)) as conn:
        cur = conn.cursor()
        for statement in statements:
            cur.execute(statement)
        for insert, batch in rows:
            if isinstance(conn, sqlite3.Connection):
                insert = insert.replace("%s", "?")
            cur.executemany(insert, batch)


def query(url: str, text: str) -> list[tuple[Any, ...]]:
    with closing(connect(url)) as conn:
        cur = conn.cursor()
        cur.execute(text)
        return [tuple(row) for row in cur.fetchall()]


def snapshot(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """The sample's logical content, comparable across engines."""
    return {
        "customers": query(url, "SELECT id, name FROM customers ORDER BY id"),
        "orders": query(url, "SELECT id, customer_id, note FROM orders ORDER BY id"),
    }


@dataclass
class World:
    """A live database filled with the sample, and a repository to back it up into."""

    kind: str
    url: str  # the live database
    new_url: str  # a database that does not exist yet
    repo: Repository
    repo_dir: Path
    key_file: Path
    names: Callable[[], set[str]]  # databases on the server (SQLite: files in the folder)
    prefix: str  # every database or file this test creates starts with it

    @property
    def engine(self) -> Engine:
        return open_engine(self.url)

    @property
    def scratch_prefix(self) -> str:
        """Drill scratch names made of it are dropped by the fixture if a test fails."""
        return "drill" if self.kind == "sqlite" else f"{self.prefix}_drill"

    def sibling_url(self, name: str) -> str:
        """The URL of database ``name`` beside the live one (SQLite: a file's path)."""
        if self.kind == "sqlite":
            return f"sqlite://{name}"
        return f"{self.url.rsplit('/', 1)[0]}/{name}"

    def change(self) -> None:
        execute(self.url, CHANGES)

    def backup(self, **kwargs: Any) -> Manifest:
        return run_backup(self.repo, self.engine, **kwargs).manifest

    def leftovers(self, before: set[str]) -> set[str]:
        return {n for n in self.names() - before if n.startswith(self.prefix)}


def fill(url: str) -> None:
    execute(
        url,
        SCHEMA,
        [
            ("INSERT INTO customers (id, name) VALUES (%s, %s)", CUSTOMERS),
            ("INSERT INTO orders (id, customer_id, note) VALUES (%s, %s, %s)", ORDERS),
        ],
    )


def _make_repo(tmp_path: Path) -> tuple[Repository, Path, Path]:
    repo_dir, key_file = tmp_path / "repo", tmp_path / "repo.key"
    Repository.init(LocalStorage(repo_dir), key_file=key_file)
    return Repository.open(LocalStorage(repo_dir), KeySource(key_file=key_file)), repo_dir, key_file


@pytest.fixture(params=ENGINES)
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    kind = request.param
    repo, repo_dir, key_file = _make_repo(tmp_path)
    if kind == "sqlite":
        folder = tmp_path / "data"
        folder.mkdir()
        url = f"sqlite://{folder / 'shop.db'}"
        fill(url)
        yield World(
            kind,
            url,
            f"sqlite://{folder / 'restored.db'}",
            repo,
            repo_dir,
            key_file,
            lambda: {str(folder / n) for n in os.listdir(folder)},
            f"{folder}{os.sep}",
        )
        return
    if kind == "postgresql":
        server = request.getfixturevalue("pg_server")
        url, new_url = request.getfixturevalue("pg_db"), request.getfixturevalue("pg_new_db")

        def names() -> set[str]:
            return {r[0] for r in server.query("postgres", "SELECT datname FROM pg_database")}
    else:
        server = request.getfixturevalue("mariadb_server")
        url, new_url = request.getfixturevalue("mysql_db"), request.getfixturevalue("mysql_new_db")
        names = server.databases
    name = url.rsplit("/", 1)[1]
    fill(url)
    try:
        yield World(kind, url, new_url, repo, repo_dir, key_file, names, name)
    finally:  # staged, old and scratch databases of this test (the fixtures drop `name`)
        for other in names():
            if other.startswith(f"{name}_"):
                server.drop_database(other)


def test_backup_records_rows_and_checksums_of_every_table(world: World) -> None:
    manifest = world.backup()
    assert manifest.engine == world.kind
    recorded = {_short(t.name): t for t in world.repo.private_section(manifest).tables}
    assert {name: t.rows for name, t in recorded.items()} == {"customers": 20, "orders": 60}
    assert all(t.checksum for t in recorded.values()), recorded
    now = {_short(t.name): t.checksum for t in world.engine.table_stats()}
    assert now == {name: t.checksum for name, t in recorded.items()}
    world.change()  # the checksum follows the content
    changed = {_short(t.name): t.checksum for t in world.engine.table_stats()}
    assert changed["customers"] != recorded["customers"].checksum
    assert changed["orders"] != recorded["orders"].checksum


def test_restore_into_a_new_database_verifies_and_equals_the_source(world: World) -> None:
    manifest = world.backup()
    target = open_engine(world.new_url)
    assert not target.inspect().exists
    report = run_restore(world.repo, manifest, target)
    assert report.ok and report.swapped, report.comparisons
    assert report.old_kept_as is None and report.safety_backup_id is None
    assert {_short(c.name) for c in report.comparisons} == {"customers", "orders"}
    assert all(c.checksum_checked for c in report.comparisons), report.comparisons
    assert snapshot(world.new_url) == SAMPLE == snapshot(world.url)
    with closing(connect(world.new_url)) as conn:  # the foreign key came along
        with pytest.raises((psycopg.IntegrityError, pymysql.IntegrityError, sqlite3.Error)):
            conn.cursor().execute("INSERT INTO orders (id, customer_id) VALUES (1000, 12345)")


@pytest.mark.parametrize("keep_old", [True, False], ids=["keep-old", "drop-old"])
def test_restore_over_the_live_database_with_an_open_session(world: World, keep_old: bool) -> None:
    manifest = world.backup()
    world.change()
    before = world.names()
    app = connect(world.url)
    try:
        cur = app.cursor()
        cur.execute("SELECT count(*) FROM customers")
        assert cur.fetchone()[0] == 21
        report = run_restore(world.repo, manifest, world.engine, keep_old=keep_old)
        assert report.ok and report.swapped, report.comparisons
        assert report.safety_backup_id is not None
        assert snapshot(world.url) == SAMPLE  # new sessions see the backup's data
        if keep_old:
            assert report.old_kept_as and re.search(OLD_NAME[world.kind], report.old_kept_as)
            assert world.leftovers(before) == {report.old_kept_as}
            assert snapshot(world.sibling_url(report.old_kept_as)) == CHANGED
        else:
            assert report.old_kept_as is None
            assert world.leftovers(before) == set()
        # The open session: PostgreSQL terminates it; MySQL's session goes on by name and
        # reads the moved-in tables; SQLite's keeps the old file (docs/design.md).
        if world.kind == "postgresql":
            with pytest.raises(psycopg.OperationalError):
                cur.execute("SELECT count(*) FROM customers")
        else:
            cur.execute("SELECT name FROM customers WHERE id = 1")
            expected = CHANGED if world.kind == "sqlite" else SAMPLE
            assert cur.fetchone()[0] == expected["customers"][0][1]
    finally:
        app.close()


def test_rollback_returns_the_pre_restore_state(world: World) -> None:
    manifest = world.backup()
    world.change()
    report = run_restore(world.repo, manifest, world.engine, keep_old=False)
    assert report.ok and snapshot(world.url) == SAMPLE
    rollback = find_rollback_backup(world.repo, world.engine)
    assert rollback.backup_id == report.safety_backup_id
    assert PRE_RESTORE_TAG in rollback.tags
    back = run_restore(world.repo, rollback, world.engine, keep_old=False)
    assert back.ok and back.swapped, back.comparisons
    assert snapshot(world.url) == CHANGED


PASSING_CHECK = "SELECT o.id FROM orders o WHERE o.customer_id NOT IN (SELECT id FROM customers)"
FAILING_CHECK = "SELECT id FROM customers WHERE name LIKE 'Ünïcode 1%'"  # 1, 10..19


def test_drill_runs_check_queries_records_the_outcome_and_drops_the_scratch(
    world: World,
) -> None:
    manifest = world.backup()
    before = world.names()
    scratch = scratch_for(
        manifest, scratch_url=None, server_url=world.url, prefix=world.scratch_prefix
    )
    assert scratch.kind == world.kind
    good = verify_by_restore(world.repo, manifest, scratch, checks=[PASSING_CHECK])
    assert good.ok, good.detail
    assert [c.rows for c in good.checks] == [0]
    assert good.record.tables_checked == 2 and good.record.checks_run == 1
    assert world.leftovers(before) == set() and not scratch.inspect().exists
    assert last_verifications(world.repo.storage)[manifest.backup_id].ok

    scratch = scratch_for(
        manifest, scratch_url=None, server_url=world.url, prefix=world.scratch_prefix
    )
    bad = verify_by_restore(world.repo, manifest, scratch, checks=[PASSING_CHECK, FAILING_CHECK])
    assert not bad.ok
    assert [c.rows for c in bad.checks] == [0, 11]
    assert all(c.matches for c in bad.comparisons)  # the data itself verified
    assert bad.record.problem == "1 check query returned rows"
    assert world.leftovers(before) == set() and not scratch.inspect().exists
    stored = last_verifications(world.repo.storage)[manifest.backup_id]
    assert not stored.ok and stored.checks_run == 2


def test_a_changed_value_in_a_restored_copy_is_a_mismatch(world: World) -> None:
    manifest = world.backup()
    assert run_restore(world.repo, manifest, open_engine(world.new_url)).ok
    recorded = world.repo.private_section(manifest).tables
    restored = open_engine(world.new_url)
    assert all(c.matches for c in compare_tables(recorded, restored.table_stats()))
    execute(world.new_url, ["UPDATE orders SET note = 'tampered ✗' WHERE id = 7"])
    comparisons = {_short(c.name): c for c in compare_tables(recorded, restored.table_stats())}
    assert comparisons["customers"].matches
    orders = comparisons["orders"]
    assert orders.expected_rows == orders.actual_rows == 60  # same count, other content
    assert orders.checksum_checked and not orders.matches


def _interrupted_stream(repo: Repository) -> Callable[..., Iterator[bytes]]:
    real = repo.read_stream

    def read_stream(manifest: Manifest, *args: Any, **kwargs: Any) -> Iterator[bytes]:
        chunks = real(manifest, *args, **kwargs)
        yield next(chunks)
        chunks.close()
        raise ChunkDamaged("chunk 2 is damaged (injected by the test)")

    return read_stream


def test_a_restore_failing_mid_stream_leaves_the_target_untouched(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = world.backup()
    world.change()
    before = world.names()
    monkeypatch.setattr(world.repo, "read_stream", _interrupted_stream(world.repo))
    with pytest.raises(ChunkDamaged, match="is untouched"):
        run_restore(world.repo, manifest, world.engine, safety_backup=False)
    assert snapshot(world.url) == CHANGED
    assert world.leftovers(before) == set()  # the staged copy was dropped
    execute(world.url, ["UPDATE customers SET name = 'still usable' WHERE id = 2"])
    assert query(world.url, "SELECT name FROM customers WHERE id = 2") == [("still usable",)]
    with pytest.raises(ChunkDamaged):  # a new database is not left behind either
        run_restore(world.repo, manifest, open_engine(world.new_url))
    assert not open_engine(world.new_url).inspect().exists


BIG_ROWS = 150_000
BIG_TABLE = {
    "postgresql": "CREATE TABLE big AS SELECT g AS id, md5(g::text) || md5((g * 7)::text)"
    f" || md5((g * 13)::text) AS pad FROM generate_series(1, {BIG_ROWS}) g",
    "mysql": "CREATE TABLE big (id INT PRIMARY KEY, pad VARCHAR(100)) SELECT seq AS id,"
    f" CONCAT(MD5(seq), MD5(seq * 7), MD5(seq * 13)) AS pad FROM seq_1_to_{BIG_ROWS}",  # MariaDB
    "sqlite": "CREATE TABLE big AS WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1"
    f" FROM s WHERE g < {BIG_ROWS}) SELECT g AS id, hex(randomblob(48)) AS pad FROM s",
}


def test_a_killed_cli_restore_leaves_the_target_untouched_and_usable(world: World) -> None:
    """SIGKILL (the CLI and its dump tools) while the staged copy is being written."""
    execute(world.url, [BIG_TABLE[world.kind]])
    world.backup()
    world.change()
    expected_big = query(world.url, "SELECT count(*), max(pad) FROM big")
    before = world.names()
    env = {
        **os.environ,
        "STRONGROOM_REPO": str(world.repo_dir),
        "STRONGROOM_KEY_FILE": str(world.key_file),
    }
    env.pop("STRONGROOM_PASSPHRASE", None)
    args = ["restore", "latest", "--to", world.url, "--yes", "--no-safety-backup"]
    proc = subprocess.Popen(
        [*STRONGROOM, *args],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        staged: set[str] = set()
        while proc.poll() is None and time.monotonic() < deadline and not staged:
            staged = {n for n in world.leftovers(before) if STAGED_MARK[world.kind] in n}
            time.sleep(0.01)
        assert proc.poll() is None, (
            "the restore ended before it could be killed",
            proc.communicate()[1].decode(),
        )
        assert staged
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert snapshot(world.url) == CHANGED
    assert query(world.url, "SELECT count(*), max(pad) FROM big") == expected_big
    # only a staged copy may be left behind (docs/design.md); the target is usable
    assert all(STAGED_MARK[world.kind] in n for n in world.leftovers(before)), world.names()
    execute(world.url, ["INSERT INTO customers (id, name) VALUES (100, 'after the kill')"])
    assert {_short(t.name): t.rows for t in world.engine.table_stats()}["customers"] == 22


def test_a_scheduled_drill_restores_into_the_same_engine(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    scratches: list[Engine] = []
    real = drill_service.verify_by_restore

    def spy(repo: Repository, manifest: Manifest, scratch: Engine, **kwargs: Any) -> Any:
        scratches.append(scratch)
        return real(repo, manifest, scratch, **kwargs)

    monkeypatch.setattr(drill_service, "verify_by_restore", spy)
    settings = parse_settings(
        f"""
        [repository]
        location = "{world.repo_dir}"
        [targets.shop]
        url = "{world.url}"
        schedule = {{ daily = "0 2 * * *" }}
        verify = {{ schedule = "0 5 * * *" }}
        retention = {{ keep_last = 100 }}
        """
    )
    before = world.names()
    try:
        records = Daemon(settings, world.repo, {}, clock=Clock(SUNDAY_NOON)).tick()
    finally:
        leaked = [s for s in scratches if s.inspect().exists]
        for scratch in leaked:  # never left on the shared server, even by a failure
            scratch.drop()
    assert leaked == []
    assert [(r.kind, r.ok) for r in records] == [("backup", True), ("verify", True)], records
    record = last_verifications(world.repo.storage)[world.repo.list_backups("shop")[-1].backup_id]
    assert record.ok and record.kind == "restore" and record.tables_checked == 2
    assert [s.kind for s in scratches] == [world.kind]
    scratch = scratches[0]
    if world.kind == "sqlite":  # a temp file: the drill needs no write access to its folder
        assert Path(scratch.describe()).parent == private_dir()
    else:  # on the target's own server
        assert urlsplit(world.url).netloc.split("@")[-1] in scratch.describe()
    assert world.names() == before  # the scratch database was dropped
