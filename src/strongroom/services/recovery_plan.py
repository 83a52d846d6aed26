"""The plan of a point-in-time recovery, checked before the data directory is written:
which timeline recovery follows, and that the archive holds every WAL segment from the
base backup's start segment to the target (for a time, a transaction or the latest: to
the newest archived segment), following timelines through the archived ``.history``
files. docs/design.md, "WAL archive and base backups", "Recovery"."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from strongroom.engines.postgresql.timelines import (
    SEGMENT_SIZE,
    Switch,
    UnknownHistory,
    first_missing,
    format_lsn,
    name_of,
    needed_ranges,
    parse_history,
    parse_lsn,
    parse_segment,
    segment_number,
    timeline_path,
)
from strongroom.errors import IntegrityError, RepositoryError, RestoreFailed, UsageError
from strongroom.repository.layout import LOGS_PREFIX
from strongroom.repository.logs import LogArchive
from strongroom.repository.repository import Repository
from strongroom.storage.base import list_with_times

log = logging.getLogger("strongroom.pitr")


class WalGap(IntegrityError):
    """A WAL segment recovery needs is not in the archive (exit 7)."""


class TimelineUnavailable(RepositoryError):
    """The timeline asked for is not in the archive, or does not descend from the base
    backup's timeline (exit 3)."""


class TargetPastArchive(RestoreFailed):
    """The target LSN is after the newest archived WAL (exit 5, as when PostgreSQL finds a
    time past the archived WAL)."""


def parse_timeline(text: str) -> str:
    """``--to-timeline``: ``latest``, ``current`` or a timeline number (1 to 4294967295);
    ``UsageError`` (exit 2) for anything else. Returned as PostgreSQL's setting value."""
    value = text.strip().lower()
    if value in ("latest", "current"):
        return value
    if value.isdigit() and value.isascii() and 1 <= int(value) <= 0xFFFFFFFF:
        return str(int(value))
    raise UsageError(f"--to-timeline {text!r} is not latest, current or a timeline number")


def parse_xid(text: str) -> int:
    """``--to-xid``: a transaction id as ``txid_current()`` or ``xmin`` prints it (decimal,
    3 or more: 0-2 are PostgreSQL's own); ``UsageError`` (exit 2) otherwise."""
    value = text.strip()
    if not (value.isdigit() and value.isascii()) or not 3 <= int(value) < 1 << 64:
        raise UsageError(f"--to-xid {text!r} is not a transaction id such as 7351")
    return int(value)


@dataclass(frozen=True)
class RecoveryPlan:
    """What recovery will read: ``timeline`` the one it ends on, ``segments`` how many
    archived segments, ``first``/``last`` their names, ``timelines`` the path (base
    backup's timeline first), ``last_lsn`` where the newest needed segment ends."""

    stream: str
    timeline: int
    timelines: tuple[int, ...]
    first: str
    last: str
    segments: int
    segment_size: int
    histories: dict[int, list[Switch]] = field(default_factory=dict, compare=False)

    def describe(self) -> str:
        path = " -> ".join(str(t) for t in self.timelines)
        return f"{self.segments} WAL segments {self.first} .. {self.last} (timeline {path})"


def _archive_listing(
    repo: Repository, stream: str, segment_size: int
) -> tuple[dict[int, list[int]], dict[int, list[Switch]], dict[int, IntegrityError]]:
    """Segment numbers per timeline (sorted), every archived history file parsed, and
    what is wrong with each damaged one (it counts only when recovery needs it)."""
    archive = LogArchive(repo)
    segments: dict[int, set[int]] = {}
    history_names: list[str] = []
    for file in archive.files(stream):
        if file.group == "history":
            history_names.append(file.name)
            continue
        if len(file.name) != 24:  # .partial, .backup: recovery does not read them here
            continue
        try:
            timeline, number = parse_segment(file.name, segment_size)
        except ValueError:
            continue
        segments.setdefault(timeline, set()).add(number)
    histories: dict[int, list[Switch]] = {}
    damaged: dict[int, IntegrityError] = {}
    for name in sorted(set(history_names)):
        try:
            data = archive.fetch(stream, "history", name)
            if data is None:
                continue
            histories[int(name[:8], 16)] = parse_history(data.decode("utf-8", "replace"))
        except IntegrityError as exc:
            damaged[int(name[:8], 16)] = exc
        except ValueError as exc:
            damaged[int(name[:8], 16)] = IntegrityError(
                f"{name} in log stream {stream} is damaged: {exc}"
            )
    return {t: sorted(n) for t, n in segments.items()}, histories, damaged


def _timelines_there(base: int, histories: dict[int, list[Switch]]) -> str:
    return ", ".join(str(t) for t in sorted({base, *histories}))


def _choose_timeline(
    wanted: str,
    base: int,
    start: int,
    histories: dict[int, list[Switch]],
    damaged: dict[int, IntegrityError],
) -> int:
    """The timeline recovery ends on, as PostgreSQL picks it: ``current`` the base
    backup's, ``latest`` the highest one reached by probing history files upward. A
    damaged history file PostgreSQL would read raises its ``IntegrityError`` (exit 7)."""
    if wanted == "current":
        return base
    if wanted == "latest":
        timeline = base
        while timeline + 1 in histories or timeline + 1 in damaged:
            if timeline + 1 in damaged:
                raise damaged[timeline + 1]
            timeline += 1
        chosen = timeline
    else:
        chosen = int(wanted)
        if chosen in damaged:
            raise damaged[chosen]
        if chosen != base and chosen not in histories:
            raise TimelineUnavailable(
                f"timeline {chosen} is not in the archive (timelines there: "
                f"{_timelines_there(base, histories)})"
            )
    try:
        ranges = needed_ranges(timeline_path(chosen, histories), base, start)
    except UnknownHistory as exc:
        raise TimelineUnavailable(f"timeline {chosen}: {exc}") from exc
    if ranges is None:
        raise TimelineUnavailable(
            f"timeline {chosen} does not descend from the base backup's timeline {base} "
            f"at its start (timelines there: {_timelines_there(base, histories)})"
        )
    return chosen


def plan_recovery(
    repo: Repository,
    facts: dict[str, Any],
    *,
    timeline: str = "latest",
    target_lsn: int | None = None,
    target_time: datetime | None = None,
) -> RecoveryPlan:
    """Check that recovery from the base backup ``facts`` describes can reach its target,
    reading nothing but the archive's listing and its history files. ``target_lsn`` is
    the LSN of an LSN or restore point target (``None``: to the newest archived segment).

    Raises ``TimelineUnavailable`` (exit 3) for a timeline not archived or not descending
    from the base backup's, ``WalGap`` (exit 7) naming the first missing segment and the
    stream, ``TargetPastArchive`` (exit 5) for an LSN after the newest archived WAL, or
    a ``target_time`` more than ``CLOCK_MARGIN`` after the newest segment was stored (when
    the storage lists times: PostgreSQL could not find a commit after it)."""
    stream = str(facts["stream"])
    size = int(facts.get("wal_segment_size") or SEGMENT_SIZE)
    base = int(facts["timeline"])
    start = parse_lsn(str(facts["start_lsn"]))
    stop = parse_lsn(str(facts["stop_lsn"]))
    present, histories, damaged = _archive_listing(repo, stream, size)
    chosen = _choose_timeline(timeline, base, start, histories, damaged)
    ranges = needed_ranges(timeline_path(chosen, histories), base, start, size) or []
    needed: list[tuple[int, int, int]] = []
    for tli, first, last in ranges:
        if target_lsn is not None and first * size > target_lsn:
            break  # the target is on an earlier timeline of the path
        if last is None:  # the open end: up to the newest archived segment of it
            newest = present.get(tli, [])
            last = max(newest[-1] if newest else first, segment_number(stop, size))
            if target_lsn is not None:
                wanted = segment_number(target_lsn, size)
                if wanted > last:
                    end = name_of(tli, last, size)
                    raise TargetPastArchive(
                        f"LSN {format_lsn(target_lsn)} is after the newest archived WAL of "
                        f"stream {stream} (segment {end}, which ends at LSN "
                        f"{format_lsn((last + 1) * size)}): recover to an earlier point, or "
                        "to latest"
                    )
                last = wanted
        elif target_lsn is not None:
            last = min(last, segment_number(target_lsn, size))
        needed.append((tli, first, last))
    count = 0
    for tli, first, last in needed:
        missing = first_missing(present.get(tli, []), first, last)
        if missing is not None:
            have = present.get(tli, [])
            newest_there = f"; its newest is {name_of(tli, have[-1], size)}" if have else ""
            raise WalGap(
                f"WAL segment {name_of(tli, missing, size)} of stream {stream} is missing "
                f"from the archive: recovery from the base backup would stop there "
                f"(timeline {tli}{newest_there})"
            )
        count += last - first + 1
    if not needed:
        raise WalGap(f"no WAL segment of stream {stream} is archived for this recovery")
    plan = RecoveryPlan(
        stream=stream,
        timeline=chosen,
        timelines=tuple(t for t, _, _ in needed),
        first=name_of(needed[0][0], needed[0][1], size),
        last=name_of(needed[-1][0], needed[-1][2], size),
        segments=count,
        segment_size=size,
        histories=histories,
    )
    if target_time is not None:
        _check_time(repo, plan, target_time)
    log.info("recovery plan: %s", plan.describe())
    return plan


CLOCK_MARGIN = timedelta(seconds=60)  # the database's clock against the storage's


def _check_time(repo: Repository, plan: RecoveryPlan, target_time: datetime) -> None:
    """``TargetPastArchive`` when ``target_time`` is after the newest needed segment was
    stored (plus ``CLOCK_MARGIN``): every commit archived is older than the target, so
    recovery could not know it got there."""
    prefix = f"{LOGS_PREFIX}{plan.stream}/{plan.last[:16]}/{plan.last}-"
    times = [t for key, t in list_with_times(repo.storage, prefix) if t is not None]
    if not times:
        return
    stored = datetime.fromtimestamp(max(times), UTC)
    if target_time > stored + CLOCK_MARGIN:
        raise TargetPastArchive(
            f"{target_time.isoformat(sep=' ')} is past the end of the archived WAL of stream "
            f"{plan.stream}: its newest segment {plan.last} was stored "
            f"{stored.isoformat(sep=' ', timespec='seconds')}; recover to an earlier moment, "
            "or to latest"
        )


def ended_early(plan: RecoveryPlan, redo_done: int | None) -> str | None:
    """For a recovery to the newest archived WAL: ``None`` when PostgreSQL's "redo done
    at" LSN is in the plan's last segment (or later), else the one-line reason."""
    if redo_done is None:
        return None
    last_tli, last_number = parse_segment(plan.last, plan.segment_size)
    if segment_number(redo_done, plan.segment_size) >= last_number:
        return None
    return (
        f"PostgreSQL ended recovery at LSN {format_lsn(redo_done)}, before the newest "
        f"archived segment {plan.last} (timeline {last_tli}) of stream {plan.stream}: a "
        "segment on the way could not be read"
    )
