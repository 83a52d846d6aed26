import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from strongroom.engines.sqlite import SqliteEngine
from strongroom.errors import ChunkMissing, IntegrityError, StorageError
from strongroom.repository.chunks import PackSession
from strongroom.repository.keys import KeySource
from strongroom.repository.repository import Repository
from strongroom.services.backup import run_backup
from strongroom.services.restore import run_restore
from strongroom.services.verify import verify_backup
from strongroom.storage.memory import MemoryStorage
from tests.helpers import delete_chunk_pack, flip_chunk_byte, make_sqlite_db, sqlite_counts


@pytest.fixture()
def repo(tmp_path):
    storage = MemoryStorage()
    Repository.init(storage, key_file=tmp_path / "k")
    return Repository.open(storage, KeySource(key_file=tmp_path / "k"))


@pytest.fixture()
def shop(tmp_path):
    return make_sqlite_db(tmp_path / "shop.db")


def test_backup_then_restore_gives_the_same_database(repo, shop, tmp_path):
    report = run_backup(repo, SqliteEngine(str(shop)), tags=("daily",))
    m = report.manifest
    assert m.target == "shop" and m.tags == ("daily",) and m.engine == "sqlite"
    assert m.raw_size == shop.stat().st_size
    assert repo.list_backups() == [m]
    private = repo.private_section(m)
    assert {t.name: t.rows for t in private.tables} == sqlite_counts(shop)

    restored = tmp_path / "restored.db"
    result = run_restore(repo, m, SqliteEngine(f"sqlite://{restored}"))
    assert result.ok and len(result.comparisons) == 2
    original = sqlite3.connect(shop).execute("SELECT * FROM users ORDER BY id").fetchall()
    copy = sqlite3.connect(restored).execute("SELECT * FROM users ORDER BY id").fetchall()
    assert original == copy


def test_table_names_are_not_stored_in_clear(repo, shop):
    m = run_backup(repo, SqliteEngine(str(shop))).manifest
    raw = repo.storage.get(f"backups/{m.backup_id}.json")
    assert b"orders" not in raw and b"shop.db" not in raw


def test_a_second_backup_of_an_unchanged_database_stores_nothing_new(repo, shop):
    first = run_backup(repo, SqliteEngine(str(shop)))
    second = run_backup(repo, SqliteEngine(str(shop)))
    assert first.manifest.new_chunk_count == first.manifest.chunk_count
    assert second.manifest.new_chunk_count == 0
    assert second.manifest.stored_new_bytes == 0
    assert second.manifest.stream_checksum == first.manifest.stream_checksum


def test_dedup_works_across_targets(repo, shop):
    run_backup(repo, SqliteEngine(str(shop)), target="prod")
    copy = run_backup(repo, SqliteEngine(str(shop)), target="staging")
    assert copy.manifest.new_chunk_count == 0
    assert [m.target for m in repo.list_backups()] == ["prod", "staging"]
    assert [m.target for m in repo.list_backups("staging")] == ["staging"]


def test_verify_finds_a_damaged_chunk_and_names_it(repo, shop):
    m = run_backup(repo, SqliteEngine(str(shop))).manifest
    assert verify_backup(repo, m).ok
    victim = m.chunks[1].chunk_id
    flip_chunk_byte(repo, victim)  # its blob in its pack (issue 19)
    result = verify_backup(repo, m)
    assert not result.ok
    assert victim in (result.problem or "")


def test_restore_from_a_damaged_backup_leaves_no_target_file(repo, shop, tmp_path):
    m = run_backup(repo, SqliteEngine(str(shop))).manifest
    delete_chunk_pack(repo, m.chunks[-1].chunk_id)  # the pack holding it (issue 19)
    target = tmp_path / "new.db"
    with pytest.raises(ChunkMissing):
        run_restore(repo, m, SqliteEngine(str(target)))
    assert not target.exists()
    assert list(tmp_path.glob(".new.db.*")) == []


def test_whole_stream_checksum_mismatch_is_caught(repo, shop, tmp_path):
    m = run_backup(repo, SqliteEngine(str(shop))).manifest
    from dataclasses import replace

    tampered = replace(m, stream_checksum="0" * 64)
    with pytest.raises(IntegrityError, match="whole-stream"):
        list(repo.read_stream(tampered))
    with pytest.raises(IntegrityError):
        run_restore(repo, tampered, SqliteEngine(str(tmp_path / "t.db")))
    assert not (tmp_path / "t.db").exists()


class FailingPuts(MemoryStorage):
    """Storage whose pack uploads fail after the first few (a small fake)."""

    def __init__(self, inner: MemoryStorage, allowed: int) -> None:
        super().__init__()
        self._objects = inner._objects  # share the same objects
        self.allowed = allowed

    def put(self, key, data):
        if key.startswith("packs/"):
            if self.allowed <= 0:
                raise StorageError(f"put {key} failed after 5 attempts: connection reset")
            self.allowed -= 1
        super().put(key, data)


def test_a_backup_that_cannot_upload_writes_no_manifest_nor_index(tmp_path, monkeypatch):
    # Since issue 19 chunks go into packs, and a failed backup writes no index object:
    # the packs it uploaded are unknown to the next backup (prune's job), which stores
    # every chunk again and restores (before: the uploaded loose chunks were reused).
    shop = make_sqlite_db(tmp_path / "big.db", users=10000, orders=40000)
    storage = MemoryStorage()
    Repository.init(storage, key_file=tmp_path / "k")
    flaky = FailingPuts(storage, allowed=3)
    repo = Repository.open(flaky, KeySource(key_file=tmp_path / "k"))
    store = repo.chunks
    monkeypatch.setattr(store, "pack_writer", lambda: PackSession(store, 128 * 1024))
    with pytest.raises(StorageError):
        run_backup(repo, SqliteEngine(str(shop)))
    assert repo.list_backups() == []
    assert len(list(storage.list("packs/"))) == 3
    assert list(storage.list("index/")) == []
    healthy = Repository.open(storage, KeySource(key_file=tmp_path / "k"))
    report = run_backup(healthy, SqliteEngine(str(shop)))
    assert report.manifest.new_chunk_count == report.manifest.chunk_count
    assert verify_backup(healthy, report.manifest).ok


def test_sqlite_backup_is_consistent_while_another_process_writes(repo, tmp_path):
    db = make_sqlite_db(tmp_path / "busy.db", users=3000, orders=20000)
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sqlite3, time
                db = sqlite3.connect({str(db)!r}, timeout=30)
                for i in range(400):
                    with db:
                        db.execute("INSERT INTO users (email, bio) VALUES (?, ?)", (f"w{{i}}", "x"))
                        db.execute("INSERT INTO orders (user_id, total, note) VALUES (1, 1, 'w')")
                    time.sleep(0.002)
                """
            ),
        ]
    )
    try:
        time.sleep(0.1)
        m = run_backup(repo, SqliteEngine(str(db))).manifest
    finally:
        writer.wait(timeout=60)
    restored = tmp_path / "restored.db"
    result = run_restore(repo, m, SqliteEngine(str(restored)))
    assert result.ok
    counts = sqlite_counts(restored)
    # Each writer transaction adds one user and one order: a consistent snapshot keeps
    # them paired (3000 + k users, 20000 + k orders, same k).
    assert counts["users"] - 3000 == counts["orders"] - 20000
    assert sqlite3.connect(restored).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
