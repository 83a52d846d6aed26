from datetime import UTC, datetime, timedelta

from strongroom.config import parse_settings
from strongroom.services.schedule import Job, interval_of, jobs_of, latest_due, next_run


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
