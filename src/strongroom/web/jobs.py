"""Long operations as jobs: run on worker threads, progress persisted in ``job_runs``.

A job's progress comes through the services' :class:`ProgressSink` protocol; the sink
writes the phase and byte counts to the job's row at most a few times a second, so any
worker (and ``GET /api/jobs/{id}``) reads the same state from the service database.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from strongroom.errors import StrongroomError
from strongroom.interrupts import Interrupted
from strongroom.redaction import redact_text
from strongroom.repository.ids import utc_now_iso
from strongroom.web.db import ServiceDatabase
from strongroom.web.models import JobRun

log = logging.getLogger("strongroom.web.jobs")

QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"
FLUSH_INTERVAL = 0.25  # seconds between progress writes


class JobFailed(StrongroomError):
    """A job's work finished but its outcome is a failure (e.g. a restore did not verify)."""


class JobProgress:
    """A ProgressSink that records a job's phase and bytes in its row.

    Once ``stopping`` is set (the server shuts down) the next report raises
    ``interrupts.Interrupted``: the job stops through the same cleanup as a command
    stopped by a signal (staged copy dropped, lock released, children stopped)."""

    def __init__(
        self, db: ServiceDatabase, job_id: str, stopping: threading.Event | None = None
    ) -> None:
        self._db = db
        self._job_id = job_id
        self._stopping = stopping
        self._phase = "starting"
        self._done = 0
        self._total: int | None = None
        self._flushed = 0.0
        self._lock = threading.Lock()

    def _check(self) -> None:
        if self._stopping is not None and self._stopping.is_set():
            raise Interrupted(signal.SIGTERM)

    def phase(self, name: str, total: int | None = None) -> None:
        """Enter a phase that reports no bytes (e.g. "safety backup", "indexing")."""
        self._check()
        self._phase, self._done, self._total = name, 0, total
        self._flush(force=True)

    def start(self, label: str, total: int | None) -> None:
        self.phase(label, total)

    def advance(self, done_bytes: int) -> None:
        self._check()
        self._done = done_bytes
        self._flush()

    def finish(self) -> None:
        """The phase's work is over: its total becomes the bytes actually done (a backup's
        total was the database's estimated size, not the dump's)."""
        self._total = self._done
        self._flush(force=True)

    def _flush(self, force: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            if not force and now - self._flushed < FLUSH_INTERVAL:
                return
            self._flushed = now
        with self._db.session() as session:
            row = session.get(JobRun, self._job_id)
            if row is not None:
                row.phase = self._phase[:64]
                row.bytes_done = self._done
                row.bytes_total = self._total


Work = Callable[[JobProgress], dict[str, Any]]


def owner_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class JobRunner:
    """A small thread pool running jobs; every state change is written to the database."""

    def __init__(self, db: ServiceDatabase, workers: int = 2) -> None:
        self._db = db
        self._owner = owner_name()
        self._workers = workers
        self._pool: ThreadPoolExecutor | None = None
        self._stopping = threading.Event()  # set by shutdown: running jobs stop
        self._pool_lock = threading.Lock()
        self._after: list[Callable[[JobRun], None]] = []

    def after_each(self, callback: Callable[[JobRun], None]) -> None:
        """Call ``callback`` with the job's row when its work is over, before its final
        status is written (e.g. re-index): whoever sees a job finished also sees what it
        did, e.g. the new backup in ``GET /api/backups``."""
        self._after.append(callback)

    def submit(
        self,
        kind: str,
        work: Work,
        *,
        requested_by: str,
        target: str | None = None,
        backup_id: str | None = None,
    ) -> str:
        job_id = uuid.uuid4().hex
        with self._db.session() as session:
            session.add(
                JobRun(
                    id=job_id,
                    kind=kind,
                    target=target,
                    backup_id=backup_id,
                    status=QUEUED,
                    phase="queued",
                    bytes_done=0,
                    requested_by=requested_by,
                    owner=self._owner,
                    created_at=utc_now_iso(),
                )
            )
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="sr-job")
                self._stopping = threading.Event()
            self._pool.submit(self._run, job_id, work, self._stopping)
        return job_id

    def _set(self, job_id: str, **fields: Any) -> JobRun | None:
        with self._db.session() as session:
            row = session.get(JobRun, job_id)
            if row is None:
                return None
            for name, value in fields.items():
                setattr(row, name, value)
            return row

    def _run(self, job_id: str, work: Work, stopping: threading.Event | None = None) -> None:
        job_log = JobLog()
        capture = job_log_capture()
        capture.attach(job_log)  # this thread's records, until the job's row is final
        try:
            self._run_captured(job_id, work, stopping, job_log)
        finally:
            capture.detach()

    def _run_captured(
        self, job_id: str, work: Work, stopping: threading.Event | None, job_log: JobLog
    ) -> None:
        started = time.monotonic()
        row = self._set(job_id, status=RUNNING, phase="starting", started_at=utc_now_iso())
        if row is not None:
            of = f" of {row.target}" if row.target else ""
            log.info("%s%s started (requested by %s)", row.kind, of, row.requested_by)
        progress = JobProgress(self._db, job_id, stopping)
        final: dict[str, Any]
        try:
            result = work(progress)
        except KeyboardInterrupt as exc:  # the server is stopping (JobProgress)
            outcome = getattr(exc, "outcome", None)
            message = "stopped: the server shut down" + (f"; {outcome}" if outcome else "")
            log.error("job %s %s", job_id, message)
            final = {"status": FAILED, "phase": "failed", "error": redact_text(message)}
        except StrongroomError as exc:
            log.error("job %s failed: %s", job_id, exc.message)
            final = {"status": FAILED, "phase": "failed", "error": redact_text(exc.message)}
        except Exception as exc:
            log.exception("job %s failed unexpectedly", job_id)
            final = {
                "status": FAILED,
                "phase": "failed",
                "error": f"unexpected failure ({type(exc).__name__})",
            }
        else:
            final = {"status": SUCCEEDED, "phase": "done", "result": json.dumps(result)}
            backup_id = result.get("backup_id")
            if isinstance(backup_id, str):  # the backup a job made, at the top level too
                final["backup_id"] = backup_id
        row = get_job(self._db, job_id)
        if row is not None:
            for callback in self._after:  # before the status: a finished job's work is visible
                try:
                    callback(row)
                except Exception:
                    log.exception("after-job callback failed")
        if final["status"] == SUCCEEDED:
            log.info("job %s succeeded in %.1f s", job_id, time.monotonic() - started)
        self._set(job_id, finished_at=utc_now_iso(), log=job_log.dump(), **final)

    def shutdown(self) -> None:
        """Cancel queued jobs (marked failed); running ones stop at their next progress
        report, through their cleanup (a swap under way finishes first: it reports no
        progress), and are marked failed. A later submit starts a new pool (an app may be
        started again, e.g. in tests)."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
            self._stopping.set()
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        with self._db.session() as session:
            for row in session.scalars(
                select(JobRun).where(JobRun.status == QUEUED, JobRun.owner == self._owner)
            ):
                row.status, row.phase, row.error = FAILED, "failed", "cancelled: server stopped"
                row.finished_at = utc_now_iso()

    def mark_abandoned(self) -> int:
        """Jobs left running or queued by a process of this host that is gone: failed."""
        host = socket.gethostname()
        count = 0
        with self._db.session() as session:
            for row in session.scalars(select(JobRun).where(JobRun.status.in_([QUEUED, RUNNING]))):
                owner_host, _, pid = row.owner.rpartition(":")
                if owner_host != host or not pid.isdigit() or _alive(int(pid)):
                    continue
                row.status, row.phase = FAILED, "failed"
                row.error = "interrupted: the server stopped while it ran"
                row.finished_at = row.finished_at or utc_now_iso()
                count += 1
        return count


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def get_job(db: ServiceDatabase, job_id: str) -> JobRun | None:
    with db.session() as session:
        return session.get(JobRun, job_id)


def recent_jobs(db: ServiceDatabase, limit: int = 20) -> list[JobRun]:
    with db.session() as session:
        return list(session.scalars(select(JobRun).order_by(JobRun.created_at.desc()).limit(limit)))


def job_result(row: JobRun) -> dict[str, Any]:
    if not row.result:
        return {}
    value = json.loads(row.result)
    return value if isinstance(value, dict) else {}


# --- the log lines of a job -----------------------------------------------------------------
LOG_LINES = 200  # a job keeps its newest lines: at most this many...
LOG_BYTES = 64 * 1024  # ...and at most this much JSON
LOG_MESSAGE_CHARS = 2000  # a longer message is cut
LOGGER = "strongroom"  # the records captured: this logger's and its children's


class JobLog:
    """The log records one job's thread emits (INFO and above, from ``strongroom.*``),
    secrets redacted (``redact_text``), each on one line, the newest :data:`LOG_LINES`
    within :data:`LOG_BYTES`. Written by the job's thread only."""

    def __init__(self) -> None:
        self._lines: deque[tuple[dict[str, str], int]] = deque()
        self._size = 0
        self.dropped = 0

    def add(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a bad format string must not fail the job
            text = str(record.msg)
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            text += f" ({type(exc).__name__}: {exc})"
        text = redact_text(" ".join(text.split()))
        if len(text) > LOG_MESSAGE_CHARS:
            text = text[: LOG_MESSAGE_CHARS - 1] + "…"
        line = {
            "at": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="seconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": text,
        }
        size = len(json.dumps(line)) + 2
        self._lines.append((line, size))
        self._size += size
        while len(self._lines) > LOG_LINES or self._size > LOG_BYTES:
            _, gone = self._lines.popleft()
            self._size -= gone
            self.dropped += 1

    def dump(self) -> str | None:
        """The lines as a JSON list of ``{"at", "level", "logger", "message"}`` (``at``: ISO
        8601 UTC, seconds), oldest first, after a line counting those left out; ``None``
        when there were none."""
        lines = [line for line, _ in self._lines]
        if self.dropped:
            first = lines[0]["at"] if lines else utc_now_iso()
            note = f"{self.dropped} earlier line(s) left out (a job keeps its last {LOG_LINES})"
            lines.insert(0, {"at": first, "level": "INFO", "logger": LOGGER, "message": note})
        return json.dumps(lines) if lines else None


def job_log_lines(row: JobRun) -> list[dict[str, str]]:
    """The stored log lines of a job (see :meth:`JobLog.dump`); ``[]`` when it has none."""
    if not row.log:
        return []
    try:
        value = json.loads(row.log)
    except ValueError:
        return []
    if not isinstance(value, list):
        return []
    return [
        {k: str(line.get(k, "")) for k in ("at", "level", "logger", "message")}
        for line in value
        if isinstance(line, dict)
    ]


class _Capture(logging.Handler):
    """On the ``strongroom`` logger: hands each record to the :class:`JobLog` of the thread
    that emitted it, if that thread is running a job."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self._logs: dict[int, JobLog] = {}

    def attach(self, job_log: JobLog) -> None:
        self._logs[threading.get_ident()] = job_log

    def detach(self) -> None:
        self._logs.pop(threading.get_ident(), None)

    def handle(self, record: logging.LogRecord) -> bool:  # no lock: one writer per JobLog
        job_log = self._logs.get(record.thread or 0)
        if job_log is not None and record.levelno >= self.level:
            job_log.add(record)
        return job_log is not None

    def emit(self, record: logging.LogRecord) -> None:
        self.handle(record)


_capture: _Capture | None = None
_capture_lock = threading.Lock()


def job_log_capture() -> _Capture:
    """The process's one capture handler, added to the ``strongroom`` logger at first use.
    It keeps the records that are made: INFO ones only where ``strongroom`` logs INFO
    (``strongroom serve`` sees to that: :func:`keep_info_records`)."""
    global _capture
    with _capture_lock:
        if _capture is None:
            _capture = _Capture()
            logging.getLogger(LOGGER).addHandler(_capture)
        return _capture


class _Quieter(logging.Filter):
    """Drops ``strongroom`` records below ``level`` (what the handler showed before)."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        mine = record.name == LOGGER or record.name.startswith(LOGGER + ".")
        return not mine or record.levelno >= self.level


def keep_info_records() -> Callable[[], None]:
    """For ``strongroom serve``: make ``strongroom``'s INFO records, so each job keeps its
    INFO lines, while the root logger's handlers (the console) keep showing only what
    they showed before (WARNING and above, unless ``-v``). Returns the undo."""
    logger = logging.getLogger(LOGGER)
    level = logger.getEffectiveLevel()
    if level <= logging.INFO:
        return lambda: None
    quieter = _Quieter(level)
    handlers = list(logging.getLogger().handlers)
    for handler in handlers:
        handler.addFilter(quieter)
    old = logger.level
    logger.setLevel(logging.INFO)

    def undo() -> None:
        logger.setLevel(old)
        for handler in handlers:
            handler.removeFilter(quieter)

    return undo
