"""The backup use case: dump -> chunk -> name -> skip known -> zstd -> age -> storage.

:func:`run_backup` takes one backup. :func:`recorded_backup` (and :func:`run_recorded_backup`)
is what every path that backs up a target goes through (the CLI, the web, the cron
endpoint, the scheduler): the target's ``pre_backup`` hooks, the backup, its run record,
then its ``post_backup`` hooks (``services/hooks.py``). Safety backups taken by a restore
call :func:`run_backup` directly: they run no hooks and leave no run record.
"""

from __future__ import annotations

import getpass
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field

from strongroom.engines.base import Engine, LaidOutDump
from strongroom.errors import InvalidName, StrongroomError
from strongroom.interrupts import deferred, note_outcome
from strongroom.logcontext import log_context
from strongroom.malloc_arenas import limit_arenas
from strongroom.pipeline.chunking import iter_chunks
from strongroom.pipeline.hashing import StreamChecksum
from strongroom.repository.chunk_list import ChunkListBuilder
from strongroom.repository.ids import new_backup_id, utc_now_iso
from strongroom.repository.locks import BACKUP_WAIT, RepositoryLock, acquire_shared
from strongroom.repository.manifest import (
    STATUS_COMPLETE,
    Manifest,
    PrivateSection,
    TableRecord,
    seal_private,
)
from strongroom.repository.names import (
    check_tags,
    check_target_name,
    normalized,
    target_name_problem,
)
from strongroom.repository.repository import Repository
from strongroom.repository.runs import RunRecord, record_run
from strongroom.services.hooks import (
    HookFailedAfter,
    TargetHooks,
    configured_settings,
    hooks_of,
    run_post_backup,
    run_pre_backup,
)
from strongroom.services.progress import NoProgress, ProgressSink
from strongroom.services.swaps import settle_interrupted_swaps

log = logging.getLogger("strongroom.backup")

DEFAULT_WORKERS = 4
BATCH_CHUNKS = 64  # chunks per worker task, at most
BATCH_BYTES = 1024 * 1024  # plaintext bytes per worker task, at most (one max-size chunk more)


@dataclass(frozen=True)
class BackupReport:
    manifest: Manifest
    new_plain_bytes: int

    @property
    def dedup_ratio(self) -> float:
        """Raw bytes read per byte of new (not yet stored) data."""
        return self.manifest.raw_size / max(self.new_plain_bytes, 1)


@dataclass
class _Batch:
    """Chunks of the stream handed to one worker at once (in stream order), and what the
    worker found: per chunk its name and whether this backup stored it."""

    chunks: list[bytes] = field(default_factory=list)  # emptied once processed
    size: int = 0
    sizes: list[int] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    new: list[bool] = field(default_factory=list)
    stored_bytes: int = 0  # stored (compressed, encrypted) bytes of the new chunks


@dataclass
class _Outcomes:
    """Every chunk's reference, in stream order, and the totals of the new ones."""

    refs: ChunkListBuilder = field(default_factory=ChunkListBuilder)
    new_count: int = 0
    new_plain_bytes: int = 0
    stored_bytes: int = 0

    def add(self, batch: _Batch) -> None:
        for chunk_id, size, is_new in zip(batch.ids, batch.sizes, batch.new, strict=True):
            self.refs.append(chunk_id, size)
            if is_new:
                self.new_count += 1
                self.new_plain_bytes += size
        self.stored_bytes += batch.stored_bytes


class _ChunkWriter:
    """Names, deduplicates, compresses, encrypts and stores chunks (into packs: a
    ``PackSession``) on a thread pool.

    The reading thread only cuts chunks and feeds the stream checksum; chunks go to the
    workers in batches of up to ``BATCH_CHUNKS`` chunks or ``BATCH_BYTES`` bytes (one task
    per batch: at 16 KiB chunks a task per chunk cost more Python than the work itself, and
    a future per chunk kept ~1.2 KB per chunk until the end). Everything else runs on the
    workers, on all cores (BLAKE3, zstd and storage I/O release the GIL). At most
    ``2 x workers`` batches are in flight, so memory stays bounded; finished batches are
    folded into ``_Outcomes`` in stream order (a batch done before the ones ahead of it
    waits, holding ids and sizes only, and counts as in flight).
    """

    def __init__(self, repo: Repository, workers: int) -> None:
        limit_arenas()  # before the workers start: see malloc_arenas.py
        self._store = repo.chunks
        self._packs = self._store.pack_writer()
        self._packs.on_indexed = self._forget
        # this backup's new chunks whose pack is not indexed yet (PackSession indexes every
        # INDEX_MAX_PACKS packs), as 32 raw bytes: a few MB at most
        self._claimed: set[bytes] = set()
        self._claim_lock = threading.Lock()
        self._forgets = 0  # groups let go by _forget so far (see _claim)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sr-chunk")
        self._window = workers * 2
        self._pending: deque[Future[_Batch]] = deque()
        self._batch = _Batch()
        self._outcomes = _Outcomes()
        self._failure: BaseException | None = None
        self._workers = workers
        self._finished_packs = False
        # batches submitted and not done: close waits for them, _backed_up counts them
        self._live: set[Future[_Batch]] = set()

    def submit(self, data: bytes) -> None:
        """Queue one chunk (in stream order); blocks while too many batches are in flight."""
        batch = self._batch
        batch.chunks.append(data)
        batch.size += len(data)
        if len(batch.chunks) >= BATCH_CHUNKS or batch.size >= BATCH_BYTES:
            self._send()

    def _send(self) -> None:
        batch, self._batch = self._batch, _Batch()
        if not batch.chunks:
            return
        while self._pending and (
            len(self._pending) >= self._window or self._pending[0].done()
        ):  # fold finished batches in order; wait for the oldest while the window is full
            self._outcomes.add(self._pending.popleft().result())  # raises a worker's error
        if self._failure is not None:
            raise self._failure
        with self._claim_lock:
            future = self._pool.submit(self._process, batch)
            self._live.add(future)
        future.add_done_callback(self._on_done)
        self._pending.append(future)

    def _process(self, batch: _Batch) -> _Batch:
        fast = self._backed_up()
        ids = [self._store.name(data) for data in batch.chunks]
        with self._claim_lock:
            forgets = self._forgets  # before the index is asked: see _claim
        known = self._store.known_among(ids)  # one query per batch, not per chunk
        for data, chunk_id in zip(batch.chunks, ids, strict=True):
            is_new = chunk_id not in known and self._claim(chunk_id, forgets)
            if is_new:
                batch.stored_bytes += self._packs.store(chunk_id, data, fast=fast)
            batch.ids.append(chunk_id)
            batch.sizes.append(len(data))
            batch.new.append(is_new)
        batch.chunks = []  # the plaintext is stored (or known): not held while waiting
        return batch

    def _claim(self, chunk_id: str, forgets: int) -> bool:
        """Whether this worker stores ``chunk_id`` (then it is claimed), which the index
        did not list when asked with ``_forgets`` at ``forgets``: not claimed by this
        backup, and no group forgotten since the index was asked. A chunk leaves the
        claimed set only after its pack is in the index cache (``_forget``), so a chunk
        missing from both was either never claimed, or claimed, indexed and forgotten
        after the index was asked: then ``_forgets`` moved, and the index is asked again
        (claimed set first, then the index, until no group was forgotten meanwhile)."""
        raw_id = bytes.fromhex(chunk_id)
        with self._claim_lock:
            if raw_id in self._claimed:
                return False
            if forgets == self._forgets:
                self._claimed.add(raw_id)
                return True
        while True:
            with self._claim_lock:
                if raw_id in self._claimed:
                    return False
                forgets = self._forgets
            if self._store.is_known(chunk_id):  # index cache or chunks/ listing
                return False
            with self._claim_lock:
                if raw_id in self._claimed:
                    return False
                if forgets == self._forgets:
                    self._claimed.add(raw_id)
                    return True

    def _forget(self, raw_ids: Iterable[bytes]) -> None:
        """The pack session indexed these chunks (they are in the cache now): ``is_known``
        finds them, so the claimed set lets them go."""
        ids = list(raw_ids)
        with self._claim_lock:
            self._claimed.difference_update(ids)
            self._forgets += 1

    def _backed_up(self) -> bool:
        """More batches waiting than workers: compress fast so the dump is not held up."""
        with self._claim_lock:
            return len(self._live) > self._workers

    def _on_done(self, future: Future[_Batch]) -> None:
        with self._claim_lock:
            self._live.discard(future)
        if not future.cancelled() and future.exception() is not None and self._failure is None:
            self._failure = future.exception()

    def results(self) -> _Outcomes:
        """Send the last batch, wait for every batch; return the outcomes (refs in stream
        order), or raise the first failure."""
        self._send()
        wait(self._pending, return_when=FIRST_EXCEPTION)
        if self._failure is not None:
            raise self._failure
        while self._pending:
            self._outcomes.add(self._pending.popleft().result())
        return self._outcomes

    def finish(self) -> None:
        """After ``results``: seal the last pack, wait for the uploads and write the
        index object(s) (``PackSession.flush``), so every new chunk is durable."""
        self._packs.flush()
        self._finished_packs = True

    def close(self) -> None:
        """Stop the workers; unless ``finish`` ran, drop the pack session without an
        index (what it uploaded is left for prune)."""
        interrupted: KeyboardInterrupt | None = None
        self._pool.shutdown(wait=False, cancel_futures=True)  # queued batches never start
        while True:  # a second ^C must not leave a worker writing
            try:
                with self._claim_lock:
                    live = list(self._live)
                if not live:
                    break
                # wait() on the futures, not Thread.join: on Python 3.11 an interrupted
                # join marks a thread that is still running as stopped (seen in this test)
                wait(live)
            except KeyboardInterrupt as exc:
                interrupted = exc
        self._pool.shutdown(wait=True)  # the workers have nothing left: they end now
        if not self._finished_packs:
            self._packs.abort()
        if interrupted is not None:
            raise interrupted


def run_backup(
    repo: Repository,
    engine: Engine,
    *,
    target: str | None = None,
    tags: tuple[str, ...] = (),
    progress: ProgressSink | None = None,
    workers: int = DEFAULT_WORKERS,
    lock_wait: float = BACKUP_WAIT,
    created_by: str | None = None,
    told: str | None = None,
) -> BackupReport:
    """Take one backup; the manifest is written only after every chunk is stored.

    A shared repository lock is held from before ``chunks/`` is listed until the manifest
    is written, so ``prune`` never deletes a chunk this backup counts on. ``created_by``
    replaces the default ``user@host`` in the manifest (the web service names its user).
    ``told``: what a signal once the manifest is written says did not happen, after naming
    the backup (default: ``NOT_RECORDED``); ``""``: nothing, the caller says what it means
    (a restore's safety backup: the original database is untouched).
    """
    rest = NOT_RECORDED if told is None else told
    progress = progress or NoProgress()
    name, tags = checked_names(engine, target, tags)  # before anything is written
    settle_interrupted_swaps(engine)  # what a killed swap left (design.md, "Swap journal")
    engine.check()
    backup_id = new_backup_id()
    with log_context(backup_id=backup_id, target=name):
        lock = acquire_shared(repo.storage, f"backup of {name}", wait=lock_wait)
        report: BackupReport | None = None
        try:
            report = _back_up(
                repo, engine, lock, backup_id, name, tags, progress, workers, created_by, rest
            )
            return report
        finally:
            told_of = None if report is None or not rest else report.manifest
            with told_complete(told_of, rest):
                lock.release()


def _back_up(
    repo: Repository,
    engine: Engine,
    lock: RepositoryLock,
    backup_id: str,
    target: str,
    tags: tuple[str, ...],
    progress: ProgressSink,
    workers: int,
    created_by: str | None = None,
    rest: str = "",
) -> BackupReport:
    repo.chunks.prepare_known()  # after the shared lock: index cache + chunks/ listing
    writer = _ChunkWriter(repo, workers)
    started_at = utc_now_iso()
    clock = time.monotonic()
    checksum = StreamChecksum()
    raw_size = 0
    progress.start("backup", engine.estimated_size())
    try:
        with engine.dump() as dump:
            # the dump's own parts (a pg_dump header, its TOC) end chunks: see chunking.py
            cuts = dump.forced_cuts() if isinstance(dump, LaidOutDump) else ()
            for data in iter_chunks(dump.stream, repo.config.chunker, cuts):
                checksum.update(data)
                raw_size += len(data)
                writer.submit(data)
                progress.advance(raw_size)
            result = dump.finish()
        outcomes = writer.results()
        writer.finish()  # packs stored and indexed before the manifest
    finally:
        writer.close()
        progress.finish()
    refs = outcomes.refs.build()
    private = PrivateSection(
        database=result.database,
        source=engine.describe(),
        tables=[TableRecord(t.name, t.rows, t.checksum) for t in result.tables],
        engine_state=result.state,
    )
    manifest = Manifest(
        backup_id=backup_id,
        target=target,
        engine=result.engine,
        engine_version=result.server_version,
        tool_version=result.tool_version,
        dump_format=result.dump_format,
        started_at=started_at,
        finished_at=utc_now_iso(),
        duration_seconds=round(time.monotonic() - clock, 3),
        tags=tags,
        status=STATUS_COMPLETE,
        created_by=created_by or _creator(),
        raw_size=raw_size,
        stored_new_bytes=outcomes.stored_bytes,
        new_chunk_count=outcomes.new_count,
        stream_checksum=checksum.hexdigest(),
        chunks=refs,
        private_sealed=seal_private(private, repo.keyring.sealer(for_reading=False)),
        chunk_order=repo.chunk_order(refs),
    )
    lock.ensure_held()  # a lease that lapsed may have let prune delete chunks we use
    with deferred() as section:  # a signal during the write waits for it to end
        repo.write_manifest(manifest)
        section.outcome = completed(manifest, rest) if rest else None
    with told_complete(manifest if rest else None, rest):
        log.info("backup %s of %s complete", backup_id, manifest.target)
        return BackupReport(manifest, outcomes.new_plain_bytes)


NOT_RECORDED = "its run record and post_backup hooks did not run"
RECORDED = "its run is recorded"


@contextmanager
def told_complete(manifest: Manifest | None, rest: str) -> Iterator[None]:
    """Once the manifest is written the backup is complete: a signal raised inside this
    block (``interrupts.Interrupted``) says so, naming the backup, then ``rest`` (what did
    not happen), instead of the default "nothing unfinished was recorded". ``manifest``
    ``None``: no backup was completed, nothing is noted."""
    try:
        yield
    except BaseException as exc:
        if manifest is not None:
            note_outcome(exc, completed(manifest, rest))
        raise


def completed(manifest: Manifest, rest: str) -> str:
    """What an interrupted command says of a backup that is complete."""
    return f"backup {manifest.backup_id} of {manifest.target} is complete; {rest}"


def checked_names(
    engine: Engine, target: str | None, tags: tuple[str, ...]
) -> tuple[str, tuple[str, ...]]:
    """The backup's target name (``target``, else the database's name) and tags, checked
    against ``repository/names.py``; raises ``InvalidName`` (exit 2, one line)."""
    if target is not None:
        name = check_target_name(target)
    else:
        name = normalized(engine.database_name())
        problem = target_name_problem(name)
        if problem is not None:
            raise InvalidName(
                f"the database name {name[:40]!r} cannot name the target ({problem}): give "
                "a target name (--target)"
            )
    return name, check_tags(tags)


def _creator() -> str:
    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    except (KeyError, OSError):
        return socket.gethostname()


def record_backup_run(
    repo: Repository,
    target: str,
    tags: tuple[str, ...],
    started: str,
    scheduled_for: str | None,
    *,
    report: BackupReport | None = None,
    error: BaseException | None = None,
) -> RunRecord:
    """Write the run record of one backup run (its ``report``, or the ``error`` that ended
    it) for health, metrics and the web UI; the one place backup runs are recorded (the
    CLI, the web and the scheduler call it). Returns the record."""
    if report is None:
        record = RunRecord(
            target,
            "backup",
            False,
            started,
            utc_now_iso(),
            tags,
            scheduled_for,
            error_kind=type(error).__name__ if error is not None else None,
        )
    else:
        m = report.manifest
        record = RunRecord(
            target,
            "backup",
            True,
            started,
            utc_now_iso(),
            m.tags,
            scheduled_for,
            m.backup_id,
            m.raw_size,
            m.stored_new_bytes,
            m.duration_seconds,
        )
    record_run(repo.storage, record)
    return record


@dataclass(frozen=True)
class BackupRun:
    """One recorded backup run. ``report`` is ``None`` when no backup was taken; ``error``
    is what stopped it then, or, beside a report, the ``post_backup`` hook that failed
    after the backup was complete (``HookFailedAfter``: the backup is kept)."""

    record: RunRecord
    report: BackupReport | None = None
    error: StrongroomError | None = None


def recorded_backup(
    repo: Repository,
    engine: Engine,
    *,
    target: str | None = None,
    tags: tuple[str, ...] = (),
    progress: ProgressSink | None = None,
    created_by: str | None = None,
    scheduled_for: str | None = None,
    hooks: TargetHooks | None = None,
) -> BackupRun:
    """The target's ``pre_backup`` hooks, :func:`run_backup`, its run record
    (:func:`record_backup_run`), then its ``post_backup`` hooks; never raises a
    ``StrongroomError`` (see :class:`BackupRun`). ``hooks``: the target's (``None``: those
    of the configuration named by ``STRONGROOM_CONFIG``, if any). A failing ``pre_backup``
    hook means no backup is taken and the run is recorded as failed (``HookFailed``); a
    failing ``post_backup`` hook leaves the backup and its successful run record in place.
    A target name or tag that breaks ``repository/names.py`` raises ``InvalidName`` before
    anything runs or is recorded (a run record is filed under the target's name)."""
    name, tags = checked_names(engine, target, tags)
    if hooks is None:
        hooks = hooks_of(configured_settings(), name)
    started = utc_now_iso()
    with log_context(target=name):
        try:
            run_pre_backup(hooks, engine)
            report = run_backup(
                repo, engine, target=target, tags=tags, progress=progress, created_by=created_by
            )
        except StrongroomError as exc:
            record = record_backup_run(repo, name, tags, started, scheduled_for, error=exc)
            return BackupRun(record, None, exc)
        with told_complete(report.manifest, NOT_RECORDED):
            record = record_backup_run(repo, name, tags, started, scheduled_for, report=report)
        try:
            with told_complete(report.manifest, f"{RECORDED}; its post_backup hooks stopped"):
                run_post_backup(hooks, report, report.manifest.backup_id, engine)
        except HookFailedAfter as exc:
            return BackupRun(record, report, exc)
    return BackupRun(record, report)


def run_recorded_backup(
    repo: Repository,
    engine: Engine,
    *,
    target: str | None = None,
    tags: tuple[str, ...] = (),
    progress: ProgressSink | None = None,
    created_by: str | None = None,
    scheduled_for: str | None = None,
    hooks: TargetHooks | None = None,
) -> BackupReport:
    """:func:`recorded_backup` that raises what stopped the run: the failure (the run is
    recorded as failed), or ``HookFailedAfter`` from a ``post_backup`` hook, whose
    ``result`` is this report (the backup is kept)."""
    run = recorded_backup(
        repo,
        engine,
        target=target,
        tags=tags,
        progress=progress,
        created_by=created_by,
        scheduled_for=scheduled_for,
        hooks=hooks,
    )
    if run.error is not None:
        raise run.error
    assert run.report is not None
    return run.report
