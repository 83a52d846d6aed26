"""Safe restore of SQLite: staged file, verification, atomic rename, safety backup, rollback."""

import sqlite3
import subprocess
import sys
import textwrap
from dataclasses import replace

import pytest

from strongroom.engines.sqlite import SqliteEngine
from strongroom.errors import ChunkMissing, StorageFull
from strongroom.repository.keys import KeySource
from strongroom.repository.manifest import TableRecord
from strongroom.repository.repository import Repository
from strongroom.services.backup import run_backup
from strongroom.services.restore import (
    PRE_RESTORE_TAG,
    find_rollback_backup,
    plan_restore,
    run_restore,
)
from strongroom.storage.memory import MemoryStorage
from tests.helpers import delete_chunk_pack, make_sqlite_db, sqlite_counts


@pytest.fixture()
def repo(tmp_path):
    storage = MemoryStorage()
    Repository.init(storage, key_file=tmp_path / "k")
    return Repository.open(storage, KeySource(key_file=tmp_path / "k"))


@pytest.fixture()
def live(tmp_path):
    """A live database that has moved on since its backup (rows added)."""
    return make_sqlite_db(tmp_path / "live.db", users=1500, orders=4000)


def _grow(path):
    make_sqlite_db(path, users=100, orders=100, seed=99)


def test_plan_shows_both_sides_and_changes_nothing(repo, live):
    m = run_backup(repo, SqliteEngine(str(live))).manifest
    _grow(live)
    before = live.read_bytes()
    plan = plan_restore(repo, m, SqliteEngine(str(live)))
    assert plan.will_replace and plan.safety_backup
    assert {t.name: t.rows for t in plan.state.tables} == sqlite_counts(live)
    assert {t.name: t.rows for t in plan.backup_tables} == {"users": 1500, "orders": 4000}
    assert plan.estimated_seconds > 0
    assert live.read_bytes() == before
    assert len(repo.list_backups()) == 1


def test_replacing_takes_a_safety_backup_keeps_the_old_file_and_verifies(repo, live, tmp_path):
    m = run_backup(repo, SqliteEngine(str(live))).manifest
    _grow(live)
    grown = sqlite_counts(live)
    report = run_restore(repo, m, SqliteEngine(str(live)))
    assert report.ok and report.swapped
    assert sqlite_counts(live) == {"users": 1500, "orders": 4000}
    assert all(c.checksum_checked for c in report.comparisons)
    assert report.old_kept_as is not None
    assert sqlite_counts(tmp_path / report.old_kept_as.rsplit("/", 1)[1]) == grown
    safety = repo.load_manifest(report.safety_backup_id)
    assert safety.tags == (PRE_RESTORE_TAG,) and safety.target == "live"
    assert list(tmp_path.glob(".live.db.sr-*")) == []

    # rollback: the newest pre-restore backup of this target brings the grown state back
    rollback_to = find_rollback_backup(repo, SqliteEngine(str(live)))
    assert rollback_to.backup_id == safety.backup_id
    again = run_restore(repo, rollback_to, SqliteEngine(str(live)), keep_old=False)
    assert again.ok and again.old_kept_as is None
    assert sqlite_counts(live) == grown


def test_a_verification_mismatch_leaves_the_original_in_place(repo, live, tmp_path):
    m = run_backup(repo, SqliteEngine(str(live))).manifest
    _grow(live)
    before = live.read_bytes()
    plan = plan_restore(repo, m, SqliteEngine(str(live)))
    wrong = [TableRecord(t.name, t.rows + 1, t.checksum) for t in plan.backup_tables]
    report = run_restore(repo, m, SqliteEngine(str(live)), plan=replace(plan, backup_tables=wrong))
    assert not report.ok and not report.swapped
    assert live.read_bytes() == before
    assert list(tmp_path.glob(".live.db.*")) == []


def test_a_changed_row_is_caught_by_the_checksum(repo, live):
    m = run_backup(repo, SqliteEngine(str(live))).manifest
    plan = plan_restore(repo, m, SqliteEngine(str(live)))
    tampered = [
        TableRecord(t.name, t.rows, "b3sum64:0000000000000000") if t.name == "users" else t
        for t in plan.backup_tables
    ]
    report = run_restore(
        repo, m, SqliteEngine(str(live)), plan=replace(plan, backup_tables=tampered)
    )
    bad = [c for c in report.comparisons if not c.matches]
    assert [c.name for c in bad] == ["users"] and bad[0].expected_rows == bad[0].actual_rows


def test_damaged_backup_leaves_the_original_untouched_and_says_so(repo, live, tmp_path):
    m = run_backup(repo, SqliteEngine(str(live))).manifest
    _grow(live)
    before = live.read_bytes()
    delete_chunk_pack(repo, m.chunks[-1].chunk_id)  # the pack holding it (issue 19)
    with pytest.raises(ChunkMissing, match="untouched"):
        run_restore(repo, m, SqliteEngine(str(live)))
    assert live.read_bytes() == before
    assert [p.name for p in tmp_path.glob(".live.db.*")] == []


def test_a_full_disk_during_restore_leaves_the_original_untouched(repo, tmp_path):
    import os

    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)], check=True)
    try:
        source = make_sqlite_db(tmp_path / "big.db", users=9000, orders=30000)
        m = run_backup(repo, SqliteEngine(str(source))).manifest
        assert m.raw_size > 4 * 1024 * 1024
        live = make_sqlite_db(disk / "live.db", users=300, orders=300)
        before = live.read_bytes()
        with pytest.raises(Exception, match="untouched") as caught:
            run_restore(repo, m, SqliteEngine(str(live)), safety_backup=False)
        assert "No space left" in str(caught.value) or isinstance(caught.value, StorageFull)
        assert live.read_bytes() == before
        assert [p.name for p in disk.iterdir()] == ["live.db"]
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_an_application_holding_the_old_file_open_in_wal_mode(repo, tmp_path):
    """Documented behaviour: the app keeps its old (unlinked) file until it reopens; new
    connections see the restored database, intact, and nothing the app writes afterwards
    reaches it."""
    live = make_sqlite_db(tmp_path / "app.db", users=500, orders=500)
    db = sqlite3.connect(live)
    db.execute("PRAGMA journal_mode=WAL")
    db.close()
    m = run_backup(repo, SqliteEngine(str(live))).manifest
    make_sqlite_db(live, users=50, orders=50, seed=5)  # the app moves on: 550 users
    app = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sqlite3, sys
                db = sqlite3.connect({str(live)!r}, timeout=10)
                print(db.execute("select count(*) from users").fetchone()[0], flush=True)
                sys.stdin.readline()          # the restore happens now
                print(db.execute("select count(*) from users").fetchone()[0], flush=True)
                with db:
                    db.execute("insert into users (email, bio) values ('late', 'x')")
                print("wrote", flush=True)
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert app.stdout.readline().strip() == "550"
        report = run_restore(repo, m, SqliteEngine(str(live)))
        assert report.ok and report.swapped
        app.stdin.write("go\n")
        app.stdin.flush()
        assert app.stdout.readline().strip() == "550"  # still the old file
        assert app.stdout.readline().strip() == "wrote"
    finally:
        app.wait(timeout=30)
    fresh = sqlite3.connect(live)
    assert fresh.execute("select count(*) from users").fetchone()[0] == 500
    assert fresh.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert fresh.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
