"""Hostile cases against format version 2 (issue 19): the index cache under several
threads and processes, caches that are stale, damaged, unwritable or lying, index objects
that supersede each other oddly, packs swapped or from another repository. Every case:
no chunk a backup needs is lost, failures are clean (``IntegrityError`` naming the object,
never ``sqlite3`` errors)."""

from __future__ import annotations

import os
import re
import secrets
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from strongroom.pipeline.encryption import PlainSealer
from strongroom.pipeline.hashing import ChunkNamer
from strongroom.repository import pack_index
from strongroom.repository.chunks import list_pack_ids
from strongroom.repository.keys import KeySource
from strongroom.repository.manifest import Manifest
from strongroom.repository.pack_index import (
    CACHE_ENV,
    IndexCache,
    IndexedPack,
    IndexObject,
    encode_index,
    index_key,
    list_index_ids,
    read_index_object,
    write_index_objects,
)
from strongroom.repository.packs import PackEntry, encode_entries, pack_key_name
from strongroom.repository.repository import Repository
from strongroom.services.check import check_repository
from strongroom.services.index_rebuild import rebuild_index
from strongroom.services.prune import prune
from strongroom.services.verify import verify_backup
from strongroom.storage.memory import MemoryStorage
from tests.services.test_prune_packs import SMALL_CHUNKS, _scene

NAMER = ChunkNamer(b"a" * 32)


def _fake_pack(chunks: int) -> IndexedPack:
    entries, offset = [], 9
    for position in range(chunks):
        entries.append(PackEntry(secrets.token_hex(32), offset, 100, 300, position))
        offset += 100
    return IndexedPack(secrets.token_hex(32), offset + 60, None, encode_entries(entries))


class SlowIndexReads(MemoryStorage):
    """Storage whose reads of index objects take ``delay`` seconds (a slow S3)."""

    delay = 0.0

    def get(self, key: str) -> bytes:
        if key.startswith("index/"):
            time.sleep(self.delay)
        return super().get(key)


# --- (a) a re-sync must never hide a chunk from readers in other threads -----------------
def test_readers_in_other_threads_never_miss_a_chunk_while_the_cache_resyncs(
    tmp_path: Path,
) -> None:
    storage = SlowIndexReads()
    packs = [_fake_pack(50) for _ in range(4)]
    old = write_index_objects(storage, packs[:2], PlainSealer(), NAMER.name)
    old += write_index_objects(storage, packs[2:], PlainSealer(), NAMER.name)
    cache = IndexCache(tmp_path / "c.sqlite", storage, PlainSealer())
    assert cache.sync() == (2, 0)
    chunk_ids = [e.chunk_id for p in packs for e in p.entries]
    # a prune elsewhere rewrote the index: one new object supersedes both old ones
    write_index_objects(storage, packs, PlainSealer(), NAMER.name, supersedes=old)
    for index_id in old:
        storage.delete(index_key(index_id))
    storage.delay = 0.5
    misses: list[str] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            misses.extend(c for c in chunk_ids[::7] if not cache.contains(c))

    readers = [threading.Thread(target=read) for _ in range(3)]
    for thread in readers:
        thread.start()
    try:
        assert cache.sync() == (1, 2)
    finally:
        stop.set()
        for thread in readers:
            thread.join()
    assert misses == [], f"{len(misses)} lookups missed a chunk the repository holds"
    assert all(cache.contains(c) for c in chunk_ids)


# --- (b) processes sharing one cache file: never "database is locked" --------------------
@pytest.fixture()
def short_busy_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 0.5 s SQLite busy timeout, so that a wait that would end in "database is locked"
    shows in a test in seconds rather than minutes."""
    monkeypatch.setattr(pack_index, "CACHE_BUSY_TIMEOUT", 0.5)


def test_a_long_loose_listing_in_one_process_does_not_lock_out_another(
    tmp_path: Path, short_busy_timeout: None
) -> None:
    storage = MemoryStorage()
    path = tmp_path / "shared.sqlite"
    backup = IndexCache(path, storage, PlainSealer())  # the backup's process
    other = IndexCache(path, storage, PlainSealer())  # `check` or a second backup
    listing_started = threading.Event()
    finish_listing = threading.Event()

    def slow_listing() -> object:
        yield secrets.token_hex(32)
        listing_started.set()
        finish_listing.wait(10)  # a listing of chunks/ on S3 takes minutes
        yield secrets.token_hex(32)

    lister = threading.Thread(target=backup.replace_loose, args=(slow_listing(),))
    lister.start()
    try:
        assert listing_started.wait(5)
        write_index_objects(storage, [_fake_pack(5)], PlainSealer(), NAMER.name)
        started = time.monotonic()
        assert other.sync() == (1, 0)  # raised sqlite3.OperationalError before the fix
        assert time.monotonic() - started < 5
    finally:
        finish_listing.set()
        lister.join()
    assert backup.chunk_count() == 5


def test_a_cache_another_process_keeps_locked_falls_back_to_a_private_one(
    tmp_path: Path, short_busy_timeout: None, caplog: pytest.LogCaptureFixture
) -> None:
    storage = MemoryStorage()
    path = tmp_path / "shared.sqlite"
    IndexCache(path, storage, PlainSealer()).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # a process stopped (SIGSTOP) inside a write
    try:
        pack = _fake_pack(4)
        write_index_objects(storage, [pack], PlainSealer(), NAMER.name)
        cache = IndexCache(path, storage, PlainSealer())
        assert cache.sync() == (1, 0)
        assert all(cache.contains(e.chunk_id) for e in pack.entries)
        cache.replace_loose([secrets.token_hex(32)])
        assert "index cache" in caplog.text
    finally:
        holder.rollback()
        holder.close()


@pytest.mark.parametrize("damage", ["read-only file", "truncated", "garbage inside"])
def test_a_cache_file_that_cannot_be_written_or_is_damaged_is_not_fatal(
    tmp_path: Path, damage: str
) -> None:
    storage = MemoryStorage()
    path = tmp_path / "c.sqlite"
    packs = [_fake_pack(300) for _ in range(3)]
    write_index_objects(storage, packs[:1], PlainSealer(), NAMER.name)
    first = IndexCache(path, storage, PlainSealer())
    first.sync()
    first.close()
    size = path.stat().st_size
    if damage == "read-only file":
        path.chmod(0o400)
    elif damage == "truncated":
        with open(path, "r+b") as file:
            file.truncate(size // 2)
    else:
        data = bytearray(path.read_bytes())
        for at in range(size // 3, size, 997):
            data[at] ^= 0x55
        path.write_bytes(bytes(data))
    write_index_objects(storage, packs[1:], PlainSealer(), NAMER.name)
    cache = IndexCache(path, storage, PlainSealer())
    cache.sync()
    assert all(cache.contains(e.chunk_id) for p in packs for e in p.entries)
    assert cache.chunk_count() == 900
    assert {p for p, _, _ in cache.packs()} == {p.pack_id for p in packs}


def test_cache_dir_that_is_a_file_or_unwritable_uses_a_temporary_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    monkeypatch.setenv("STRONGROOM_CACHE_DIR", str(a_file))
    path = pack_index.cache_path("r" * 16)
    assert not str(path).startswith(str(a_file))
    monkeypatch.setenv("STRONGROOM_CACHE_DIR", str(tmp_path / "does" / "not" / "exist"))
    assert pack_index.cache_path("r" * 16).parent == tmp_path / "does/not/exist" / ("r" * 16)
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        monkeypatch.setenv("STRONGROOM_CACHE_DIR", str(locked))
        assert not str(pack_index.cache_path("r" * 16)).startswith(str(locked))


def test_index_objects_superseding_each_other_in_a_cycle_all_count(tmp_path: Path) -> None:
    storage = MemoryStorage()
    packs = [_fake_pack(3) for _ in range(2)]
    a = write_index_objects(storage, packs[:1], PlainSealer(), NAMER.name, ["0" * 64])[0]
    b = write_index_objects(storage, packs[1:], PlainSealer(), NAMER.name, [a])[0]
    # a names an id that is not b; now one naming b that lists a's pack again: a cycle
    c = write_index_objects(storage, packs[:1], PlainSealer(), NAMER.name, [b, a])[0]
    cache = IndexCache(tmp_path / "c.sqlite", storage, PlainSealer())
    cache.sync()
    assert cache.index_ids() == {a, b, c} == list_index_ids(storage)
    assert all(cache.contains(e.chunk_id) for p in packs for e in p.entries)
    assert cache.superseded_ids() >= {a, b}
    assert IndexObject  # (imported for later cases)


# --- prune must not trust the cache with anything it deletes -----------------------------
def _repo(tmp_path: Path, cache: str = "cache") -> Repository:
    os.environ[CACHE_ENV] = str(tmp_path / cache)
    return Repository.open(STORES[tmp_path], KeySource(key_file=tmp_path / "k"))


STORES: dict[Path, MemoryStorage] = {}


@pytest.fixture()
def scene(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Repository, list[Manifest]]:
    """Two targets and a shrunk one in one repository: Shop's first backup forgotten, so
    its pack is mostly garbage (tests/services/test_prune_packs.py's scene)."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    storage = MemoryStorage()
    STORES[tmp_path] = storage
    Repository.init(storage, key_file=tmp_path / "k", chunker=SMALL_CHUNKS)
    repo = _repo(tmp_path)
    _, kept, second, _ = _scene(repo, tmp_path)
    return repo, [kept, second]


def _all_restore(repo: Repository, manifests: list[Manifest]) -> None:
    for manifest in manifests:
        assert verify_backup(repo, manifest, record=False).ok, manifest.backup_id
    assert check_repository(repo, read_data=True).ok


def _lie(path: Path, sql: str) -> None:
    db = sqlite3.connect(path)
    with db:
        db.execute(sql)
    db.close()


@pytest.mark.parametrize(
    "lie",
    [
        # rows lost: the second half of every pack's blobs
        "DELETE FROM chunks WHERE position >= (SELECT COUNT(*) FROM chunks c2 "
        "WHERE c2.pack_num = chunks.pack_num) / 2",
        # rows moved: every chunk said to be in the first pack listed
        "UPDATE OR IGNORE chunks SET pack_num = (SELECT MIN(num) FROM packs)",
        # a whole pack forgotten (its index object still says it is cached)
        "DELETE FROM packs WHERE num = (SELECT MAX(num) FROM packs)",
    ],
    ids=["rows-lost", "rows-moved", "pack-forgotten"],
)
def test_prune_with_a_cache_that_lies_loses_nothing(
    scene: tuple[Repository, list[Manifest]], tmp_path: Path, lie: str
) -> None:
    repo, kept = scene
    path = repo.chunks.index.path
    repo.chunks.index.close()
    _lie(path, lie)
    liar = _repo(tmp_path)  # a new process on the lying cache
    prune(liar)
    fresh = _repo(tmp_path, "cache-fresh")  # another machine: no cache
    _all_restore(fresh, kept)
    again = prune(fresh)
    assert again.packs_note is None
    _all_restore(_repo(tmp_path, "cache-third"), kept)


def _flip_pack(repo: Repository, pack_id: str, at: int) -> None:
    key = pack_key_name(pack_id)
    data = bytearray(repo.storage.get(key))
    data[at % len(data)] ^= 0x01
    repo.storage.put(key, bytes(data))


@pytest.mark.parametrize("at", [100, -20], ids=["key-stanza", "header"])
def test_index_rebuild_keeps_the_listing_of_a_pack_whose_own_header_does_not_read(
    scene: tuple[Repository, list[Manifest]], tmp_path: Path, at: int
) -> None:
    """A flipped byte in a pack's key stanza or header: the index still holds the pack
    key and entries, so every blob reads. `index rebuild` cannot read that pack; it
    must not throw away the only listing of it (the old index objects)."""
    repo, kept = scene
    victim = sorted(list_pack_ids(repo.storage))[0]
    _flip_pack(repo, victim, at)
    for manifest in kept:
        assert verify_backup(repo, manifest, record=False).ok
    report = rebuild_index(repo, wait=0)
    assert report.skipped == [] and report.packs == len(set(list_pack_ids(repo.storage)))
    fresh = _repo(tmp_path, "cache-after-rebuild")
    for manifest in kept:
        assert verify_backup(fresh, manifest, record=False).ok, "rebuild lost the pack key"
    prune(fresh)
    assert victim in set(list_pack_ids(repo.storage)) or all(
        verify_backup(fresh, m, record=False).ok for m in kept
    )
    for manifest in kept:
        assert verify_backup(_repo(tmp_path, "cache-3"), manifest, record=False).ok


def test_a_backup_after_a_pack_was_lost_writes_its_chunks_again(
    scene: tuple[Repository, list[Manifest]], tmp_path: Path
) -> None:
    """The cache (and the index) still list a pack that is gone (lost, deleted by hand):
    a new backup of the same data must not point at it, or it is born broken."""
    from strongroom.engines.sqlite import SqliteEngine
    from strongroom.services.backup import run_backup

    repo, kept = scene
    other = kept[0]  # OtherDb, unchanged since
    for pack_id in {_pack_of(repo, c) for c in other.unique_chunk_ids}:
        repo.storage.delete(pack_key_name(pack_id))
    again = _repo(tmp_path)  # the next backup's process: same (now lying) cache
    manifest = run_backup(again, SqliteEngine(str(tmp_path / "Other.db")), target="OtherDb")
    assert verify_backup(_repo(tmp_path, "cache-fresh"), manifest.manifest, record=False).ok


def _pack_of(repo: Repository, chunk_id: str) -> str:
    return repo.chunks.index.locations(chunk_id)[0].pack_id


@pytest.mark.parametrize("attack", ["duplicated", "cycle", "damaged-copy", "deleted-all"])
def test_index_objects_duplicated_cyclic_or_gone_then_prune_and_rebuild(
    scene: tuple[Repository, list[Manifest]], tmp_path: Path, attack: str
) -> None:
    repo, kept = scene
    storage = repo.storage
    sealer = repo.keyring.sealer(for_reading=True)
    ids = sorted(list_index_ids(storage))
    if attack == "duplicated":  # the same bytes under a second name
        storage.put(index_key("ee" * 32), storage.get(index_key(ids[0])))
    elif attack == "cycle":  # each names the next as superseded, the last the first
        objects = [read_index_object(storage, i, sealer) for i in ids]
        for index_id in ids:
            storage.delete(index_key(index_id))
        new_ids = [secrets.token_hex(32) for _ in ids]
        for n, obj in enumerate(objects):
            data = encode_index(IndexObject(obj.packs, (new_ids[(n + 1) % len(ids)],)), sealer)
            storage.put(index_key(new_ids[n]), data)
    elif attack == "damaged-copy":  # a damaged extra object beside the good ones
        storage.put(index_key("dd" * 32), storage.get(index_key(ids[0]))[:-40])
    else:
        for index_id in ids:
            storage.delete(index_key(index_id))
    fresh = _repo(tmp_path, f"cache-{attack}")
    report = prune(fresh)
    # an index object's bytes must hash to its name: a copy under another name and
    # objects renamed to form a cycle (content-named objects cannot form one) are damage,
    # as a damaged copy is: prune leaves packs alone and points to index rebuild
    if attack in ("duplicated", "cycle", "damaged-copy", "deleted-all"):
        assert report.packs_note and "index rebuild" in report.packs_note
        assert len(set(list_pack_ids(storage))) >= 3
        rebuild_index(fresh, wait=0)
        prune(fresh)
    _all_restore(_repo(tmp_path, f"cache-{attack}-2"), kept)
    after = _repo(tmp_path, f"cache-{attack}-3")
    ids_after = list_index_ids(storage)
    assert all(
        not set(read_index_object(storage, i, sealer).supersedes) & ids_after for i in ids_after
    )
    assert prune(after).packs_deleted == 0


def _chattr(flag: str, *paths: Path) -> bool:
    import subprocess

    done = subprocess.run(["chattr", flag, *map(str, paths)], capture_output=True, check=False)
    return done.returncode == 0


@pytest.mark.parametrize("what", ["file", "folder", "both"])
def test_an_immutable_cache_file_or_folder_as_if_another_users(
    tmp_path: Path, what: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Tests run as root, which writes read-only files; ``chattr +i`` stops root too, as
    a cache owned by another user stops that user."""
    storage = MemoryStorage()
    folder = tmp_path / "cache" / "repo-id"
    folder.mkdir(parents=True)
    path = folder / "index.sqlite"
    packs = [_fake_pack(20) for _ in range(2)]
    write_index_objects(storage, packs[:1], PlainSealer(), NAMER.name)
    first = IndexCache(path, storage, PlainSealer())
    first.sync()
    first.close()
    write_index_objects(storage, packs[1:], PlainSealer(), NAMER.name)
    locked = {"file": [path], "folder": [folder], "both": [path, folder]}[what]
    if not _chattr("+i", *locked):
        pytest.skip("chattr +i is not available here")
    try:
        cache = IndexCache(path, storage, PlainSealer())
        cache.sync()
        cache.replace_loose([secrets.token_hex(32)])
        assert all(cache.contains(e.chunk_id) for p in packs for e in p.entries)
        assert all(cache.known(e.chunk_id) is False for e in packs[0].entries)  # no packs/
        cache.close()
    finally:
        _chattr("-i", *locked)


def _damage_pack(repo: Repository, pack_id: str, how: str, tmp_path: Path) -> None:
    key = pack_key_name(pack_id)
    data = bytearray(repo.storage.get(key))
    if how == "truncated":
        del data[-3000:]
    elif how == "trailer-length":
        data[-6] ^= 0x10
    elif how == "trailer-magic":
        data[-1] ^= 0x01
    elif how == "header":
        data[-20] ^= 0x01
    elif how == "key-stanza":
        data[100] ^= 0x01
    elif how == "blob":
        data[len(data) // 2] ^= 0x01
    elif how == "foreign":  # another repository's pack (another key) under this name
        other = MemoryStorage()
        Repository.init(other, key_file=tmp_path / "other.k", chunker=SMALL_CHUNKS)
        foreign = Repository.open(other, KeySource(key_file=tmp_path / "other.k"))
        session = foreign.chunks.pack_writer()
        blob = os.urandom(5000)
        session.store(foreign.chunks.name(blob), blob)
        session.flush()
        (name,) = list_pack_ids(other)
        data = bytearray(other.get(pack_key_name(name)))
    repo.storage.put(key, bytes(data))


PACK_DAMAGE = {  # how -> whether the backups still verify (the index holds what was hit)
    "truncated": False,
    "trailer-length": True,
    "trailer-magic": True,
    "header": True,
    "key-stanza": True,
    "blob": False,
    "foreign": False,
}


@pytest.mark.parametrize("how", list(PACK_DAMAGE))
def test_a_damaged_pack_is_named_by_check_and_kept_by_prune(
    scene: tuple[Repository, list[Manifest]], tmp_path: Path, how: str
) -> None:
    from strongroom.errors import IntegrityError

    repo, kept = scene
    other = kept[0]  # OtherDb: its pack is all live
    (victim,) = {_pack_of(repo, c) for c in other.unique_chunk_ids}
    _damage_pack(repo, victim, how, tmp_path)
    fresh = _repo(tmp_path, "cache-fresh")
    result = check_repository(fresh, read_data=True)
    assert not result.ok
    assert victim in result.problems[0].message or any(
        e.chunk_id in result.problems[0].message for e in fresh.chunks.index.pack_entries(victim)
    ), result.problems[0].message
    prune(fresh)
    assert victim in set(list_pack_ids(repo.storage)), "prune deleted a pack with live chunks"
    verified = verify_backup(_repo(tmp_path, "cache-2"), other, record=False)
    assert verified.ok == PACK_DAMAGE[how], verified
    assert verify_backup(_repo(tmp_path, "cache-3"), kept[1], record=False).ok
    if not verified.ok:  # the chunk it cannot read fails cleanly, naming it
        reader = _repo(tmp_path, "cache-4")
        failures = []
        for chunk_id in sorted(other.unique_chunk_ids):
            try:
                reader.chunks.load(chunk_id)
            except IntegrityError as exc:
                failures.append(exc.message)
        assert failures and all(re.search(r"chunk [0-9a-f]{64}", m) for m in failures)


def test_a_reader_on_a_lying_cache_still_reads_a_whole_repository(
    scene: tuple[Repository, list[Manifest]], tmp_path: Path
) -> None:
    repo, kept = scene
    path = repo.chunks.index.path
    repo.chunks.index.close()
    _lie(path, "UPDATE OR IGNORE chunks SET pack_num = (SELECT MIN(num) FROM packs)")
    reader = _repo(tmp_path)
    for manifest in kept:  # the first read that fails rebuilds a private cache
        assert verify_backup(reader, manifest, record=False).ok
    assert not path.exists()  # the lying file is removed: the next run rebuilds it
    again = _repo(tmp_path)
    assert all(verify_backup(again, m, record=False).ok for m in kept)
    assert again.chunks.index.path.exists()


class ListingMissesAPack(MemoryStorage):
    """A store whose listing of ``packs/`` silently leaves one key out."""

    hidden = ""

    def list(self, prefix: str):  # type: ignore[no-untyped-def]
        return (k for k in super().list(prefix) if not (self.hidden and k.endswith(self.hidden)))


def test_index_rebuild_with_a_listing_that_misses_a_pack_keeps_it(tmp_path: Path) -> None:
    from strongroom.engines.sqlite import SqliteEngine
    from strongroom.services.backup import run_backup
    from tests.helpers import make_sqlite_db

    storage = ListingMissesAPack()
    STORES[tmp_path] = storage
    os.environ[CACHE_ENV] = str(tmp_path / "cache")
    Repository.init(storage, key_file=tmp_path / "k", chunker=SMALL_CHUNKS)
    repo = _repo(tmp_path)
    db = make_sqlite_db(tmp_path / "a.db", users=800, orders=2000)
    manifest = run_backup(repo, SqliteEngine(str(db)), target="A").manifest
    (victim,) = {_pack_of(repo, c) for c in manifest.unique_chunk_ids}
    _flip_pack(repo, victim, 100)  # and its key stanza is damaged: the index holds the key
    storage.hidden = victim
    rebuild_index(_repo(tmp_path, "c2"), wait=0)
    storage.hidden = ""
    assert verify_backup(_repo(tmp_path, "c3"), manifest, record=False).ok
