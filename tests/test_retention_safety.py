"""Safety (pre-restore) backups in retention: their own rule, never a policy slot.

Issue 14, point 3: ``forget --keep-last 2`` kept two safety backups and forgot every
regular backup. Here: regular decisions are exactly what they would be without any safety
backup, safety backups are kept by their own rule (newest N, younger than D, the rollback
point), and the CLI shows and takes that rule.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom.repository.config import ENCRYPTION_NONE
from strongroom.repository.keys import KeySource
from strongroom.repository.repository import Repository
from strongroom.repository.restores import RestoreRecord, write_restore_record
from strongroom.retention import PRE_RESTORE_TAG, BackupInfo, RetentionPolicy, decide
from strongroom.services.forget import forget
from strongroom.storage.factory import open_storage
from tests.helpers import cli_ok, run_cli
from tests.services.test_forget import fake_manifest

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
SAFETY = frozenset({PRE_RESTORE_TAG})

policies = st.builds(
    RetentionPolicy,
    keep_last=st.one_of(st.none(), st.integers(0, 5)),
    keep_daily=st.one_of(st.none(), st.integers(0, 5)),
    keep_weekly=st.one_of(st.none(), st.integers(0, 3)),
    keep_within=st.one_of(st.none(), st.builds(timedelta, days=st.integers(1, 20))),
    keep_safety=st.one_of(st.none(), st.integers(0, 4)),
    keep_safety_within=st.one_of(st.none(), st.builds(timedelta, days=st.integers(1, 20))),
)


@st.composite
def mixed_histories(draw: st.DrawFn) -> list[BackupInfo]:
    """Regular and safety backups of two targets over a month, some in the future."""
    rows = draw(
        st.lists(
            st.tuples(
                st.integers(-40 * 24, 2 * 24),  # hours from NOW
                st.sampled_from(["shop", "blog"]),
                st.booleans(),  # safety?
                st.integers(0, 19),  # flags: pinned 1 in 20, verified 1 in 5, rollback point
            ),
            max_size=25,
        )
    )
    return [
        BackupInfo(
            backup_id=f"{NOW + timedelta(hours=h):%Y%m%dT%H%M%SZ}-{n:08x}",
            target=target,
            time=NOW + timedelta(hours=h),
            tags=SAFETY if safety else frozenset({"daily"}),
            pinned=flags == 0,
            verified_good=flags % 5 == 1,
            rollback_point=safety and flags == 2,
        )
        for n, (h, target, safety, flags) in enumerate(rows)
    ]


@settings(max_examples=80, deadline=None)
@given(mixed_histories(), policies)
def test_safety_backups_never_change_a_regular_decision(
    history: list[BackupInfo], policy: RetentionPolicy
) -> None:
    regular = [b for b in history if PRE_RESTORE_TAG not in b.tags]
    alone = {d.backup.backup_id: d for d in decide(regular, policy, NOW)}
    for d in decide(history, policy, NOW):
        if PRE_RESTORE_TAG not in d.backup.tags:
            assert d == alone[d.backup.backup_id]


@settings(max_examples=80, deadline=None)
@given(mixed_histories(), policies)
def test_a_safety_backup_is_kept_exactly_by_its_own_rule(
    history: list[BackupInfo], policy: RetentionPolicy
) -> None:
    decisions = decide(history, policy, NOW)
    for target in ("shop", "blog"):
        past = sorted(
            (b for b in history if b.target == target and b.tags == SAFETY and b.time <= NOW),
            key=lambda b: (b.time, b.backup_id),
            reverse=True,
        )
        newest = {b.backup_id for b in past[: policy.keep_safety or 0]}
        for d in decisions:
            b = d.backup
            if b.target != target or b.tags != SAFETY:
                continue
            young = policy.keep_safety_within is not None and (
                NOW - b.time <= policy.keep_safety_within
            )
            expected = (
                b.pinned
                or b.time > NOW
                or b.rollback_point
                or b.backup_id in newest
                or young
                or policy.is_empty()
            )
            assert d.keep == expected, (d, policy)
            assert not any(r.startswith(("last", "daily", "weekly", "within")) for r in d.reasons)


def test_keep_last_two_keeps_two_regular_backups_whatever_the_safety_backups() -> None:
    """The reported case: the two newest backups are safety backups."""
    backups = [
        BackupInfo(f"2026111{d}T020000Z-0000000{d}", "shop", NOW - timedelta(days=10 - d))
        for d in range(5)
    ] + [
        BackupInfo("20261121T100000Z-5afe0001", "shop", NOW - timedelta(hours=2), SAFETY),
        BackupInfo("20261121T110000Z-5afe0002", "shop", NOW - timedelta(hours=1), SAFETY),
    ]
    decisions = decide(backups, RetentionPolicy(keep_last=2), NOW)
    assert [d.reasons for d in decisions] == [
        (),
        (),
        (),
        ("last 2 of 2",),
        ("last 1 of 2",),
        ("safety 2 of 3", "safety within 7d"),
        ("safety 1 of 3", "safety within 7d"),
    ]


def _repo(path: Path) -> Repository:
    Repository.init(open_storage(str(path)), encryption=ENCRYPTION_NONE)
    return Repository.open(open_storage(str(path)), KeySource(None, None))


def test_forget_keeps_the_rollback_point_however_old(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "repo")
    regular = [fake_manifest(NOW - timedelta(days=d, hours=3)) for d in range(3)]
    safety = [
        fake_manifest(NOW - timedelta(days=d, hours=1), tags=(PRE_RESTORE_TAG,))
        for d in (30, 20, 12, 11, 10, 9)
    ]
    for m in regular + safety:
        repo.write_manifest(m)
    # The last completed restore took safety[0] (30 days old); later attempts failed.
    point = safety[0]
    write_restore_record(
        repo.storage,
        RestoreRecord(
            "20261022T110000Z-00000001",
            "shop",
            "f" * 64,
            regular[2].backup_id,
            "shop",
            point.backup_id,
            point.finished_at,
        ).ended("completed"),
    )
    for failed in safety[1:]:
        write_restore_record(
            repo.storage,
            RestoreRecord(
                f"{failed.backup_id[:17]}-0000000f",
                "shop",
                "f" * 64,
                regular[0].backup_id,
                "shop",
                failed.backup_id,
                failed.finished_at,
            ).ended("failed"),
        )
    result = forget(repo, RetentionPolicy(keep_last=2), now=NOW)
    reasons = {e.manifest.backup_id: e.decision.reasons for e in result.kept}
    assert reasons == {
        regular[0].backup_id: ("last 1 of 2",),
        regular[1].backup_id: ("last 2 of 2",),
        point.backup_id: ("rollback point",),
        safety[-1].backup_id: ("safety 1 of 3",),
        safety[-2].backup_id: ("safety 2 of 3",),
        safety[-3].backup_id: ("safety 3 of 3",),
    }
    assert set(result.forgotten) == {regular[2].backup_id, safety[1].backup_id, safety[2].backup_id}


def test_cli_forget_shows_and_takes_the_safety_rule(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "repo")
    now = datetime.now(UTC)  # the command decides at its own now
    regular = [fake_manifest(now - timedelta(days=d, hours=3)) for d in range(4)]
    safety = [
        fake_manifest(now - timedelta(minutes=m), tags=(PRE_RESTORE_TAG,)) for m in (30, 20, 10)
    ]
    for m in regular + safety:
        repo.write_manifest(m)
    env = {"STRONGROOM_REPO": str(tmp_path / "repo"), "XDG_CONFIG_HOME": str(tmp_path)}
    shown = json.loads(
        cli_ok(
            run_cli(
                "forget",
                "--keep-last",
                "2",
                "--keep-safety",
                "1",
                "--keep-safety-within",
                "0",
                "--json",
                "--dry-run",
                env=env,
            )
        )
    )
    kept = {b["id"]: b["reasons"] for b in shown["backups"] if b["action"] == "keep"}
    assert kept == {
        regular[0].backup_id: ["last 1 of 2"],
        regular[1].backup_id: ["last 2 of 2"],
        safety[-1].backup_id: ["safety 1 of 1"],
    }
    assert shown["policy"]["safety"].startswith("newest 1, and the rollback point")
    assert set(repo.backup_ids()) == {m.backup_id for m in regular + safety}
