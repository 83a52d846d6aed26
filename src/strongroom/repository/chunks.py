"""The chunk store: chunks named by their keyed hash, stored in packs (format version 2)
or, in repositories written before packs, as loose objects ``chunks/<xx>/<id>``.

API for backups (``services/backup.py``):

- :meth:`ChunkStore.prepare_known` once, after the shared lock: syncs the index cache
  and caches the ``chunks/`` listing; then :meth:`ChunkStore.is_known` per chunk (an
  SQLite lookup, no in-memory set);
- :meth:`ChunkStore.pack_writer` -> :class:`PackSession`: ``store`` (thread-safe, from
  the backup's workers), then ``flush`` (seal the last pack, wait for every upload,
  write the index object(s), sync) before the manifest, or ``abort`` on failure (no
  index is written; the packs already uploaded are left for prune).

API for readers (restore, verify, check, prune, stats, web):

- :meth:`ChunkStore.load` (one chunk, verified: index -> ranged read, else loose);
- :meth:`ChunkStore.locate` (``ChunkLocation`` or ``None``) and :meth:`ChunkStore.load_run`
  (several consecutive blobs of one pack in one ranged read: ``Repository.read_stream``);
- :meth:`ChunkStore.exists` (in an existing pack, or loose), :meth:`ChunkStore.stored_size`
  (blob length, or loose object size), :meth:`ChunkStore.known_ids` (every id, loose and
  packed, as a set: memory grows with the repository; for check/stats/web as before);
- :attr:`ChunkStore.index` (the ``IndexCache``: ``packs()``, ``pack_entries()``,
  ``index_ids()`` ... for prune/check with packs);
- :meth:`ChunkStore.store` writes one *loose* chunk (version 1 layout; tests and tools).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import zstandard
from blake3 import blake3

from strongroom.errors import ChunkDamaged, ChunkMissing, ObjectNotFound
from strongroom.pipeline.compression import ChunkCompressor
from strongroom.pipeline.encryption import DecryptionFailed, Sealer
from strongroom.pipeline.hashing import ChunkNamer
from strongroom.repository.layout import CHUNKS_PREFIX, chunk_id_of_key, chunk_key, is_chunk_id
from strongroom.repository.pack_index import (
    INDEX_PREFIX,
    ChunkLocation,
    IndexCache,
)
from strongroom.repository.pack_session import UPLOAD_WORKERS as UPLOAD_WORKERS  # re-exported
from strongroom.repository.pack_session import PackSession as PackSession  # re-exported
from strongroom.repository.packs import (
    PACK_TARGET_SIZE,
    PACKS_PREFIX,
    open_blob,
    pack_key_name,
)
from strongroom.storage.base import ShortRead, Storage

log = logging.getLogger("strongroom.repository")

MAX_RUN_BYTES = 4 * 1024 * 1024  # one ranged read of blobs of one pack, at most
MAX_GAP_BYTES = 512 * 1024  # stored bytes between two wanted blobs read (and dropped)
READ_GROUP_BYTES = 4 * 1024 * 1024  # stored bytes of the ids planned together
# a loose chunk's stored size is not known before it is read: counted as this much (the
# version 1 default chunk averages 512 KiB), so read-ahead stays bounded for them too
LOOSE_ESTIMATE_BYTES = 1024 * 1024
GONE_MEMORY = 60.0  # seconds a pack found gone is not read again by this process
# Stored bytes in flight ahead of a restore's consumer. Decompressed they are ~3x that
# (the benchmark's data): 16 MiB held 55.7 MB of plaintext at a restore's peak (traced,
# 196 MB dump, 2026-12-01), a third of its RSS; 8 MiB halves it.
READ_AHEAD_BYTES = 8 * 1024 * 1024
READ_ATTEMPTS = 3  # reads of a blob that fails its tag or hash before it is damage
RESYNC_AFTER = 2.0  # seconds: a lookup miss re-reads index/ at most this often


class ChunkStore:
    """Writes and reads chunks; every read is checked against the chunk's name.

    ``index`` builds the ``IndexCache`` (called once, lazily); ``before_first_pack`` is
    called once before the first pack is uploaded (the repository bumps its config to
    version 2 there).
    """

    def __init__(
        self,
        storage: Storage,
        namer: ChunkNamer,
        compressor: ChunkCompressor,
        sealer: Sealer,
        index: Callable[[], IndexCache] | None = None,
        before_first_pack: Callable[[], None] = lambda: None,
    ) -> None:
        self._storage = storage
        self._namer = namer
        self._compressor = compressor
        self._sealer = sealer
        self._index_factory = index
        self._index: IndexCache | None = None
        self._index_lock = threading.Lock()
        # a read that fails on the shared cache is tried once more on a private cache
        # rebuilt from index/ (``load``): how often this process did that (at most once)
        self._renew_lock = threading.Lock()
        self._index_generation = 0
        self._index_renewals = 0
        self._cache_lied = False
        self._synced_at = 0.0
        self._before_first_pack = before_first_pack
        self._first_pack_done = False
        self._first_pack_lock = threading.Lock()
        # packs this process found gone (a prune since it read index/): not read again,
        # and the index is synced once per pack found gone, not once per chunk of it
        self._gone: dict[str, float] = {}  # pack id -> time.monotonic() found gone
        self._gone_events = 0
        self._gone_at_sync = 0
        self._gone_lock = threading.Lock()

    def name(self, plaintext: bytes) -> str:
        return self._namer.name(plaintext)

    def hasher(self) -> blake3:
        """The chunk-naming keyed hash, fed in pieces (``ChunkNamer.hasher``)."""
        return self._namer.hasher()

    # --- the index --------------------------------------------------------------------
    @property
    def index(self) -> IndexCache:
        """The local index cache, synced with ``index/`` on first use."""
        with self._index_lock:
            if self._index is None:
                if self._index_factory is None:
                    raise RuntimeError("this chunk store has no index cache")
                index = self._index_factory()
                index.sync()
                self._synced_at = time.monotonic()
                self._index = index
            return self._index

    def refresh_index(self) -> None:
        """Sync the index cache with ``index/`` now (another process wrote or pruned);
        the first use of ``index`` syncs it already."""
        with self._gone_lock:
            gone_seen = self._gone_events
        fresh = self._index is None
        index = self.index
        if not fresh:
            index.sync()
            self._synced_at = time.monotonic()
        with self._gone_lock:
            self._gone_at_sync = max(self._gone_at_sync, gone_seen)

    def _known_gone(self, pack_id: str) -> bool:
        """Whether this process found ``pack_id`` gone in the last ``GONE_MEMORY``
        seconds (a long-lived process, the web service, tries it again after that)."""
        with self._gone_lock:
            found = self._gone.get(pack_id)
            return found is not None and time.monotonic() - found < GONE_MEMORY

    def _mark_gone(self, pack_id: str) -> None:
        with self._gone_lock:
            self._gone[pack_id] = time.monotonic()
            self._gone_events += 1

    def _index_older_than_gone(self) -> bool:
        """Whether a pack was found gone since the index was last synced."""
        with self._gone_lock:
            return self._gone_events > self._gone_at_sync

    def _loose_ids(self) -> list[str]:
        ids = (chunk_id_of_key(key) for key in self._storage.list(CHUNKS_PREFIX))
        return [chunk_id for chunk_id in ids if is_chunk_id(chunk_id)]

    def prepare_known(self) -> None:
        """For a backup, after its shared lock: sync the index and cache the listing of
        loose ``chunks/`` (into SQLite), so that ``is_known`` answers from both."""
        self.refresh_index()
        ids = (chunk_id_of_key(key) for key in self._storage.list(CHUNKS_PREFIX))
        self.index.replace_loose(c for c in ids if is_chunk_id(c))

    def is_known(self, chunk_id: str) -> bool:
        """Whether ``chunk_id`` is stored (index or loose listing of ``prepare_known``)."""
        return self.index.known(chunk_id)

    def known_among(self, chunk_ids: Sequence[str]) -> set[str]:
        """Those of ``chunk_ids`` that ``is_known`` would say are stored (one query per
        few hundred ids: ``IndexCache.known_among``)."""
        return self.index.known_among(chunk_ids)

    def known_ids(self) -> set[str]:
        """The ids of every chunk stored now, loose (``chunks/``) and packed (index);
        objects under ``chunks/`` whose name is not a chunk id are not chunks. A set:
        memory grows with the repository (prefer ``is_known``/``exists``)."""
        self.refresh_index()
        ids = set(self._loose_ids())
        ids.update(self.index.chunk_ids())
        return ids

    def stored_ids(self) -> set[str]:
        """The ids of every chunk that can be read now: loose ones (``chunks/``) and
        those the index places in a pack that a listing of ``packs/`` finds. A set (as
        ``check`` and ``stats`` use it); memory grows with the repository."""
        self.refresh_index()
        ids = set(self._loose_ids())
        ids.update(self.index.chunk_ids_in(list_pack_ids(self._storage)))
        return ids

    def locate(self, chunk_id: str) -> ChunkLocation | None:
        """Where the index puts ``chunk_id`` (its first copy), ``None`` when it does not
        list it (a loose chunk, or missing). A miss re-syncs the cache at most every
        ``RESYNC_AFTER`` seconds, so an index written after this process looked is seen."""
        found = self.index.locations(chunk_id)
        if not found and time.monotonic() - self._synced_at > RESYNC_AFTER:
            self.refresh_index()
            found = self.index.locations(chunk_id)
        return found[0] if found else None

    def exists(self, chunk_id: str) -> bool:
        """Whether the chunk can be read: a pack the index names for it exists, or its
        loose object does (``IntegrityError`` for a malformed id)."""
        key = chunk_key(chunk_id)  # checks the id
        for location in self.index.locations(chunk_id):
            if self._storage.exists(pack_key_name(location.pack_id)):
                return True
        return self._storage.exists(key)

    def stored_size(self, chunk_id: str) -> int:
        """Bytes the chunk takes in storage: its blob's length in a pack, else its loose
        object's size; 0 when it is in neither."""
        location = self.index.locations(chunk_id)
        if location:
            return location[0].length
        try:
            return self._storage.size(chunk_key(chunk_id))
        except ObjectNotFound:
            return 0

    # --- writing ------------------------------------------------------------------------
    def store(self, chunk_id: str, plaintext: bytes, *, fast: bool = False) -> int:
        """Compress, encrypt and upload one chunk as a *loose* object (the version 1
        layout, ``chunks/<xx>/<id>``); return its stored size in bytes. Backups use
        ``pack_writer`` instead; this remains for tests and tools."""
        blob = self._sealer.seal(self._compressor.compress(plaintext, fast=fast))
        self._storage.put(chunk_key(chunk_id), blob)
        return len(blob)

    def pack_writer(self, target_size: int = PACK_TARGET_SIZE) -> PackSession:
        """A new session that writes chunks into packs (see ``pack_session.py``)."""
        return PackSession(self, target_size)

    @property
    def storage(self) -> Storage:
        return self._storage

    @property
    def sealer(self) -> Sealer:
        return self._sealer

    @property
    def compressor(self) -> ChunkCompressor:
        return self._compressor

    def first_pack(self) -> None:
        """Called before a pack session stores its first pack (``before_first_pack``,
        once per store: the repository's move to format version 2)."""
        with self._first_pack_lock:
            if not self._first_pack_done:
                self._before_first_pack()
                self._first_pack_done = True

    # --- reading ------------------------------------------------------------------------
    def load(self, chunk_id: str) -> bytes:
        """Read, decrypt, decompress and check one chunk: through the index (one ranged
        read of its pack), else as a loose object. Raises ``ChunkMissing`` (in neither
        place) or ``ChunkDamaged`` naming the chunk.

        Before either is raised, the chunk is read once more through an index cache
        rebuilt from ``index/`` (once per process: ``IndexCache.reload_privately``): the
        shared cache file may be wrong without SQLite noticing. When that read succeeds,
        the shared file lied: it is deleted (the next run rebuilds it) and said so."""
        generation = self._index_generation
        try:
            return self._load(chunk_id)
        except (ChunkMissing, ChunkDamaged) as exc:
            if not self._index_renewed(generation, chunk_id, exc):
                raise
            first_failure = exc.message
            plaintext = self._load(chunk_id)
        with self._index_lock:
            lied, self._cache_lied = not self._cache_lied, True
        if lied:
            log.warning(
                "the index cache %s placed chunks wrongly (%s); read through a copy rebuilt "
                "from index/, and removed it: the next run rebuilds it",
                self.index.path,
                first_failure,
            )
            self.index.remove_shared()
        return plaintext

    def _index_renewed(
        self, generation: int, chunk_id: str, exc: ChunkMissing | ChunkDamaged
    ) -> bool:
        """Whether a read of ``chunk_id`` that failed with ``exc`` on index generation
        ``generation`` should be tried again: the index was rebuilt since (by another
        thread), or is rebuilt now (the first failure of this process) and places the
        chunk elsewhere (if not, the damage is real: it is not read again)."""
        with self._renew_lock:
            if self._index_generation != generation:
                return True
            if self._index_renewals or self._index is None:
                return False
            self._index_renewals += 1
            before = self._index.locations(chunk_id)
            if not self._index.reload_privately(exc.message):
                return False
            self._index_generation += 1
            return self._index.locations(chunk_id) != before

    def _load(self, chunk_id: str) -> bytes:
        key = chunk_key(chunk_id)  # checks the id
        location = self.locate(chunk_id)
        gone: list[str] = []  # packs the index names for it that are not there
        # the first copy that read damaged: raised if no other copy (nor loose) reads
        damaged: ChunkDamaged | None = None
        tried: set[str] = set()  # packs whose copy read damaged: not read again
        if location is not None:
            for attempt in range(2):
                copies = [
                    c
                    for c in self.index.locations(chunk_id)
                    if c.pack_id not in gone and c.pack_id not in tried
                ]
                for copy in copies:
                    if self._known_gone(copy.pack_id):
                        gone.append(copy.pack_id)  # found gone before: not read again
                        continue
                    try:
                        return self.load_run([copy])[0]
                    except ChunkMissing:
                        gone.append(copy.pack_id)  # gone (prune): the next copy, then loose
                        self._mark_gone(copy.pack_id)
                    except ChunkDamaged as exc:  # a chunk stored twice: the next copy
                        tried.add(copy.pack_id)
                        damaged = damaged or exc
                if attempt == 0 and self._index_older_than_gone():
                    # every pack this process knew for it is gone: a prune repacked it
                    # since this process read index/ (restore/verify take no lock); once
                    # per pack found gone, not once per chunk of it
                    self.refresh_index()
        try:
            blob = self._storage.get(key)
        except ObjectNotFound as exc:
            if damaged is not None:
                raise damaged from None
            where = f" (its pack {gone[0]} is gone)" if gone else ""
            raise ChunkMissing(f"chunk {chunk_id} is missing from the repository{where}") from exc
        try:
            frame = self._sealer.open(blob)
        except DecryptionFailed as exc:
            raise ChunkDamaged(f"chunk {chunk_id} is damaged: it does not decrypt") from exc
        return self._checked(chunk_id, frame)

    def load_run(self, run: Sequence[ChunkLocation]) -> list[bytes]:
        """Read blobs that lie back to back in one pack with one ranged read; return each
        chunk's verified plaintext, in order. Raises ``ChunkMissing`` when the pack is
        gone, ``ChunkDamaged`` naming the first chunk that fails ``READ_ATTEMPTS`` times: a
        blob that fails is read again, because a ranged answer has no whole-object checksum or ETag
        to catch a body damaged on the way (the AEAD tag and the hash do, never accept
        it, and reading again tells the wire from the stored bytes)."""
        for attempt in range(1, READ_ATTEMPTS):
            try:
                return self._load_run(run)
            except ChunkDamaged as exc:
                log.info(
                    "%s (read %d of %d); reading it again", exc.message, attempt, READ_ATTEMPTS
                )
        return self._load_run(run)

    def _load_run(self, run: Sequence[ChunkLocation]) -> list[bytes]:
        first, last = run[0], run[-1]
        length = last.offset + last.length - first.offset
        key = pack_key_name(first.pack_id)
        try:
            data = self._storage.get_range(key, first.offset, length)
        except ObjectNotFound as exc:
            raise ChunkMissing(
                f"chunk {first.chunk_id} is missing from the repository (its pack "
                f"{first.pack_id} is gone)"
            ) from exc
        except ShortRead as exc:
            raise ChunkDamaged(
                f"chunk {first.chunk_id} is damaged: its pack {first.pack_id} is shorter "
                "than the index says (truncated)"
            ) from exc
        out = []
        view = memoryview(data)
        for location in run:
            start = location.offset - first.offset
            blob = bytes(view[start : start + location.length])
            frame = open_blob(location.key, blob, location.chunk_id, location.position)
            out.append(self._checked(location.chunk_id, frame))
        return out

    def read_many(self, chunk_ids: Iterable[str], workers: int = 4) -> Generator[bytes, None, None]:
        """Yield the verified plaintext of each chunk of ``chunk_ids``, in order (a
        restore's stream).

        The ids are taken in groups of up to ``READ_GROUP_BYTES`` of stored data; within a
        group the blobs of each pack are read in ranged reads of up to ``MAX_RUN_BYTES``
        that also span gaps of up to ``MAX_GAP_BYTES`` (read and dropped), so a backup
        whose chunks alternate between old and new packs (any backup after churn) costs a
        few reads per pack per group instead of one per change of pack (measured on S3: a
        churned backup's restore made 8,534 GETs per GB, ~117 KB each). ``workers`` reads
        run in parallel, with at most ``READ_AHEAD_BYTES`` of stored data in flight ahead
        of the consumer (one group at least), so memory is bounded. Raises as ``load``
        does, for the first chunk that fails; closing the generator cancels the reads not
        started."""
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sr-read") as pool:
            pending: deque[_ReadGroup] = deque()
            ahead = 0
            try:
                for group in self._groups(chunk_ids):
                    while pending and ahead + group.stored > READ_AHEAD_BYTES:
                        done = pending.popleft()
                        ahead -= done.stored
                        yield from done.results()
                    group.submit(pool, self._read_run)
                    pending.append(group)
                    ahead += group.stored
                while pending:
                    yield from pending.popleft().results()
            finally:
                for group in pending:
                    group.cancel()

    def _groups(self, chunk_ids: Iterable[str]) -> Iterator[_ReadGroup]:
        """``chunk_ids`` (in order) cut into groups of up to ``READ_GROUP_BYTES`` stored."""
        group = _ReadGroup()
        for chunk_id in chunk_ids:
            chunk_key(chunk_id)  # checks the id before any lookup
            group.add(chunk_id, self.locate(chunk_id))
            if group.stored >= READ_GROUP_BYTES:
                yield group
                group = _ReadGroup()
        if group.items:
            yield group

    def _read_run(self, run: list[ChunkLocation] | str) -> list[bytes | Exception]:
        """The plaintexts of one planned read; when the range fails (its pack gone, a blob
        in it damaged or the pack cut), each chunk is read by itself (other copies, or
        loose): the good ones are delivered and each failure is the exception of the
        chunk it belongs to, raised at its place in the stream."""
        if isinstance(run, str):
            return [self.load(run)]
        try:
            return list(self.load_run(run))
        except (ChunkMissing, ChunkDamaged):
            out: list[bytes | Exception] = []
            for location in run:
                try:
                    out.append(self.load(location.chunk_id))
                except (ChunkMissing, ChunkDamaged) as exc:
                    out.append(exc)
            return out

    def _checked(self, chunk_id: str, frame: bytes) -> bytes:
        try:
            plaintext = self._compressor.decompress(frame)
        except zstandard.ZstdError as exc:
            raise ChunkDamaged(f"chunk {chunk_id} is damaged: it does not decompress") from exc
        if self._namer.name(plaintext) != chunk_id:
            raise ChunkDamaged(f"chunk {chunk_id} is damaged: its content does not match its hash")
        return plaintext


def list_pack_ids(storage: Storage) -> Iterator[str]:
    """The ids of the packs stored (one listing of ``packs/``; stray names skipped)."""
    for key in storage.list(PACKS_PREFIX):
        name = key.rsplit("/", 1)[-1]
        if is_chunk_id(name):
            yield name


def has_packs(storage: Storage) -> bool:
    """Whether the repository holds index objects or packs (format version 2 data).
    Without, ``chunks/`` alone says which chunks exist, and no key is needed to know."""
    return any(True for _ in storage.list(INDEX_PREFIX)) or any(
        True for _ in storage.list(PACKS_PREFIX)
    )


class _ReadGroup:
    """Consecutive chunks of a restore's stream planned together: their reads (ranges of
    one pack each, gaps up to ``MAX_GAP_BYTES`` included; a chunk the index does not
    list alone), then their plaintexts in stream order."""

    def __init__(self) -> None:
        self.items: list[ChunkLocation | str] = []
        self.stored = 0
        self._reads: list[tuple[Future[list[bytes | Exception]], list[ChunkLocation] | str]] = []

    def add(self, chunk_id: str, location: ChunkLocation | None) -> None:
        self.items.append(chunk_id if location is None else location)
        self.stored += location.length if location is not None else LOOSE_ESTIMATE_BYTES

    def _ranges(self) -> list[list[ChunkLocation] | str]:
        by_pack: dict[str, dict[int, ChunkLocation]] = {}
        loose: list[list[ChunkLocation] | str] = []
        for item in self.items:
            if isinstance(item, str):
                if item not in loose:
                    loose.append(item)
            else:
                by_pack.setdefault(item.pack_id, {})[item.offset] = item
        ranges: list[list[ChunkLocation] | str] = []
        for blobs in by_pack.values():
            run: list[ChunkLocation] = []
            for location in sorted(blobs.values(), key=lambda b: b.offset):
                if run:
                    end = run[-1].offset + run[-1].length
                    if (
                        location.offset - end > MAX_GAP_BYTES
                        or location.offset + location.length - run[0].offset > MAX_RUN_BYTES
                    ):
                        ranges.append(run)
                        run = []
                run.append(location)
            if run:
                ranges.append(run)
        return ranges + loose

    def submit(
        self,
        pool: ThreadPoolExecutor,
        read: Callable[[list[ChunkLocation] | str], list[bytes | Exception]],
    ) -> None:
        for planned in self._ranges():
            self._reads.append((pool.submit(read, planned), planned))

    def results(self) -> Iterator[bytes]:
        """The plaintexts in stream order; a failed read raises its error at the first
        chunk of the stream it was to give (not in the order the reads were planned)."""
        found: dict[tuple[str, int] | str, bytes | Exception] = {}
        for future, planned in self._reads:
            keys: list[tuple[str, int] | str] = (
                [planned] if isinstance(planned, str) else [(b.pack_id, b.offset) for b in planned]
            )
            try:
                plaintexts: list[bytes | Exception] = list(future.result())
            except Exception as exc:  # raised below, at its chunk in the stream
                plaintexts = [exc] * len(keys)
            found.update(zip(keys, plaintexts, strict=True))
        self._reads = []
        for item in self.items:
            value = found[item if isinstance(item, str) else (item.pack_id, item.offset)]
            if isinstance(value, Exception):
                raise value
            yield value

    def cancel(self) -> None:
        for future, _ in self._reads:
            future.cancel()
