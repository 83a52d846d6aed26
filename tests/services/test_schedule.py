from datetime import UTC, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest

from strongroom.config import parse_settings
from strongroom.services.schedule import (
    Job,
    interval_of,
    jobs_of,
    latest_due,
    next_run,
    runs_between,
)


def test_jobs_from_the_configuration():
    settings = parse_settings(
        """
        [repository]
        location = "/x"
        [targets.shop]
        url = "sqlite:///tmp/shop.db"
        schedule = { daily = "0 2 * * *", weekly = "0 3 * * 0" }
        verify = { schedule = "0 5 * * 0" }
        """
    )
    assert [j.job_id for j in jobs_of(settings)] == [
        "backup:shop:daily",
        "backup:shop:weekly",
        "verify:shop:drill",
    ]


def test_due_and_next_in_the_configured_time_zone():
    job = Job("backup", "shop", "daily", "0 2 * * *")
    now = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)  # 13:00 in Berlin
    due = latest_due(job, now, "Europe/Berlin")
    assert due.isoformat() == "2026-11-21T02:00:00+01:00"
    assert next_run(job, now, "Europe/Berlin").isoformat() == "2026-11-22T02:00:00+01:00"
    exactly = datetime(2026, 11, 21, 1, 0, tzinfo=UTC)  # 02:00 Berlin
    assert latest_due(job, exactly, "Europe/Berlin") == exactly


def test_intervals():
    now = datetime(2026, 11, 21, tzinfo=UTC)
    assert interval_of(["0 2 * * *", "0 3 * * 0"], now, "UTC") == timedelta(days=1)
    assert interval_of(["0 * * * *"], now, "UTC") == timedelta(hours=1)
    assert interval_of([], now, "UTC") == timedelta(days=1)


# --- daylight saving ----------------------------------------------------------------------
# (change day, cron, runs that local day, "night": the runs from 01:00 to 04:59 local).
# Fixed-time schedules (no * in minute and hour) run once per local day: the repeated time
# at its first occurrence, a skipped time at the end of the gap (03:00). Wildcard schedules
# run on real time: each real hour of the repeated hour, nothing inside the gap.
CHANGE_DAYS = {
    "berlin-autumn": ("Europe/Berlin", (2026, 10, 25)),
    "berlin-spring": ("Europe/Berlin", (2026, 3, 29)),
    "ny-autumn": ("America/New_York", (2026, 11, 1)),
    "ny-spring": ("America/New_York", (2026, 3, 8)),
}
DST_CASES = [
    ("berlin-autumn", "30 2 * * *", 1, "02:30+0200"),
    ("berlin-spring", "30 2 * * *", 1, "03:00+0200"),
    ("ny-autumn", "30 1 * * *", 1, "01:30-0400"),
    ("ny-autumn", "30 2 * * *", 1, "02:30-0500"),
    ("ny-spring", "30 2 * * *", 1, "03:00-0400"),
    ("berlin-autumn", "0 * * * *", 25, "01:00+0200 02:00+0200 02:00+0100 03:00+0100 04:00+0100"),
    ("berlin-spring", "0 * * * *", 23, "01:00+0100 03:00+0200 04:00+0200"),
    ("ny-autumn", "0 * * * *", 25, "01:00-0400 01:00-0500 02:00-0500 03:00-0500 04:00-0500"),
    ("ny-spring", "0 * * * *", 23, "01:00-0500 03:00-0400 04:00-0400"),
    ("berlin-autumn", "*/15 * * * *", 100, None),
    ("berlin-spring", "*/15 * * * *", 92, None),
    ("ny-autumn", "*/15 * * * *", 100, None),
    ("ny-spring", "*/15 * * * *", 92, None),
]  # fmt: skip


def _local_day(zone, day):
    tz = ZoneInfo(zone)
    start = datetime(*day, tzinfo=tz).astimezone(UTC)
    end = (datetime(*day) + timedelta(days=1)).replace(tzinfo=tz).astimezone(UTC)
    return start, end


@pytest.mark.parametrize(("change", "cron", "count", "night"), DST_CASES)
def test_daylight_saving_change_days(change, cron, count, night):
    zone, day = CHANGE_DAYS[change]
    job = Job("backup", "shop", "t", cron)
    start, end = _local_day(zone, day)
    runs = runs_between(job, start - timedelta(seconds=1), end - timedelta(seconds=1), zone)
    assert len(runs) == count
    assert len({r.astimezone(UTC) for r in runs}) == count  # all distinct real moments
    spacing = {b.astimezone(UTC) - a.astimezone(UTC) for a, b in pairwise(runs)}
    if cron == "*/15 * * * *":
        assert spacing == {timedelta(minutes=15)}  # every real quarter hour, also at the change
    elif cron == "0 * * * *":
        assert spacing == {timedelta(hours=1)}
    if night is not None:
        shown = [r.strftime("%H:%M%z") for r in runs if 1 <= r.hour <= 4]
        assert " ".join(shown) == night


@pytest.mark.parametrize(("change", "cron", "count", "night"), DST_CASES)
def test_each_scheduled_run_is_due_under_one_name(change, cron, count, night):
    """What the scheduler claims: ticking every 5 minutes through the change day, the
    newest due run takes exactly as many distinct names as there are runs (a daily job
    at 02:30 Europe/Berlin is claimed once on the autumn day, not at 02:30 CEST and again
    at 02:30 CET)."""
    zone, day = CHANGE_DAYS[change]
    job = Job("backup", "shop", "t", cron)
    start, end = _local_day(zone, day)
    names = set()
    moment = start
    while moment < end:
        due = latest_due(job, moment, zone)
        assert due.astimezone(UTC) <= moment
        if due.astimezone(UTC) >= start:
            names.add(due.isoformat())
        moment += timedelta(minutes=5)
    assert len(names) == count


def test_next_run_across_the_repeated_hour():
    zone = "Europe/Berlin"
    daily = Job("backup", "shop", "daily", "30 2 * * *")
    second_0230 = datetime(2026, 10, 25, 1, 30, tzinfo=UTC)  # 02:30 CET, the repeat
    assert next_run(daily, second_0230 - timedelta(minutes=1), zone).isoformat() == (
        "2026-10-26T02:30:00+01:00"
    )
    hourly = Job("backup", "shop", "hourly", "0 * * * *")
    first_0230 = datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 02:30 CEST
    assert next_run(hourly, first_0230, zone).isoformat() == "2026-10-25T02:00:00+01:00"
    assert interval_of(["30 2 * * *"], datetime(2026, 3, 28, 12, tzinfo=UTC), zone) == (
        timedelta(days=1)
    )
