"""Prune with packs (docs/design.md "Prune with packs"): which packs to delete, which to
repack, and doing it so that a prune killed at any step leaves every referenced chunk
readable.

**Plan** (:func:`plan_packs`, under prune's exclusive lock, after the index cache is
synced): every pack the index lists and storage holds is looked at twice, one pack at a
time from the SQLite cache (``IndexCache.pack_entries``), never the whole index in memory:

1. its referenced share (blob bytes of referenced chunks / blob bytes), counting a chunk in
   every pack that holds it;
2. in order of that share (fullest first), the chunks it holds that no fuller pack already
   claimed: a chunk stored twice (two backups that wrote it at once, a prune killed after
   its new index) is kept once, in the fullest pack. Claimed ids are removed from the
   caller's ``referenced`` set (so the set is consumed: what is left are referenced chunks
   that no pack holds, i.e. loose or missing). A pack with nothing live is deleted, one
   below ``REPACK_THRESHOLD`` of live blob bytes is repacked, the rest stay.

Memory: besides prune's set of referenced ids (a Python ``str`` per referenced chunk,
about 150 bytes each with the set's slot: 5 GB for 33 million chunks, a 1 TB repository
at 32 KiB average chunks; that set predates packs), the plan holds one small tuple per
pack (65 000 for 1 TB of 16 MiB packs) and the live positions of the packs to repack
(4 bytes per live chunk, ``array('I')``). Executing holds one old pack (16 MiB), the pack
being written (16 MiB) and the entries of at most ``INDEX_MAX_PACKS`` packs.

**Execute** (:func:`run_pack_plan`), each step durable before the next:

1. repack: read each pack whole, open and verify (decrypt, decompress, re-hash) every
   live blob, append its zstd frame (not recompressed) to new packs; a pack with a blob
   that fails verification is kept as it is (``check --read-data`` names it);
2. ``sync``; write new index objects listing every surviving pack (kept + new), each with
   ``supersedes`` naming every index object the plan saw; ``sync``;
3. delete those old index objects;
4. delete the packs with nothing live, the repacked ones, and the packs no index listed
   (leftovers of killed backups and prunes).

Killed before 2 is durable: the old index and old packs are intact (new packs are
unlisted, step 4 of the next prune deletes them). Killed after: a chunk may be listed
twice, and readers take the first copy whose pack exists. A later prune sees index
objects named in a ``supersedes`` (or old and new copies of chunks) and rewrites the
whole index from the union of every index object it finds, then deletes them all, so an
index set a killed prune left half-written never loses a pack.

Another live exclusive lock (a second prune) stops the pack work: a prune that plans
from an index written before the other one's new index would see the other's new packs
as listed by no index and delete them. Loose chunks are still pruned.

Test hook: ``$STRONGROOM_TEST_KILL_AT`` naming a :data:`KILL_POINTS` step SIGKILLs the
process there (as ``engines/swap_journal.kill_point`` does for swaps).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import tempfile
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import zstandard

from strongroom.errors import ChunkDamaged, ObjectNotFound
from strongroom.pipeline.encryption import Sealer
from strongroom.repository.chunks import list_pack_ids
from strongroom.repository.locks import EXCLUSIVE, LockObserver, RepositoryLock
from strongroom.repository.pack_index import (
    CACHE_FILE,
    INDEX_MAX_PACKS,
    ChunkLocation,
    IndexCache,
    IndexDamaged,
    IndexedPack,
    cache_path,
    index_key,
    list_index_ids,
    read_index_object,
    write_index_objects,
)
from strongroom.repository.packs import (
    ENTRY,
    PACK_TARGET_SIZE,
    PackDamaged,
    PackWriter,
    encode_entries,
    open_blob,
    pack_key_name,
    read_pack,
)
from strongroom.repository.repository import Repository

log = logging.getLogger("strongroom.audit")

REPACK_THRESHOLD = 0.5  # a pack with less live blob bytes than this share is rewritten
TEST_KILL_ENV = "STRONGROOM_TEST_KILL_AT"
KILL_POINTS = (
    "prune-repack-pack-written",  # the first new pack is stored (no index lists it)
    "prune-index-written",  # the new index objects are durable, nothing deleted yet
    "prune-old-index-deleted",  # the old index objects are gone, every old pack is there
    "prune-pack-deleted",  # the first old pack is deleted
)
_MAX_CHUNK = 64 * 1024 * 1024  # decompressed size a chunk may claim (its frame says)
_NO_INDEX: IndexCache = object.__new__(IndexCache)  # a PackPlan made without one


def kill_point(step: str) -> None:
    """TEST HOOK: SIGKILL this process when ``$STRONGROOM_TEST_KILL_AT`` is ``step``."""
    if os.environ.get(TEST_KILL_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class PackPlan:
    """What prune does with packs. Sizes are stored bytes (whole pack objects)."""

    index_ids: tuple[str, ...] = ()  # every index object seen (all superseded by a rewrite)
    superseded: int = 0  # of them, named in some other object's ``supersedes``
    keep: list[str] = field(default_factory=list)
    delete: dict[str, int] = field(default_factory=dict)  # nothing live: pack id -> size
    repack: dict[str, tuple[int, array[int]]] = field(default_factory=dict)  # live positions
    orphans: dict[str, int] = field(default_factory=dict)  # stored, listed by no index
    missing: list[str] = field(default_factory=list)  # listed, not stored: dropped
    # listed, not stored, holding chunks of retained backups: the listing is kept (it is
    # the only record of the pack's key and entries, should the pack come back)
    missing_live: list[str] = field(default_factory=list)
    live_bytes_repacked: int = 0  # blob bytes the repack rewrites
    packed_chunks: int = 0  # distinct chunk ids the index lists
    claimed: int = 0  # referenced chunks found in a pack that stays or is repacked
    other_prune: bool = False  # another exclusive lock is live: no pack work
    unreadable_index: list[str] = field(default_factory=list)  # listed, do not read
    unaccounted: int = 0  # referenced chunks in no pack that stays and not loose
    garbage_kept: int = 0  # blobs nothing references inside packs that stay (>= threshold)
    garbage_kept_bytes: int = 0
    # the private index cache the plan was made from (``close`` removes it)
    index: IndexCache = field(default_factory=lambda: _NO_INDEX, repr=False)

    def close(self) -> None:
        """Remove the private index cache."""
        if self.index is not _NO_INDEX:
            self.index.close()
            shutil.rmtree(self.index.path.parent, ignore_errors=True)

    @property
    def note(self) -> str | None:
        """Why pack work is skipped or limited (``None``: it is not)."""
        if self.other_prune:
            return "another prune is running: packs left for the next prune"
        if self.unreadable_index:
            return (
                f"{len(self.unreadable_index)} index object(s) do not read (first: "
                f"{self.unreadable_index[0]}): packs and index left alone; run `strongroom "
                "check`, then `strongroom index rebuild`"
            )
        if self.unaccounted and self.orphans:
            return (
                f"{self.unaccounted} referenced chunk(s) are in no indexed pack and not loose, "
                f"and {len(self.orphans)} pack(s) no index lists may hold them: packs and "
                "index left alone; run `strongroom index rebuild`"
            )
        return None

    @property
    def skip(self) -> bool:
        """No pack or index work at all (another prune; an index object that does not
        read, or referenced chunks missing beside packs no index lists: those packs
        would be deleted as leftovers)."""
        return (
            self.other_prune
            or bool(self.unreadable_index)
            or bool(self.unaccounted and self.orphans)
        )

    @property
    def rewrite(self) -> bool:
        """Whether the index must be rewritten (something it lists goes away, or it
        holds leftovers of a killed prune)."""
        return bool(self.delete or self.repack or self.missing or self.superseded)

    @property
    def bytes_to_free(self) -> int:
        """Stored bytes the plan frees: deleted, orphan and repacked packs, less the live
        blobs rewritten (an estimate: new packs add a header and key stanza)."""
        repacked = sum(size for size, _ in self.repack.values())
        return (
            sum(self.delete.values())
            + sum(self.orphans.values())
            + repacked
            - self.live_bytes_repacked
        )


@dataclass
class PackOutcome:
    """What :func:`run_pack_plan` did."""

    packs_deleted: int = 0  # nothing live, repacked, or orphan
    packs_repacked: int = 0
    packs_written: int = 0
    index_deleted: int = 0
    index_written: int = 0
    bytes_deleted: int = 0  # sizes of the packs deleted
    bytes_written: int = 0  # sizes of the new packs
    kept_damaged: list[str] = field(default_factory=list)  # repack skipped: a blob failed


def _remove_dead_prune_caches(parent: Path) -> None:
    """Remove the private caches of prunes killed before they removed them (``prune-<pid>-*``
    folders whose process is gone): each is as big as the index cache."""
    for folder in parent.glob("prune-*-*"):
        pid = folder.name.split("-")[1]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            continue  # alive (another user's)


def _private_index(repo: Repository) -> IndexCache:
    """A new index cache of this prune only, synced from ``index/``: prune decides what
    to delete from what the index objects say, never from the shared cache (another
    process, or a copy of this repository with the same id, may change that file
    meanwhile; a damaged one may lie). Made beside the shared cache (same disk)."""
    prefix = f"prune-{os.getpid()}-"
    try:
        parent = cache_path(repo.config.repository_id).parent
        _remove_dead_prune_caches(parent)
        folder = tempfile.mkdtemp(prefix=prefix, dir=parent)
    except OSError:
        folder = tempfile.mkdtemp(prefix=f"strongroom-{prefix}")
    index = IndexCache(
        Path(folder) / CACHE_FILE,
        repo.storage,
        repo.keyring.sealer(for_reading=True),
        repo.chunks.name,
    )
    try:
        index.sync()
    except BaseException:
        index.close()
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return index


def other_prune_running(repo: Repository, lock: RepositoryLock | None) -> bool:
    """Whether an exclusive lock other than ``lock`` is live (no stale lock removed)."""
    own = None if lock is None else lock.key
    live = LockObserver().live_locks(repo.storage, own, remove_stale=False)
    return any(item.kind == EXCLUSIVE for item in live)


def plan_packs(
    repo: Repository, referenced: set[str], loose: set[str], lock: RepositoryLock | None
) -> PackPlan:
    """The plan (module docstring). Consumes ``referenced``: the ids found in a pack that
    stays or is repacked are removed from it; ``loose`` are the version 1 chunk ids
    listed. Syncs the index cache first."""
    storage = repo.storage
    index = _private_index(repo)
    plan = PackPlan(index=index)
    plan.other_prune = lock is not None and other_prune_running(repo, lock)
    index_ids = index.index_ids()
    plan.index_ids = tuple(sorted(index_ids))
    # an index object the cache could not load (damaged): the packs it lists would look
    # listed by no index and be deleted; only `index rebuild` may replace it
    for index_id in sorted(list_index_ids(storage) - index_ids):
        try:
            read_index_object(
                storage, index_id, repo.keyring.sealer(for_reading=True), repo.chunks.name
            )
        except IndexDamaged:
            plan.unreadable_index.append(index_key(index_id))
        except ObjectNotFound:
            continue  # deleted since (a dry run beside another prune)
    plan.superseded = len(index.superseded_ids() & index_ids)
    plan.packed_chunks = index.chunk_count()
    sizes: dict[str, int] = {}
    for pack_id, _, size in index.packs():
        sizes.setdefault(pack_id, size)
    listed = set(list_pack_ids(storage))
    for pack_id in sorted(listed - sizes.keys()):
        try:
            plan.orphans[pack_id] = storage.size(pack_key_name(pack_id))
        except ObjectNotFound:
            continue
    # a listing that left a pack out must not make prune drop it from the index
    plan.missing = [
        p for p in sorted(sizes) if p not in listed and not storage.exists(pack_key_name(p))
    ]
    gone = set(plan.missing)
    present = [p for p in sorted(sizes) if p not in gone]
    share: dict[str, float] = {}
    for pack_id in present:  # pass 1: referenced share, duplicates counted everywhere
        entries = index.pack_entries(pack_id)
        blobs = sum(e.length for e in entries)
        used = sum(e.length for e in entries if e.chunk_id in referenced)
        share[pack_id] = used / blobs if blobs else 0.0
    for pack_id in sorted(present, key=lambda p: (-share[p], p)):  # pass 2: claim
        entries = index.pack_entries(pack_id)
        blobs = sum(e.length for e in entries)
        live = array("I")
        live_bytes = 0
        for entry in entries:
            if entry.chunk_id in referenced:
                referenced.discard(entry.chunk_id)
                live.append(entry.position)
                live_bytes += entry.length
        plan.claimed += len(live)
        if not live:
            plan.delete[pack_id] = sizes[pack_id]
        elif live_bytes < REPACK_THRESHOLD * blobs:
            plan.repack[pack_id] = (sizes[pack_id], live)
            plan.live_bytes_repacked += live_bytes
        else:
            plan.keep.append(pack_id)
            plan.garbage_kept += len(entries) - len(live)
            plan.garbage_kept_bytes += blobs - live_bytes
    for pack_id in list(plan.missing):
        if any(
            e.chunk_id in referenced and e.chunk_id not in loose
            for e in index.pack_entries(pack_id)
        ):
            plan.missing.remove(pack_id)
            plan.missing_live.append(pack_id)
            plan.keep.append(pack_id)
    if plan.missing_live:
        log.warning(
            "prune: %d pack(s) the index lists are missing and hold chunks of retained "
            "backups (first: %s): their listing is kept; run `strongroom check`",
            len(plan.missing_live),
            plan.missing_live[0],
        )
    plan.unaccounted = len(referenced - loose)
    if plan.note:
        log.warning("prune: %s", plan.note)
    return plan


def _verified_frames(
    repo: Repository, index: IndexCache, pack_id: str, live: Iterable[int]
) -> list[tuple[str, bytes, int]]:
    """``(chunk id, zstd frame, plaintext length)`` of the live blobs of one pack, each
    opened and re-hashed; raises ``ChunkDamaged``/``PackDamaged``/``ObjectNotFound``."""
    data = repo.storage.get(pack_key_name(pack_id))
    by_position = {e.position: e for e in index.pack_entries(pack_id)}
    decompressor = zstandard.ZstdDecompressor()
    out = []
    for position in live:
        entry = by_position[position]
        if entry.offset + entry.length > len(data):
            raise PackDamaged(f"pack {pack_id} is damaged: shorter than its index says")
        blob = data[entry.offset : entry.offset + entry.length]
        frame = open_blob(entry.key, blob, entry.chunk_id, entry.position)
        try:
            plaintext = decompressor.decompress(frame, max_output_size=_MAX_CHUNK)
        except zstandard.ZstdError as exc:
            raise ChunkDamaged(
                f"chunk {entry.chunk_id} is damaged: it does not decompress"
            ) from exc
        if len(plaintext) != entry.raw_length or repo.chunks.name(plaintext) != entry.chunk_id:
            raise ChunkDamaged(f"chunk {entry.chunk_id} is damaged: its hash does not match")
        out.append((entry.chunk_id, frame, entry.raw_length))
    return out


def _indexed(
    repo: Repository, index: IndexCache, sealer: Sealer, pack_id: str, size: int
) -> IndexedPack:
    """A surviving pack as the new index lists it: its entries re-encoded from the cache,
    or, when the cache's positions are not 0..n-1 (a chunk twice in one pack: the cache
    keeps one row per chunk and pack), read from the pack's own header."""
    entries: list[ChunkLocation] = index.pack_entries(pack_id)
    if [e.position for e in entries] == list(range(len(entries))):
        chunks = b"".join(
            ENTRY.pack(bytes.fromhex(e.chunk_id), e.offset, e.length, e.raw_length) for e in entries
        )
        return IndexedPack(pack_id, size, entries[0].key if entries else None, chunks)
    contents = read_pack(repo.storage.get(pack_key_name(pack_id)), sealer, f"pack {pack_id}")
    return IndexedPack(pack_id, size, contents.key, encode_entries(contents.entries))


class _IndexWriter:
    """Writes the new index objects, ``INDEX_MAX_PACKS`` packs each, as packs come."""

    def __init__(self, repo: Repository, sealer: Sealer, supersedes: tuple[str, ...]) -> None:
        self._repo = repo
        self._sealer = sealer
        self._supersedes = supersedes
        self._pending: list[IndexedPack] = []
        self.written: list[str] = []

    def add(self, pack: IndexedPack) -> None:
        self._pending.append(pack)
        if len(self._pending) >= INDEX_MAX_PACKS:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        repo = self._repo
        ids = write_index_objects(
            repo.storage, self._pending, self._sealer, repo.chunks.name, self._supersedes
        )
        self.written += ids
        self._pending = []


def run_pack_plan(
    repo: Repository, plan: PackPlan, lock: RepositoryLock, target_size: int = PACK_TARGET_SIZE
) -> PackOutcome:
    """Carry out ``plan`` (module docstring, steps 1-4) under ``lock`` (checked before
    every write and delete: ``LockLost`` stops it, leaving a state a later prune
    finishes)."""
    storage = repo.storage
    outcome = PackOutcome()
    if plan.skip:
        return outcome
    sealer = repo.keyring.sealer(for_reading=True)
    doomed: dict[str, int] = dict(plan.orphans)
    if plan.rewrite:
        index = _IndexWriter(repo, sealer, plan.index_ids)
        writer: PackWriter | None = None

        def seal(current: PackWriter) -> None:
            sealed = current.seal()
            lock.ensure_held()
            storage.put(pack_key_name(sealed.pack_id), sealed.data)
            outcome.packs_written += 1
            outcome.bytes_written += len(sealed.data)
            if outcome.packs_written == 1:
                storage.sync()
                kill_point(KILL_POINTS[0])
            index.add(
                IndexedPack(
                    sealed.pack_id, len(sealed.data), sealed.key, encode_entries(sealed.entries)
                )
            )

        survivors = list(plan.keep)
        for pack_id, (size, live) in sorted(plan.repack.items()):
            lock.ensure_held()
            try:
                frames = _verified_frames(repo, plan.index, pack_id, live)
            except (ChunkDamaged, PackDamaged, ObjectNotFound) as exc:
                log.warning("prune keeps pack %s as it is: %s", pack_id, exc)
                outcome.kept_damaged.append(pack_id)
                survivors.append(pack_id)
                continue
            for chunk_id, frame, raw_length in frames:
                if writer is None:
                    writer = PackWriter(sealer, repo.chunks.name)
                writer.add(chunk_id, frame, raw_length)
                if writer.size >= target_size:
                    seal(writer)
                    writer = None
            doomed[pack_id] = size
            outcome.packs_repacked += 1
        if writer is not None and writer.count:
            seal(writer)
        storage.sync()  # new packs durable before an index lists them
        sizes = {p: s for p, _, s in plan.index.packs()}
        for pack_id in sorted(survivors):
            lock.ensure_held()
            index.add(_indexed(repo, plan.index, sealer, pack_id, sizes[pack_id]))
        lock.ensure_held()
        index.flush()
        storage.sync()
        outcome.index_written = len(index.written)
        kill_point(KILL_POINTS[1])
        for index_id in plan.index_ids:
            lock.ensure_held()
            storage.delete(index_key(index_id))
            outcome.index_deleted += 1
        storage.sync()
        kill_point(KILL_POINTS[2])
        doomed.update(plan.delete)
    for pack_id, size in sorted(doomed.items()):
        lock.ensure_held()
        storage.delete(pack_key_name(pack_id))
        outcome.packs_deleted += 1
        outcome.bytes_deleted += size
        if outcome.packs_deleted == 1:
            kill_point(KILL_POINTS[3])
    storage.sync()
    repo.chunks.refresh_index()
    return outcome


def describe(plan: PackPlan, outcome: PackOutcome | None) -> str:
    """One log line about the pack work (done, or planned when ``outcome`` is None)."""
    if plan.skip:
        return plan.note or ""
    if outcome is None:
        return (
            f"would delete {len(plan.delete)} packs with nothing referenced and "
            f"{len(plan.orphans)} listed by no index, repack {len(plan.repack)}; "
            f"about {plan.bytes_to_free} bytes"
        )
    return (
        f"deleted {outcome.packs_deleted} packs ({outcome.bytes_deleted} bytes), repacked "
        f"{outcome.packs_repacked} into {outcome.packs_written} ({outcome.bytes_written} bytes); "
        f"index: {outcome.index_written} written, {outcome.index_deleted} deleted"
    )


__all__ = [
    "KILL_POINTS",
    "REPACK_THRESHOLD",
    "PackOutcome",
    "PackPlan",
    "describe",
    "kill_point",
    "plan_packs",
    "run_pack_plan",
]
