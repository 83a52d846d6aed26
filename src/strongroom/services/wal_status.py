"""The state of each WAL stream: what is archived, which base backups use it, the window
they give, how far archiving lags, and where WAL is missing.

One listing of ``logs/`` (with each object's modified time when the storage gives it
for free: ``storage.base.list_with_times``), the archived ``.history`` files (small, read
and decrypted), and the retained base backups' recorded facts (timeline, start/stop LSN,
stop time). The arithmetic is ``engines/postgresql/timelines.py``. docs/design.md,
"WAL status, continuity and retention".
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from strongroom.engines.postgresql import timelines as tl
from strongroom.engines.postgresql.wal import STREAM_PREFIX
from strongroom.errors import RepositoryError, StrongroomError, UsageError
from strongroom.repository.ids import parse_iso
from strongroom.repository.layout import LOGS_PREFIX
from strongroom.repository.logs import LogArchive, LogFile
from strongroom.repository.manifest import Manifest
from strongroom.repository.repository import Repository
from strongroom.storage.base import list_with_times

log = logging.getLogger("strongroom.wal")

_WAL_KINDS = ("segment", "partial", "snapshot")


@dataclass(frozen=True)
class ArchivedFile:
    """One object under ``logs/<stream>/``: its parsed name and modified time."""

    file: LogFile
    kind: str  # "segment", "partial", "backup", "history"
    timeline: int
    number: int  # segment number (history files: -1)
    modified: float | None  # POSIX seconds; None when the storage lists no times


@dataclass
class StreamArchive:
    """Everything archived in one stream, from one listing."""

    stream: str
    files: list[ArchivedFile] = field(default_factory=list)
    present: dict[int, list[int]] = field(default_factory=dict)  # tli -> sorted segment nos
    history_files: dict[int, LogFile] = field(default_factory=dict)
    unparsed: int = 0  # objects whose names are no WAL name (kept, never judged)

    @property
    def timelines(self) -> set[int]:
        return set(self.present) | set(self.history_files)

    def newest_segment(self) -> ArchivedFile | None:
        """The WAL stored last: a whole segment, a ``.partial`` one or wal-receive's
        snapshot of a growing one (latest modified time; ties, or no times: the greatest
        name)."""
        segments = [f for f in self.files if f.kind in _WAL_KINDS]
        if not segments:
            return None
        return max(segments, key=lambda f: (f.modified or 0.0, f.timeline, f.number, f.kind))


_HISTORY_NAME = re.compile(r"[0-9A-F]{8}\.history")
_KINDS = (
    ("segment", re.compile(r"[0-9A-F]{24}")),
    ("partial", re.compile(r"[0-9A-F]{24}\.partial")),
    ("backup", re.compile(r"[0-9A-F]{24}\.[0-9A-F]{8}\.backup")),
    # wal-receive's snapshots of a growing segment (repository/log_snapshots.py)
    ("snapshot", re.compile(r"[0-9A-F]{24}\.partial\.[0-9A-F]{8}")),
)


def _classify(archive: StreamArchive, file: LogFile, modified: float | None, size: int) -> None:
    name = file.name
    if _HISTORY_NAME.fullmatch(name) and file.group == "history":
        timeline = int(name[:8], 16)
        archive.history_files[timeline] = file
        archive.files.append(ArchivedFile(file, "history", timeline, -1, modified))
        return
    if len(name) == 24:  # by far the most: whole segments
        kind = "segment" if _KINDS[0][1].fullmatch(name) else None
    else:
        kind = next((kind for kind, pattern in _KINDS[1:] if pattern.fullmatch(name)), None)
    try:
        if kind is None:
            raise ValueError(name)
        timeline, number = tl.parse_segment(name, size)
    except ValueError:
        archive.unparsed += 1
        return
    archive.files.append(ArchivedFile(file, kind, timeline, number, modified))


def scan_archive(
    repo: Repository, segment_sizes: dict[str, int] | None = None
) -> dict[str, StreamArchive]:
    """Every PostgreSQL stream under ``logs/``, from one listing. ``segment_sizes``: a
    stream's WAL segment size when not 16 MiB (from its base backups)."""
    archives: dict[str, StreamArchive] = {}
    sizes = segment_sizes or {}
    for key, modified in list_with_times(repo.storage, LOGS_PREFIX):
        parts = key[len(LOGS_PREFIX) :].split("/")
        if len(parts) != 3 or not parts[0].startswith(STREAM_PREFIX):
            continue
        name, _, digest = parts[2].rpartition("-")
        if len(digest) != 64 or not name:
            continue
        stream = parts[0]
        archive = archives.get(stream)
        if archive is None:
            archive = archives[stream] = StreamArchive(stream)
        size = sizes.get(stream, tl.SEGMENT_SIZE)
        _classify(archive, LogFile(stream, parts[1], name, digest), modified, size)
    for archive in archives.values():
        found: dict[int, set[int]] = {}
        for f in archive.files:
            if f.kind == "segment":
                found.setdefault(f.timeline, set()).add(f.number)
        archive.present = {tli: sorted(numbers) for tli, numbers in found.items()}
    return archives


def read_histories(
    repo: Repository, archive: StreamArchive
) -> tuple[dict[int, list[tl.Switch]], list[str]]:
    """The stream's parsed history files, and one line per file that could not be read
    (damaged, two copies, not a history): its timeline's ancestry is then unknown."""
    histories: dict[int, list[tl.Switch]] = {}
    problems: list[str] = []
    if not archive.history_files:
        return histories, problems
    reader = LogArchive(repo)
    copies: dict[int, int] = {}
    for f in archive.files:
        if f.kind == "history":
            copies[f.timeline] = copies.get(f.timeline, 0) + 1
    for timeline, file in sorted(archive.history_files.items()):
        if copies.get(timeline, 0) > 1:
            problems.append(f"{file.name} is archived more than once with different content")
            continue
        try:
            histories[timeline] = tl.parse_history(reader.read(file).decode("utf-8"))
        except (StrongroomError, UnicodeDecodeError, ValueError) as exc:
            problems.append(f"{file.name} cannot be read: {exc}")
    return histories, problems


@dataclass(frozen=True)
class BaseBackup:
    """What a retained base backup recorded about its place in the WAL."""

    backup_id: str
    target: str
    stream: str
    timeline: int
    start_lsn: int
    stop_lsn: int
    stop_time: datetime
    segment_size: int
    # False: the manifest predates recording ``wal_segment_size`` and no other base backup
    # of the stream records it: 16 MiB assumed (retention checks a segment's header)
    size_recorded: bool = True


def base_backup_of(repo: Repository, manifest: Manifest) -> BaseBackup:
    """The recorded WAL facts of a base backup; ``RepositoryError`` (its private section
    does not open) or ``ValueError`` (a fact missing or malformed) when unknown."""
    state = repo.private_section(manifest).engine_state or {}
    facts: Any = state.get("physical")
    if not isinstance(facts, dict):
        raise ValueError("its manifest records no WAL position")
    try:
        recorded = facts.get("wal_segment_size")
        size = recorded or tl.SEGMENT_SIZE
        tl.segment_number(0, int(size))  # a power of two up to 1 GiB
        return BaseBackup(
            manifest.backup_id,
            manifest.target,
            str(facts["stream"]),
            int(facts["timeline"]),
            tl.parse_lsn(str(facts["start_lsn"])),
            tl.parse_lsn(str(facts["stop_lsn"])),
            parse_iso(str(facts["stop_time"])).astimezone(UTC),
            int(size),
            recorded is not None,
        )
    except (KeyError, TypeError, UsageError) as exc:
        raise ValueError(f"its recorded WAL position is unreadable ({exc})") from exc


@dataclass(frozen=True)
class BaseBackups:
    """The repository's readable base backups (oldest end first) and the ids of those
    whose facts cannot be read (their stream is then unknown)."""

    backups: list[BaseBackup]
    unreadable: dict[str, str]  # backup id -> why

    def of_stream(self, stream: str) -> list[BaseBackup]:
        return [b for b in self.backups if b.stream == stream]


def base_backups(repo: Repository) -> BaseBackups:
    """Every retained base backup's facts (damaged manifests count as unreadable: they
    may be base backups of any stream)."""
    listing = repo.scan_backups()
    found: list[BaseBackup] = []
    unreadable: dict[str, str] = {d.backup_id: d.reason for d in listing.damaged}
    for manifest in listing.backups:
        if not manifest.is_base_backup:
            continue
        try:
            found.append(base_backup_of(repo, manifest))
        except (RepositoryError, ValueError) as exc:
            unreadable[manifest.backup_id] = str(exc)
    found.sort(key=lambda b: (b.stop_time, b.backup_id))
    # one stream is one cluster (one initdb): one segment size; a base backup that does
    # not record it takes the one its stream's others record
    recorded: dict[str, set[int]] = {}
    for b in found:
        if b.size_recorded:
            recorded.setdefault(b.stream, set()).add(b.segment_size)
    for at, b in enumerate(found):
        sizes = recorded.get(b.stream, set())
        if not b.size_recorded and len(sizes) == 1:
            found[at] = replace(b, segment_size=next(iter(sizes)), size_recorded=True)
    return BaseBackups(found, unreadable)


@dataclass(frozen=True)
class Gap:
    """WAL a base backup needs that is not archived."""

    stream: str
    first_missing: str  # segment name
    missing: int  # segments missing on the base backup's way to its newest timeline
    backup_ids: tuple[str, ...]  # the retained base backups that need it


@dataclass(frozen=True)
class Route:
    """How one base backup recovers: the timeline it reaches and what is missing."""

    backup: BaseBackup
    timeline: int | None  # None: unknown (a history file is missing or unreadable)
    ranges: tuple[tuple[int, int, int], ...]  # (timeline, first, last) segment numbers
    first_missing: str | None
    missing: int
    pending: bool = False  # its last segment is not archived whole yet


def route(base: BaseBackup, archive: StreamArchive, histories: dict[int, list[tl.Switch]]) -> Route:
    """The newest timeline ``base`` reaches through the archived history files, the
    segment ranges recovery reads on the way (up to the newest segment archived whole on
    the route's last timeline), the first of them not archived, and whether the backup's
    own last segment is still to come."""
    size = base.segment_size
    candidates = sorted(archive.timelines | {base.timeline}, reverse=True)
    for target in candidates:
        try:
            path = tl.timeline_path(target, histories)
        except tl.UnknownHistory:
            continue
        needed = tl.needed_ranges(path, base.timeline, base.start_lsn, size)
        if needed is None:
            continue
        ranges: list[tuple[int, int, int]] = []
        pending = False
        for timeline, first, last in needed:
            if last is None:  # the route's own timeline: up to its newest whole segment
                present = archive.present.get(timeline, [])
                last = present[-1] if present else first - 1
                # the backup's own last segment not archived whole yet (a spool, a slow
                # archiver): not recoverable yet, but no gap
                stop = tl.segment_number(base.stop_lsn, size)
                pending = timeline == base.timeline and last < stop
            ranges.append((timeline, first, last))
        first_missing: str | None = None
        missing = 0
        for timeline, first, last in ranges:
            present = archive.present.get(timeline, [])
            gap = tl.first_missing(present, first, last)
            if gap is not None and first_missing is None:
                first_missing = tl.name_of(timeline, gap, size)
            missing += tl.missing_count(present, first, last)
        return Route(base, target, tuple(ranges), first_missing, missing, pending)
    return Route(base, None, (), None, 0)


@dataclass(frozen=True)
class StreamStatus:
    """One stream: its archive, its base backups, its window and its gaps."""

    stream: str
    targets: tuple[str, ...]  # targets of its base backups
    base_backups: int
    segments: int
    newest_segment: str | None
    newest_time: datetime | None  # the newest segment's stored time (None: not listed)
    window_start: datetime | None  # oldest base backup without a gap: its stop time
    window_end: datetime | None  # the newest segment's time
    lag_seconds: float | None  # now - newest_time
    gaps: tuple[Gap, ...]
    unsure: tuple[str, ...]  # why continuity could not be judged (history files)

    @property
    def has_gap(self) -> bool:
        return bool(self.gaps)


@dataclass(frozen=True)
class WalStatus:
    streams: list[StreamStatus]
    unreadable: dict[str, str]  # base backups whose facts cannot be read
    seconds: float  # how long the status took

    def for_target(self, target: str) -> list[StreamStatus]:
        """The streams ``target`` has base backups of."""
        return [s for s in self.streams if target in s.targets]


def stream_status(
    archive: StreamArchive,
    bases: list[BaseBackup],
    histories: dict[int, list[tl.Switch]],
    history_problems: Iterable[str],
    now: datetime,
) -> StreamStatus:
    """The status of one stream from its archive listing, its retained base backups
    (oldest end first) and its parsed history files."""
    newest = archive.newest_segment()
    newest_time = (
        datetime.fromtimestamp(newest.modified, UTC)
        if newest is not None and newest.modified is not None
        else None
    )
    unsure = list(history_problems)
    for timeline in sorted(archive.present):
        if timeline > 1 and timeline not in archive.history_files:
            unsure.append(
                f"timeline {timeline} has archived segments but its history file "
                f"{tl.history_name(timeline)} is not archived"
            )
    routes = [route(base, archive, histories) for base in bases]
    by_gap: dict[str, list[Route]] = {}
    window_start: datetime | None = None
    for r in routes:
        if r.timeline is None:
            unsure.append(
                f"base backup {r.backup.backup_id}: the history of timeline "
                f"{r.backup.timeline} is not archived"
            )
        elif r.first_missing is not None:
            by_gap.setdefault(r.first_missing, []).append(r)
        elif window_start is None and not r.pending:
            window_start = r.backup.stop_time
    gaps = tuple(
        Gap(
            archive.stream,
            name,
            max(r.missing for r in found),
            tuple(r.backup.backup_id for r in found),
        )
        for name, found in sorted(by_gap.items(), key=lambda item: tl.parse_segment(item[0]))
    )
    return StreamStatus(
        stream=archive.stream,
        targets=tuple(sorted({b.target for b in bases})),
        base_backups=len(bases),
        segments=sum(len(numbers) for numbers in archive.present.values()),
        newest_segment=newest.file.name if newest is not None else None,
        newest_time=newest_time,
        window_start=window_start,
        window_end=newest_time if window_start is not None else None,
        lag_seconds=(now - newest_time).total_seconds() if newest_time is not None else None,
        gaps=gaps,
        unsure=tuple(unsure),
    )


def wal_status(repo: Repository, *, now: datetime | None = None) -> WalStatus:
    """The status of every stream with archived WAL or retained base backups."""
    clock = time.monotonic()
    now = now or datetime.now(UTC)
    found = base_backups(repo)
    sizes = {b.stream: b.segment_size for b in found.backups}
    archives = scan_archive(repo, sizes)
    streams: list[StreamStatus] = []
    for stream in sorted(set(archives) | {b.stream for b in found.backups}):
        archive = archives.get(stream) or StreamArchive(stream)
        histories, problems = read_histories(repo, archive)
        streams.append(stream_status(archive, found.of_stream(stream), histories, problems, now))
    seconds = time.monotonic() - clock
    log.debug("WAL status of %d streams in %.3f s", len(streams), seconds)
    return WalStatus(streams, found.unreadable, seconds)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment is not None else None


def target_summary(streams: list[StreamStatus]) -> dict[str, Any] | None:
    """The WAL of one target's base backups (its streams, ``WalStatus.for_target``) as
    JSON, the fields of ``GET /api/targets``' ``wal``: ``streams``, ``window_start`` and
    ``window_end`` (the recoverable window), ``last_segment`` and ``last_segment_at`` (the
    newest archived WAL and when it reached the repository), ``lag_seconds`` (the
    smallest of its streams'), ``gap``, ``first_missing`` and ``unsure`` (why continuity
    cannot be judged). Times ISO 8601 UTC (``…Z``), ``null`` when there is none; ``None``
    for a target without base backups."""
    if not streams:
        return None
    timed = [s for s in streams if s.newest_time is not None]
    newest = max(timed, key=lambda s: s.newest_time or datetime.min) if timed else streams[0]
    starts = [s.window_start for s in streams if s.window_start is not None]
    lags = [s.lag_seconds for s in streams if s.lag_seconds is not None]
    gaps = [g for s in streams for g in s.gaps]
    return {
        "streams": [s.stream for s in streams],
        "window_start": _iso(min(starts)) if starts else None,
        "window_end": _iso(newest.window_end),
        "last_segment": newest.newest_segment,
        "last_segment_at": _iso(newest.newest_time),
        "lag_seconds": round(min(lags), 3) if lags else None,
        "gap": bool(gaps),
        "first_missing": gaps[0].first_missing if gaps else None,
        "unsure": [why for s in streams for why in s.unsure],
    }
