"""Retention: properties over random histories. Golden cases on real calendars are in
``test_retention_golden.py``, the policy's parsing and validation in
``test_retention_parsing.py``."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom.retention import BackupInfo, RetentionPolicy, decide
from tests.retention_helpers import TAGS

PROPERTY = settings(max_examples=200, deadline=None)

TARGETS = ("app", "billing", "dev")
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
