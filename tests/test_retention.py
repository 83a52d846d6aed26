"""Retention: properties over random histories, and golden cases on real calendars."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace
from typing import TYPE_CHECKING, cast
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom.retention import (
    BackupInfo,
    Decision,
    RetentionPolicy,
    decide,
    format_duration,
    parse_duration,
)

if TYPE_CHECKING:
    from strongroom.repository.manifest import Manifest

PROPERTY = settings(max_examples=200, deadline=None)

TARGETS = ("app", "billing", "dev")
TAGS = ("daily", "manual", "release", "pre-restore")
ZONES = (
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Asia/Kolkata",
    "Australia/Lord_Howe",  # half-hour DST shift
    "Pacific/Chatham",  # +12:45 / +13:45
)
START = datetime(2024, 1, 1, tzinfo=UTC)
DISPLAY_ZONES = (UTC, ZoneInfo("Asia/Tokyo"), timezone(timedelta(hours=-7)))


# --- helpers -----------------------------------------------------------------------------


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def info(when: str | datetime, target: str = "app", **kwargs: object) -> BackupInfo:
    moment = at(when) if isinstance(when, str) else when
    stamp = moment.astimezone(UTC)
    return BackupInfo(
        backup_id=f"{stamp:%Y%m%dT%H%M%SZ}-{sum(map(ord, target)):08x}",
        target=target,
        time=moment,
        **kwargs,  # type: ignore[arg-type]
    )


def kept(decisions: Sequence[Decision]) -> list[str]:
    """Kept backups as UTC times ``YYYY-MM-DDTHH:MMZ``, newest first."""
    times = sorted((d.backup.time for d in decisions if d.keep), reverse=True)
    return [f"{t.astimezone(UTC):%Y-%m-%dT%H:%MZ}" for t in times]


def reasons_of(decisions: Sequence[Decision]) -> dict[str, tuple[str, ...]]:
    return {f"{d.backup.time.astimezone(UTC):%Y-%m-%dT%H:%MZ}": d.reasons for d in decisions}


def hourly_series(first: str, count: int, step_minutes: int = 60) -> list[BackupInfo]:
    start = at(first)
    return [info(start + timedelta(minutes=step_minutes * n)) for n in range(count)]


# --- strategies --------------------------------------------------------------------------


@st.composite
def histories(
    draw: st.DrawFn, plain: bool = False, targets: Sequence[str] = TARGETS
) -> tuple[list[BackupInfo], datetime]:
    """Backups over a span of a few days up to ~3 years, and a ``now`` near its end.

    Times fall on quarter hours so that equal times and shared periods are common.
    ``plain`` leaves out everything that is always kept (pins, verified, pre-restore tags,
    backups newer than now), so the policy alone decides.
    """
    span_days = draw(st.sampled_from([2, 20, 120, 3 * 365]))
    rows = draw(
        st.lists(
            st.tuples(
                st.integers(0, span_days * 96),  # quarter hours after START
                st.sampled_from(DISPLAY_ZONES),
                st.sampled_from(targets),
                st.integers(0, 15),  # tag bits
                st.integers(0, 39),  # flags: pinned 1 in 10, verified 1 in 4
            ),
            max_size=30,
        )
    )
    tag_pool = TAGS[:3] if plain else TAGS
    backups = []
    for n, (quarters, shown_in, target, tag_bits, flags) in enumerate(rows):
        moment = START + timedelta(minutes=15 * quarters)
        backups.append(
            BackupInfo(
                backup_id=f"{moment:%Y%m%dT%H%M%SZ}-{n:08x}",
                target=target,
                time=moment.astimezone(shown_in),
                tags=frozenset(t for bit, t in enumerate(tag_pool) if tag_bits >> bit & 1),
                pinned=not plain and flags % 10 == 0,
                verified_good=not plain and flags % 4 == 1,
            )
        )
    end = START + timedelta(days=span_days + 1)
    earliest = 0 if plain else -24 * 10
    now = end + timedelta(hours=draw(st.integers(earliest, 24 * 60)))
    return backups, now


counts = st.one_of(st.none(), st.integers(0, 12))
policies = st.builds(
    RetentionPolicy,
    keep_last=counts,
    keep_hourly=counts,
    keep_daily=counts,
    keep_weekly=counts,
    keep_monthly=counts,
    keep_yearly=counts,
    keep_within=st.one_of(
        st.none(),
        st.builds(timedelta, days=st.integers(0, 400), hours=st.integers(1, 23)),
    ),
    keep_tags=st.one_of(st.just(frozenset()), st.frozensets(st.sampled_from(TAGS), max_size=2)),
    timezone=st.sampled_from(ZONES),
)


# --- properties --------------------------------------------------------------------------


@PROPERTY
@given(histories(), policies)
def test_one_decision_per_backup_in_input_order_and_reasons_iff_kept(
    history: tuple[list[BackupInfo], datetime], policy: RetentionPolicy
) -> None:
    backups, now = history
    decisions = decide(backups, policy, now)
    assert [d.backup for d in decisions] == backups
    for d in decisions:
        assert d.keep == bool(d.reasons)
        assert len(set(d.reasons)) == len(d.reasons)
    if policy.is_empty():
        assert all(d.keep and "no policy" in d.reasons for d in decisions)


@PROPERTY
@given(histories(), policies)
def test_idempotent_deciding_again_on_the_kept_set_keeps_all_with_the_same_reasons(
    history: tuple[list[BackupInfo], datetime], policy: RetentionPolicy
) -> None:
    backups, now = history
    first = [d for d in decide(backups, policy, now) if d.keep]
    second = decide([d.backup for d in first], policy, now)
    assert all(d.keep for d in second)
    assert [d.reasons for d in second] == [d.reasons for d in first]


@PROPERTY
@given(histories(), policies)
def test_never_forgets_pinned_newest_verified_young_pre_restore_or_future_backups(
    history: tuple[list[BackupInfo], datetime], policy: RetentionPolicy
) -> None:
    backups, now = history
    decisions = decide(backups, policy, now)
    for d in decisions:
        b = d.backup
        if b.pinned or b.time > now:
            assert d.keep
        if "pre-restore" in b.tags and timedelta(0) <= now - b.time <= timedelta(days=7):
            assert d.keep  # the default safety rule keeps every one younger than 7 days
    for target in TARGETS:
        verified = [
            b
            for b in backups
            if b.target == target and b.verified_good and "pre-restore" not in b.tags
        ]
        if verified:
            newest = max(verified, key=lambda b: (b.time, b.backup_id))
            assert all(d.keep for d in decisions if d.backup is newest)


@PROPERTY
@given(histories(), policies, st.data())
def test_input_order_does_not_change_any_decision(
    history: tuple[list[BackupInfo], datetime], policy: RetentionPolicy, data: st.DataObject
) -> None:
    backups, now = history
    shuffled = data.draw(st.permutations(backups))
    by_id = {d.backup.backup_id: d for d in decide(backups, policy, now)}
    for d in decide(shuffled, policy, now):
        assert d == by_id[d.backup.backup_id]


@PROPERTY
@given(
    histories(targets=["app"]),
    histories(targets=["billing", "dev"]),
    policies,
    st.data(),
)
def test_decisions_are_per_target_other_targets_never_change_them(
    mine: tuple[list[BackupInfo], datetime],
    others: tuple[list[BackupInfo], datetime],
    policy: RetentionPolicy,
    data: st.DataObject,
) -> None:
    backups, now = mine
    alone = decide(backups, policy, now)
    mixed = data.draw(st.permutations(backups + others[0]))
    together = {id(d.backup): d for d in decide(mixed, policy, now)}
    assert [together[id(b)] for b in backups] == alone


def period_functions() -> dict[str, Callable[[datetime], Hashable]]:
    """Reference period keys, written independently of the module."""
    return {
        "hourly": lambda t: (t.strftime("%Y-%m-%d %H"), t.utcoffset()),
        "daily": lambda t: t.strftime("%Y-%m-%d"),
        "weekly": lambda t: t.strftime("%G-W%V"),
        "monthly": lambda t: t.strftime("%Y-%m"),
        "yearly": lambda t: t.strftime("%Y"),
    }


@PROPERTY
@given(
    histories(plain=True),
    st.sampled_from(sorted(period_functions())),
    st.integers(1, 10),
    st.sampled_from(ZONES),
)
def test_a_bucket_alone_keeps_the_newest_backup_of_each_of_the_n_newest_periods(
    history: tuple[list[BackupInfo], datetime], kind: str, n: int, zone_name: str
) -> None:
    backups, now = history
    policy = RetentionPolicy(**{f"keep_{kind}": n}, timezone=zone_name)  # type: ignore[arg-type]
    decisions = decide(backups, policy, now)
    zone = ZoneInfo(zone_name)
    period_of = period_functions()[kind]
    for target in TARGETS:
        newest_in_period: dict[Hashable, BackupInfo] = {}
        for b in backups:
            if b.target != target:
                continue
            key = period_of(b.time.astimezone(zone))
            best = newest_in_period.get(key)
            if best is None or (b.time, b.backup_id) > (best.time, best.backup_id):
                newest_in_period[key] = b
        chosen = sorted(newest_in_period.values(), key=lambda b: (b.time, b.backup_id))[::-1]
        expected = chosen[:n]
        got = [d for d in decisions if d.keep and d.backup.target == target]
        assert len(got) == min(n, len(newest_in_period))
        assert {id(d.backup) for d in got} == {id(b) for b in expected}
        labels = {id(d.backup): d.reasons for d in got}
        for k, b in enumerate(expected, start=1):
            assert labels[id(b)] == (f"{kind} {k} of {n}",)


@PROPERTY
@given(histories(plain=True), st.integers(1, 10), st.integers(1, 60))
def test_keep_last_and_keep_within_alone(
    history: tuple[list[BackupInfo], datetime], n: int, days: int
) -> None:
    backups, now = history
    last = decide(backups, RetentionPolicy(keep_last=n), now)
    within = decide(backups, RetentionPolicy(keep_within=timedelta(days=days)), now)
    for target in TARGETS:
        mine = sorted(
            (b for b in backups if b.target == target), key=lambda b: (b.time, b.backup_id)
        )[::-1]
        assert [d.backup for d in last if d.keep and d.backup.target == target] == [
            b for b in backups if any(b is m for m in mine[:n])
        ]
    for d in within:
        assert d.keep == (d.backup.time >= now - timedelta(days=days))
        assert d.reasons == ((f"within {days}d",) if d.keep else ())


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


# --- environment, parsing, validation -----------------------------------------------------


def test_backup_retention_days_from_environment() -> None:
    policy = RetentionPolicy.from_environment({"BACKUP_RETENTION_DAYS": "30"})
    assert policy == RetentionPolicy(keep_within=timedelta(days=30))
    assert RetentionPolicy.from_environment({}) is None
    assert RetentionPolicy.from_environment({"BACKUP_RETENTION_DAYS": "  "}) is None
    assert RetentionPolicy.from_environment({"BACKUP_RETENTION_DAYS": " 7 "}) == RetentionPolicy(
        keep_within=timedelta(days=7)
    )
    now = at("2026-05-31T00:00Z")
    backups = [info("2026-05-01T00:00Z"), info("2026-04-30T23:59Z")]
    assert policy is not None
    assert [d.keep for d in decide(backups, policy, now)] == [True, False]


@pytest.mark.parametrize("value", ["0", "-3", "30d", "thirty", "1.5", "+5", "99999999999"])
def test_bad_backup_retention_days_is_a_clear_value_error(value: str) -> None:
    with pytest.raises(ValueError, match="BACKUP_RETENTION_DAYS") as caught:
        RetentionPolicy.from_environment({"BACKUP_RETENTION_DAYS": value})
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", timedelta(days=30)),
        ("12h", timedelta(hours=12)),
        ("2w", timedelta(days=14)),
        ("1y2m3d", timedelta(days=365 + 60 + 3)),
        ("1y", timedelta(days=365)),
        ("6m", timedelta(days=180)),
        ("1d12h", timedelta(days=1, hours=12)),
        (" 7d ", timedelta(days=7)),
        ("1y1m1w1d1h", timedelta(days=365 + 30 + 7 + 1, hours=1)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text", ["", "30", "d", "0d", "3x", "1d1y", "1d1d", "-1d", "1.5d", "30D", "1 d", "٣d"]
)
def test_parse_duration_rejects_bad_input(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_format_duration() -> None:
    assert format_duration(timedelta(days=30)) == "30d"
    assert format_duration(timedelta(days=1, hours=12)) == "1d12h"
    assert format_duration(timedelta(minutes=90)) == "1h30min"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"keep_daily": -1},
        {"keep_last": True},
        {"keep_weekly": 1.5},
        {"keep_within": timedelta(0)},
        {"timezone": "Mars/Olympus"},
        {"timezone": ""},
        {"keep_tags": "daily"},
    ],
)
def test_invalid_policies_are_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RetentionPolicy(**kwargs)  # type: ignore[arg-type]


def test_naive_times_are_rejected() -> None:
    with pytest.raises(ValueError, match="aware"):
        BackupInfo("x", "app", datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="aware"):
        decide([], RetentionPolicy.default(), datetime(2026, 1, 1))


def test_huge_keep_within_keeps_everything_in_the_past() -> None:
    policy = RetentionPolicy(keep_within=timedelta(days=999_999_999))
    decisions = decide([info("2000-01-01T00:00Z")], policy, at("2026-01-01T00:00Z"))
    assert decisions[0].keep


def test_backup_info_from_manifest_uses_finished_at() -> None:
    # Only the four fields retention reads; the rest of the manifest is irrelevant here.
    manifest = SimpleNamespace(
        backup_id="20261121T140000Z-3f9a2c1b",
        target="app",
        started_at="2026-11-21T14:00:00.000Z",
        finished_at="2026-11-21T14:03:30.500Z",
        tags=("daily", "pre-restore"),
    )
    backup = BackupInfo.from_manifest(cast("Manifest", manifest), pinned=True)
    assert backup == BackupInfo(
        backup_id="20261121T140000Z-3f9a2c1b",
        target="app",
        time=datetime(2026, 11, 21, 14, 3, 30, 500000, tzinfo=UTC),
        tags=frozenset({"daily", "pre-restore"}),
        pinned=True,
        verified_good=False,
    )
