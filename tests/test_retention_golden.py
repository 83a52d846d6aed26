"""Retention: golden cases on real calendars (daylight saving time, month ends, leap days,
ISO week 53, the policy's time zone, the default policy) and the always-kept rules and their
reasons."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, timedelta
from zoneinfo import ZoneInfo

from strongroom.retention import BackupInfo, Decision, RetentionPolicy, decide, parse_duration
from tests.retention_helpers import TAGS, at, info


def kept(decisions: Sequence[Decision]) -> list[str]:
    """Kept backups as UTC times ``YYYY-MM-DDTHH:MMZ``, newest first."""
    times = sorted((d.backup.time for d in decisions if d.keep), reverse=True)
    return [f"{t.astimezone(UTC):%Y-%m-%dT%H:%MZ}" for t in times]


def reasons_of(decisions: Sequence[Decision]) -> dict[str, tuple[str, ...]]:
    return {f"{d.backup.time.astimezone(UTC):%Y-%m-%dT%H:%MZ}": d.reasons for d in decisions}


def hourly_series(first: str, count: int, step_minutes: int = 60) -> list[BackupInfo]:
    start = at(first)
    return [info(start + timedelta(minutes=step_minutes * n)) for n in range(count)]


# --- golden cases: daylight saving time ----------------------------------------------------


def test_new_york_fall_back_the_repeated_one_oclock_hour_counts_twice() -> None:
    # Half-hourly from 2026-11-01 03:00Z (23:00 EDT Oct 31) to 08:30Z (03:30 EST).
    # Local hours: 23 EDT, 00 EDT, 01 EDT, 01 EST, 02 EST, 03 EST -> 6 hourly periods in
    # 6 elapsed hours; a key without the UTC offset would see only 5.
    backups = hourly_series("2026-11-01T03:00Z", 12, step_minutes=30)
    now = at("2026-11-01T09:00Z")
    policy = RetentionPolicy(keep_hourly=24, timezone="America/New_York")
    assert kept(decide(backups, policy, now)) == [
        "2026-11-01T08:30Z",
        "2026-11-01T07:30Z",
        "2026-11-01T06:30Z",  # 01:30 EST
        "2026-11-01T05:30Z",  # 01:30 EDT
        "2026-11-01T04:30Z",
        "2026-11-01T03:30Z",
    ]
    three = RetentionPolicy(keep_hourly=3, timezone="America/New_York")
    assert reasons_of(decide(backups, three, now))["2026-11-01T06:30Z"] == ("hourly 3 of 3",)
    # Daily: 03:xxZ is still Oct 31 in New York, the rest is Nov 1.
    daily = RetentionPolicy(keep_daily=5, timezone="America/New_York")
    assert kept(decide(backups, daily, now)) == ["2026-11-01T08:30Z", "2026-11-01T03:30Z"]


def test_new_york_spring_forward_skips_an_hour_and_uses_the_local_date() -> None:
    # 04:30Z..08:30Z on 2026-03-08 = 23:30 EST (Mar 7), 00:30, 01:30 EST, 03:30, 04:30 EDT.
    backups = hourly_series("2026-03-08T04:30Z", 5)
    now = at("2026-03-08T12:00Z")
    hourly = RetentionPolicy(keep_hourly=10, timezone="America/New_York")
    assert len(kept(decide(backups, hourly, now))) == 5
    daily = RetentionPolicy(keep_daily=10, timezone="America/New_York")
    assert kept(decide(backups, daily, now)) == ["2026-03-08T08:30Z", "2026-03-08T04:30Z"]
    assert kept(decide(backups, RetentionPolicy(keep_daily=10), now)) == ["2026-03-08T08:30Z"]


def test_berlin_fall_back_night_and_the_local_day_of_a_late_utc_backup() -> None:
    # 2026-10-24T23:30Z is 2026-10-25 01:30 CEST: Oct 25 in Berlin, Oct 24 in UTC.
    backups = [info("2026-10-24T21:30Z"), info("2026-10-24T23:30Z"), info("2026-10-25T12:00Z")]
    now = at("2026-10-26T00:00Z")
    berlin = RetentionPolicy(keep_daily=2, timezone="Europe/Berlin")
    assert kept(decide(backups, berlin, now)) == ["2026-10-25T12:00Z", "2026-10-24T21:30Z"]
    utc = RetentionPolicy(keep_daily=2)
    assert kept(decide(backups, utc, now)) == ["2026-10-25T12:00Z", "2026-10-24T23:30Z"]
    # 00:30Z and 01:30Z are 02:30 CEST and 02:30 CET: two hourly periods.
    night = hourly_series("2026-10-25T00:30Z", 3)
    policy = RetentionPolicy(keep_hourly=24, timezone="Europe/Berlin")
    assert len(kept(decide(night, policy, now))) == 3


def test_berlin_spring_forward_day_has_23_hours() -> None:
    # Hourly from 2026-03-28T22:00Z (23:00 CET Mar 28) to 2026-03-29T22:00Z (00:00 CEST
    # Mar 30): 1 backup on Mar 28, 23 on Mar 29 (02:00 does not exist), 1 on Mar 30.
    backups = hourly_series("2026-03-28T22:00Z", 25)
    now = at("2026-03-30T00:00Z")
    daily = decide(backups, RetentionPolicy(keep_daily=7, timezone="Europe/Berlin"), now)
    assert kept(daily) == ["2026-03-29T22:00Z", "2026-03-29T21:00Z", "2026-03-28T22:00Z"]
    zone = ZoneInfo("Europe/Berlin")
    assert sum(b.time.astimezone(zone).day == 29 for b in backups) == 23
    hourly = decide(backups, RetentionPolicy(keep_hourly=48, timezone="Europe/Berlin"), now)
    assert len(kept(hourly)) == 25


# --- golden cases: calendars ---------------------------------------------------------------


def test_month_ends_january_31_to_february_and_march() -> None:
    backups = hourly_series("2027-01-29T12:00Z", 33, step_minutes=24 * 60)  # to 2027-03-02
    now = at("2027-03-03T00:00Z")
    assert kept(decide(backups, RetentionPolicy(keep_monthly=3), now)) == [
        "2027-03-02T12:00Z",
        "2027-02-28T12:00Z",
        "2027-01-31T12:00Z",
    ]


def test_leap_day_2028_in_monthly_and_yearly_buckets() -> None:
    backups = [
        info("2027-02-28T12:00Z"),
        info("2028-02-28T12:00Z"),
        info("2028-02-29T12:00Z"),
        info("2029-02-28T12:00Z"),
    ]
    now = at("2029-03-01T00:00Z")
    decisions = decide(backups, RetentionPolicy(keep_monthly=2, keep_yearly=3), now)
    assert reasons_of(decisions) == {
        "2027-02-28T12:00Z": ("yearly 3 of 3",),
        "2028-02-28T12:00Z": (),
        "2028-02-29T12:00Z": ("monthly 2 of 2", "yearly 2 of 3"),
        "2029-02-28T12:00Z": ("monthly 1 of 2", "yearly 1 of 3"),
    }
    # 2028-02-29T23:30Z is already March 1 in Berlin: it belongs to March there.
    late = [info("2028-02-29T12:00Z"), info("2028-02-29T23:30Z")]
    berlin = RetentionPolicy(keep_monthly=5, timezone="Europe/Berlin")
    assert len(kept(decide(late, berlin, now))) == 2
    assert kept(decide(late, RetentionPolicy(keep_monthly=5), now)) == ["2028-02-29T23:30Z"]


def test_iso_week_53_spans_the_year_boundary() -> None:
    # 2026-12-27 is Sunday of 2026-W52; 2026-12-28 (Mon) .. 2027-01-03 (Sun) is 2026-W53.
    backups = [info("2026-12-27T12:00Z"), info("2026-12-31T12:00Z"), info("2027-01-01T12:00Z")]
    now = at("2027-01-02T00:00Z")
    assert kept(decide(backups, RetentionPolicy(keep_weekly=2), now)) == [
        "2027-01-01T12:00Z",
        "2026-12-27T12:00Z",
    ]
    # Monthly and yearly do split at the boundary.
    assert len(kept(decide(backups, RetentionPolicy(keep_yearly=2), now))) == 2
    more = [*backups, info("2027-01-03T12:00Z"), info("2027-01-04T12:00Z")]
    later = at("2027-01-05T00:00Z")
    assert reasons_of(decide(more, RetentionPolicy(keep_weekly=2), later)) == {
        "2026-12-27T12:00Z": (),
        "2026-12-31T12:00Z": (),
        "2027-01-01T12:00Z": (),
        "2027-01-03T12:00Z": ("weekly 2 of 2",),  # 2026-W53
        "2027-01-04T12:00Z": ("weekly 1 of 2",),  # 2027-W01
    }


def test_policy_time_zone_moves_a_backup_to_another_day() -> None:
    # 2026-06-30T22:30Z is 2026-07-01 in Berlin, 2026-06-30 18:30 in New York.
    backups = [info("2026-06-30T10:00Z"), info("2026-06-30T22:30Z")]
    now = at("2026-07-02T00:00Z")
    for zone, expected in [("UTC", 1), ("America/New_York", 1), ("Europe/Berlin", 2)]:
        policy = RetentionPolicy(keep_daily=5, timezone=zone)
        assert len(kept(decide(backups, policy, now))) == expected, zone
    monthly = RetentionPolicy(keep_monthly=5, timezone="Europe/Berlin")
    assert len(kept(decide(backups, monthly, now))) == 2


def test_default_policy_on_400_daily_backups_keeps_20() -> None:
    # Daily at 02:00Z from 2025-09-27 to 2026-10-31 (Saturday, 2026-W44): 400 backups.
    # daily 7:    Oct 25..31 (Oct 25 is Sunday of W43, Oct 26..31 are in W44)      -> 7
    # weekly 4:   W44 Oct 31 and W43 Oct 25 are kept already; W42 Oct 18, W41 Oct 11 -> +2
    # monthly 12: Oct 31 kept already; Sep 30, Aug 31, Jul 31, Jun 30, May 31, Apr 30,
    #             Mar 31, Feb 28, Jan 31 2026, Dec 31 2025, Nov 30 2025               -> +11
    # Total 7 + 2 + 11 = 20 kept, 380 forgotten (Sep 30 2025 is the 13th month: forgotten).
    backups = hourly_series("2025-09-27T02:00Z", 400, step_minutes=24 * 60)
    assert len(backups) == 400 and backups[-1].time == at("2026-10-31T02:00Z")
    decisions = decide(backups, RetentionPolicy.default(), at("2026-10-31T03:00Z"))
    days = [t[:10] for t in kept(decisions)]
    assert days == [
        *[f"2026-10-{d}" for d in range(31, 24, -1)],
        "2026-10-18",
        "2026-10-11",
        "2026-09-30",
        "2026-08-31",
        "2026-07-31",
        "2026-06-30",
        "2026-05-31",
        "2026-04-30",
        "2026-03-31",
        "2026-02-28",
        "2026-01-31",
        "2025-12-31",
        "2025-11-30",
    ]
    assert sum(not d.keep for d in decisions) == 380
    assert reasons_of(decisions)["2026-10-31T02:00Z"] == (
        "daily 1 of 7",
        "weekly 1 of 4",
        "monthly 1 of 12",
    )
    assert reasons_of(decisions)["2026-10-25T02:00Z"] == ("daily 7 of 7", "weekly 2 of 4")
    assert reasons_of(decisions)["2025-11-30T02:00Z"] == ("monthly 12 of 12",)


# --- golden cases: always-kept rules and reasons --------------------------------------------


def test_always_kept_rules_and_their_reasons() -> None:
    now = at("2026-05-20T12:00Z")
    backups = [
        info("2026-01-01T00:00Z", pinned=True),
        info("2026-02-01T00:00Z", verified_good=True),
        info("2026-03-01T00:00Z", verified_good=True),
        info("2026-05-10T00:00Z", tags=frozenset({"pre-restore"})),  # 10 days old
        info("2026-05-15T00:00Z", tags=frozenset({"pre-restore"})),  # 5 days old
        info("2026-05-19T00:00Z"),
        info("2026-05-21T00:00Z"),  # in the future
        info("2026-03-01T00:00Z", target="billing", verified_good=True),
    ]
    decisions = decide(backups, RetentionPolicy(keep_last=1, keep_safety=1), now)
    assert [d.reasons for d in decisions] == [
        ("pinned",),
        (),
        ("newest verified good",),
        (),
        ("safety 1 of 1", "safety within 7d"),
        ("last 1 of 1",),
        ("newer than now",),
        ("newest verified good", "last 1 of 1"),
    ]


def test_reasons_for_within_tags_and_empty_policy() -> None:
    now = at("2026-05-20T12:00Z")
    backups = [
        info("2026-04-01T00:00Z", tags=frozenset({"release", "manual"})),
        info("2026-05-01T00:00Z"),
    ]
    policy = RetentionPolicy(keep_within=parse_duration("30d"), keep_tags=frozenset(TAGS))
    assert [d.reasons for d in decide(backups, policy, now)] == [
        ("tag manual", "tag release"),
        ("within 30d",),
    ]
    empty = decide(backups, RetentionPolicy(), now)
    assert [d.reasons for d in empty] == [("no policy",), ("no policy",)]
    assert RetentionPolicy(keep_daily=0, keep_last=0).is_empty()
    assert not RetentionPolicy.default().is_empty()
    assert decide([], RetentionPolicy.default(), now) == []


def test_default_policy_and_describe() -> None:
    policy = RetentionPolicy.default()
    assert (policy.keep_daily, policy.keep_weekly, policy.keep_monthly) == (7, 4, 12)
    assert policy.keep_last is None and policy.keep_within is None
    assert policy.describe() == "7 daily, 4 weekly, 12 monthly"
    assert RetentionPolicy().describe() == "no policy"
