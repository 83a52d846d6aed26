"""Scheduled jobs: which backups and drills are due when, from the configuration.

Cron expressions are read in the configured time zone, and daylight-saving changes are
handled as cron (Vixie/Debian) does:

- A **fixed-time** schedule (no ``*`` in its minute and hour fields: ``30 2 * * *``,
  ``0 3 * * 0``, ``0 2,14 * * *``) runs each listed local time once per local day. When
  the clocks go back, a time in the repeated hour runs at its first occurrence only (02:30
  CEST, not again at 02:30 CET). When they go forward, a time that does not exist that
  day (02:30 in Europe/Berlin on the spring change day) runs once, at the first moment
  after the gap (03:00 local).
- A **wildcard** schedule (``*`` in the minute or hour field: ``0 * * * *``,
  ``*/15 * * * *``) runs on real time: in the repeated hour it runs for each real hour
  (02:00 CEST and 02:00 CET both run), and local times inside the spring gap are skipped
  (there is no 02:00 that day; 01:00 is followed by 03:00, one real hour later).

Internally, times are computed from croniter's wall-clock (naive) sequence and mapped to
real instants; every comparison is made in UTC, as aware datetimes sharing a ``ZoneInfo``
compare by wall clock, which is ambiguous in the repeated hour.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from itertools import pairwise
from zoneinfo import ZoneInfo

from croniter import croniter

from strongroom.config import Settings

DEFAULT_INTERVAL = timedelta(days=1)
# Wall-clock margin when searching around a moment: more than any daylight-saving shift
# (offset change) and gap of the zones in use (at most two hours).
_MARGIN = timedelta(hours=4)
_SEARCH_LIMIT = 100_000  # wall-clock times examined at most per search


@dataclass(frozen=True)
class Job:
    """One cron line of the configuration: a tagged backup or a restore drill of a target."""

    kind: str  # "backup" or "verify"
    target: str
    tag: str | None
    cron: str

    @property
    def job_id(self) -> str:
        return f"{self.kind}:{self.target}:{self.tag or 'drill'}"


def jobs_of(settings: Settings) -> list[Job]:
    jobs = []
    for name, target in sorted(settings.targets.items()):
        for tag, cron in sorted(target.schedule.items()):
            jobs.append(Job("backup", name, tag, cron))
        if target.verify is not None:
            jobs.append(Job("verify", name, None, target.verify.schedule))
    return jobs


@cache
def is_fixed_time(cron: str) -> bool:
    """No ``*`` in the minute and hour fields (macros expanded: ``@daily`` is fixed-time,
    ``@hourly`` is not)."""
    fields = croniter(cron, datetime(2000, 1, 1)).expressions
    return not any("*" in str(part) for part in fields[:2])


def _zone(timezone: str) -> ZoneInfo:
    return ZoneInfo(timezone)


def _wall(moment: datetime, zone: ZoneInfo) -> datetime:
    """The naive local wall-clock time of an aware moment."""
    return moment.astimezone(zone).replace(tzinfo=None)


def _utc(wall: datetime, zone: ZoneInfo, fold: int) -> datetime:
    return wall.replace(tzinfo=zone, fold=fold).astimezone(UTC)


def _gap_end(wall: datetime, zone: ZoneInfo) -> datetime:
    """For a wall-clock time the clocks skipped: the instant the gap ends (UTC)."""
    low = _utc(wall, zone, 1)  # read with the offset after the change: before the gap ends
    high = _utc(wall, zone, 0)  # read with the offset before it: after the gap ends
    after = high.astimezone(zone).utcoffset()
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(zone).utcoffset() == after:
            high = middle
        else:
            low = middle
    return high.replace(microsecond=0)


def _instants(wall: datetime, zone: ZoneInfo, fixed: bool) -> list[datetime]:
    """The real instants (UTC) at which a scheduled wall-clock time runs."""
    first = _utc(wall, zone, 0)
    if _wall(first, zone) != wall:  # skipped by a change to summer time
        return [_gap_end(wall, zone)] if fixed else []
    second = _utc(wall, zone, 1)
    if second == first or fixed:
        return [first]
    return sorted({first, second})  # a wildcard schedule runs in each real hour


def _forward(job: Job, start: datetime, zone: ZoneInfo) -> Iterator[tuple[datetime, datetime]]:
    """(wall time, instant) pairs from wall-clock time ``start`` (exclusive) onwards."""
    fixed = is_fixed_time(job.cron)
    iterator = croniter(job.cron, start)
    for _ in range(_SEARCH_LIMIT):
        wall: datetime = iterator.get_next(datetime)
        for instant in _instants(wall, zone, fixed):
            yield wall, instant


def _backward(job: Job, start: datetime, zone: ZoneInfo) -> Iterator[tuple[datetime, datetime]]:
    fixed = is_fixed_time(job.cron)
    iterator = croniter(job.cron, start)
    for _ in range(_SEARCH_LIMIT):
        wall: datetime = iterator.get_prev(datetime)
        for instant in _instants(wall, zone, fixed):
            yield wall, instant


def _local(instant: datetime, zone: ZoneInfo) -> datetime:
    return instant.astimezone(zone)  # sets ``fold`` for the repeated hour: isoformat is exact


def next_run(job: Job, now: datetime, timezone: str) -> datetime:
    """The first run strictly after ``now`` (aware, in the configured zone)."""
    zone = _zone(timezone)
    reference = now.astimezone(UTC)
    best: datetime | None = None
    best_wall: datetime | None = None
    for wall, instant in _forward(job, _wall(reference, zone) - _MARGIN, zone):
        if best_wall is not None and wall > best_wall + _MARGIN:
            break
        if instant > reference and (best is None or instant < best):
            best, best_wall = instant, wall
    if best is None:
        raise ValueError(f"{job.cron!r} has no run after {now.isoformat()}")
    return _local(best, zone)


def latest_due(job: Job, now: datetime, timezone: str) -> datetime:
    """The newest scheduled run at or before ``now`` (aware, in the configured zone).

    Its ``isoformat()`` names the run (the claim in the repository); with daylight saving
    a fixed-time schedule has one run per local day, so it is claimed once."""
    zone = _zone(timezone)
    reference = now.astimezone(UTC).replace(microsecond=0)
    best: datetime | None = None
    best_wall: datetime | None = None
    start = _wall(reference, zone) + _MARGIN + timedelta(seconds=1)
    for wall, instant in _backward(job, start, zone):
        if best_wall is not None and wall < best_wall - _MARGIN:
            break
        if instant <= reference and (best is None or instant > best):
            best, best_wall = instant, wall
    if best is None:
        raise ValueError(f"{job.cron!r} has no run before {now.isoformat()}")
    return _local(best, zone)


def runs_between(job: Job, start: datetime, end: datetime, timezone: str) -> list[datetime]:
    """Every run in ``(start, end]``, in order (aware, in the configured zone)."""
    runs: list[datetime] = []
    moment = start
    while True:
        moment = next_run(job, moment, timezone)
        if moment.astimezone(UTC) > end.astimezone(UTC):
            return runs
        runs.append(moment)


def interval_of(crons: list[str], now: datetime, timezone: str) -> timedelta:
    """The shortest wall-clock spacing between consecutive runs of the given schedules
    (the expected age of the newest backup: 24 h for a daily schedule, also across a
    daylight-saving change); one day when there is no schedule."""
    if not crons:
        return DEFAULT_INTERVAL
    wall = _wall(now, _zone(timezone))
    best: timedelta | None = None
    for cron in crons:
        iterator = croniter(cron, wall)
        times: list[datetime] = [iterator.get_next(datetime) for _ in range(4)]
        for a, b in pairwise(times):
            gap = b - a
            if best is None or gap < best:
                best = gap
    return best or DEFAULT_INTERVAL
