"""Snapshots of a log file that is still growing (PostgreSQL: the ``.partial`` segment that
``pg_receivewal`` writes), so that a lost host costs about a second of log, not a segment.

A snapshot is an ordinary log object (``repository/logs.py``: same digest, same
``age(zstd(…))`` content) whose file name says which file it is a prefix of and how long
that prefix is:

    logs/<stream>/<group>/<file>.partial.<end>-<digest>

``end`` is the prefix's length in bytes, 8 upper-case hex digits (``0009A000``), so names
sort by length; the content is the growing file cut after its last non-zero byte (what
follows is zeros: ``pg_receivewal`` fills a new segment with zeros first, and a reader pads
the prefix back to the segment size). The name never collides with the file's own object
(``<file>-<digest>``), nor with PostgreSQL's own ``<file>.partial`` (``<file>.partial-…``).

Only the newest snapshot of a file is kept: a push deletes the shorter ones once it is
durable, and ``forget`` deletes them all once the whole file is archived. A snapshot is
never fetched instead of a whole file unless the reader asks (``wal-fetch --snapshots``,
which only ``restore --to-datadir`` writes into ``restore_command``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from strongroom.errors import IntegrityError, StrongroomError
from strongroom.repository.layout import LOGS_PREFIX
from strongroom.repository.logs import LogArchive, LogFile, PushResult

if TYPE_CHECKING:
    from strongroom.repository.repository import Repository

SNAPSHOT_INFIX = ".partial."
_END = re.compile(r"[0-9A-F]{8}")
_DIGEST = re.compile(r"[0-9a-f]{64}")
MAX_END = 0xFFFFFFFF


def snapshot_name(name: str, end: int) -> str:
    """``<name>.partial.<end as 8 hex digits>``; ``ValueError`` outside 1 … 4 GiB - 1."""
    if not 0 < end <= MAX_END:
        raise ValueError(f"a snapshot's end must be 1 … {MAX_END}, not {end}")
    return f"{name}{SNAPSHOT_INFIX}{end:08X}"


@dataclass(frozen=True)
class Snapshot:
    """One stored snapshot: the log object and how many bytes of ``of`` it holds."""

    file: LogFile
    of: str  # the name of the file it is a prefix of
    end: int


def trimmed_length(data: bytes) -> int:
    """The length of ``data`` without its trailing zero bytes (0 for an all-zero file)."""
    return len(data.rstrip(b"\0"))


class LogSnapshots:
    """Pushes, lists, reads and deletes snapshots of growing log files of a repository."""

    def __init__(self, repo: Repository, archive: LogArchive | None = None) -> None:
        self._storage = repo.storage
        self._archive = archive or LogArchive(repo)

    def list(self, stream: str, group: str, name: str) -> list[Snapshot]:
        """Every stored snapshot of ``name``, shortest first."""
        self._archive.copies(stream, group, name)  # validates the three parts
        prefix = f"{LOGS_PREFIX}{stream}/{group}/{name}{SNAPSHOT_INFIX}"
        found = []
        for key in self._storage.list(prefix):
            end, dash, digest = key[len(prefix) :].partition("-")
            if dash and _END.fullmatch(end) and _DIGEST.fullmatch(digest):
                file = LogFile(stream, group, f"{name}{SNAPSHOT_INFIX}{end}", digest)
                found.append(Snapshot(file, name, int(end, 16)))
        return sorted(found, key=lambda s: (s.end, s.file.digest))

    def push(self, stream: str, group: str, name: str, data: bytes) -> PushResult | None:
        """Store ``data`` (the file's first ``len(data)`` bytes, no trailing zeros) as the
        newest snapshot of ``name``, durable before returning, then delete the shorter
        ones. ``None`` (nothing written) when a snapshot as long or longer is stored
        already (a receiver restarted from an older position must not replace it).
        The same name with other content raises ``LogConflict`` (exit 7)."""
        stored = self.list(stream, group, name)
        if stored and stored[-1].end >= len(data):
            return None
        result = self._archive.push(stream, group, snapshot_name(name, len(data)), data)
        for older in stored:
            self._storage.delete(older.file.key)
        return result

    def forget(self, stream: str, group: str, name: str) -> int:
        """Delete every snapshot of ``name`` (call once the whole file is durable);
        return how many were deleted."""
        stored = self.list(stream, group, name)
        for snapshot in stored:
            self._storage.delete(snapshot.file.key)
        return len(stored)

    def newest(self, stream: str, group: str, name: str) -> bytes | None:
        """The content of the longest snapshot of ``name``, checked against its digest;
        ``None`` when there is none. Two different snapshots of the same length:
        ``IntegrityError`` (exit 7), as for two copies of one file."""
        for attempt in range(3):  # a newer snapshot may replace the one listed meanwhile
            stored = self.list(stream, group, name)
            if not stored:
                return None
            longest = [s for s in stored if s.end == stored[-1].end]
            if len(longest) > 1:
                raise IntegrityError(
                    f"{name} has {len(longest)} different snapshots of {stored[-1].end} bytes "
                    f"in log stream {stream}: refusing to choose"
                )
            try:
                data = self._archive.read(longest[0].file)
                break
            except IntegrityError:
                raise
            except StrongroomError:  # it vanished: superseded since the listing
                if attempt == 2:
                    raise
        if len(data) != longest[0].end:
            raise IntegrityError(f"{longest[0].file.key} is damaged: its length is not its name's")
        return data
