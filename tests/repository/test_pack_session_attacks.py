"""Attacks on a backup's pack session indexing as it goes (pack_session.py) and on the
backup writer's claimed set (services/backup.py ``_ChunkWriter``): failures in the middle
of indexing, a repeat racing the indexing of its first copy, tiny packs with one pack per
index object, duplicates across the index boundary, two backups at once, a version 1
repository, and a backup right after a failed one. Real local repositories and SQLite
databases; the only patched parts are the failures and the timing of one race."""

from __future__ import annotations

import random
import sqlite3
import threading
from pathlib import Path

import pytest

from strongroom.engines.sqlite import SqliteEngine
from strongroom.repository import pack_session
from strongroom.repository.keys import KeySource
from strongroom.repository.pack_session import PackSession
from strongroom.repository.repository import Repository
from strongroom.services import backup
from strongroom.services.check import check_repository
from strongroom.services.prune import prune
from strongroom.services.restore import run_restore
from strongroom.services.verify import verify_backup
from strongroom.storage.local import LocalStorage

PACK_BYTES = 8 * 1024


def _open(storage: LocalStorage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Repository:
    repo = Repository.open(storage, KeySource(key_file=tmp_path / "k"))
    store = repo.chunks
    monkeypatch.setattr(store, "pack_writer", lambda: PackSession(store, PACK_BYTES))
    return repo


@pytest.fixture()
def storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalStorage:
    monkeypatch.setenv("STRONGROOM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(pack_session, "INDEX_MAX_PACKS", 2)
    monkeypatch.setattr(backup, "BATCH_CHUNKS", 4)
    local = LocalStorage(tmp_path / "repo")
    Repository.init(local, key_file=tmp_path / "k")
    return local


def _entries(repo: Repository) -> list[str]:
    repo.chunks.refresh_index()
    index = repo.chunks.index
    return [loc.chunk_id for pack_id, *_ in index.packs() for loc in index.pack_entries(pack_id)]


def _rows(path: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        users = db.execute("SELECT * FROM users ORDER BY id").fetchall()
        orders = db.execute("SELECT count(*) FROM orders").fetchall()
    return [*users, *orders]


def _restores(repo: Repository, manifest, source: Path, into: Path) -> None:
    assert run_restore(repo, manifest, SqliteEngine(f"sqlite://{into}")).ok
    assert _rows(into) == _rows(source)


def _all_well(repo: Repository, kept: list) -> None:
    """Prune, then check --read-data, and every kept backup verifies; no chunk stored twice."""
    prune(repo)
    report = check_repository(repo, read_data=True)
    assert report.problems == []
    for manifest in kept:
        verify_backup(repo, manifest)
    stored = _entries(repo)
    assert len(stored) == len(set(stored)), "a chunk is stored in two packs"


# --- a repeat racing the indexing of its first copy ------------------------------------


def test_a_repeat_looked_up_before_its_first_copy_was_claimed_is_not_stored_twice(
    storage: LocalStorage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two copies of a chunk in two batches on two workers: B checks the claimed set (not
    there), A checks, looks it up, claims and stores it; B's index lookup answers 'not
    known' before A's pack is indexed; A's pack is indexed and forgotten; only then does B
    take the claim lock: the chunk is in neither the claimed set nor B's (stale) answer."""
    repo = _open(storage, tmp_path, monkeypatch)
    rng = random.Random(5)
    twin = rng.randbytes(3000)
    twin_id = repo.chunks.name(twin)
    fill = [rng.randbytes(3000) for _ in range(40)]
    # batch 1 = [twin, f0, f1, f2] (worker A), batch 2 = [twin, f3, f4, f5] (worker B)
    stream = [twin, *fill[:3], twin, *fill[3:]]
    lookups: list[str] = []
    second_lookup, forgotten = threading.Event(), threading.Event()
    real_known = repo.chunks.is_known

    def racing_known(chunk_id: str) -> bool:
        if chunk_id != twin_id:
            return real_known(chunk_id)
        lookups.append(chunk_id)
        if len(lookups) == 1:  # A: wait until B has looked it up (B's claimed check is past)
            second_lookup.wait(5)
            return real_known(chunk_id)
        if len(lookups) == 2:  # B: answer now, claim after A's pack was indexed
            answer = real_known(chunk_id)
            second_lookup.set()
            forgotten.wait(10)
            return answer
        return real_known(chunk_id)

    monkeypatch.setattr(repo.chunks, "is_known", racing_known)
    repo.chunks.prepare_known()
    writer = backup._ChunkWriter(repo, workers=2)
    forget = writer._packs.on_indexed
    assert forget is not None

    def forget_then_tell(raw_ids) -> None:
        ids = list(raw_ids)
        forget(ids)
        if bytes.fromhex(twin_id) in ids:
            forgotten.set()

    writer._packs.on_indexed = forget_then_tell
    try:
        for data in stream:
            writer.submit(data)
        outcomes = writer.results()
        writer.finish()
    finally:
        writer.close()
    assert len(lookups) >= 2, "the race was not set up: B never looked the twin up"
    assert forgotten.is_set()
    stored = _entries(repo)
    assert stored.count(twin_id) == 1, "the twin is stored in two packs"
    assert outcomes.new_count == 41
