"""One backup's writes into packs, indexed as it goes.

A pack reaching its target size is sealed and uploaded on a pool of ``UPLOAD_WORKERS``
threads. Every ``INDEX_MAX_PACKS`` uploaded packs get their index object at once (storage
synced before and after it), are added to the local index cache as present, and are
reported to ``on_indexed`` with the ids of their chunks -- so a backup need not remember
the chunks it has stored beyond the packs not yet indexed (the backup's claimed set: ~100
bytes per new chunk; at 10 GB of new data that was ~50 MB, held to the end). ``flush``
indexes the rest; ``abort`` writes no more index objects.

An index object written before the backup's manifest names packs no manifest refers to
yet: if the backup fails, they are garbage that ``prune`` removes (under its exclusive
lock), as the packs of a failed backup were before. Meanwhile another backup may
deduplicate against them: they are stored, synced and indexed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Protocol

from strongroom.pipeline.compression import ChunkCompressor
from strongroom.pipeline.encryption import Sealer
from strongroom.repository import index_objects
from strongroom.repository.pack_index import (
    INDEX_MAX_PACKS,
    IndexCache,
    IndexedPack,
    IndexObject,
    write_index_objects,
)
from strongroom.repository.packs import (
    ENTRY,
    PackWriter,
    SealedPack,
    encode_entries,
    pack_key_name,
)
from strongroom.storage.base import Storage

log = logging.getLogger("strongroom.repository")

UPLOAD_WORKERS = 2  # sealed packs uploading at once (design: at most 2 waiting)


class PackTarget(Protocol):
    """What a pack session needs of the chunk store (``ChunkStore`` is one)."""

    @property
    def storage(self) -> Storage: ...

    @property
    def sealer(self) -> Sealer: ...

    @property
    def compressor(self) -> ChunkCompressor: ...

    @property
    def index(self) -> IndexCache: ...

    def name(self, plaintext: bytes) -> str: ...

    def first_pack(self) -> None: ...


class PackSession:
    """One backup's writes into packs. ``store`` may be called from many threads.

    A ``store`` that would leave more than ``UPLOAD_WORKERS`` sealed packs waiting
    blocks, so memory is about ``(UPLOAD_WORKERS + 1) x target_size`` plus 44 bytes per
    new chunk of the packs not yet indexed (at most ``INDEX_MAX_PACKS`` packs' entries).
    ``on_indexed`` (set it before the first ``store``) gets the 32-byte ids of each
    indexed group's chunks, once they are in the cache. ``flush`` ends the session
    successfully, ``abort`` without more index objects.
    """

    def __init__(
        self,
        store: PackTarget,
        target_size: int,
        on_indexed: Callable[[Iterable[bytes]], None] | None = None,
    ) -> None:
        self._store = store
        self._target = target_size
        self.on_indexed = on_indexed
        self._lock = threading.Lock()
        self._indexing = threading.Lock()  # one index object (and cache write) at a time
        self._writer: PackWriter | None = None
        self._pool = ThreadPoolExecutor(max_workers=UPLOAD_WORKERS, thread_name_prefix="sr-pack")
        self._slots = threading.BoundedSemaphore(UPLOAD_WORKERS)
        self._uploads: list[Future[None]] = []
        self._ready: list[IndexedPack] = []  # uploaded, not yet in an index object
        self._index_ids: list[str] = []
        self._stopped = False
        self._failure: BaseException | None = None
        self.packs_written = 0

    def store(self, chunk_id: str, plaintext: bytes, *, fast: bool = False) -> int:
        """Compress one chunk and append it to the open pack; return its stored blob
        size in bytes. Raises the first upload (or indexing) failure of this session."""
        if self._failure is not None:
            raise self._failure
        frame = self._store.compressor.compress(plaintext, fast=fast)
        full: PackWriter | None = None
        with self._lock:
            if self._writer is None:
                self._writer = PackWriter(self._store.sealer, self._store.name)
            stored = self._writer.add(chunk_id, frame, len(plaintext))
            if self._writer.size >= self._target:
                full, self._writer = self._writer, None
        if full is not None:
            self._upload(full.seal())
        return stored

    def _upload(self, sealed: SealedPack) -> None:
        self._slots.acquire()
        try:
            future = self._pool.submit(self._put, sealed)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(self._done)
        with self._lock:
            self._uploads = [f for f in self._uploads if not f.done()]
            self._uploads.append(future)

    def _put(self, sealed: SealedPack) -> None:
        self._store.first_pack()
        self._store.storage.put(pack_key_name(sealed.pack_id), sealed.data)
        log.debug(
            "stored pack %s (%d chunks, %d bytes)",
            sealed.pack_id,
            len(sealed.entries),
            len(sealed.data),
        )
        packed = IndexedPack(
            sealed.pack_id, len(sealed.data), sealed.key, encode_entries(sealed.entries)
        )
        group: list[IndexedPack] = []
        with self._lock:
            self.packs_written += 1
            self._ready.append(packed)
            if len(self._ready) >= INDEX_MAX_PACKS and not self._stopped:
                group, self._ready = self._ready, []
        if group:
            self._index(group)

    def _index(self, group: list[IndexedPack]) -> None:
        """Index ``group``: packs durable, index object stored and durable, then the
        cache (present), then ``on_indexed``."""
        storage = self._store.storage
        with self._indexing:
            storage.sync()  # packs durable before an index names them
            ids = write_index_objects(storage, group, self._store.sealer, self._store.name)
            storage.sync()  # the index durable before the cache (and dedup) counts on it
            index = self._store.index
            per_object = index_objects.INDEX_MAX_PACKS  # how write_index_objects split it
            for start, index_id in enumerate(ids):
                packs = group[start * per_object : (start + 1) * per_object]
                index.add(index_id, IndexObject(tuple(packs)), stored_now=True)
            self._index_ids.extend(ids)
        if self.on_indexed is not None:
            self.on_indexed(
                raw_id for pack in group for raw_id, *_rest in ENTRY.iter_unpack(pack.chunks)
            )

    def _done(self, future: Future[None]) -> None:
        if not future.cancelled() and future.exception() is not None and self._failure is None:
            self._failure = future.exception()
        self._slots.release()

    def flush(self) -> list[str]:
        """Seal the open pack, wait for every upload, write the index object(s) for the
        packs not yet indexed, add them to the cache and sync the storage. Returns the
        ids of every index object this session wrote (none when no chunk was new).
        Raises the first failure."""
        with self._lock:
            last, self._writer = self._writer, None
        try:
            if last is not None and last.count:
                self._upload(last.seal())
            with self._lock:
                uploads = list(self._uploads)
            for future in uploads:
                future.result()
        finally:
            self._pool.shutdown(wait=True)
        if self._failure is not None:
            raise self._failure
        with self._lock:
            rest, self._ready = self._ready, []
        if rest:
            self._index(rest)
        return list(self._index_ids)

    def abort(self) -> None:
        """Stop: drop the open pack, cancel uploads not started, wait for the running
        ones; write no more index objects (uploaded packs no index names stay until
        prune removes them, as do indexed ones no manifest names). A ``KeyboardInterrupt``
        while waiting is raised once the running uploads have ended."""
        with self._lock:
            self._writer = None
            self._stopped = True
            uploads = list(self._uploads)
        for future in uploads:
            future.cancel()
        interrupted: KeyboardInterrupt | None = None
        while True:  # a ^C here must not leave an upload writing (an index object, even)
            try:
                # wait() on the futures, not the pool's Thread.join: on Python 3.11 an
                # interrupted join marks a thread that is still running as stopped
                wait(uploads)
                break
            except KeyboardInterrupt as exc:
                interrupted = exc
        self._pool.shutdown(wait=True, cancel_futures=True)
        if interrupted is not None:
            raise interrupted
