"""The backup use case: dump -> chunk -> name -> skip known -> zstd -> age -> storage."""

from __future__ import annotations

import getpass
import logging
import socket
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from strongroom.engines.base import Engine
from strongroom.pipeline.chunking import iter_chunks
from strongroom.pipeline.hashing import StreamChecksum
from strongroom.repository.ids import new_backup_id, utc_now_iso
from strongroom.repository.manifest import (
    STATUS_COMPLETE,
    ChunkRef,
    Manifest,
    PrivateSection,
    TableRecord,
    seal_private,
)
from strongroom.repository.repository import Repository
from strongroom.services.progress import NoProgress, ProgressSink

log = logging.getLogger("strongroom.backup")

DEFAULT_UPLOAD_WORKERS = 4


@dataclass(frozen=True)
class BackupReport:
    manifest: Manifest
    new_plain_bytes: int

    @property
    def dedup_ratio(self) -> float:
        """Raw bytes read per byte of new (not yet stored) data."""
        return self.manifest.raw_size / max(self.new_plain_bytes, 1)


class _Uploader:
    """Compress, encrypt and store chunks on a thread pool, with bounded chunks in flight."""

    def __init__(self, repo: Repository, workers: int) -> None:
        self._store = repo.chunks
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sr-upload")
        self._slots = threading.BoundedSemaphore(workers * 2)
        self._futures: list[Future[int]] = []
        self._failure: BaseException | None = None

    def submit(self, chunk_id: str, data: bytes) -> None:
        """Queue one chunk; blocks while too many are in flight; raises an earlier failure."""
        self._slots.acquire()
        if self._failure is not None:
            self._slots.release()
            raise self._failure
        future = self._pool.submit(self._store.store, chunk_id, data)
        future.add_done_callback(self._on_done)
        self._futures.append(future)

    def _on_done(self, future: Future[int]) -> None:
        if not future.cancelled() and future.exception() is not None and self._failure is None:
            self._failure = future.exception()
        self._slots.release()

    def drain(self) -> int:
        """Wait for every upload; return the stored bytes, or raise the first failure."""
        wait(self._futures, return_when=FIRST_EXCEPTION)
        if self._failure is not None:
            raise self._failure
        wait(self._futures)
        if self._failure is not None:
            raise self._failure
        return sum(f.result() for f in self._futures)

    def close(self) -> None:
        for future in self._futures:
            future.cancel()
        self._pool.shutdown(wait=True)


def run_backup(
    repo: Repository,
    engine: Engine,
    *,
    target: str | None = None,
    tags: tuple[str, ...] = (),
    progress: ProgressSink | None = None,
    workers: int = DEFAULT_UPLOAD_WORKERS,
) -> BackupReport:
    """Take one backup; the manifest is written only after every chunk is stored."""
    progress = progress or NoProgress()
    engine.check()
    store = repo.chunks
    known = store.known_ids()
    started_at = utc_now_iso()
    clock = time.monotonic()
    backup_id = new_backup_id()
    refs: list[ChunkRef] = []
    scheduled: set[str] = set()
    checksum = StreamChecksum()
    raw_size = 0
    new_plain = 0
    uploader = _Uploader(repo, workers)
    progress.start("backup", engine.estimated_size())
    try:
        with engine.dump() as dump:
            for data in iter_chunks(dump.stream, repo.config.chunker):
                checksum.update(data)
                chunk_id = store.name(data)
                refs.append(ChunkRef(chunk_id, len(data)))
                raw_size += len(data)
                if chunk_id not in known and chunk_id not in scheduled:
                    scheduled.add(chunk_id)
                    new_plain += len(data)
                    uploader.submit(chunk_id, data)
                progress.advance(raw_size)
            result = dump.finish()
        stored_bytes = uploader.drain()
    finally:
        uploader.close()
        progress.finish()
    private = PrivateSection(
        database=result.database,
        source=engine.describe(),
        tables=[TableRecord(t.name, t.rows) for t in result.tables],
    )
    manifest = Manifest(
        backup_id=backup_id,
        target=target or engine.database_name(),
        engine=result.engine,
        engine_version=result.server_version,
        tool_version=result.tool_version,
        dump_format=result.dump_format,
        started_at=started_at,
        finished_at=utc_now_iso(),
        duration_seconds=round(time.monotonic() - clock, 3),
        tags=tags,
        status=STATUS_COMPLETE,
        created_by=_creator(),
        raw_size=raw_size,
        stored_new_bytes=stored_bytes,
        new_chunk_count=len(scheduled),
        stream_sha256=checksum.hexdigest(),
        chunks=tuple(refs),
        private_sealed=seal_private(private, repo.keyring.sealer(for_reading=False)),
    )
    repo.write_manifest(manifest)
    log.info("backup %s of %s complete", backup_id, manifest.target)
    return BackupReport(manifest, new_plain)


def _creator() -> str:
    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    except (KeyError, OSError):
        return socket.gethostname()
