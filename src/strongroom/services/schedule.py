"""Scheduled jobs: which backups and drills are due when, from the configuration."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

from croniter import croniter

from strongroom.config import Settings

DEFAULT_INTERVAL = timedelta(days=1)


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


def _local(now: datetime, timezone: str) -> datetime:
    return now.astimezone(ZoneInfo(timezone))


def next_run(job: Job, now: datetime, timezone: str) -> datetime:
    """The first run strictly after ``now`` (aware, in the configured zone)."""
    return croniter(job.cron, _local(now, timezone)).get_next(datetime)


def latest_due(job: Job, now: datetime, timezone: str) -> datetime:
    """The newest scheduled time at or before ``now``."""
    local = _local(now, timezone)
    after = local.replace(microsecond=0) + timedelta(seconds=1)
    previous: datetime = croniter(job.cron, after).get_prev(datetime)
    return previous


def interval_of(crons: list[str], now: datetime, timezone: str) -> timedelta:
    """The shortest spacing between consecutive runs of the given schedules (the expected
    age of the newest backup); one day when there is no schedule."""
    if not crons:
        return DEFAULT_INTERVAL
    local = _local(now, timezone)
    best: timedelta | None = None
    for cron in crons:
        iterator = croniter(cron, local)
        times = [iterator.get_next(datetime) for _ in range(4)]
        for a, b in pairwise(times):
            gap = b - a
            if best is None or gap < best:
                best = gap
    return best or DEFAULT_INTERVAL
