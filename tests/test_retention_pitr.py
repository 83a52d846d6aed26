"""Point-in-time extracts (tag ``pitr``) in retention and health: their own rule.

``restore --to-time T --database D`` files the dump it takes from a throwaway cluster
under D's target. It is a backup of another moment than its start time, taken by a
restore, not by the schedule: it must not fill a keep-last/daily slot (pushing a real
scheduled backup out), nor be the target's "newest verified good" backup, nor make a
stale target look fresh to health and metrics.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom.repository.ids import parse_iso
from strongroom.retention import PITR_TAG, PRE_RESTORE_TAG, BackupInfo, RetentionPolicy, decide
from strongroom.services.health import WARNING
from strongroom.services.metrics import build_registry
from tests.services.test_health import _drill, _evaluate, _manifest
from tests.test_retention_safety import policies

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
PITR = frozenset({PITR_TAG, "pitr-base:20261101T000000Z-0000beef"})
KINDS = {"regular": frozenset({"daily"}), "safety": frozenset({PRE_RESTORE_TAG}), "pitr": PITR}


@st.composite
def histories(draw: st.DrawFn) -> list[BackupInfo]:
    """Regular, safety and pitr backups of two targets over a month, some in the future."""
    rows = draw(
        st.lists(
            st.tuples(
                st.integers(-40 * 24, 2 * 24),
                st.sampled_from(["shop", "blog"]),
                st.sampled_from(sorted(KINDS)),
                st.integers(0, 19),  # pinned 1 in 20, verified 1 in 5, rollback point
            ),
            max_size=25,
        )
    )
    return [
        BackupInfo(
            backup_id=f"{NOW + timedelta(hours=h):%Y%m%dT%H%M%SZ}-{n:08x}",
            target=target,
            time=NOW + timedelta(hours=h),
            tags=KINDS[kind],
            pinned=flags == 0,
            verified_good=flags % 5 == 1,
            rollback_point=kind == "safety" and flags == 2,
        )
        for n, (h, target, kind, flags) in enumerate(rows)
    ]


@settings(max_examples=80, deadline=None)
@given(histories(), policies)
def test_pitr_dumps_never_change_another_backups_decision(
    history: list[BackupInfo], policy: RetentionPolicy
) -> None:
    others = [b for b in history if b.tags != PITR]
    alone = {d.backup.backup_id: d for d in decide(others, policy, NOW)}
    for d in decide(history, policy, NOW):
        if d.backup.tags != PITR:
            assert d == alone[d.backup.backup_id]


@settings(max_examples=80, deadline=None)
@given(histories(), policies)
def test_a_pitr_dump_is_kept_exactly_by_its_own_rule(
    history: list[BackupInfo], policy: RetentionPolicy
) -> None:
    decisions = decide(history, policy, NOW)
    for target in ("shop", "blog"):
        past = sorted(
            (b for b in history if b.target == target and b.tags == PITR and b.time <= NOW),
            key=lambda b: (b.time, b.backup_id),
            reverse=True,
        )
        newest = {b.backup_id for b in past[: policy.keep_safety or 0]}
        for d in decisions:
            b = d.backup
            if b.target != target or b.tags != PITR:
                continue
            young = policy.keep_safety_within is not None and (
                NOW - b.time <= policy.keep_safety_within
            )
            expected = b.pinned or b.time > NOW or b.backup_id in newest or young
            expected = expected or policy.is_empty()
            assert d.keep == expected, (d, policy)
            assert not any(
                r.startswith(("last", "daily", "weekly", "within", "newest verified", "safety"))
                for r in d.reasons
            ), d


def test_keep_last_two_is_two_scheduled_backups_after_two_point_in_time_restores() -> None:
    scheduled = [
        BackupInfo(f"2026111{d}T020000Z-0000000{d}", "shop", NOW - timedelta(days=10 - d))
        for d in range(4)
    ]
    extracts = [
        BackupInfo(
            "20261121T100000Z-0000a001", "shop", NOW - timedelta(hours=2), PITR, False, True
        ),
        BackupInfo("20261121T110000Z-0000a002", "shop", NOW - timedelta(hours=1), PITR),
    ]
    decisions = decide(scheduled + extracts, RetentionPolicy(keep_last=2), NOW)
    assert [d.reasons for d in decisions] == [
        (),
        (),
        ("last 2 of 2",),
        ("last 1 of 2",),
        ("pitr 2 of 3", "pitr within 7d"),
        ("pitr 1 of 3", "pitr within 7d"),
    ]


def test_health_and_metrics_do_not_take_a_pitr_dump_as_the_newest_backup() -> None:
    scheduled = _manifest("a", 30)
    extract = replace(_manifest("p", 1), tags=tuple(sorted(PITR)))
    result = _evaluate([scheduled, extract], verifications={"a": _drill("a", 1)})
    assert result.newest_backup_id == "a" and result.status == WARNING
    assert "30.0 h old" in result.reasons[0]
    registry = build_registry([scheduled, extract], [], {})
    value = registry.get_sample_value(
        "strongroom_last_success_timestamp_seconds", {"target": "shop"}
    )
    assert value == parse_iso(scheduled.finished_at).timestamp()
