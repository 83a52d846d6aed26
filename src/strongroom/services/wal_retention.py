"""Which archived WAL prune deletes: per stream and timeline, what lies before the first
segment any retained base backup of that stream needs (docs/design.md, "WAL status,
continuity and retention").

The rules, per stream:

- No retained base backup of the stream, a base backup whose recorded facts cannot be
  read (or any damaged manifest: it may be one), base backups that disagree on the segment
  size, or a base backup whose timeline's history file is not archived or unreadable:
  **keep everything** of the stream (say why).
- Timeline N (with a readable ancestry) that some base backup B recovers through, to N
  or to a later timeline: keep from the first segment of N any such B reads on the way
  (B's own start segment on B's timeline; N's first segment on later ones).
- Timeline N that no base backup recovers through but that is an ancestor of a base
  backup's timeline: everything of N before the segment where it was left on the way to
  that base backup is deleted (no retained backup can replay it); the rest is kept.
- Any other timeline (another branch, or one above 1 whose history is not archived):
  kept whole.
- ``.history`` files are never deleted; ``.partial`` and ``.backup`` files go with their
  segment number; objects whose names are no WAL name are never touched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from strongroom.engines.postgresql import timelines as tl
from strongroom.engines.postgresql.wal import segment_size as header_segment_size
from strongroom.errors import StrongroomError
from strongroom.repository.logs import LogArchive
from strongroom.repository.repository import Repository
from strongroom.services.wal_status import (
    ArchivedFile,
    BaseBackup,
    StreamArchive,
    base_backups,
    read_histories,
    scan_archive,
)

log = logging.getLogger("strongroom.audit")


@dataclass(frozen=True)
class StreamRetention:
    """What prune does with one stream's WAL."""

    stream: str
    delete: tuple[ArchivedFile, ...]
    kept: int  # archived objects left (history files included)
    keep_from: dict[int, int] = field(default_factory=dict)  # timeline -> first segment kept
    kept_whole: str | None = None  # why nothing of the stream is deleted

    @property
    def first_deleted(self) -> str | None:
        return min((f.file.name for f in self.delete), default=None)

    @property
    def last_deleted(self) -> str | None:
        return max((f.file.name for f in self.delete), default=None)


@dataclass(frozen=True)
class WalRetention:
    streams: list[StreamRetention]

    @property
    def to_delete(self) -> int:
        return sum(len(s.delete) for s in self.streams)


def _keep_from(
    archive: StreamArchive,
    bases: list[BaseBackup],
    histories: dict[int, list[tl.Switch]],
    size: int,
) -> dict[int, int]:
    """Timeline -> the first segment number kept (timelines absent: kept whole)."""
    timelines = {f.timeline for f in archive.files if f.kind != "history"}
    targets = archive.timelines | {b.timeline for b in bases}
    reached: dict[int, int] = {}
    for base in bases:
        for target in targets:
            try:
                path = tl.timeline_path(target, histories)
            except tl.UnknownHistory:
                continue  # its own segments stay (not in ``reached``), ancestors below
            for timeline, first, _ in (
                tl.needed_ranges(path, base.timeline, base.start_lsn, size) or ()
            ):
                reached[timeline] = min(reached.get(timeline, first), first)
    keep = dict(reached)
    for base in bases:
        for span in tl.timeline_path(base.timeline, histories)[:-1]:
            if span.timeline in reached or span.end is None:
                continue
            left_at = tl.segment_number(span.end, size)
            keep[span.timeline] = min(keep.get(span.timeline, left_at), left_at)
    return {timeline: keep[timeline] for timeline in timelines if timeline in keep}


def _whole(archive: StreamArchive, why: str) -> StreamRetention:
    return StreamRetention(archive.stream, (), len(archive.files), {}, why)


def _unconfirmed_size(repo: Repository, archive: StreamArchive, assumed: int) -> str | None:
    """Why the segment size its base backups do not record cannot be trusted (``None``:
    an archived segment's page header states ``assumed``)."""
    sample = min(
        (f for f in archive.files if f.kind == "segment"),
        key=lambda f: f.file.name,
        default=None,
    )
    if sample is None:
        return "its base backups record no WAL segment size and no segment is archived"
    try:
        stated = header_segment_size(LogArchive(repo).read(sample.file))
    except StrongroomError as exc:
        return f"its WAL segment size is not recorded and {sample.file.name} cannot be read: {exc}"
    if stated != assumed:
        return (
            f"its base backups record no WAL segment size and {sample.file.name} states "
            f"{stated or 'none'}, not {assumed}"
        )
    return None


def plan_stream(
    repo: Repository,
    archive: StreamArchive,
    bases: list[BaseBackup],
    unreadable: dict[str, str],
) -> StreamRetention:
    """What to delete of one stream (see the module's rules)."""
    if unreadable:
        backup_id, why = sorted(unreadable.items())[0]
        return _whole(archive, f"backup {backup_id} cannot be read ({why}): it may need this WAL")
    if not bases:
        return _whole(archive, "no retained base backup of this stream")
    sizes = {b.segment_size for b in bases}
    if len(sizes) > 1:
        return _whole(archive, "its base backups record different WAL segment sizes")
    if not all(b.size_recorded for b in bases):
        doubt = _unconfirmed_size(repo, archive, next(iter(sizes)))
        if doubt is not None:
            return _whole(archive, doubt)
    histories, problems = read_histories(repo, archive)
    if problems:
        return _whole(archive, problems[0])
    for base in bases:
        try:
            tl.timeline_path(base.timeline, histories)
        except tl.UnknownHistory as exc:
            return _whole(archive, f"base backup {base.backup_id}: {exc}")
    keep_from = _keep_from(archive, bases, histories, sizes.pop())
    delete = tuple(
        f
        for f in archive.files
        if f.kind != "history" and f.timeline in keep_from and f.number < keep_from[f.timeline]
    )
    return StreamRetention(archive.stream, delete, len(archive.files) - len(delete), keep_from)


def plan_wal_retention(repo: Repository) -> WalRetention:
    """What prune would delete of ``logs/`` (one listing, the base backups' facts and
    the history files; nothing is deleted here)."""
    found = base_backups(repo)
    archives = scan_archive(repo, {b.stream: b.segment_size for b in found.backups})
    return WalRetention(
        [
            plan_stream(repo, archives[stream], found.of_stream(stream), found.unreadable)
            for stream in sorted(archives)
        ]
    )


def delete_wal(
    repo: Repository,
    plan: WalRetention,
    before: Callable[[], None] = lambda: None,
    workers: int = 8,
) -> int:
    """Delete what ``plan`` names (``before`` runs ahead of each delete: the lock's
    check); return how many objects were deleted."""
    storage = repo.storage

    def one(file: ArchivedFile) -> None:
        before()
        storage.delete(file.file.key)

    files = [f for stream in plan.streams for f in stream.delete]
    if not files:
        return 0
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sr-prune-wal") as pool:
        list(pool.map(one, files))
    for stream in plan.streams:
        if stream.delete:
            log.info(
                "prune deleted %d WAL files of %s (%s … %s)",
                len(stream.delete),
                stream.stream,
                stream.first_deleted,
                stream.last_deleted,
            )
    return len(files)
