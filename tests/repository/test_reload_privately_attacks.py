"""Attacks on ``ChunkStore.load``'s second look (b3f883c): a chunk that reads damaged or
missing through the shared index cache is looked up once more in a private cache rebuilt
from ``index/`` (``IndexCache.reload_privately``, once per process); the shared file is
removed only when that second look read the chunk. Cases: caches that lie in other ways
(pack ids swapped, offsets shifted, keys swapped), real damage (reported, not read in a
loop, one rebuild per process however many chunks and threads fail), a lie and real
damage in one process, many threads failing at once, and two Repository objects on one
cache file while one of them removes it."""

from __future__ import annotations

import logging
import secrets
import sqlite3
import threading
from pathlib import Path

import pytest

from strongroom.errors import ChunkDamaged, ChunkMissing
from strongroom.repository.chunks import READ_ATTEMPTS
from strongroom.repository.manifest import Manifest
from strongroom.repository.pack_index import IndexCache
from strongroom.repository.packs import pack_key_name
from strongroom.repository.repository import Repository
from strongroom.services.check import check_repository
from strongroom.services.verify import verify_backup
from tests.repository.test_packs_attacks import (  # noqa: F401 (the fixture)
    _lie,
    _repo,
    scene,
)

LIED = "placed chunks wrongly"


@pytest.fixture()
def reloads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The path of every cache ``reload_privately`` rebuilt (every process of the test)."""
    seen: list[str] = []
    real = IndexCache.reload_privately

    def counting(self: IndexCache, reason: str) -> bool:
        rebuilt = real(self, reason)
        if rebuilt:  # False: this process uses a private cache already
            seen.append(str(self.path))
        return rebuilt

    monkeypatch.setattr(IndexCache, "reload_privately", counting)
    return seen


def _ids(manifests: list[Manifest]) -> list[str]:
    return sorted({c for m in manifests for c in m.unique_chunk_ids})


def _damage_blobs(repo: Repository, chunk_ids: list[str]) -> None:
    """Flip one byte in the middle of each chunk's blob in its pack (real damage)."""
    for chunk_id in chunk_ids:
        loc = repo.chunks.index.locations(chunk_id)[0]
        key = pack_key_name(loc.pack_id)
        data = bytearray(repo.storage.get(key))
        data[loc.offset + loc.length // 2] ^= 0x01
        repo.storage.put(key, bytes(data))


def _swap_two_pack_ids(path: Path) -> None:
    db = sqlite3.connect(path)
    with db:
        (a, pa), (b, pb) = db.execute("SELECT num, pack_id FROM packs ORDER BY num LIMIT 2")
        db.execute("UPDATE packs SET pack_id = ? WHERE num = ?", (secrets.token_bytes(32), a))
        db.execute("UPDATE packs SET pack_id = ? WHERE num = ?", (pa, b))
        db.execute("UPDATE packs SET pack_id = ? WHERE num = ?", (pb, a))
    db.close()


LIES = {
    "pack-ids-swapped": _swap_two_pack_ids,
    "offsets-shifted": lambda p: _lie(p, "UPDATE chunks SET offset = offset + 3"),
    "keys-swapped": lambda p: _lie(
        p, "UPDATE packs SET key = (SELECT key FROM packs p2 WHERE p2.num != packs.num LIMIT 1)"
    ),
    "lengths-cut": lambda p: _lie(p, "UPDATE chunks SET length = length - 1"),
}


@pytest.mark.parametrize("lie", list(LIES))
def test_a_cache_that_lies_in_other_ways_is_read_through_once_and_removed(
    scene: tuple[Repository, list[Manifest]],  # noqa: F811
    tmp_path: Path,
    reloads: list[str],
    caplog: pytest.LogCaptureFixture,
    lie: str,
) -> None:
    repo, kept = scene
    path = repo.chunks.index.path
    repo.chunks.index.close()
    LIES[lie](path)
    reader = _repo(tmp_path)
    with caplog.at_level(logging.WARNING, logger="strongroom.repository"):
        for manifest in kept:
            assert verify_backup(reader, manifest, record=False).ok
        assert check_repository(reader, read_data=True).ok
    assert reloads == [str(path)]  # once, for the whole process
    assert sum(LIED in r.getMessage() for r in caplog.records) == 1
    assert not path.exists()
    again = _repo(tmp_path)
    assert all(verify_backup(again, m, record=False).ok for m in kept)
    assert reloads == [str(path)]  # the rebuilt file tells the truth: no second look


def test_real_damage_is_reported_read_a_bounded_number_of_times_and_rebuilds_once(
    scene: tuple[Repository, list[Manifest]],  # noqa: F811
    tmp_path: Path,
    reloads: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Three damaged blobs, read by eight threads at once, each twice: every read raises
    ChunkDamaged naming its chunk; one rebuild for the process; no blob is read more than
    2 x READ_ATTEMPTS times per load; the (truthful) shared file is kept, no 'lied'."""
    repo, kept = scene
    victims = _ids(kept)[:3]
    _damage_blobs(repo, victims)
    reader = _repo(tmp_path)
    path = reader.chunks.index.path  # made before the threads (Repository.chunks: no lock)
    ranged: list[str] = []
    real_get_range = reader.storage.get_range

    def counting_get_range(key: str, offset: int, length: int) -> bytes:
        ranged.append(key)
        return real_get_range(key, offset, length)

    reader.storage.get_range = counting_get_range  # type: ignore[method-assign]
    start = threading.Barrier(8, timeout=30)
    outcomes: list[BaseException | bytes] = []
    lock = threading.Lock()

    def read(n: int) -> None:
        start.wait()
        for chunk_id in (victims[n % 3], victims[(n + 1) % 3]):
            try:
                got: BaseException | bytes = reader.chunks.load(chunk_id)
            except BaseException as exc:  # reported below
                got = exc
            with lock:
                outcomes.append(got)

    with caplog.at_level(logging.WARNING, logger="strongroom.repository"):
        threads = [threading.Thread(target=read, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert len(outcomes) == 16
    assert all(isinstance(o, ChunkDamaged) for o in outcomes), outcomes
    assert all(any(v in o.message for v in victims) for o in outcomes)  # type: ignore[union-attr]
    assert reloads == [str(path)]
    assert len(ranged) <= 16 * 2 * READ_ATTEMPTS, len(ranged)
    assert path.exists()
    assert not any(LIED in r.getMessage() for r in caplog.records)
    result = check_repository(_repo(tmp_path), read_data=True)
    assert not result.ok
    named = " ".join(p.message for p in result.problems)
    assert all(v in named for v in victims), named
    assert len(reloads) <= 2  # the check: at most its own one rebuild


def test_a_lie_and_real_damage_in_one_process_the_damage_alone_is_reported(
    scene: tuple[Repository, list[Manifest]],  # noqa: F811
    tmp_path: Path,
    reloads: list[str],
) -> None:
    """Whichever comes first (the lie, or the damage), a reader reports exactly the
    chunks that are damaged, as a reader on a fresh cache does, with one rebuild."""
    repo, kept = scene
    victims = _ids(kept)[-2:]
    _damage_blobs(repo, victims)
    path = repo.chunks.index.path
    repo.chunks.index.close()
    _lie(path, "UPDATE OR IGNORE chunks SET pack_num = (SELECT MIN(num) FROM packs)")

    def failures(reader: Repository, order: list[str]) -> set[str]:
        failed = set()
        for chunk_id in order:
            try:
                reader.chunks.load(chunk_id)
            except (ChunkDamaged, ChunkMissing):
                failed.add(chunk_id)
        return failed

    ids = _ids(kept)
    truth = failures(_repo(tmp_path, "cache-fresh"), ids)
    assert truth == set(victims)
    assert len(reloads) == 1  # real damage too costs one rebuild (same place: reported)
    damage_first = failures(_repo(tmp_path), [*victims, *ids])
    assert damage_first == set(victims)
    assert len(reloads) == 2
    _lie(path, "UPDATE OR IGNORE chunks SET pack_num = (SELECT MIN(num) FROM packs)")
    lie_first = failures(_repo(tmp_path), list(reversed(ids)))
    assert lie_first == set(victims)
    assert len(reloads) == 3


def test_many_threads_on_a_lying_cache_read_everything_with_one_rebuild(
    scene: tuple[Repository, list[Manifest]],  # noqa: F811
    tmp_path: Path,
    reloads: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    repo, kept = scene
    path = repo.chunks.index.path
    repo.chunks.index.close()
    _lie(path, "DELETE FROM chunks WHERE position % 2 = 0")
    reader = _repo(tmp_path)
    _ = reader.chunks  # made before the threads: Repository.chunks is not locked
    ids = _ids(kept)
    start = threading.Barrier(8, timeout=30)
    errors: list[BaseException] = []

    def read(n: int) -> None:
        start.wait()
        for chunk_id in ids[n::8]:
            try:
                reader.chunks.load(chunk_id)
            except BaseException as exc:  # reported below
                errors.append(exc)

    with caplog.at_level(logging.WARNING, logger="strongroom.repository"):
        threads = [threading.Thread(target=read, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert errors == []
    assert reloads == [str(path)]
    assert sum(LIED in r.getMessage() for r in caplog.records) == 1


def test_a_second_repository_on_the_same_file_reads_on_while_the_first_removes_it(
    scene: tuple[Repository, list[Manifest]],  # noqa: F811
    tmp_path: Path,
    reloads: list[str],
) -> None:
    """Two Repository objects (a verify and a restore at once) opened on one lying file:
    the first to read removes it; the second, its connection still on the removed file,
    reads everything (it rebuilds its own private copy), a third made afterwards on a
    new file reads everything, and the second's close does not break the third's file."""
    repo, kept = scene
    path = repo.chunks.index.path
    repo.chunks.index.close()
    _lie(path, "UPDATE OR IGNORE chunks SET pack_num = (SELECT MIN(num) FROM packs)")
    first, second = _repo(tmp_path), _repo(tmp_path)
    assert second.chunks.index.path == path  # its connection open on the lying file
    assert verify_backup(first, kept[0], record=False).ok
    assert not path.exists()
    assert verify_backup(second, kept[1], record=False).ok
    assert verify_backup(second, kept[0], record=False).ok
    third = _repo(tmp_path)
    assert all(verify_backup(third, m, record=False).ok for m in kept)
    second.chunks.index.close()
    first.chunks.index.close()
    fourth = _repo(tmp_path)
    assert all(verify_backup(fourth, m, record=False).ok for m in kept)
    assert sorted(fourth.chunks.index.chunk_ids()) == sorted(third.chunks.index.chunk_ids())
    assert len(reloads) == 2  # first and second, once each; third and fourth: truthful


# --- the shared file removed under other processes' open connections --------------------

_WORKER = """
import json, sys
from pathlib import Path
from strongroom.pipeline.encryption import PlainSealer
from strongroom.repository.pack_index import IndexCache
from strongroom.storage.local import LocalStorage
storage, path = LocalStorage(Path(sys.argv[1])), Path(sys.argv[2])
cache = IndexCache(path, storage, PlainSealer())
for line in sys.stdin:
    cmd = line.strip()
    if cmd == "sync":
        out = list(cache.sync())
    elif cmd == "count":
        out = [len(cache.index_ids()), sum(1 for _ in cache.chunk_ids())]
    elif cmd == "remove":
        out = cache.remove_shared()
    elif cmd == "check":
        out = [cache._private, cache._db.execute("PRAGMA integrity_check").fetchall()]
    elif cmd == "close":
        out = cache.close()
    print(json.dumps(out), flush=True)
"""


def test_the_shared_file_removed_under_other_processes_connections_stays_consistent(
    tmp_path: Path,
) -> None:
    """What ``remove_shared`` does while other processes hold the file open: B has it open
    when A removes it; C makes a new file and writes it; B closes (SQLite could delete
    C's -wal and -shm by name when closing the last connection to the removed file); D
    opens C's file; C and D both write; then every process, and a fresh one, sees every
    index object, and SQLite finds the file whole."""
    import json
    import subprocess
    import sys

    from strongroom.pipeline.encryption import PlainSealer
    from strongroom.repository.pack_index import write_index_objects
    from strongroom.storage.local import LocalStorage
    from tests.repository.test_packs_attacks import NAMER, _fake_pack

    storage = LocalStorage(tmp_path / "repo")
    path = tmp_path / "cache" / "index.sqlite"
    written = 0

    def add_objects(n: int) -> None:
        nonlocal written
        for _ in range(n):
            write_index_objects(storage, [_fake_pack(200)], PlainSealer(), NAMER.name)
        written += n

    def start() -> subprocess.Popen[str]:
        args = [sys.executable, "-c", _WORKER, str(tmp_path / "repo"), str(path)]
        return subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(proc: subprocess.Popen[str], cmd: str) -> object:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(cmd + "\n")
        proc.stdin.flush()
        return json.loads(proc.stdout.readline())

    add_objects(5)
    b = start()
    assert ask(b, "sync") == [5, 0]
    a = start()
    ask(a, "remove")
    assert not path.exists()
    c = start()
    assert ask(c, "sync") == [5, 0]
    add_objects(3)
    assert ask(c, "sync") == [3, 0]
    ask(b, "close")
    d = start()
    ask(d, "sync")
    for _ in range(2):
        add_objects(3)
        ask(c, "sync")
        ask(d, "sync")
    for proc in (c, d):
        assert ask(proc, "count") == [written, written * 200]
        assert ask(proc, "check") == [False, [["ok"]]]
    ask(c, "close")
    ask(d, "close")
    e = start()
    assert ask(e, "check") == [False, [["ok"]]]
    assert ask(e, "count") == [written, written * 200]
    assert ask(e, "sync") == [0, 0]
    for proc in (a, b, c, d, e):
        assert proc.stdin is not None
        proc.stdin.close()
        assert proc.wait(10) == 0


# --- a chunk stored twice whose first copy is damaged ------------------------------------


def test_a_chunk_whose_first_copy_is_damaged_reads_from_its_second_copy(
    scene: tuple[Repository, list[Manifest]],  # noqa: F811
    tmp_path: Path,
) -> None:
    """A chunk listed twice (two backups at once both stored it, or a prune killed after
    its new index) whose first copy rots: the second copy is good, so every read, verify
    and restore gets it; only a chunk with no good copy anywhere is damaged. Before, the
    first copy's ChunkDamaged was raised at once (only ChunkMissing moved on to the next
    copy), and the rebuilt cache placed it in the same two packs: reported damaged."""
    from strongroom.repository.pack_session import PackSession

    repo, kept = scene
    ids = _ids(kept)
    twice = ids[:5]
    plain = {c: repo.chunks.load(c) for c in twice}
    session = PackSession(repo.chunks, 1 << 20)
    for chunk_id in twice:
        session.store(chunk_id, plain[chunk_id])
    session.flush()
    assert all(len(repo.chunks.index.locations(c)) == 2 for c in twice)
    _damage_blobs(repo, twice)  # the first copy of each (the older pack)
    once = ids[-1]  # a chunk with a single copy, damaged too
    _damage_blobs(repo, [once])
    reader = _repo(tmp_path, "cache-reader")
    for chunk_id in twice:
        assert reader.chunks.load(chunk_id) == plain[chunk_id]
    with pytest.raises(ChunkDamaged, match=once):
        reader.chunks.load(once)
    survivors = [m for m in kept if once not in m.unique_chunk_ids]
    assert survivors and all(
        verify_backup(_repo(tmp_path, "cache-v"), m, record=False).ok for m in survivors
    )
    # check reads packs whole: it names the damaged copies too (the bytes are damaged)
    result = check_repository(_repo(tmp_path, "cache-c"), read_data=True)
    assert [p.message for p in result.problems if once in p.message]


def test_a_backup_runs_on_while_a_verify_beside_it_removes_the_lying_cache_file(
    scene: tuple[Repository, list[Manifest]],  # noqa: F811
    tmp_path: Path,
) -> None:
    """One cache file, a lie in it (rows moved), a backup and a verify at once: the
    verify's first failed read removes the file while the backup's connection still
    writes to it (its index objects go into the removed file). The backup completes and
    verifies from a fresh cache; the next process rebuilds the file and sees the new
    backup's chunks; prune and check --read-data are clean; the old backups verify."""
    from strongroom.engines.sqlite import SqliteEngine
    from strongroom.services.backup import run_backup
    from strongroom.services.prune import prune
    from tests.helpers import make_sqlite_db

    repo, kept = scene
    path = repo.chunks.index.path
    repo.chunks.index.close()
    _lie(path, "UPDATE OR IGNORE chunks SET pack_num = (SELECT MIN(num) FROM packs)")
    db = make_sqlite_db(tmp_path / "fresh.db", users=1500, orders=4000, seed=11)
    backer, verifier = _repo(tmp_path), _repo(tmp_path)
    index = backer.chunks.index
    real_add = index.add
    verified: list[bool] = []

    def add(*args, **kwargs):  # type: ignore[no-untyped-def]
        real_add(*args, **kwargs)
        if not verified:  # the first index object of the backup is in the file: now
            verified.append(verify_backup(verifier, kept[0], record=False).ok)
            assert not path.exists()

    index.add = add  # type: ignore[method-assign]
    made = run_backup(backer, SqliteEngine(str(db))).manifest
    assert verified == [True]
    assert made.new_chunk_count > 0
    backer.chunks.index.close()
    verifier.chunks.index.close()
    fresh = _repo(tmp_path)
    assert verify_backup(fresh, made, record=False).ok
    assert all(fresh.chunks.index.contains(c) for c in made.unique_chunk_ids)
    prune(fresh)
    assert check_repository(_repo(tmp_path, "cache-c"), read_data=True).ok
    assert all(verify_backup(_repo(tmp_path), m, record=False).ok for m in [*kept, made])


# --- check --read-data on a lying cache ----------------------------------------------------


@pytest.mark.parametrize("lie", ["offsets-shifted", "pack-ids-swapped", "keys-swapped"])
@pytest.mark.parametrize("damage", [False, True], ids=["clean", "one-blob-damaged"])
def test_check_read_data_on_a_lying_cache_reports_only_real_damage(
    scene: tuple[Repository, list[Manifest]],  # noqa: F811
    tmp_path: Path,
    reloads: list[str],
    caplog: pytest.LogCaptureFixture,
    lie: str,
    damage: bool,
) -> None:
    """check --read-data reads packs whole with the entries the cache lists, not through
    ``ChunkStore.load``: before, a lying cache made it report every blob it misplaced
    as damaged and the packs' headers as not matching the index (exit 7 on a sound
    repository, 48 problems for one pack, every run until the file was deleted)."""
    repo, kept = scene
    victim = _ids(kept)[3]
    if damage:
        _damage_blobs(repo, [victim])
    path = repo.chunks.index.path
    repo.chunks.index.close()
    LIES[lie](path)
    with caplog.at_level(logging.WARNING):
        result = check_repository(_repo(tmp_path), read_data=True)
    subjects = sorted({p.subject for p in result.problems})
    assert subjects == ([victim] if damage else []), [p.message for p in result.problems]
    assert len(reloads) == 1
    lied = sum(LIED in r.getMessage() for r in caplog.records)
    assert lied == 1
    assert not path.exists()
    again = check_repository(_repo(tmp_path), read_data=True)
    assert sorted({p.subject for p in again.problems}) == subjects


@pytest.mark.parametrize("read_data", [False, True], ids=["check", "check-read-data"])
@pytest.mark.parametrize(
    "lie",
    [
        "DELETE FROM chunks WHERE position % 2 = 0",  # rows lost
        "DELETE FROM packs WHERE num = (SELECT MAX(num) FROM packs)",  # a pack forgotten
    ],
    ids=["rows-lost", "pack-forgotten"],
)
def test_check_on_a_cache_that_lost_rows_reports_no_missing_chunk(
    scene: tuple[Repository, list[Manifest]],  # noqa: F811
    tmp_path: Path,
    reloads: list[str],
    caplog: pytest.LogCaptureFixture,
    lie: str,
    read_data: bool,
) -> None:
    """Before, plain check (no --read-data) on a cache that lost rows said every chunk
    it lost was 'missing (no index object lists it and it is not loose)': exit 7 on a
    sound repository (28 problems here), every run until the file was deleted."""
    repo, _kept = scene
    path = repo.chunks.index.path
    repo.chunks.index.close()
    _lie(path, lie)
    with caplog.at_level(logging.WARNING):
        result = check_repository(_repo(tmp_path), read_data=read_data)
    assert result.problems == [], [p.message for p in result.problems]
    assert len(reloads) == 1
    assert sum(LIED in r.getMessage() for r in caplog.records) == 1
    assert not path.exists()


def test_check_of_a_pack_really_deleted_reports_it_with_one_rebuild_and_keeps_the_file(
    scene: tuple[Repository, list[Manifest]],  # noqa: F811
    tmp_path: Path,
    reloads: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    repo, kept = scene
    victim = _ids(kept)[0]
    pack_id = repo.chunks.index.locations(victim)[0].pack_id
    repo.storage.delete(pack_key_name(pack_id))
    path = repo.chunks.index.path
    with caplog.at_level(logging.WARNING):
        result = check_repository(_repo(tmp_path), read_data=False)
    assert victim in {p.subject for p in result.problems}
    assert all(p.kind == "missing" for p in result.problems)
    assert len(reloads) == 1  # one second look, which found the same: missing indeed
    assert not any(LIED in r.getMessage() for r in caplog.records)
    assert path.exists()
