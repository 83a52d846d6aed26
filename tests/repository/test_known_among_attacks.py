"""Attacks on the backup writer's batched dedup check (``IndexCache.known_among``, asked
once per batch by ``services/backup.py`` ``_ChunkWriter._process``): its answers at the
query-size boundaries, and two backups at once (two Repository objects, one cache file)
forced to overlap, so that both store the chunks they share. The invariant: one backup
never stores a chunk twice, and never counts a chunk known that is not stored; two
backups at once may store the same chunk once each (neither sees the other's packs in
its listing of ``packs/``), and prune keeps one live copy (the other is garbage in a pack
prune keeps when at least ``REPACK_THRESHOLD`` of it is live)."""

from __future__ import annotations

import secrets
import sqlite3
import threading
from collections import Counter
from pathlib import Path

import pytest

from strongroom.engines.sqlite import SqliteEngine
from strongroom.pipeline.encryption import PlainSealer
from strongroom.repository import pack_index
from strongroom.repository.pack_index import ENTRY, IndexCache, IndexObject, write_index_objects
from strongroom.repository.repository import Repository
from strongroom.services.backup import run_backup
from strongroom.services.check import check_repository
from strongroom.services.prune import prune
from strongroom.services.repack import REPACK_THRESHOLD
from strongroom.services.verify import verify_backup
from strongroom.storage.local import LocalStorage
from strongroom.storage.memory import MemoryStorage
from tests.helpers import make_sqlite_db
from tests.repository.test_pack_session_attacks import (  # noqa: F401 (the fixture)
    _entries,
    _open,
    _restores,
    storage,
)
from tests.repository.test_packs_attacks import NAMER, _fake_pack


@pytest.mark.parametrize("count", [1, 255, 256, 257, 512, 513])
def test_known_among_agrees_with_known_at_every_query_boundary(tmp_path: Path, count: int) -> None:
    """Known ids split across the 256-id queries, absent ids, repeats of one id in two
    queries: the set is exactly what ``known`` says one by one (an off-by-one in the
    slicing would drop the ids at a query's edge)."""
    mem = MemoryStorage()
    cache = IndexCache(tmp_path / "c.sqlite", mem, PlainSealer())
    pack = _fake_pack(count)
    write_index_objects(mem, [pack], PlainSealer(), NAMER.name)
    cache.sync()
    loose = [secrets.token_hex(32) for _ in range(3)]
    cache.replace_loose(loose)
    cache._packs_listed = False  # packs/ holds nothing here: ask the index alone
    known = [e.chunk_id for e in pack.entries]
    absent = [secrets.token_hex(32) for _ in range(count)]
    asked = [x for pair in zip(known, absent, strict=True) for x in pair]  # alternate
    asked += [known[-1], loose[0], known[0]]  # repeats across queries, a loose id
    found = cache.known_among(asked)
    assert found == {c for c in asked if cache.known(c)}
    assert found == {*known, loose[0]}


def test_known_among_counts_no_chunk_of_a_pack_that_is_not_in_packs(tmp_path: Path) -> None:
    """After ``replace_loose`` listed ``packs/``: an index object naming a pack that is not
    there (a lying or stale index) never makes its chunks known, wherever they fall in the
    batch, and a pack this process stored is known at once (``stored_now``)."""
    mem = MemoryStorage()
    cache = IndexCache(tmp_path / "c.sqlite", mem, PlainSealer())
    there, lost = _fake_pack(300), _fake_pack(300)
    mem.put(f"packs/{there.pack_id[:2]}/{there.pack_id}", b"x")
    write_index_objects(mem, [there, lost], PlainSealer(), NAMER.name)
    cache.sync()
    cache.replace_loose([])
    asked = [e.chunk_id for pair in zip(there.entries, lost.entries, strict=True) for e in pair]
    assert cache.known_among(asked) == {e.chunk_id for e in there.entries}
    mine = _fake_pack(10)  # "stored now" by this process: known without a listing
    cache.add("f" * 64, IndexObject((mine,)), stored_now=True)
    ids = [raw.hex() for raw, *_ in ENTRY.iter_unpack(mine.chunks)]
    assert cache.known_among(ids + asked[:2]) == {*ids, asked[0]}


def test_known_among_on_a_cache_that_breaks_mid_batch_falls_back_and_still_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shared file becomes unreadable between two queries of one batch (another
    process wrote garbage over it): the cache falls back to a private one rebuilt from
    ``index/`` and the answer is still complete (the loose listing carried over)."""
    mem = MemoryStorage()
    path = tmp_path / "c.sqlite"
    cache = IndexCache(path, mem, PlainSealer())
    pack = _fake_pack(600)
    write_index_objects(mem, [pack], PlainSealer(), NAMER.name)
    cache.sync()
    loose = [secrets.token_hex(32) for _ in range(5)]
    cache.replace_loose(loose)
    cache._packs_listed = False
    queries = 0
    real = pack_index._fetch_all

    def breaking(query: str, params: list[bytes], db: sqlite3.Connection) -> list[object]:
        nonlocal queries
        queries += 1
        if queries == 2:
            raise sqlite3.DatabaseError("database disk image is malformed")
        return real(query, params, db)

    monkeypatch.setattr(pack_index, "_fetch_all", breaking)
    asked = [e.chunk_id for e in pack.entries] + loose
    assert cache.known_among(asked) == set(asked)
    assert cache._private


# --- two backups at once, forced to overlap ---------------------------------------------


def _recording_adds(repo: Repository) -> list[str]:
    """The chunk ids of every pack ``repo``'s backups index (one entry per stored copy)."""
    stored: list[str] = []
    index = repo.chunks.index
    real_add = index.add

    def add(index_id: str, obj: IndexObject, *, stored_now: bool = False) -> None:
        if stored_now:
            for pack in obj.packs:
                stored.extend(raw.hex() for raw, *_ in ENTRY.iter_unpack(pack.chunks))
        real_add(index_id, obj, stored_now=stored_now)

    index.add = add  # type: ignore[method-assign]
    return stored


def test_two_overlapping_backups_store_each_chunk_once_each_and_prune_keeps_one_live_copy(
    storage: LocalStorage,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both backups list ``chunks/`` and ``packs/`` before either stores a pack (a barrier
    after ``prepare_known``): each stores every chunk it needs, once; the chunks they
    share are stored by both (by design: neither counts the other's unlisted packs as
    known). After prune: check --read-data clean, both restore, and a chunk still listed
    twice is only ever garbage in a pack prune kept at or above REPACK_THRESHOLD live.

    This is the race behind the one-off failure of
    test_two_backups_at_once_with_overlapping_data_both_verify_and_survive_prune ('a chunk
    is stored in two packs', 39 == 38: reproduced in 1 of 3 runs under load): that test
    asserted no chunk in two packs after prune, which holds only when the backups did not
    overlap."""
    shop = make_sqlite_db(tmp_path / "shop.db", users=800, orders=2400)
    shop2 = tmp_path / "shop2.db"
    shop2.write_bytes(shop.read_bytes())
    with sqlite3.connect(shop2) as db:
        db.execute("UPDATE users SET email = email || '?' WHERE id % 7 = 0")
    repos = [_open(storage, tmp_path, monkeypatch) for _ in range(2)]
    listed = threading.Barrier(2, timeout=60)
    stored_by = [_recording_adds(r) for r in repos]
    for repo in repos:
        real_prepare = repo.chunks.prepare_known

        def prepare(real_prepare=real_prepare) -> None:  # type: ignore[no-untyped-def]
            real_prepare()
            listed.wait()  # both listed before either stores: they overlap

        repo.chunks.prepare_known = prepare  # type: ignore[method-assign]
    results: dict[int, object] = {}

    def one(n: int, path: Path) -> None:
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
    for n, stored in enumerate(stored_by):  # the invariant: once per backup
        twice = [c for c, k in Counter(stored).items() if k > 1]
        assert twice == [], f"backup {n} stored {len(twice)} chunk(s) twice"
        assert set(stored) == set(manifests[n].unique_chunk_ids)  # all new: nothing known
    shared = set(stored_by[0]) & set(stored_by[1])
    assert shared, "the backups did not overlap: the race was not set up"
    repo = _open(storage, tmp_path, monkeypatch)
    prune(repo)
    assert check_repository(repo, read_data=True).problems == []
    for manifest in manifests:
        assert verify_backup(repo, manifest, record=False).ok
    _restores(repo, manifests[0], shop, tmp_path / "r0.db")
    _restores(repo, manifests[1], shop2, tmp_path / "r1.db")
    repo.chunks.refresh_index()
    index = repo.chunks.index
    copies = Counter(_entries(repo))
    assert set(copies) <= shared | set(stored_by[0]) | set(stored_by[1])
    referenced = set(manifests[0].unique_chunk_ids) | set(manifests[1].unique_chunk_ids)
    for pack_id, *_ in index.packs():  # a pack with a duplicate was kept, not repacked
        entries = index.pack_entries(pack_id)
        if any(copies[e.chunk_id] > 1 for e in entries):
            live = sum(e.length for e in entries if e.chunk_id in referenced)
            assert live >= REPACK_THRESHOLD * sum(e.length for e in entries)
    assert all(c in shared for c, k in copies.items() if k > 1)


# --- a cache that lies in the dedup direction ---------------------------------------------


@pytest.mark.xfail(
    strict=True,
    reason="services/backup.py trusts the shared index cache for dedup (known_among, as "
    "is_known did): a row that places a chunk in a pack that exists but does not hold it "
    "(a hand edit or a bug: the kind of lie b3f883c repairs for reads) makes the backup "
    "count the chunk known and store it nowhere; its restore then fails with "
    "ChunkMissing even through the rebuilt private cache. b3f883c guards reads only; a "
    "fix needs the backup to confirm its known chunks against index/ (or a cache "
    "checksum) before the manifest",
)
def test_a_cache_row_claiming_a_chunk_that_is_stored_nowhere_does_not_make_a_backup_skip_it(
    storage: LocalStorage,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shop = make_sqlite_db(tmp_path / "shop.db", users=400, orders=1200)
    repo = _open(storage, tmp_path, monkeypatch)
    first = run_backup(repo, SqliteEngine(str(shop))).manifest
    with sqlite3.connect(shop) as db:
        db.execute("UPDATE users SET email = email || '#' WHERE id % 3 = 0")
    probe = run_backup(repo, SqliteEngine(str(shop))).manifest  # to learn the new ids
    new_ids = sorted(set(probe.unique_chunk_ids) - set(first.unique_chunk_ids))
    assert new_ids
    (Path(storage.root) / "backups" / f"{probe.backup_id}.json").unlink()
    prune(repo)  # the new chunks are gone from packs and index
    repo.chunks.refresh_index()
    assert not any(repo.chunks.index.contains(c) for c in new_ids)
    path = repo.chunks.index.path
    repo.chunks.index.close()
    with sqlite3.connect(path) as db:  # the lie: each new chunk "is" in an existing pack
        db.executemany(
            "INSERT INTO chunks SELECT ?, pack_num, offset, length, raw_length, position "
            "FROM chunks LIMIT 1",
            [(bytes.fromhex(c),) for c in new_ids],
        )
    liar = _open(storage, tmp_path, monkeypatch)
    again = run_backup(liar, SqliteEngine(str(shop))).manifest
    assert again.new_chunk_count == 0  # every chunk counted known: none stored
    monkeypatch.setenv("STRONGROOM_CACHE_DIR", str(tmp_path / "cache-elsewhere"))
    fresh = _open(storage, tmp_path, monkeypatch)  # another host: a cache from index/
    assert verify_backup(fresh, again, record=False).ok
