"""``wal-push`` and ``wal-fetch``: PostgreSQL's archive_command and restore_command.

``archive_command = 'strongroom wal-push %p'`` runs in the data directory with ``%p`` the
file's path relative to it; ``restore_command = 'strongroom wal-fetch %f %p'`` asks for
file ``%f`` to be written at ``%p``. The stream a cluster's WAL is filed under is named by
the system identifier in the data directory's ``global/pg_control`` (docs/design.md,
"WAL archive and base backups").
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from strongroom.engines.postgresql.wal import (
    WalFileName,
    check_history_file,
    check_segment_belongs,
    control_system_identifier,
    parse_wal_name,
    segment_size,
    stream_name,
)
from strongroom.errors import IntegrityError, StrongroomError, UsageError
from strongroom.repository.log_snapshots import LogSnapshots
from strongroom.repository.logs import LogArchive, PushResult

if TYPE_CHECKING:
    from strongroom.repository.repository import Repository

log = logging.getLogger("strongroom.wal")


@dataclass(frozen=True)
class WalPushReport:
    result: PushResult
    size: int  # bytes of the file pushed
    seconds: float


def resolve_stream(stream: str | None, data_dir: Path) -> tuple[str, int | None]:
    """The stream to use (``stream``, else the data directory's) and, when known, the
    cluster's system identifier."""
    if stream is not None:
        return stream, None
    system_identifier = control_system_identifier(data_dir)
    return stream_name(system_identifier), system_identifier


def wal_push(repo: Repository, path: Path, *, stream: str | None = None) -> WalPushReport:
    """Archive the WAL file at ``path`` (relative to the working directory, the data
    directory); return once it is durable in the repository. Raises ``LogConflict``
    (exit 7) when another content is archived under its name, ``WalMismatch`` (exit 7) for
    a segment of another cluster, ``UsageError`` (exit 2) for a name that is no WAL file."""
    clock = time.monotonic()
    name = parse_wal_name(path.name)
    stream, system_identifier = resolve_stream(stream, Path.cwd())
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise StrongroomError(f"cannot read {path}: {exc.strerror or exc}") from exc
    result = archive_wal(LogArchive(repo), stream, name, data, system_identifier)
    seconds = time.monotonic() - clock
    log.info(
        "%s %s (%d bytes -> %d stored) in %.3f s",
        "archived" if result.stored else "already archived:",
        name.name,
        len(data),
        result.stored_bytes,
        seconds,
    )
    return WalPushReport(result, len(data), seconds)


def archive_wal(
    archive: LogArchive,
    stream: str,
    name: WalFileName,
    data: bytes,
    system_identifier: int | None,
) -> PushResult:
    """Archive one WAL file's ``data`` as ``name`` (durable on return): the header check
    against ``system_identifier`` when known (``WalMismatch``, exit 7), then the log
    store's rules (the same content again is a no-op, other content ``LogConflict``).
    ``wal-push`` and ``wal-receive`` both archive through here."""
    if system_identifier is not None:
        check_segment_belongs(name, data, system_identifier)
    if name.kind == "history":
        check_history_file(name, data)
    return archive.push(stream, name.group, name.name, data)


def wal_fetch(
    repo: Repository,
    file_name: str,
    destination: Path,
    *,
    stream: str | None = None,
    snapshots: bool = False,
) -> bool:
    """Write the archived ``file_name`` to ``destination`` atomically (a temp file beside
    it, fsynced, renamed); ``False`` when it was never archived (nothing written).

    ``snapshots``: a segment never archived whole is answered with the newest snapshot of
    its growing ``.partial`` that ``wal-receive`` stored, padded with zeros to the segment
    size (point-in-time recovery asks for this: the newest WAL of a lost host)."""
    name = parse_wal_name(file_name)
    stream, _ = resolve_stream(stream, Path.cwd())
    archive = LogArchive(repo)
    data = archive.fetch(stream, name.group, name.name)
    if data is None and snapshots and name.kind == "segment":
        data = LogSnapshots(repo, archive).newest(stream, name.group, name.name)
        if data is not None:
            size = segment_size(data)
            if size is None or size < len(data):
                raise IntegrityError(f"the snapshot of {name.name} has no valid page header")
            data += bytes(size - len(data))
            log.info("fetched %s from a snapshot of its .partial", name.name)
        else:  # archived whole since the first look (its snapshots were then deleted)
            data = archive.fetch(stream, name.group, name.name)
    if data is None:
        return False
    write_atomically(destination, data)
    return True


def write_atomically(destination: Path, data: bytes) -> None:
    """``destination`` holds ``data`` entirely or is untouched: a temp file in the same
    folder (``.strongroom-<random>.tmp``: no WAL name, so PostgreSQL never takes it for
    one) is written, fsynced and renamed over it; the folder is fsynced. A destination that
    cannot be written raises ``UsageError`` (exit 2): never exit 1, which ``wal-fetch``
    keeps for "never archived" (PostgreSQL would take a write failure for a missing file)."""
    folder = destination.parent
    tmp = folder / f".strongroom-{secrets.token_hex(6)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise UsageError(f"cannot write in {folder}: {exc.strerror or exc}") from exc
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, destination)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise UsageError(f"cannot write {destination}: {exc.strerror or exc}") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def check_destination(destination: Path) -> None:
    """``UsageError`` unless ``destination``'s folder exists (restore_command's ``%p``)."""
    if not destination.parent.is_dir():
        raise UsageError(f"{destination.parent} is not a folder")
