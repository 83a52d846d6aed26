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
from strongroom.errors import StorageError
from strongroom.repository import pack_session
from strongroom.repository.keys import KeySource
from strongroom.repository.pack_session import PackSession
from strongroom.repository.repository import Repository
from strongroom.services import backup
from strongroom.services.backup import run_backup
from strongroom.services.prune import prune
from strongroom.services.restore import run_restore
from strongroom.services.verify import verify_backup
from strongroom.storage.local import LocalStorage
from tests.helpers import make_sqlite_db
from tests.repository.pack_session_helpers import (
    _all_well,
    _entries,
    _files,
    _open,
    _restores,
    _rows,
    tiny_pack_storage,
)


@pytest.fixture()
def storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalStorage:
    return tiny_pack_storage(tmp_path, monkeypatch)


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
    monkeypatch.setattr(repo.chunks, "known_among", lambda ids: {c for c in ids if racing_known(c)})
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


# --- failures in the middle of indexing ------------------------------------------------


def _fail_index_put(storage: LocalStorage, repo: Repository, monkeypatch, after: int) -> None:
    real = storage.put
    count = [0]

    def put(key: str, data: bytes) -> None:
        if key.startswith("index/"):
            count[0] += 1
            if count[0] > after:
                raise StorageError("index put failed (simulated)")
        real(key, data)

    monkeypatch.setattr(storage, "put", put)


def _fail_sync(storage: LocalStorage, repo: Repository, monkeypatch, after: int) -> None:
    real = storage.sync
    real_put = storage.put
    index_puts = [0]
    syncs_after = [0]

    def put(key: str, data: bytes) -> None:
        if key.startswith("index/"):
            index_puts[0] += 1
        real_put(key, data)

    def sync() -> None:
        if index_puts[0] >= after:  # the sync after the `after`th index object fails
            syncs_after[0] += 1
            raise StorageError("sync failed (simulated)")
        real()

    monkeypatch.setattr(storage, "put", put)
    monkeypatch.setattr(storage, "sync", sync)


def _fail_cache_add(storage: LocalStorage, repo: Repository, monkeypatch, after: int) -> None:
    index = repo.chunks.index
    real = index.add
    count = [0]

    def add(index_id, obj, *, stored_now=False):
        count[0] += 1
        if count[0] > after:
            raise sqlite3.OperationalError("disk I/O error (simulated)")
        return real(index_id, obj, stored_now=stored_now)

    monkeypatch.setattr(index, "add", add)


@pytest.mark.parametrize("fail", [_fail_index_put, _fail_sync, _fail_cache_add])
@pytest.mark.parametrize("after", [0, 2])
def test_a_failure_while_indexing_fails_the_backup_cleanly_and_loses_nothing(
    storage: LocalStorage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail, after: int
) -> None:
    """The index object's put, the sync around it or the cache add fails during the
    backup: the backup raises, writes no manifest; the earlier backup restores; the next
    backup of the same data deduplicates against what the failed one indexed and
    restores; prune, check --read-data and verify are clean."""
    shop = make_sqlite_db(tmp_path / "shop.db", users=600, orders=1800)
    other = make_sqlite_db(tmp_path / "other.db", users=600, orders=1800, seed=9)
    repo = _open(storage, tmp_path, monkeypatch)
    kept = run_backup(repo, SqliteEngine(str(shop))).manifest

    failing = _open(storage, tmp_path, monkeypatch)
    with monkeypatch.context() as patch:
        fail(storage, failing, patch, after)
        with pytest.raises((StorageError, sqlite3.Error)):
            run_backup(failing, SqliteEngine(str(other)))
    assert _open(storage, tmp_path, monkeypatch).backup_ids() == [kept.backup_id]

    again_repo = _open(storage, tmp_path, monkeypatch)
    _restores(again_repo, kept, shop, tmp_path / "kept.db")
    again = run_backup(again_repo, SqliteEngine(str(other))).manifest
    if after:
        # the failed backup's indexed packs are found (through index/ when the cache missed)
        assert again.new_chunk_count < again.chunk_count
    _restores(again_repo, again, other, tmp_path / "again.db")
    _all_well(again_repo, [kept, again])
    _restores(_open(storage, tmp_path, monkeypatch), again, other, tmp_path / "again2.db")


# --- tiny packs, one pack per index object, duplicates across the boundary -------------


@pytest.mark.parametrize("pack_bytes", [1, 4 * 1024])
def test_one_pack_per_index_object_with_repeats_across_every_boundary(
    storage: LocalStorage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pack_bytes: int
) -> None:
    """INDEX_MAX_PACKS = 1 and packs of one chunk: every pack is indexed at once, so
    every repeat of a chunk comes after its pack left the claimed set (the index answers)
    or while it is still claimed. Each chunk is stored once; the backup restores."""
    monkeypatch.setattr(pack_session, "INDEX_MAX_PACKS", 1)
    monkeypatch.setattr(backup, "BATCH_CHUNKS", 1)
    repo = Repository.open(storage, KeySource(key_file=tmp_path / "k"))
    store = repo.chunks
    monkeypatch.setattr(store, "pack_writer", lambda: PackSession(store, pack_bytes))
    rng = random.Random(pack_bytes)
    chunks = [rng.randbytes(2000) for _ in range(30)]
    stream = [chunks[i % 30] for i in range(30)] + [rng.choice(chunks) for _ in range(200)]
    repo.chunks.prepare_known()
    writer = backup._ChunkWriter(repo, workers=4)
    try:
        for data in stream:
            writer.submit(data)
        outcomes = writer.results()
        writer.finish()
    finally:
        writer.close()
    stored = _entries(repo)
    assert sorted(stored) == sorted({store.name(c) for c in chunks})
    assert outcomes.new_count == 30
    refs = [r.chunk_id for r in outcomes.refs.build()]
    assert list(repo.chunks.read_many(refs)) == stream
    if pack_bytes == 1:
        assert len(list(storage.list("index/"))) == 30  # one index object per pack


def test_a_real_backup_with_one_pack_per_index_object_restores_and_checks(
    storage: LocalStorage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pack_session, "INDEX_MAX_PACKS", 1)
    shop = make_sqlite_db(tmp_path / "shop.db", users=600, orders=1800)
    repo = _open(storage, tmp_path, monkeypatch)
    first = run_backup(repo, SqliteEngine(str(shop))).manifest
    with sqlite3.connect(shop) as db:
        db.execute("UPDATE users SET email = email || '!' WHERE id % 50 = 0")
    second = run_backup(_open(storage, tmp_path, monkeypatch), SqliteEngine(str(shop))).manifest
    assert 0 < second.new_chunk_count < second.chunk_count
    repo = _open(storage, tmp_path, monkeypatch)
    _restores(repo, second, shop, tmp_path / "second.db")
    _all_well(repo, [first, second])


# --- two backups at once ---------------------------------------------------------------


def test_two_backups_at_once_with_overlapping_data_both_verify_and_survive_prune(
    storage: LocalStorage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two backups (two Repository objects: two index caches' connections, one cache
    file) of the same database at once, plus a third of another: each verifies, and after
    prune and check --read-data every chunk is still there."""
    shop = make_sqlite_db(tmp_path / "shop.db", users=800, orders=2400)
    shop2 = tmp_path / "shop2.db"
    shop2.write_bytes(shop.read_bytes())
    with sqlite3.connect(shop2) as db:
        db.execute("UPDATE users SET email = email || '?' WHERE id % 7 = 0")
    repos = [_open(storage, tmp_path, monkeypatch) for _ in range(2)]
    results: dict[int, object] = {}
    start = threading.Barrier(2)

    def one(n: int, path: Path) -> None:
        start.wait()
        try:
            results[n] = run_backup(repos[n], SqliteEngine(str(path))).manifest
        except BaseException as exc:  # reported below
            results[n] = exc

    threads = [threading.Thread(target=one, args=(n, p)) for n, p in enumerate((shop, shop2))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    manifests = [results[0], results[1]]
    for manifest in manifests:
        assert not isinstance(manifest, BaseException), manifest
    repo = _open(storage, tmp_path, monkeypatch)
    for manifest in manifests:
        verify_backup(repo, manifest)
    # both backups may store a chunk they share (neither lists the other's new packs):
    # prune may keep that copy as garbage (test_known_among_attacks: the overlap forced)
    shared = set(manifests[0].unique_chunk_ids) & set(manifests[1].unique_chunk_ids)
    _all_well(repo, manifests, twice_ok=shared)
    _restores(repo, manifests[0], shop, tmp_path / "r0.db")
    _restores(repo, manifests[1], shop2, tmp_path / "r1.db")


# --- a version 1 repository ------------------------------------------------------------


def test_a_version1_repository_indexes_as_it_goes_and_both_backups_restore(
    storage: LocalStorage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.repository.test_version1 import make_version1

    monkeypatch.setattr(pack_session, "INDEX_MAX_PACKS", 1)
    shop = make_sqlite_db(tmp_path / "shop.db", users=600, orders=1800)
    old = run_backup(_open(storage, tmp_path, monkeypatch), SqliteEngine(str(shop))).manifest
    make_version1(_open(storage, tmp_path, monkeypatch), old)
    with sqlite3.connect(shop) as db:
        db.execute("UPDATE users SET email = email || '!' WHERE id % 50 = 0")
    repo = _open(storage, tmp_path, monkeypatch)
    new = run_backup(repo, SqliteEngine(str(shop))).manifest
    assert 0 < new.new_chunk_count < new.chunk_count  # loose chunks found
    assert len(list(storage.list("index/"))) >= 2
    fresh = _open(storage, tmp_path, monkeypatch)
    assert run_restore(fresh, old, SqliteEngine(f"sqlite://{tmp_path / 'old.db'}")).ok
    _restores(fresh, new, shop, tmp_path / "new.db")
    _all_well(fresh, [old, new])


# --- a group larger than an index object holds -----------------------------------------


def test_a_group_above_the_index_objects_limit_is_cached_as_it_is_stored(
    storage: LocalStorage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A newcomer raises pack_session.INDEX_MAX_PACKS above what one index object holds
    (index_objects.INDEX_MAX_PACKS, 64): write_index_objects splits the group in two
    objects; the cache must list each object's own packs, as a fresh cache read from
    ``index/`` does."""
    from strongroom.repository import index_objects

    monkeypatch.setattr(pack_session, "INDEX_MAX_PACKS", index_objects.INDEX_MAX_PACKS + 6)
    repo = Repository.open(storage, KeySource(key_file=tmp_path / "k"))
    store = repo.chunks
    monkeypatch.setattr(store, "pack_writer", lambda: PackSession(store, 1))
    rng = random.Random(4)
    chunks = [rng.randbytes(500) for _ in range(index_objects.INDEX_MAX_PACKS + 10)]
    repo.chunks.prepare_known()
    writer = backup._ChunkWriter(repo, workers=2)
    try:
        for data in chunks:
            writer.submit(data)
        writer.results()
        writer.finish()
    finally:
        writer.close()
    live = sorted(repo.chunks.index.packs())
    monkeypatch.setenv("STRONGROOM_CACHE_DIR", str(tmp_path / "fresh-cache"))
    fresh_repo = Repository.open(storage, KeySource(key_file=tmp_path / "k"))
    fresh_repo.chunks.refresh_index()
    fresh = sorted(fresh_repo.chunks.index.packs())
    assert len(fresh) == len(chunks)
    assert live == fresh


# --- a failed backup's indexed packs pruned from another host --------------------------


def test_a_failed_backups_packs_pruned_elsewhere_are_stored_again_by_the_next_backup(
    storage: LocalStorage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Host A's backup fails after indexing some packs (its cache lists them as
    present); host B (its own cache) prunes them; A's next backup of the same data must
    not count on its cache: it stores them again, and restores."""
    shop = make_sqlite_db(tmp_path / "shop.db", users=600, orders=1800)
    cache_a, cache_b = str(tmp_path / "cache-a"), str(tmp_path / "cache-b")
    monkeypatch.setenv("STRONGROOM_CACHE_DIR", cache_a)
    failing = _open(storage, tmp_path, monkeypatch)
    with monkeypatch.context() as patch:
        _fail_index_put(storage, failing, patch, 3)
        with pytest.raises(StorageError):
            run_backup(failing, SqliteEngine(str(shop)))
    assert _files(tmp_path / "repo" / "index") == 3
    failing.chunks.index.close()

    monkeypatch.setenv("STRONGROOM_CACHE_DIR", cache_b)
    host_b = _open(storage, tmp_path, monkeypatch)
    prune(host_b)
    assert _entries(host_b) == []
    host_b.chunks.index.close()

    monkeypatch.setenv("STRONGROOM_CACHE_DIR", cache_a)
    host_a = _open(storage, tmp_path, monkeypatch)
    again = run_backup(host_a, SqliteEngine(str(shop))).manifest
    assert again.new_chunk_count == len(set(again.chunk_list.ids()))
    _restores(host_a, again, shop, tmp_path / "again.db")
    _all_well(host_a, [again])


def test_a_version1_repositorys_first_packed_backup_failing_after_indexing_loses_nothing(
    storage: LocalStorage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first packed backup into a version 1 repository fails after two index
    objects: the loose chunks of the old backup survive prune and check --read-data, the
    old backup restores, and the next backup reuses both the loose and the indexed ones."""
    from tests.repository.test_version1 import make_version1

    shop = make_sqlite_db(tmp_path / "shop.db", users=600, orders=1800)
    old = run_backup(_open(storage, tmp_path, monkeypatch), SqliteEngine(str(shop))).manifest
    make_version1(_open(storage, tmp_path, monkeypatch), old)
    old_rows = _rows(shop)
    with sqlite3.connect(shop) as db:
        db.execute("UPDATE users SET email = email || '!' WHERE id % 5 = 0")
    failing = _open(storage, tmp_path, monkeypatch)
    with monkeypatch.context() as patch:
        _fail_index_put(storage, failing, patch, 2)
        with pytest.raises(StorageError):
            run_backup(failing, SqliteEngine(str(shop)))
    assert _files(tmp_path / "repo" / "index") == 2
    repo = _open(storage, tmp_path, monkeypatch)
    again = run_backup(repo, SqliteEngine(str(shop))).manifest
    indexed_new = len(set(again.chunk_list.ids()) - set(old.chunk_list.ids()))
    assert again.new_chunk_count < indexed_new  # some were indexed by the failed one
    _all_well(repo, [old, again])
    fresh = _open(storage, tmp_path, monkeypatch)
    assert run_restore(fresh, old, SqliteEngine(f"sqlite://{tmp_path / 'old.db'}")).ok
    assert _rows(tmp_path / "old.db") == old_rows
    _restores(fresh, again, shop, tmp_path / "again.db")
