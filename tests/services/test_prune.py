"""prune: frees exactly the unreferenced chunks, and never races a running backup."""

import contextlib
import functools
import os
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from strongroom.engines.sqlite import SqliteEngine
from strongroom.errors import LockLost, RepositoryBusy, RepositoryError
from strongroom.pipeline.chunking import ChunkerParams
from strongroom.repository import locks
from strongroom.repository.keys import KeySource
from strongroom.repository.layout import CHUNKS_PREFIX, LOCKS_PREFIX, chunk_id_of_key, chunk_key
from strongroom.repository.locks import SHARED, acquire_exclusive, new_record
from strongroom.repository.pins import Pin, is_pinned, write_pin
from strongroom.repository.repository import Repository
from strongroom.repository.verifications import VerificationRecord, record_verification
from strongroom.retention import RetentionPolicy
from strongroom.services import backup as backup_service
from strongroom.services.backup import run_backup
from strongroom.services.forget import forget
from strongroom.services.prune import prune
from strongroom.services.verify import verify_backup
from strongroom.storage.local import LocalStorage
from strongroom.storage.memory import MemoryStorage
from tests.helpers import make_sqlite_db, write_loose_chunks

SMALL_CHUNKS = ChunkerParams(min_size=16 * 1024, avg_size=64 * 1024, max_size=256 * 1024)


@pytest.fixture()
def repo(tmp_path):
    storage = MemoryStorage()
    Repository.init(storage, key_file=tmp_path / "k", chunker=SMALL_CHUNKS)
    # prune deletes loose chunks only until it handles packs (issue 19, a later step):
    # these backups write the version 1 layout, whose prune rules the tests prove
    return write_loose_chunks(Repository.open(storage, KeySource(key_file=tmp_path / "k")))


@pytest.fixture()
def shop(tmp_path):
    return make_sqlite_db(tmp_path / "shop.db", users=1500, orders=4000)


def _stored(repo):
    return {chunk_id_of_key(key) for key in repo.storage.list(CHUNKS_PREFIX)}


def _change(db, seed):
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("UPDATE users SET bio = hex(randomblob(40)) WHERE id % 7 = ?", (seed % 7,))
        conn.commit()


def test_prune_frees_exactly_the_unreferenced_chunks(repo, shop):
    first = run_backup(repo, SqliteEngine(str(shop))).manifest
    _change(shop, 1)
    second = run_backup(repo, SqliteEngine(str(shop))).manifest
    repo.storage.put(chunk_key("ee" * 32), b"leftover of an interrupted backup")
    forget(repo, RetentionPolicy(keep_last=1))
    unreferenced = _stored(repo) - second.unique_chunk_ids
    assert first.unique_chunk_ids - second.unique_chunk_ids <= unreferenced
    assert len(unreferenced) > 1
    expected_bytes = sum(repo.storage.size(chunk_key(c)) for c in unreferenced)

    dry = prune(repo, dry_run=True)
    assert (dry.unreferenced_chunks, dry.unreferenced_bytes) == (len(unreferenced), expected_bytes)
    assert dry.deleted_chunks == 0 and dry.backups == 1
    assert unreferenced <= _stored(repo)

    report = prune(repo)
    assert report.deleted_chunks == len(unreferenced)
    assert report.unreferenced_bytes == expected_bytes
    assert _stored(repo) == second.unique_chunk_ids
    assert verify_backup(repo, second).ok
    assert list(repo.storage.list(LOCKS_PREFIX)) == []
    again = prune(repo)
    assert again.deleted_chunks == 0 and again.unreferenced_bytes == 0


def test_prune_stops_at_a_manifest_it_cannot_read(repo, shop):
    run_backup(repo, SqliteEngine(str(shop)))
    repo.storage.put(chunk_key("ee" * 32), b"x")
    repo.storage.put("backups/20261121T000000Z-00000000.json", b'{"format": "nonsense"}')
    with pytest.raises(RepositoryError):
        prune(repo)
    assert repo.storage.exists(chunk_key("ee" * 32))
    assert list(repo.storage.list(LOCKS_PREFIX)) == []


def test_prune_removes_pins_and_records_of_forgotten_backups(repo, shop):
    kept = run_backup(repo, SqliteEngine(str(shop))).manifest
    gone = "20200101T000000Z-0badf00d"
    write_pin(repo.storage, Pin(gone, "2020-01-01T00:00:00.000Z", "x"))
    write_pin(repo.storage, Pin(kept.backup_id, "2020-01-01T00:00:00.000Z", "x"))
    for backup_id in (gone, kept.backup_id):
        record_verification(
            repo.storage,
            VerificationRecord(backup_id, "2026-01-01T00:00:00.000Z", "read", True, None, 0, 0),
        )
    assert prune(repo, dry_run=True).orphan_records == 2
    assert prune(repo).orphan_records == 2
    assert is_pinned(repo.storage, kept.backup_id) and not is_pinned(repo.storage, gone)
    assert list(repo.storage.list(f"verifications/{kept.backup_id}/"))


class PausingEngine:
    """A SQLite engine whose dump waits at a gate, after ``pause_after`` bytes were read
    (0: before the first byte). By then the backup has listed chunks/."""

    def __init__(self, path, pause_after=0):
        self._inner = SqliteEngine(str(path))
        self._pause_after = pause_after
        self.reached = threading.Event()
        self.gate = threading.Event()

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def _wait(self):
        self.reached.set()
        assert self.gate.wait(30)

    @contextlib.contextmanager
    def dump(self):
        with self._inner.dump() as running:
            if not self._pause_after:
                self._wait()
                yield running
                return
            yield _GatedDump(running, self)


class _GatedDump:
    def __init__(self, running, engine):
        self._running = running
        self._engine = engine
        self._read = 0
        self.stream = self

    def read(self, size=-1):
        if self._read >= self._engine._pause_after and not self._engine.reached.is_set():
            self._engine._wait()
        data = self._running.stream.read(size)
        self._read += len(data)
        return data

    def readinto(self, buffer):
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def finish(self):
        return self._running.finish()


def _in_thread(function):
    outcome = {}

    def run():
        try:
            outcome["value"] = function()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def test_prune_waits_for_a_backup_that_counts_on_unreferenced_chunks(repo, shop):
    """Case (a): the backup saw chunks in its listing that forget then made unreferenced."""
    seed = run_backup(repo, SqliteEngine(str(shop)), target="seed").manifest
    engine = PausingEngine(shop)
    backup, backed_up = _in_thread(lambda: run_backup(repo, engine, target="main"))
    assert engine.reached.wait(30)  # listing done: every chunk of `seed` is known to it
    forget(repo, RetentionPolicy(keep_tags=frozenset({"none"})), target="seed")
    assert repo.backup_ids() == []
    pruning, pruned = _in_thread(functools.partial(prune, repo, wait=30))
    time.sleep(0.5)
    assert pruning.is_alive(), "prune must wait for the running backup"
    assert seed.unique_chunk_ids <= _stored(repo)
    engine.gate.set()
    backup.join(30)
    pruning.join(30)
    assert "error" not in backed_up and "error" not in pruned, (backed_up, pruned)
    main = backed_up["value"].manifest
    assert main.new_chunk_count == 0  # it uploaded nothing: it counted on seed's chunks
    assert pruned["value"].deleted_chunks == 0
    assert verify_backup(repo, main).ok


def test_prune_waits_for_the_new_chunks_of_a_running_backup(repo, shop, monkeypatch):
    """Case (b): chunks a running backup has stored are unreferenced until its manifest."""
    # a batch per chunk: half of this small dump is less than one batch (64 chunks / 1 MiB)
    monkeypatch.setattr(backup_service, "BATCH_CHUNKS", 1)
    engine = PausingEngine(shop, pause_after=shop.stat().st_size // 2)
    backup, backed_up = _in_thread(lambda: run_backup(repo, engine))
    assert engine.reached.wait(30)
    deadline = time.monotonic() + 30
    while not _stored(repo):  # wait until it has stored some of its chunks
        assert time.monotonic() < deadline
        time.sleep(0.01)
    pruning, pruned = _in_thread(functools.partial(prune, repo, wait=30))
    time.sleep(0.5)
    assert pruning.is_alive(), "prune must wait for the running backup"
    engine.gate.set()
    backup.join(30)
    pruning.join(30)
    assert "error" not in backed_up and "error" not in pruned, (backed_up, pruned)
    assert verify_backup(repo, backed_up["value"].manifest).ok


def test_a_backup_waits_for_prune_and_gives_up_cleanly(repo, shop):
    with acquire_exclusive(repo.storage, "prune", wait=0):
        with pytest.raises(RepositoryBusy, match="prune"):
            run_backup(repo, SqliteEngine(str(shop)), lock_wait=0.3)
    assert repo.backup_ids() == []
    assert _stored(repo) == set()  # it listed nothing and stored nothing
    assert list(repo.storage.list(LOCKS_PREFIX)) == []


def test_a_backup_that_lost_its_lock_commits_nothing(repo, shop, monkeypatch):
    short = functools.partial(locks.acquire_shared, ttl=0.5)
    monkeypatch.setattr(backup_service, "acquire_shared", short)
    engine = PausingEngine(shop)
    backup, backed_up = _in_thread(lambda: run_backup(repo, engine))
    assert engine.reached.wait(30)
    (key,) = repo.storage.list(LOCKS_PREFIX)
    repo.storage.delete(key)  # a prune judged it stale
    time.sleep(0.3)
    engine.gate.set()
    backup.join(30)
    assert isinstance(backed_up.get("error"), LockLost)
    assert repo.backup_ids() == []


def test_prune_removes_the_stale_lock_of_a_killed_backup(repo, shop):
    run_backup(repo, SqliteEngine(str(shop)))
    past = datetime.now(UTC) - timedelta(hours=2)
    record = new_record(SHARED, "backup of shop", 300.0, now=past)
    repo.storage.put(f"{LOCKS_PREFIX}{record.lock_id}.json", record.to_json())
    assert prune(repo, dry_run=True).running_backups == 0
    assert len(list(repo.storage.list(LOCKS_PREFIX))) == 1  # a dry run deletes nothing
    prune(repo, wait=0)
    assert list(repo.storage.list(LOCKS_PREFIX)) == []
    dry = prune(repo, dry_run=True)
    assert dry.running_backups == 0


def test_prune_removes_old_partial_files_of_killed_writes(tmp_path, shop):
    storage = LocalStorage(tmp_path / "repo")
    Repository.init(storage, key_file=tmp_path / "k", chunker=SMALL_CHUNKS)
    repo = Repository.open(storage, KeySource(key_file=tmp_path / "k"))
    manifest = run_backup(repo, SqliteEngine(str(shop))).manifest
    chunk = chunk_key(sorted(manifest.unique_chunk_ids)[0])
    folder = (tmp_path / "repo" / chunk).parent
    two_hours_ago = time.time() - 2 * 3600
    old = [folder / ".tmp-left-by-a-killed-backup", tmp_path / "repo" / "locks" / ".tmp-x.json"]
    for path in old:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half a chunk")
        os.utime(path, (two_hours_ago, two_hours_ago))
    fresh = folder / ".tmp-being-written-now"  # may belong to a write going on right now
    fresh.write_bytes(b"still growing")

    dry = prune(repo, dry_run=True)
    assert dry.partial_files == 2 and all(p.exists() for p in old)
    report = prune(repo)
    assert report.partial_files == 2
    assert not any(p.exists() for p in old)
    assert fresh.exists()
    assert verify_backup(repo, manifest).ok  # the real chunks beside them are untouched
    assert prune(repo).partial_files == 0


def test_the_partial_file_age_is_never_below_twice_the_lock_ttl(tmp_path, shop):
    storage = LocalStorage(tmp_path / "repo")
    Repository.init(storage, key_file=tmp_path / "k", chunker=SMALL_CHUNKS)
    repo = Repository.open(storage, KeySource(key_file=tmp_path / "k"))
    leftover = tmp_path / "repo" / "chunks" / ".tmp-x"
    leftover.parent.mkdir(parents=True, exist_ok=True)
    leftover.write_bytes(b"x")
    ten_minutes_ago = time.time() - 600
    os.utime(leftover, (ten_minutes_ago, ten_minutes_ago))
    assert prune(repo, partial_file_age=60, ttl=400).partial_files == 0  # 800 s rule
    assert leftover.exists()
    assert prune(repo, partial_file_age=60, ttl=200).partial_files == 1
    assert not leftover.exists()


class _ForgetfulListing(MemoryStorage):
    """A store whose first listing of ``backups/`` silently leaves one key out (a lost
    page, a store's bug); later listings are complete."""

    def __init__(self) -> None:
        super().__init__()
        self.drop: str | None = None

    def list(self, prefix: str):
        keys = list(super().list(prefix))
        if prefix.startswith("backups") and self.drop is not None:
            dropped, self.drop = self.drop, None
            keys = [k for k in keys if dropped not in k]
        yield from keys


def test_prune_keeps_the_chunks_of_a_backup_one_listing_missed(tmp_path, shop):
    """backups/ is listed twice and every id either shows is read: one listing that drops
    a manifest's key does not make prune delete that backup's chunks."""
    storage = _ForgetfulListing()
    Repository.init(storage, key_file=tmp_path / "k", chunker=SMALL_CHUNKS)
    repo = write_loose_chunks(Repository.open(storage, KeySource(key_file=tmp_path / "k")))
    first = run_backup(repo, SqliteEngine(str(shop))).manifest
    _change(shop, 3)
    second = run_backup(repo, SqliteEngine(str(shop))).manifest
    only_first = first.unique_chunk_ids - second.unique_chunk_ids
    assert only_first  # the missed backup has chunks nobody else references
    storage.drop = first.backup_id
    prune(repo)
    assert only_first <= _stored(repo)
    assert verify_backup(repo, first, record=False).ok
