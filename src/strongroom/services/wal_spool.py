"""The WAL spool: ``wal-push`` stores a segment in a local folder and returns; an uploader
(``strongroom wal-upload``, or the thread of ``strongroom run``) moves it to the repository
(docs/design.md, "The WAL spool").

Layout of the spool folder::

    <spool>/<stream>/<file name>          a file waiting (fsynced, renamed into place)
    <spool>/<stream>/.tmp-<name>-<random> a push under way (or killed: swept by the next)
    <spool>/status.json                   the last push failure and upload outcome
    <spool>/.upload.lock                  held by the uploader while it works

``status.json`` is created at 4 KiB and rewritten in place (never renamed, never grown),
so a push that fails because the disk is full can still record that it did: health reads
it. A spooled file is deleted only after the repository's copy is durable, so an uploader
killed at any moment leaves the file to the next upload (which finds the same content
archived, or archives it).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from strongroom.engines.postgresql.wal import (
    WalFileName,
    WalMismatch,
    check_history_file,
    check_segment_belongs,
    control_system_identifier,
    parse_wal_name,
    segment_size,
    stream_name,
)
from strongroom.errors import IntegrityError, StorageError, StrongroomError, UsageError
from strongroom.services.spool_files import (
    TMP_PREFIX,
    UPLOADED,
    durable_copy,
    fsync_dir,
    mark_uploaded,
    sweep_marks,
)

if TYPE_CHECKING:
    from strongroom.repository.logs import LogArchive
    from strongroom.repository.repository import Repository

log = logging.getLogger("strongroom.wal")

STATUS_FILE = "status.json"
STATUS_SIZE = 4096  # bytes: the status file never grows, so a full disk can still hold it
LOCK_FILE = ".upload.lock"
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class SpoolConflict(IntegrityError):
    """A file spooled again with other content than the copy waiting (exit 7, as
    ``LogConflict`` for the repository)."""


class SpoolError(StorageError):
    """The spool cannot take a file (full, unwritable): exit 6. PostgreSQL keeps the WAL
    in ``pg_wal`` and runs ``archive_command`` again."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _why(exc: OSError) -> str:
    if exc.errno in _NO_SPACE:
        return "no space left"
    return exc.strerror or str(exc)


# --- the status file --------------------------------------------------------------------
def read_status(spool: Path) -> dict[str, Any]:
    """The spool's status record (``{}`` when there is none or it is unreadable)."""
    try:
        text = (spool / STATUS_FILE).read_bytes().rstrip(b" \n\0")
        value = json.loads(text) if text else {}
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def update_status(spool: Path, **changes: Any) -> None:
    """Merge ``changes`` into the status record (``None`` removes a field), in place and
    under a lock. Best effort: a status that cannot be written is logged, never raised
    (the push or upload's own outcome is what counts)."""
    path = spool / STATUS_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        log.warning("cannot record the WAL spool's status in %s: %s", path, _why(exc))
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        current = read_status(spool)
        for key, value in changes.items():
            if value is None:
                current.pop(key, None)
            else:
                current[key] = value
        data = json.dumps(current, sort_keys=True).encode()
        if len(data) > STATUS_SIZE:
            data = json.dumps({k: current[k] for k in ("push_failed",) if k in current}).encode()
        os.pwrite(fd, data.ljust(STATUS_SIZE, b" "), 0)
        os.fsync(fd)
    except OSError as exc:
        log.warning("cannot record the WAL spool's status in %s: %s", path, _why(exc))
    finally:
        os.close(fd)


def prepare(spool: Path) -> None:
    """Create the spool folder (0700) and its 4 KiB status file if they are missing."""
    try:
        spool.mkdir(mode=0o700, parents=True, exist_ok=True)
        status = spool / STATUS_FILE
        if not status.exists() or status.stat().st_size < STATUS_SIZE:
            update_status(spool)
    except OSError as exc:
        raise SpoolError(f"cannot use the WAL spool {spool}: {_why(exc)}") from exc


# --- push -------------------------------------------------------------------------------
@dataclass(frozen=True)
class SpoolPush:
    path: Path  # the spooled file
    stored: bool  # False: the same content was spooled already


def _check_file(
    wal: WalFileName, fd: int, size: int, system_identifier: int | None, whole: bool
) -> None:
    """A direct push's checks, made before the file is spooled (spooled, a file the
    uploader refuses returned 0 to PostgreSQL, never reached the repository and stopped
    the upload of every file after it): the header against ``system_identifier`` when
    known, a ``.history`` that is a timeline history; and with ``whole`` (``wal-push``)
    one more: a segment starts with a valid long page header stating the file's size,
    also with ``--stream`` (an empty, cut or padded copy under a segment's name).
    ``WalMismatch`` (exit 7)."""
    head = os.pread(fd, 8192, 0)
    if system_identifier is not None:
        check_segment_belongs(wal, head, system_identifier)
    if wal.kind == "segment" and whole:
        stated = segment_size(head)
        if stated is None:
            raise WalMismatch(f"WAL file {wal.name} has no valid page header: not archived")
        if stated != size:
            raise WalMismatch(
                f"WAL file {wal.name} is {size} bytes, its header says segments of {stated} "
                "bytes (a cut or padded copy?): not archived"
            )
    elif wal.kind == "history":
        check_history_file(wal, os.pread(fd, max(size, 1), 0))


def _same(target: Path, source: Path, size: int) -> bool:
    return target.stat().st_size == size and target.read_bytes() == source.read_bytes()


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]  # (a symlink target ext4 keeps inline)


def _place(fd: int, size: int, source: Path, target: Path) -> bool:
    """Spool the open file ``fd`` as ``target`` unless it is there: ``True`` when it was
    written, ``False`` when the same bytes were there or were uploaded from the spool
    under that name (in the last ``MARKS_KEPT``); ``SpoolConflict`` for other bytes (also
    when another push of the name got there first, or when other bytes were uploaded: a
    second cluster's WAL would wait in the spool for ever, while PostgreSQL deleted it).
    A name uploaded (deleted) while it was compared is spooled again, not a failure
    (PostgreSQL's retry of a segment the uploader was moving ended in exit 6, and health
    said critical)."""
    spool = target.parent.parent
    for _ in range(3):
        if not target.exists():
            try:
                uploaded = os.readlink(spool / UPLOADED / target.parent.name / target.name)
            except (FileNotFoundError, NotADirectoryError):
                uploaded = None
            if uploaded is not None:
                if uploaded == _digest(source.read_bytes()):
                    return False
                raise SpoolConflict(
                    f"{target.name} was uploaded from the WAL spool {spool} with different "
                    "content: refusing it (two clusters archiving into one stream?)"
                )
            try:
                _write(fd, size, target.parent, target)
                return True
            except FileExistsError:  # another push of this name was quicker: compare
                pass
        try:
            if _same(target, source, size):
                return False
        except FileNotFoundError:  # uploaded meanwhile
            continue
        raise SpoolConflict(
            f"{target.name} is already in the WAL spool {target.parent.parent} with different "
            "content: refusing to replace it (two clusters archiving into one stream?)"
        )
    raise OSError(errno.EAGAIN, "the name kept appearing and vanishing in the spool")


def spool_push(
    spool: Path,
    stream: str,
    name: str,
    source: Path,
    system_identifier: int | None,
    whole_segments: bool = False,
) -> SpoolPush:
    """Copy the file at ``source`` to ``<spool>/<stream>/<name>`` durably (temp file,
    kernel copy, fsync, link, fsync folder; the file checked first as a direct push
    checks it: ``_check_file``). The same content spooled already: success without
    writing; other content: ``SpoolConflict`` (exit 7), also when another push of the
    name got there first while this one copied. A full or unwritable spool:
    ``SpoolError`` (exit 6), recorded in the status file for health. ``source``
    unreadable or no regular file: exit 1, the spool's status untouched."""
    wal = parse_wal_name(name)
    try:  # (O_NONBLOCK: a FIFO under a WAL name is refused below, not waited on for ever)
        fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise StrongroomError(f"cannot read {source}: {exc.strerror or exc}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise StrongroomError(f"cannot read {source}: not a regular file")
        size = info.st_size
        try:
            _check_file(wal, fd, size, system_identifier, whole_segments)
        except OSError as exc:
            raise StrongroomError(f"cannot read {source}: {exc.strerror or exc}") from exc
        folder = spool / stream
        target = folder / wal.name
        try:
            prepare(spool)
            folder.mkdir(mode=0o700, exist_ok=True)
            if not _place(fd, size, source, target):
                fsync_dir(folder)  # a push whose folder fsync failed left it linked
                return SpoolPush(target, False)
        except OSError as exc:
            why = _why(exc)
            failed = {"time": _now(), "file": wal.name, "error": why, "stream": stream}
            update_status(spool, push_failed=failed)
            raise SpoolError(f"cannot spool {wal.name} in {spool}: {why}") from exc
    finally:
        os.close(fd)
    # the failure health reports is over, if it was this stream's: a spool shared by two
    # clusters must not clear one's failure with the other's success
    last = read_status(spool).get("push_failed")
    if isinstance(last, dict) and last.get("stream") in (None, stream):
        update_status(spool, push_failed=None)
    return SpoolPush(target, True)


def push_file(spool: Path, path: Path, stream: str | None = None) -> SpoolPush:
    """``wal-push`` into the spool: the WAL file at ``path`` (relative to the working
    directory, the data directory), filed under ``stream`` or the data directory's
    ``postgresql-<system identifier>`` (its header checked against it). Imports nothing
    of the repository: this is what PostgreSQL waits for."""
    clock = time.monotonic()
    wal = parse_wal_name(path.name)
    if stream is not None and _STREAM.fullmatch(stream) is None:  # (repository/logs.py's)
        # spooled under it, a file never reached the repository (the uploader passes over
        # what is no stream name), or landed outside the spool (`--stream ../x`)
        raise UsageError(f"{stream[:60]!r} is not a valid log stream name")
    system_identifier = None
    if stream is None:
        system_identifier = control_system_identifier(Path.cwd())
        stream = stream_name(system_identifier)
    result = spool_push(spool, stream, wal.name, path, system_identifier, whole_segments=True)
    log.info("%s %s in %.3f s", "spooled" if result.stored else "already spooled:",
             wal.name, time.monotonic() - clock)  # fmt: skip
    return result


def _write(source: int, size: int, folder: Path, target: Path) -> None:
    durable_copy(source, size, str(folder), target.name)  # (spool_files: how, and why)


def fetch_file(spool: Path, name: str, destination: Path, stream: str | None = None) -> bool:
    """``wal-fetch`` from the spool: write ``name`` to ``destination`` (atomically, as from
    the repository) when it still waits in the spool (a restore on the spool's host);
    ``False`` when it does not (then the repository is asked)."""
    from strongroom.services.wal import write_atomically

    wal = parse_wal_name(name)
    if stream is None:
        stream = stream_name(control_system_identifier(Path.cwd()))
    elif _STREAM.fullmatch(stream) is None:  # (`--stream ../x` read beside the spool)
        raise UsageError(f"{stream[:60]!r} is not a valid log stream name")
    try:
        data = (spool / stream / wal.name).read_bytes()
    except (FileNotFoundError, NotADirectoryError):  # not spooled, or uploaded meanwhile
        return False
    except OSError as exc:
        raise SpoolError(f"cannot read {wal.name} in the WAL spool {spool}: {_why(exc)}") from exc
    write_atomically(destination, data)
    return True


# --- what waits -------------------------------------------------------------------------
@dataclass(frozen=True)
class Waiting:
    stream: str
    name: str
    path: Path
    size: int  # bytes
    mtime: float  # seconds since the epoch


_STREAM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # repository/logs.py's rule


def _is_wal_name(name: str) -> bool:
    try:
        parse_wal_name(name)
    except StrongroomError:
        return False
    return True


def waiting(spool: Path) -> list[Waiting]:
    """Every file waiting in the spool, oldest name first per stream (WAL order). What
    wal-push never writes is passed over, never uploaded: a folder that is no stream name
    (``lost+found`` of a dedicated spool disk, unreadable to this user) and a file that
    is no WAL name (one such file stopped every upload)."""
    found: list[Waiting] = []
    try:
        streams = sorted(p for p in spool.iterdir() if p.is_dir() and _STREAM.fullmatch(p.name))
    except FileNotFoundError:
        return []
    for folder in streams:
        try:
            paths = sorted(folder.iterdir())
        except OSError:
            continue
        for path in paths:
            name = path.name
            if name.startswith(TMP_PREFIX) or not _is_wal_name(name) or not path.is_file():
                continue
            with contextlib.suppress(FileNotFoundError):
                stat = path.stat()
                found.append(Waiting(folder.name, path.name, path, stat.st_size, stat.st_mtime))
    return found


def sweep_temps(spool: Path, older_than: float = 3600.0) -> int:
    """Remove temp files of pushes killed mid-write (older than ``older_than`` seconds)."""
    removed = 0
    limit = time.time() - older_than
    for folder in (p for p in spool.iterdir() if p.is_dir()) if spool.is_dir() else ():
        for path in folder.glob(f"{TMP_PREFIX}*"):
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < limit:
                    path.unlink()
                    removed += 1
    return removed


# --- upload -----------------------------------------------------------------------------
@dataclass(frozen=True)
class UploadReport:
    uploaded: int  # files archived (or found archived already) and removed from the spool
    conflicts: list[str]  # left in the spool: archived with other content, or refused
    bytes: int  # bytes of the files moved


@contextlib.contextmanager
def upload_lock(spool: Path, wait: bool = True) -> Iterator[bool]:
    """Hold the spool's upload lock (yields ``False`` when ``wait`` is false and another
    uploader holds it)."""
    prepare(spool)
    fd = os.open(spool / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def upload(spool: Path, archive: LogArchive, stop: threading.Event | None = None) -> UploadReport:
    """Move every waiting file into the repository through ``archive`` (the same
    ``LogArchive.push`` as a direct ``wal-push``: durable before it returns), deleting each
    from the spool only then. A file archived with other content (or refused: a file an
    older version spooled unchecked) stays in the spool, the others go on, and it
    is recorded (health reports it); storage failures propagate after recording."""
    from strongroom.repository.logs import LogConflict
    from strongroom.services.wal import archive_wal

    uploaded, moved = 0, 0
    conflicts: list[str] = []
    sweep_temps(spool)
    sweep_marks(str(spool))
    try:
        for item in waiting(spool):
            if stop is not None and stop.is_set():  # `run` stopping: the rest waits
                break
            try:
                data = item.path.read_bytes()
            except FileNotFoundError:  # another uploader moved it
                continue
            try:  # the header was checked when it was spooled
                archive_wal(archive, item.stream, parse_wal_name(item.name), data, None)
            except (LogConflict, WalMismatch) as exc:  # this file's: the others go on
                conflicts.append(f"{item.stream}/{item.name}")
                log.error("%s", exc.message)
                continue
            marks: str | None = None  # before the file goes: a later push compares with it
            try:
                marks = mark_uploaded(str(spool), item.stream, item.name, _digest(data))
            except OSError as exc:  # (a full spool: the file must go all the same)
                log.warning("cannot mark %s as uploaded: %s", item.name, _why(exc))
            with contextlib.suppress(FileNotFoundError):
                item.path.unlink()
            fsync_dir(item.path.parent)
            if marks is not None:
                fsync_dir(marks)
            uploaded += 1
            moved += item.size
    except StrongroomError as exc:
        update_status(spool, upload_failed={"time": _now(), "error": exc.message})
        raise
    update_status(
        spool,
        last_upload=_now(),
        upload_failed=None,
        conflicts=conflicts or None,
    )
    return UploadReport(uploaded, conflicts, moved)


def upload_until(
    spool: Path,
    open_repository: Callable[[], Repository],
    *,
    once: bool,
    stop: threading.Event | None = None,
    interval: float = 1.0,
) -> UploadReport:
    """``wal-upload``: upload what waits (under the upload lock), then, unless ``once``,
    look again every ``interval`` seconds until ``stop`` is set (or a signal ends the
    process). A failed pass (storage unreachable) is logged and retried; with ``once``
    it raises. Returns the totals."""
    from strongroom.repository.logs import LogArchive

    archive = LogArchive(open_repository())
    stop = stop or threading.Event()
    uploaded, moved, conflicts = 0, 0, set()
    while True:
        try:
            with upload_lock(spool) as held:
                busy = held and (once or waiting(spool))  # idle: no status rewrite
                report = upload(spool, archive, stop) if busy else UploadReport(0, [], 0)
            uploaded, moved = uploaded + report.uploaded, moved + report.bytes
            conflicts.update(report.conflicts)
        except StrongroomError as exc:
            if once:
                raise
            log.warning("WAL upload failed (retrying): %s", exc.message)
        if once or stop.wait(interval):
            return UploadReport(uploaded, sorted(conflicts), moved)


class Uploader(threading.Thread):
    """The uploader ``strongroom run`` starts when a spool is configured: an upload pass
    every ``interval`` seconds (skipped while ``wal-upload`` holds the lock) until
    ``stop`` is set; failures are logged and retried, never raised."""

    def __init__(self, spool: Path, repo: Repository, stop: threading.Event, interval: float = 1.0):
        super().__init__(name="wal-uploader", daemon=True)
        self.spool, self.repo, self.stop, self.interval = spool, repo, stop, interval

    def run(self) -> None:
        from strongroom.repository.logs import LogArchive

        archive = LogArchive(self.repo)
        while not self.stop.is_set():
            try:
                if waiting(self.spool):
                    with upload_lock(self.spool, wait=False) as held:
                        if held:
                            upload(self.spool, archive, self.stop)
            except Exception as exc:  # the thread must outlive a bad pass
                message = exc.message if isinstance(exc, StrongroomError) else repr(exc)
                log.warning("WAL upload failed (retrying): %s", message)
            self.stop.wait(self.interval)


# --- health -----------------------------------------------------------------------------
@dataclass(frozen=True)
class SpoolHealth:
    spool: str
    files: int  # waiting
    bytes: int  # waiting
    oldest_age_seconds: float | None  # the oldest waiting file's age
    status: str  # healthy / warning / critical (services.health's words)
    reasons: list[str]


def _read_only(spool: Path) -> bool:
    """Whether the spool's file system is mounted read-only (a disk the kernel remounted
    after errors): then no status file records the failing pushes."""
    try:
        return bool(os.statvfs(spool).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def spool_health(
    spool: Path, recovery_point_seconds: float, now: float | None = None
) -> SpoolHealth:
    """What waits in the spool and whether that is a problem: critical when a push failed
    (PostgreSQL keeps the WAL: the spool is full or unwritable), the spool's file system
    is read-only, or a file conflicts with
    the archive; warning when the oldest file waits longer than the recovery point or the
    last upload failed."""
    now = time.time() if now is None else now
    items = waiting(spool)
    status = read_status(spool)
    oldest = now - min(i.mtime for i in items) if items else None
    reasons: list[str] = []
    level = "healthy"
    failed = status.get("push_failed")
    if isinstance(failed, dict):
        level = "critical"
        reasons.append(
            f"wal-push could not spool {failed.get('file')} at {failed.get('time')}: "
            f"{failed.get('error')} (PostgreSQL keeps the WAL and retries)"
        )
    if _read_only(spool):  # no push can spool, nor record that it could not
        level = "critical"
        reasons.append(
            "the spool's file system is read-only: wal-push cannot spool "
            "(PostgreSQL keeps the WAL and retries)"
        )
    conflicts = status.get("conflicts")
    if isinstance(conflicts, list) and conflicts:
        level = "critical"
        reasons.append(
            "archived with other content (or refused by the archive), left in the spool: "
            + ", ".join(conflicts)
        )
    upload_failed = status.get("upload_failed")
    if isinstance(upload_failed, dict):
        level = "critical" if level == "critical" else "warning"
        reasons.append(f"the last upload failed at {upload_failed.get('time')}: "
                       f"{upload_failed.get('error')}")  # fmt: skip
    if oldest is not None and oldest > recovery_point_seconds:
        level = "critical" if level == "critical" else "warning"
        reasons.append(
            f"the oldest spooled file waits for {oldest / 60:.1f} min (recovery point "
            f"{recovery_point_seconds / 60:.0f} min): is an uploader running?"
        )
    return SpoolHealth(str(spool), len(items), sum(i.size for i in items), oldest, level, reasons)
