"""prune with packs (issue 19): delete, repack, rewrite the index, clean leftovers."""

import contextlib
import sqlite3

import pytest

from strongroom.engines.sqlite import SqliteEngine
from strongroom.pipeline.chunking import ChunkerParams
from strongroom.repository.chunks import PackSession, list_pack_ids
from strongroom.repository.keys import KeySource
from strongroom.repository.layout import manifest_key
from strongroom.repository.locks import EXCLUSIVE, RepositoryLock, new_record
from strongroom.repository.pack_index import (
    IndexObject,
    encode_index,
    index_key,
    list_index_ids,
    read_index_object,
)
from strongroom.repository.packs import pack_key_name
from strongroom.repository.repository import Repository
from strongroom.services.backup import run_backup
from strongroom.services.check import check_repository
from strongroom.services.index_rebuild import rebuild_index
from strongroom.services.prune import prune
from strongroom.services.repack import REPACK_THRESHOLD
from strongroom.services.verify import verify_backup
from strongroom.storage.memory import MemoryStorage
from strongroom.storage.s3 import S3Storage
from tests.helpers import chunk_blob, make_sqlite_db

SMALL_CHUNKS = ChunkerParams(min_size=4096, avg_size=16384, max_size=65536)


@pytest.fixture()
def repo(tmp_path, monkeypatch):
    monkeypatch.setenv("STRONGROOM_CACHE_DIR", str(tmp_path / "cache"))
    storage = MemoryStorage()
    Repository.init(storage, key_file=tmp_path / "k", chunker=SMALL_CHUNKS)
    return Repository.open(storage, KeySource(key_file=tmp_path / "k"))


def shrink(db, orders=1000, users=400):
    """Keep the first rows only: the dump's first chunks stay, the rest goes."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("DELETE FROM orders WHERE id > ?", (orders,))
        conn.execute("DELETE FROM users WHERE id > ?", (users,))
        conn.commit()
        conn.execute("VACUUM")


@pytest.fixture(params=["memory", "s3"])
def any_repo(request, tmp_path, monkeypatch):
    """The same repository on memory storage and on S3 (moto)."""
    if request.param == "memory":
        return request.getfixturevalue("repo")
    monkeypatch.setenv("STRONGROOM_CACHE_DIR", str(tmp_path / "cache"))
    endpoint, bucket = request.getfixturevalue("s3_bucket")
    storage = S3Storage(bucket, "repo", endpoint_url=endpoint)
    Repository.init(storage, key_file=tmp_path / "k", chunker=SMALL_CHUNKS)
    return Repository.open(storage, KeySource(key_file=tmp_path / "k"))


def _scene(repo, tmp_path):
    """Two targets, one pack each; Shop's first backup forgotten after Shop shrank, so
    its pack is mostly garbage."""
    shop = make_sqlite_db(tmp_path / "Shop.db", users=1500, orders=4000)
    other = make_sqlite_db(tmp_path / "Other.db", users=1500, orders=4000, seed=3)
    first = run_backup(repo, SqliteEngine(str(shop)), target="Shop").manifest
    kept = run_backup(repo, SqliteEngine(str(other)), target="OtherDb").manifest
    shrink(shop)
    second = run_backup(repo, SqliteEngine(str(shop)), target="Shop").manifest
    first_pack = chunk_blob(repo, first.chunks[-1].chunk_id)[0].rsplit("/", 1)[-1]
    repo.storage.delete(manifest_key(first.backup_id))
    return first, kept, second, first_pack


@pytest.fixture()
def scene(repo, tmp_path):
    """Two targets, one pack each; Shop's first backup forgotten after Shop shrank, so
    its pack is mostly garbage."""
    return _scene(repo, tmp_path)


def _pack_of(repo, chunk_id):
    return chunk_blob(repo, chunk_id)[0].rsplit("/", 1)[-1]


def test_prune_repacks_a_mostly_unreferenced_pack(any_repo, tmp_path):
    repo = any_repo
    first, kept, second, first_pack = _scene(repo, tmp_path)
    storage = repo.storage
    shared = first.unique_chunk_ids & second.unique_chunk_ids
    assert shared and len(shared) < len(first.unique_chunk_ids) * REPACK_THRESHOLD
    old_index = list_index_ids(storage)
    packs_before = set(list_pack_ids(storage))
    assert len(packs_before) == 3 and len(old_index) == 3
    garbage = first.unique_chunk_ids - second.unique_chunk_ids - kept.unique_chunk_ids
    garbage_blobs = sum(chunk_blob(repo, c)[2] for c in garbage)

    dry = prune(repo, dry_run=True)
    assert (dry.packs_repacked, dry.packs_deleted, dry.packs_written) == (1, 1, 0)
    assert dry.pack_bytes_freed >= garbage_blobs
    assert set(list_pack_ids(storage)) == packs_before and list_index_ids(storage) == old_index

    report = prune(repo)
    assert (report.packs_repacked, report.packs_deleted, report.packs_written) == (1, 1, 1)
    assert report.index_objects_deleted == 3
    assert garbage_blobs <= report.pack_bytes_freed < dry.pack_bytes_freed + 4096
    assert report.unreferenced_bytes == report.pack_bytes_freed
    packs_after = set(list_pack_ids(storage))
    assert first_pack not in packs_after and len(packs_after) == 3
    new_index = list_index_ids(storage)
    assert not new_index & old_index
    for index_id in new_index:
        assert set(read_index_object(storage, index_id, repo.keyring.sealer(for_reading=True))
                   .supersedes) == old_index  # fmt: skip
    moved = {_pack_of(repo, c) for c in shared}
    assert len(moved) == 1 and moved <= packs_after - packs_before
    for manifest in (kept, second):
        assert verify_backup(repo, manifest).ok
    assert check_repository(repo, read_data=True).ok
    again = prune(repo)
    assert (again.packs_deleted, again.packs_repacked, again.index_objects_deleted) == (0, 0, 0)
    assert again.unreferenced_bytes == 0 and again.unreferenced_chunks == 0


def test_a_pack_half_referenced_or_more_stays(repo, tmp_path):
    shop = make_sqlite_db(tmp_path / "Shop.db", users=1500, orders=4000)
    first = run_backup(repo, SqliteEngine(str(shop)), target="Shop").manifest
    shrink(shop, orders=3500, users=1400)  # most of the dump stays the same
    second = run_backup(repo, SqliteEngine(str(shop)), target="Shop").manifest
    repo.storage.delete(manifest_key(first.backup_id))
    packs = set(list_pack_ids(repo.storage))
    report = prune(repo)
    assert (report.packs_repacked, report.packs_deleted) == (0, 0)
    assert set(list_pack_ids(repo.storage)) == packs
    assert report.referenced_chunks == len(second.unique_chunk_ids)
    assert report.unreferenced_chunks > 0  # kept inside the pack, below the threshold
    assert report.kept_in_packs == report.unreferenced_chunks and report.kept_in_packs_bytes > 0
    assert verify_backup(repo, second).ok


def test_prune_deletes_unlisted_packs_and_rewrites_superseded_index(repo, scene):
    _, kept, second, _ = scene
    storage = repo.storage
    prune(repo)
    # a killed backup's pack (no index lists it) and a killed prune's extra index object
    session = PackSession(repo.chunks, 1 << 20)
    session.store("ab" * 32, b"never referenced")  # not a real id: never read
    with session._lock:
        orphan = session._writer.seal()
    storage.put(pack_key_name(orphan.pack_id), orphan.data)
    sealer = repo.keyring.sealer(for_reading=True)
    survivors = list_index_ids(storage)
    copy = read_index_object(storage, sorted(survivors)[0], sealer)
    extra = encode_index(IndexObject(copy.packs, tuple(survivors)), sealer)
    extra_id = repo.chunks.name(extra)
    storage.put(index_key(extra_id), extra)
    report = prune(repo)
    assert report.orphan_packs == 1 and report.packs_deleted == 1
    assert report.index_objects_deleted == len(survivors) + 1
    assert not storage.exists(pack_key_name(orphan.pack_id))
    assert not list_index_ids(storage) & (survivors | {extra_id})
    for manifest in (kept, second):
        assert verify_backup(repo, manifest).ok


def test_a_damaged_blob_keeps_its_pack_as_it_is(repo, scene):
    first, kept, second, first_pack = scene
    victim = sorted(first.unique_chunk_ids & second.unique_chunk_ids)[0]
    key, offset, length = chunk_blob(repo, victim)
    data = bytearray(repo.storage.get(key))
    data[offset + length // 2] ^= 0x01
    repo.storage.put(key, bytes(data))
    report = prune(repo)
    assert report.packs_repacked == 0 and report.packs_written == 0
    assert repo.storage.exists(pack_key_name(first_pack))
    assert verify_backup(repo, kept).ok
    found = check_repository(repo, read_data=True)
    assert [p.subject for p in found.problems] == [victim]


def test_packs_wait_while_another_prune_holds_an_exclusive_lock(repo, scene):
    storage = repo.storage
    other = RepositoryLock(storage, new_record(EXCLUSIVE, "prune", 300))
    other.write()
    packs, index = set(list_pack_ids(storage)), list_index_ids(storage)
    try:
        report = prune(repo, wait=5)
    finally:
        other.release()
    assert report.packs_note and "another prune" in report.packs_note
    assert (report.packs_deleted, report.packs_repacked) == (0, 0)
    assert set(list_pack_ids(storage)) == packs and list_index_ids(storage) == index
    assert prune(repo).packs_repacked == 1


def test_a_lost_index_object_keeps_the_packs_it_listed(repo, scene):
    _, kept, second, _ = scene
    storage = repo.storage
    lost = next(  # the index object of OtherDb's backup
        i
        for i in list_index_ids(storage)
        if _pack_of(repo, kept.chunks[-1].chunk_id)
        in {
            p.pack_id
            for p in read_index_object(storage, i, repo.keyring.sealer(for_reading=True)).packs
        }
    )
    storage.delete(index_key(lost))
    report = prune(repo)
    assert report.packs_note and "index rebuild" in report.packs_note
    assert (report.orphan_packs, report.packs_deleted, report.packs_repacked) == (0, 0, 0)
    rebuilt = rebuild_index(repo)
    assert rebuilt.packs == len(set(list_pack_ids(storage))) and not rebuilt.skipped
    for manifest in (kept, second):
        assert verify_backup(repo, manifest).ok
    again = prune(repo)
    assert again.packs_note is None and again.packs_repacked == 1


def test_a_damaged_index_object_stops_the_pack_work(repo, scene, monkeypatch, tmp_path):
    _, kept, second, first_pack = scene
    storage = repo.storage
    victim = sorted(list_index_ids(storage))[0]
    data = bytearray(storage.get(index_key(victim)))
    data[len(data) // 2] ^= 0x01
    storage.put(index_key(victim), bytes(data))
    monkeypatch.setenv("STRONGROOM_CACHE_DIR", str(tmp_path / "other-host"))  # no cache
    fresh = Repository.open(storage, KeySource(key_file=tmp_path / "k"))
    packs = set(list_pack_ids(storage))
    report = prune(fresh)
    assert report.packs_note and index_key(victim) in report.packs_note
    assert (report.packs_deleted, report.packs_repacked) == (0, 0)
    assert set(list_pack_ids(storage)) == packs and first_pack in packs
    rebuild_index(fresh)
    assert prune(fresh).packs_repacked == 1
    for manifest in (kept, second):
        assert verify_backup(fresh, manifest).ok
