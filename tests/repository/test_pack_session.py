"""PackSession indexes its packs as it goes (every INDEX_MAX_PACKS), so a backup forgets
the chunks it stored once their pack is in the index cache: its claimed set stays at the
packs not yet indexed instead of growing with every new chunk (~100 B each: ~50 MB at
10 GB), with no chunk stored twice across the moment a group is indexed."""

import os
import threading

import pytest

from strongroom.engines.sqlite import SqliteEngine
from strongroom.errors import StorageError
from strongroom.repository import pack_session
from strongroom.repository.keys import KeySource
from strongroom.repository.pack_session import PackSession
from strongroom.repository.repository import Repository
from strongroom.services import backup
from strongroom.services.backup import run_backup
from strongroom.services.check import check_repository
from strongroom.services.prune import prune
from strongroom.services.verify import verify_backup
from strongroom.storage.memory import MemoryStorage
from tests.helpers import make_sqlite_db

PACK_BYTES = 8 * 1024


@pytest.fixture()
def repo(tmp_path, monkeypatch):
    storage = MemoryStorage()
    Repository.init(storage, key_file=tmp_path / "k")
    repo = Repository.open(storage, KeySource(key_file=tmp_path / "k"))
    store = repo.chunks
    monkeypatch.setattr(store, "pack_writer", lambda: PackSession(store, PACK_BYTES))
    monkeypatch.setattr(pack_session, "INDEX_MAX_PACKS", 2)
    monkeypatch.setattr(backup, "BATCH_CHUNKS", 4)
    return repo


def _entries(repo):
    repo.chunks.refresh_index()
    index = repo.chunks.index
    return [loc.chunk_id for pack_id, *_ in index.packs() for loc in index.pack_entries(pack_id)]


def test_packs_are_indexed_during_the_backup_and_then_forgotten(repo):
    chunks = [os.urandom(1000) for _ in range(300)]
    stream = [*chunks[:150], chunks[0], chunks[10], *chunks[150:], chunks[0], chunks[299]]
    repo.chunks.prepare_known()
    writer = backup._ChunkWriter(repo, workers=2)
    claimed = []
    try:
        for data in stream:
            writer.submit(data)
            claimed.append(len(writer._claimed))
        indexed_before_the_end = len(list(repo.storage.list("index/")))
        outcomes = writer.results()
        writer.finish()
    finally:
        writer.close()
    assert indexed_before_the_end >= 5  # 300 KB in 8 KiB packs, 2 packs per index object
    # held: the packs not yet indexed and those in flight, never the whole backup
    assert max(claimed) < 100, max(claimed)
    stored = _entries(repo)
    assert sorted(stored) == sorted({repo.chunks.name(c) for c in chunks})  # once each
    assert outcomes.new_count == 300
    refs = [r.chunk_id for r in outcomes.refs.build()]
    assert list(repo.chunks.read_many(refs)) == stream


def test_a_repeat_racing_the_indexing_of_its_pack_is_not_stored_again(repo, monkeypatch):
    """The worst interleaving: a repeat's index lookup answers 'not known' before its
    pack is indexed, and its claimed check runs after the pack left the claimed set.
    Checking the claimed set first (where the repeat is) closes that window; checking
    the index first stored the chunk twice."""
    first = [os.urandom(1000) for _ in range(40)]
    repeats = {repo.chunks.name(c) for c in first[:8]}
    looked_up, forgotten = threading.Event(), threading.Event()
    real_add = repo.chunks.index.add
    real_known = repo.chunks.is_known

    adds = []

    def held_add(index_id, index, *, stored_now=False):
        if not adds:  # the first group holds the repeated chunks
            looked_up.wait(2)  # let a repeat's lookup run first (none when claimed first)
        adds.append(index_id)
        real_add(index_id, index, stored_now=stored_now)

    seen = set()

    def racing_known(chunk_id):
        answer = real_known(chunk_id)
        if chunk_id in repeats and chunk_id in seen:  # a repeat, not the first copy
            looked_up.set()
            forgotten.wait(5)  # the claimed check comes after the pack was forgotten
        seen.add(chunk_id)
        return answer

    monkeypatch.setattr(repo.chunks.index, "add", held_add)
    monkeypatch.setattr(repo.chunks, "is_known", racing_known)
    monkeypatch.setattr(repo.chunks, "known_among", lambda ids: {c for c in ids if racing_known(c)})
    repo.chunks.prepare_known()
    writer = backup._ChunkWriter(repo, workers=2)
    forget = writer._packs.on_indexed

    def forget_then_tell(raw_ids):
        forget(raw_ids)
        forgotten.set()

    writer._packs.on_indexed = forget_then_tell
    try:
        for data in first + first[:8]:
            writer.submit(data)
        outcomes = writer.results()
        writer.finish()
    finally:
        writer.close()
    assert sorted(_entries(repo)) == sorted({repo.chunks.name(c) for c in first})
    assert outcomes.new_count == 40


def test_a_backup_failing_after_some_index_objects_leaves_garbage_prune_removes(
    repo, tmp_path, monkeypatch
):
    monkeypatch.setenv("STRONGROOM_CACHE_DIR", str(tmp_path / "cache"))
    kept = run_backup(repo, SqliteEngine(str(make_sqlite_db(tmp_path / "kept.db", 300, 900))))
    kept_ids = set(kept.manifest.chunk_list.ids())
    storage = repo.storage
    real_put = storage.put
    packs_put = []

    def failing_put(key, data):
        if key.startswith("packs/"):
            packs_put.append(key)
            if len(packs_put) > 6:
                raise StorageError("the bucket went away")
        real_put(key, data)

    monkeypatch.setattr(storage, "put", failing_put)
    with pytest.raises(StorageError):
        other = str(make_sqlite_db(tmp_path / "other.db", 300, 900, seed=8))
        run_backup(repo, SqliteEngine(other))
    monkeypatch.setattr(storage, "put", real_put)
    assert len(repo.backup_ids()) == 1
    indexed = set(_entries(repo))
    assert indexed - kept_ids  # the failed backup indexed some of its packs as it went

    report = prune(repo)
    assert report is not None
    assert set(_entries(repo)) == kept_ids  # its chunks are gone, the kept ones stay
    assert not check_repository(repo, read_data=True).problems
    verify_backup(repo, kept.manifest)
    again = run_backup(repo, SqliteEngine(str(tmp_path / "other.db")))  # stores them again
    verify_backup(repo, again.manifest)


def test_the_dedup_check_asks_the_index_once_per_batch_not_per_chunk(repo, monkeypatch):
    """A query per chunk held the GIL for 0.75 CPU-s of a 413 MB first backup: the
    writer asks ``known_among`` once per batch, and ``is_known`` only to re-ask after a
    group was forgotten (none here: no index object before the end). Dedup is
    unchanged: repeats and chunks stored earlier are not stored again."""
    monkeypatch.setattr(pack_session, "INDEX_MAX_PACKS", 10_000)
    monkeypatch.setattr(backup, "BATCH_CHUNKS", 64)
    earlier = [os.urandom(1000) for _ in range(100)]
    writer = backup._ChunkWriter(repo, workers=2)
    try:
        for data in earlier:
            writer.submit(data)
        writer.results()
        writer.finish()
    finally:
        writer.close()
    fresh = [os.urandom(1000) for _ in range(400)]
    stream = [*fresh, *earlier[:50], *fresh[:20]]
    calls = {"among": 0, "ids": 0, "one": 0}
    real_among, real_known = repo.chunks.known_among, repo.chunks.is_known

    def among(ids):
        calls["among"] += 1
        calls["ids"] += len(ids)
        return real_among(ids)

    def one(chunk_id):
        calls["one"] += 1
        return real_known(chunk_id)

    repo.chunks.known_among, repo.chunks.is_known = among, one
    writer = backup._ChunkWriter(repo, workers=2)
    try:
        for data in stream:
            writer.submit(data)
        outcomes = writer.results()
        writer.finish()
    finally:
        writer.close()
    assert calls == {"among": -(-len(stream) // backup.BATCH_CHUNKS), "ids": 470, "one": 0}
    assert outcomes.new_count == 400
    assert sorted(_entries(repo)) == sorted(repo.chunks.name(c) for c in earlier + fresh)
