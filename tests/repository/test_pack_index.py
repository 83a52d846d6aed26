"""Index objects and the SQLite index cache: sync with index/ after another process
wrote or removed index objects, a deleted cache file rebuilt, lookups that need no
in-memory set of ids."""

from __future__ import annotations

import os
import secrets
import tracemalloc
from pathlib import Path

import pytest

from strongroom.pipeline.encryption import AgeSealer, PlainSealer, new_identity
from strongroom.pipeline.hashing import ChunkNamer
from strongroom.repository.keys import KeySource
from strongroom.repository.pack_index import (
    INDEX_MAX_PACKS,
    IndexCache,
    IndexDamaged,
    IndexedPack,
    IndexObject,
    decode_index,
    encode_index,
    index_key,
    list_index_ids,
    write_index_objects,
)
from strongroom.repository.packs import PackEntry, encode_entries
from strongroom.repository.repository import Repository
from strongroom.storage.local import LocalStorage
from strongroom.storage.memory import MemoryStorage

NAMER = ChunkNamer(b"n" * 32)


def _fake_pack(chunks: int, key: bytes | None = b"K" * 32) -> IndexedPack:
    entries, offset = [], 100
    for position in range(chunks):
        entries.append(PackEntry(secrets.token_hex(32), offset, 1000, 3000, position))
        offset += 1000
    return IndexedPack(secrets.token_hex(32), offset + 60, key, encode_entries(entries))


@pytest.mark.parametrize("encrypted", [True, False], ids=["age", "plain"])
def test_index_object_round_trip(encrypted: bool) -> None:
    secret, public = new_identity()
    sealer = AgeSealer([public], secret) if encrypted else PlainSealer()
    packs = (_fake_pack(3), _fake_pack(1, None if not encrypted else b"L" * 32))
    data = encode_index(IndexObject(packs, ("ab" * 32,)), sealer)
    assert data.startswith(b"age-encryption.org/v1") == encrypted
    assert decode_index(data, sealer) == IndexObject(packs, ("ab" * 32,))
    with pytest.raises(IndexDamaged, match="index/xx is damaged"):
        decode_index(data[: len(data) // 2], sealer, "index/xx")


def test_more_than_index_max_packs_are_split_over_index_objects() -> None:
    storage = MemoryStorage()
    packs = [_fake_pack(1) for _ in range(INDEX_MAX_PACKS + 3)]
    ids = write_index_objects(storage, packs, PlainSealer(), NAMER.name)
    assert len(ids) == 2
    assert list_index_ids(storage) == set(ids)
    assert storage.get(index_key(ids[0])) and NAMER.name(storage.get(index_key(ids[0]))) == ids[0]


def _write(repo: Repository, count: int) -> list[str]:
    session = repo.chunks.pack_writer()
    ids = []
    for _ in range(count):
        data = os.urandom(2000)
        chunk_id = repo.chunks.name(data)
        session.store(chunk_id, data)
        ids.append(chunk_id)
    session.flush()
    return ids


def test_the_cache_follows_index_objects_another_process_adds_and_removes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = LocalStorage(tmp_path / "repo")
    Repository.init(storage, key_file=tmp_path / "k")
    monkeypatch.setenv("STRONGROOM_CACHE_DIR", str(tmp_path / "cache-a"))
    writer = Repository.open(storage, KeySource(key_file=tmp_path / "k"))
    first = _write(writer, 5)
    monkeypatch.setenv("STRONGROOM_CACHE_DIR", str(tmp_path / "cache-b"))
    reader = Repository.open(storage, KeySource(key_file=tmp_path / "k"))
    assert all(reader.chunks.index.contains(c) for c in first)
    assert reader.chunks.index.path.parent.parent == tmp_path / "cache-b"
    second = _write(writer, 3)  # "another process" (its own cache) adds an index object
    assert not any(reader.chunks.index.contains(c) for c in second)
    assert reader.chunks.refresh_index() is None
    assert all(reader.chunks.index.contains(c) for c in second)
    assert reader.chunks.load(second[1])
    # ... and removes one (as prune will): the reader drops its chunks at the next sync
    second_index = [
        i
        for i in list_index_ids(storage)
        if decode_index(storage.get(index_key(i)), writer.keyring.sealer(for_reading=True))
        .packs[0]
        .entries[0]
        .chunk_id
        == second[0]
    ]
    assert len(second_index) == 1
    storage.delete(index_key(second_index[0]))
    reader.chunks.refresh_index()
    assert not any(reader.chunks.index.contains(c) for c in second)
    assert all(reader.chunks.index.contains(c) for c in first)


def test_a_deleted_cache_file_is_rebuilt_from_the_index_objects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = LocalStorage(tmp_path / "repo")
    Repository.init(storage, key_file=tmp_path / "k")
    monkeypatch.setenv("STRONGROOM_CACHE_DIR", str(tmp_path / "cache"))
    repo = Repository.open(storage, KeySource(key_file=tmp_path / "k"))
    ids = _write(repo, 6)
    path = repo.chunks.index.path
    repo.chunks.index.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    again = Repository.open(storage, KeySource(key_file=tmp_path / "k"))
    assert [again.chunks.load(c) is not None for c in ids] == [True] * 6
    assert path.exists()
    assert all(again.chunks.index.contains(c) for c in ids)
    # a damaged cache file is thrown away and rebuilt too
    again.chunks.index.close()
    path.write_bytes(b"this is not an sqlite database" * 100)
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    third = Repository.open(storage, KeySource(key_file=tmp_path / "k"))
    assert all(third.chunks.index.contains(c) for c in ids)


def test_a_damaged_index_object_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    storage = MemoryStorage()
    ids = write_index_objects(storage, [_fake_pack(2), _fake_pack(2)], PlainSealer(), NAMER.name)
    storage.put(index_key(ids[0]), b"garbage")
    cache = IndexCache(tmp_path / "c.sqlite", storage, PlainSealer())
    assert cache.sync() == (0, 0)  # both in one object: that object is damaged
    assert f"index/{ids[0][:2]}/{ids[0]} is damaged" in caplog.text
    good = write_index_objects(storage, [_fake_pack(3)], PlainSealer(), NAMER.name)
    assert cache.sync() == (1, 0)
    assert cache.index_ids() == set(good)
    assert cache.chunk_count() == 3


def test_lookups_over_200k_chunks_need_no_set_of_ids_in_memory(tmp_path: Path) -> None:
    storage = MemoryStorage()
    cache = IndexCache(tmp_path / "big.sqlite", storage, PlainSealer())
    packs = [_fake_pack(500) for _ in range(400)]  # 200 000 chunks
    for n in range(0, len(packs), INDEX_MAX_PACKS):
        cache.add(secrets.token_hex(32), IndexObject(tuple(packs[n : n + INDEX_MAX_PACKS])))
    assert cache.chunk_count() == 200_000
    probe = [p.entries[i].chunk_id for p in packs[::40] for i in (0, 250, 499)]
    tracemalloc.start()
    try:
        for chunk_id in probe:
            assert cache.known(chunk_id)
            assert cache.locations(chunk_id)[0].raw_length == 3000
        assert not cache.known(secrets.token_hex(32))
        count = sum(1 for _ in cache.chunk_ids())  # streamed in batches
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 200_000
    # a Python set of 200 000 hex ids alone takes ~25 MB; the cache stays near one batch
    assert peak < 4 * 1024 * 1024, peak
    assert os.path.getsize(tmp_path / "big.sqlite") < 200_000 * 130  # bytes per chunk


@pytest.mark.parametrize("packs_listed", [False, True], ids=["index only", "packs listed"])
def test_known_among_answers_as_known_does_one_query_per_256_ids(
    tmp_path: Path, packs_listed: bool
) -> None:
    """The backup's batched dedup check: the same answers as ``known`` for indexed,
    loose-listed, absent and repeated ids (and, once ``packs/`` was listed, for chunks of
    a pack that is gone), in ceil(n / 256) queries, not one per id."""
    storage = MemoryStorage()
    cache = IndexCache(tmp_path / "c.sqlite", storage, PlainSealer())
    present, gone = _fake_pack(300), _fake_pack(20)
    ids = write_index_objects(storage, [present, gone], PlainSealer(), NAMER.name)
    assert cache.sync() == (len(ids), 0)
    loose = [secrets.token_hex(32) for _ in range(30)]
    if packs_listed:
        storage.put(f"packs/{present.pack_id[:2]}/{present.pack_id}", b"x")
        cache.replace_loose(loose)  # also lists packs/: the gone pack's chunks are unknown
    else:
        cache.replace_loose(loose)
        cache._packs_listed = False  # as before any listing of packs/
    absent = [secrets.token_hex(32) for _ in range(200)]
    asked = [e.chunk_id for e in present.entries] + [e.chunk_id for e in gone.entries]
    asked += loose + absent + asked[:50]  # repeats too
    statements: list[str] = []
    cache._db.set_trace_callback(statements.append)
    found = cache.known_among(asked)
    cache._db.set_trace_callback(None)
    assert found == {c for c in asked if cache.known(c)}
    expected = {e.chunk_id for e in present.entries} | set(loose)
    if not packs_listed:
        expected |= {e.chunk_id for e in gone.entries}
    assert found == expected
    assert len(statements) == -(-len(asked) // 256)  # 3 queries for 600 ids
    assert cache.known_among([]) == set()
