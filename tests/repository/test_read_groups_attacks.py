"""Attacks on a restore's planned reads (ChunkStore.read_many, ``_ReadGroup``): loose
chunks, duplicates, a pack deleted mid-read, damage inside a range spanning a gap, a
truncated pack, early close; and on the restore's helpers that changed alongside
(data_offsets ``_find`` windows, dump_layout ``_Replay``). In-process only."""

import copy
import dataclasses
import io
import json
import os
import pickle
import threading

import pytest

from strongroom.engines.postgresql import data_offsets
from strongroom.engines.postgresql.dump_layout import _Replay
from strongroom.errors import ChunkDamaged, ChunkMissing, IntegrityError
from strongroom.repository import chunks as chunks_module
from strongroom.repository.chunk_list import ChunkList, ChunkRef
from strongroom.repository.keys import KeySource
from strongroom.repository.manifest import Manifest
from strongroom.repository.repository import Repository
from strongroom.storage.memory import MemoryStorage
from tests.helpers import sample_manifest


@pytest.fixture()
def repo(tmp_path):
    storage = MemoryStorage()
    Repository.init(storage, key_file=tmp_path / "k")
    return Repository.open(storage, KeySource(key_file=tmp_path / "k"))


def _store(repo, datas):
    session = repo.chunks.pack_writer()
    ids = []
    for data in datas:
        chunk_id = repo.chunks.name(data)
        session.store(chunk_id, data)
        ids.append(chunk_id)
    session.flush()
    return ids


def _counting(repo, monkeypatch):
    calls = []
    real = repo.storage.get_range

    def get_range(key, offset, length):
        calls.append((key, offset, length))
        return real(key, offset, length)

    monkeypatch.setattr(repo.storage, "get_range", get_range)
    return calls


def _pack_key(repo, chunk_id):
    return chunks_module.pack_key_name(repo.chunks.locate(chunk_id).pack_id)


def _flip(repo, chunk_id):
    location = repo.chunks.locate(chunk_id)
    key = chunks_module.pack_key_name(location.pack_id)
    data = bytearray(repo.storage.get(key))
    data[location.offset + location.length // 2] ^= 0x40
    repo.storage.put(key, bytes(data))


def _readers():
    return [t for t in threading.enumerate() if t.name.startswith("sr-read")]


def test_empty_and_single_and_repeated_chunks(repo):
    datas = [os.urandom(500) for _ in range(5)]
    ids = _store(repo, datas)
    assert list(repo.chunks.read_many([])) == []
    assert list(repo.chunks.read_many([ids[3]])) == [datas[3]]
    order = [ids[0]] * 50 + [ids[4], ids[0], ids[4]] * 20
    assert (
        list(repo.chunks.read_many(order)) == [datas[0]] * 50 + [datas[4], datas[0], datas[4]] * 20
    )


def test_repeats_across_groups_and_the_same_chunk_twice_in_one_pack(repo, monkeypatch):
    monkeypatch.setattr(chunks_module, "READ_GROUP_BYTES", 2000)
    data = os.urandom(1500)
    chunk_id = repo.chunks.name(data)
    session = repo.chunks.pack_writer()
    session.store(chunk_id, data)
    filler = os.urandom(700)
    session.store(repo.chunks.name(filler), filler)
    session.store(chunk_id, data)  # a second blob of the same chunk in the same pack
    session.flush()
    assert len(repo.chunks.index.locations(chunk_id)) >= 1  # the index keeps one (or both)
    order = [chunk_id, repo.chunks.name(filler)] * 7 + [chunk_id] * 5
    assert list(repo.chunks.read_many(order, workers=3)) == [data, filler] * 7 + [data] * 5


def test_loose_chunks_missing_from_the_index_are_read_in_order(repo):
    packed = [os.urandom(800) for _ in range(6)]
    packed_ids = _store(repo, packed)
    loose = [os.urandom(900) for _ in range(3)]
    loose_ids = [repo.chunks.name(d) for d in loose]
    for chunk_id, data in zip(loose_ids, loose, strict=True):
        repo.chunks.store(chunk_id, data)
    order = [loose_ids[0], packed_ids[0], loose_ids[1], packed_ids[5], loose_ids[0], loose_ids[2]]
    expected = [loose[0], packed[0], loose[1], packed[5], loose[0], loose[2]]
    assert list(repo.chunks.read_many(order)) == expected


def test_a_missing_loose_chunk_is_named(repo):
    ids = _store(repo, [os.urandom(100)])
    ghost = repo.chunks.name(b"never stored")
    with pytest.raises(ChunkMissing, match=ghost):
        list(repo.chunks.read_many([ids[0], ghost]))


def test_a_pack_deleted_mid_read_falls_back_to_another_copy(repo, monkeypatch):
    datas = [os.urandom(1000) for _ in range(10)]
    first = _store(repo, datas)
    old_pack = _pack_key(repo, first[0])
    _store(repo, datas)  # a second copy of every chunk in another pack (a stopped repack)
    real = repo.storage.get_range
    deleted = []

    def get_range(key, offset, length):
        if not deleted:
            repo.storage.delete(old_pack)  # prune removes it between plan and read
            deleted.append(key)
        return real(key, offset, length)

    monkeypatch.setattr(repo.storage, "get_range", get_range)
    assert list(repo.chunks.read_many(first)) == datas


def test_a_pack_deleted_with_no_other_copy_names_a_missing_chunk(repo):
    datas = [os.urandom(1000) for _ in range(4)]
    ids = _store(repo, datas)
    repo.storage.delete(_pack_key(repo, ids[0]))
    with pytest.raises(ChunkMissing) as caught:
        list(repo.chunks.read_many(ids))
    assert any(chunk_id in caught.value.message for chunk_id in ids)


def test_the_first_failing_chunk_of_the_stream_is_the_one_raised(repo):
    ids = _store(repo, [os.urandom(1000) for _ in range(3)])
    ghost = repo.chunks.name(b"a loose chunk that is not there")
    _flip(repo, ids[2])
    # stream: a missing loose chunk first, then a damaged packed one
    with pytest.raises(ChunkMissing):
        list(repo.chunks.read_many([ghost, ids[2]]))


def test_damage_inside_a_range_spanning_a_gap_names_the_damaged_chunk(repo, monkeypatch):
    datas = [os.urandom(2000) for _ in range(12)]
    ids = _store(repo, datas)
    wanted = [ids[0], ids[2], ids[4], ids[6], ids[8]]  # one range, gaps of one blob
    _flip(repo, ids[4])
    _flip(repo, ids[5])  # damage in a gap (read and dropped) is no one's concern
    calls = _counting(repo, monkeypatch)
    with pytest.raises(ChunkDamaged) as caught:
        list(repo.chunks.read_many(wanted))
    assert ids[4] in caught.value.message
    assert all(other not in caught.value.message for other in ids if other != ids[4])
    # the range is read READ_ATTEMPTS times, then each wanted chunk by itself (so the good
    # ones before the damaged one are delivered), the damaged one READ_ATTEMPTS times
    attempts = chunks_module.READ_ATTEMPTS
    assert len(calls) <= attempts + (len(wanted) - 1) + attempts
    # damage only in the gap: the wanted chunks read
    ids2 = _store(repo, datas2 := [os.urandom(2000) for _ in range(5)])
    _flip(repo, ids2[1])
    assert list(repo.chunks.read_many([ids2[0], ids2[2]])) == [datas2[0], datas2[2]]


def test_a_truncated_pack_names_the_chunk_that_is_cut(repo):
    datas = [os.urandom(2000) for _ in range(6)]
    ids = _store(repo, datas)
    last = repo.chunks.locate(ids[5])
    key = _pack_key(repo, ids[5])
    repo.storage.put(key, repo.storage.get(key)[: last.offset + last.length // 2])
    with pytest.raises(ChunkDamaged) as caught:
        list(repo.chunks.read_many([ids[0], ids[3], ids[5]]))
    assert ids[5] in caught.value.message, caught.value.message


def test_a_chunk_bigger_than_a_range_is_read_alone(repo, monkeypatch):
    monkeypatch.setattr(chunks_module, "MAX_RUN_BYTES", 3000)
    monkeypatch.setattr(chunks_module, "READ_GROUP_BYTES", 3000)
    datas = [os.urandom(100), os.urandom(10_000), os.urandom(100)]
    ids = _store(repo, datas)
    calls = _counting(repo, monkeypatch)
    assert list(repo.chunks.read_many(ids + ids[::-1])) == datas + datas[::-1]
    assert len(calls) >= 2


def test_closing_the_generator_early_leaves_no_reader_running(repo, monkeypatch):
    monkeypatch.setattr(chunks_module, "READ_GROUP_BYTES", 4000)
    datas = [os.urandom(2000) for _ in range(60)]
    ids = _store(repo, datas)
    reader = repo.chunks.read_many(ids, workers=3)
    assert next(reader) == datas[0]
    reader.close()  # no exception
    assert not _readers()
    reader = repo.chunks.read_many(ids, workers=3)
    del reader  # never started: nothing to stop
    assert not _readers()


def test_a_failure_stops_the_stream_and_leaves_no_reader_running(repo, monkeypatch):
    monkeypatch.setattr(chunks_module, "READ_GROUP_BYTES", 4000)
    datas = [os.urandom(2000) for _ in range(40)]
    ids = _store(repo, datas)
    _flip(repo, ids[20])
    got = []
    with pytest.raises(ChunkDamaged, match=ids[20]):
        for data in repo.chunks.read_many(ids, workers=3):
            got.append(data)
    assert got == datas[: len(got)] and len(got) <= 20
    assert not _readers()


def test_a_bad_id_is_refused_before_any_read(repo, monkeypatch):
    calls = _counting(repo, monkeypatch)
    with pytest.raises(IntegrityError):
        list(repo.chunks.read_many(["../../etc/passwd"]))
    assert calls == []


# --- data_offsets._find: the windowed search ----------------------------------------------


class _Mapped:
    """What ``_find`` uses of an mmap (len, find, madvise), counting finds so that a search
    that never ends fails instead of spinning."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.finds = 0

    def __len__(self) -> int:
        return len(self.data)

    def find(self, needle: bytes, start: int, end: int) -> int:
        self.finds += 1
        if self.finds > 1000:
            raise RuntimeError("the search does not end")
        return self.data.find(needle, start, end)

    def madvise(self, *args: int) -> None:
        pass


@pytest.mark.parametrize("at", [0, 1, 5, 6, 7, 8, 9, 10, 11, 15, 16, 17, 20, 31, 34])
def test_find_sees_a_needle_across_window_edges(monkeypatch, at):
    monkeypatch.setattr(data_offsets, "SCAN_WINDOW", 8)
    data = bytearray(b"x" * 40)
    data[at : at + 6] = b"NEEDLE"
    data = bytes(data[:40])
    expected = data.find(b"NEEDLE")
    assert data_offsets._find(_Mapped(data), b"NEEDLE", 0) == expected  # type: ignore[arg-type]


def test_find_ends_when_the_needle_is_absent():
    mapped = _Mapped(b"x" * 100)
    assert data_offsets._find(mapped, b"\x00\x00\x00\x00\x01", 0) == -1  # type: ignore[arg-type]


def test_find_with_a_one_byte_needle_and_from_the_end():
    assert data_offsets._find(_Mapped(b"abc"), b"z", 0) == -1  # type: ignore[arg-type]
    assert data_offsets._find(_Mapped(b"abc"), b"c", 3) == -1  # type: ignore[arg-type]
    assert data_offsets._find(_Mapped(b""), b"zz", 0) == -1  # type: ignore[arg-type]


# --- dump_layout._Replay -----------------------------------------------------------------


def test_replay_read_sizes_and_readinto_edges():
    replay = _Replay(b"HEAD", io.BytesIO(b"rest-of-stream"))
    assert replay.read(0) == b""
    assert replay.readinto(memoryview(bytearray(0))) == 0
    assert replay.read(2) == b"HE"
    assert replay.read(-1) == b"AD" + b"rest-of-stream"
    assert replay.read(-1) == b""
    replay = _Replay(bytearray(b"HEAD"), io.BytesIO(b"tail"))
    buf = bytearray(3)
    assert replay.readinto(memoryview(buf)) == 3 and bytes(buf) == b"HEA"
    assert replay.read(None) == b"D" + b"tail"
    replay = _Replay(b"", io.BytesIO(b"only"))
    assert replay.read(0) == b""
    assert replay.read() == b"only"
    buffered = io.BufferedReader(_Replay(b"P" * 10, io.BytesIO(b"Q" * 100_000)))
    assert buffered.read() == b"P" * 10 + b"Q" * 100_000


def test_replay_through_a_stream_without_readinto():
    class Pipe:
        def __init__(self, data: bytes) -> None:
            self.inner = io.BytesIO(data)

        def read(self, size: int = -1) -> bytes:
            return self.inner.read(size)

    replay = _Replay(b"ab", Pipe(b"cdef"))  # type: ignore[arg-type]
    buf = bytearray(10)
    assert replay.readinto(memoryview(buf)) == 2
    assert replay.readinto(memoryview(buf)) == 4 and bytes(buf[:4]) == b"cdef"
    assert replay.readinto(memoryview(buf)) == 0


# --- ChunkList (what read_many is fed) and Manifest.chunks -------------------------------


def _refs(count):
    return [ChunkRef(f"{i:064x}", 1000 + i) for i in range(count)]


def test_chunk_list_indexes_slices_copies_and_pickles_as_a_tuple():
    refs = _refs(7)
    chunks = ChunkList(refs)
    for i in range(-7, 7):
        assert chunks[i] == refs[i]
    for bad in (7, -8, 2**70):
        with pytest.raises(IndexError):
            chunks[bad]
    for s in (
        slice(None),
        slice(-3, None),
        slice(None, -3),
        slice(5, 2),
        slice(None, None, -1),
        slice(-1, -8, -2),
        slice(100, 200),
        slice(1, 6, 3),
    ):
        assert chunks[s] == refs[s] and isinstance(chunks[s], ChunkList)
    assert ChunkList() == [] == ChunkList()[:] and len(ChunkList()) == 0
    assert ChunkList(chunks) == chunks  # shares, equal
    assert pickle.loads(pickle.dumps(chunks)) == chunks
    assert copy.deepcopy(chunks) == chunks and copy.copy(chunks) == chunks
    assert chunks != [(r.chunk_id, r.size) for r in refs]  # tuples are not refs
    assert chunks != "x" * 7 and chunks != [*refs[:-1], ChunkRef(refs[-1].chunk_id, 0)]
    assert refs[3] in chunks and chunks.index(refs[3]) == 3 and chunks.count(refs[0]) == 1
    assert list(reversed(chunks)) == refs[::-1]


def test_chunk_list_equal_to_a_tuple_hashes_like_it():
    refs = tuple(_refs(3))
    chunks = ChunkList(refs)
    assert chunks == refs
    assert hash(chunks) == hash(refs)


def test_manifest_replace_copy_and_json_round_trip_keep_a_chunk_list():
    refs = _refs(4)
    manifest = sample_manifest(
        refs, engine="sqlite", engine_version="3", tool_version="3", dump_format="sqlite-backup"
    )
    other = dataclasses.replace(manifest, chunks=refs[:2])
    assert isinstance(other.chunks, ChunkList) and other.chunks == refs[:2]
    empty = dataclasses.replace(manifest, chunks=())
    assert isinstance(empty.chunks, ChunkList) and empty.chunk_count == 0
    assert copy.deepcopy(manifest) == manifest
    assert pickle.loads(pickle.dumps(manifest)) == manifest
    again = Manifest.from_json(empty.to_json(), "where", empty.backup_id)
    assert again == empty and len(again.chunks) == 0
    # an older manifest: no chunk_order, no chunk_count
    doc = json.loads(manifest.to_json())
    doc.pop("chunk_order", None)
    doc.pop("chunk_count", None)
    older = Manifest.from_json(json.dumps(doc).encode(), "where", manifest.backup_id)
    assert older.chunks == refs and older.chunk_order is None


def test_a_pack_gone_mid_read_costs_a_few_index_syncs_not_one_per_chunk(repo, monkeypatch):
    datas = [os.urandom(500) for _ in range(50)]
    ids = _store(repo, datas)
    for chunk_id, data in zip(ids, datas, strict=True):
        repo.chunks.store(chunk_id, data)  # a loose copy of each to fall back to
    repo.storage.delete(_pack_key(repo, ids[0]))
    listings = []
    real = repo.storage.list

    def listing(prefix):
        listings.append(prefix)
        return real(prefix)

    monkeypatch.setattr(repo.storage, "list", listing)
    assert list(repo.chunks.read_many(ids)) == datas
    assert len(listings) <= 5, len(listings)
