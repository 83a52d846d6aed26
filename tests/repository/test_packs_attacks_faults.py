"""Hostile cases against format version 2 (issue 19), continued: prune and index rebuild
on S3 behind the fault-injecting proxy, and backups that die at each write (what kill -9
leaves). Helpers and the scene come from ``test_packs_attacks``."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from strongroom.repository.keys import KeySource
from strongroom.repository.pack_index import CACHE_ENV
from strongroom.repository.repository import Repository
from strongroom.services.index_rebuild import rebuild_index
from strongroom.services.prune import prune
from strongroom.storage.memory import MemoryStorage
from tests.repository.test_packs_attacks import STORES, _all_restore, _repo
from tests.services.test_prune_packs import SMALL_CHUNKS, _scene


# --- S3 through the fault-injecting proxy -------------------------------------------------
@pytest.mark.parametrize("kind", ["error500", "reset", "truncate", "corrupt", "drop", "throttle"])
def test_prune_and_index_rebuild_on_s3_with_faults_lose_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, s3_bucket: tuple[str, str], fault_proxy, kind
) -> None:
    from strongroom.errors import StrongroomError
    from strongroom.storage.s3 import S3Storage

    _, bucket = s3_bucket
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    storage = S3Storage(bucket, "repo", endpoint_url=fault_proxy.url)
    Repository.init(storage, key_file=tmp_path / "k", chunker=SMALL_CHUNKS)
    repo = Repository.open(storage, KeySource(key_file=tmp_path / "k"))
    _, kept, second, _ = _scene(repo, tmp_path)
    outcomes = []
    for step in (prune, lambda r: rebuild_index(r, wait=0), prune):
        fault_proxy.set_fault(kind, rate=0.25, seed=len(outcomes))
        try:
            step(Repository.open(storage, KeySource(key_file=tmp_path / "k")))
            outcomes.append("ok")
        except StrongroomError as exc:  # a clean failure, never anything else
            outcomes.append(f"{type(exc).__name__}: {exc.message[:60]}")
        fault_proxy.set_fault(None)
    clean = Repository.open(storage, KeySource(key_file=tmp_path / "k"))
    _all_restore(clean, [kept, second])
    for key in list(storage.list("locks/")):  # a failed step's lock it could not delete
        storage.delete(key)  # expires after its TTL; the test does not wait for it
    prune(clean)
    rebuild_index(clean, wait=0)
    final = prune(clean)
    assert final.packs_note is None, (outcomes, final.packs_note)
    _all_restore(Repository.open(storage, KeySource(key_file=tmp_path / "k")), [kept, second])


class Crash(BaseException):
    """The process dies here (what kill -9 leaves: nothing after this write)."""


class CrashingStorage(MemoryStorage):
    """Memory storage that 'dies' at the ``after``-th put under ``prefix`` (before it)."""

    prefix = ""
    after = 0

    def put(self, key: str, data: bytes) -> None:
        if self.prefix and key.startswith(self.prefix):
            if self.after == 0:
                self.prefix = ""
                raise Crash(key)
            self.after -= 1
        super().put(key, data)


@pytest.mark.parametrize(
    ("prefix", "after"),
    [("packs/", 0), ("packs/", 1), ("index/", 0), ("backups/", 0)],
    ids=["first-pack", "second-pack", "index", "manifest"],
)
def test_a_backup_dying_at_each_write_then_prune_loses_nothing(
    tmp_path: Path, prefix: str, after: int
) -> None:
    from strongroom.engines.sqlite import SqliteEngine
    from strongroom.pipeline.chunking import ChunkerParams
    from strongroom.services.backup import run_backup
    from tests.helpers import make_sqlite_db

    tiny = ChunkerParams(min_size=1024, avg_size=4096, max_size=16384)
    storage = CrashingStorage()
    STORES[tmp_path] = storage
    os.environ[CACHE_ENV] = str(tmp_path / "cache")
    Repository.init(storage, key_file=tmp_path / "k", chunker=tiny)
    db = make_sqlite_db(tmp_path / "a.db", users=1500, orders=4000)
    first = run_backup(_repo(tmp_path), SqliteEngine(str(db)), target="A").manifest
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE users SET bio = hex(randomblob(50)) WHERE id % 3 = 0")
    conn.close()
    storage.prefix, storage.after = prefix, after
    repo = _repo(tmp_path)
    import strongroom.repository.chunks as chunks_module

    small = 64 * 1024  # several packs per backup, so that 'second-pack' has one to die at
    original = chunks_module.ChunkStore.pack_writer
    chunks_module.ChunkStore.pack_writer = lambda self, target_size=small: original(  # type: ignore[method-assign]
        self, target_size
    )
    try:
        with pytest.raises(Crash):
            run_backup(repo, SqliteEngine(str(db)), target="A")
    finally:
        chunks_module.ChunkStore.pack_writer = original  # type: ignore[method-assign]
    after_crash = _repo(tmp_path, "cache-after")
    prune(after_crash)
    _all_restore(after_crash, [first])
    again = run_backup(_repo(tmp_path), SqliteEngine(str(db)), target="A").manifest
    _all_restore(_repo(tmp_path, "cache-last"), [first, again])
    final = prune(_repo(tmp_path, "cache-last"))
    assert final.packs_deleted == 0 and final.packs_note is None
