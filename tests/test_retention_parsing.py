"""Retention: the policy from the environment, durations parsed and formatted, invalid policies
and naive times rejected, a huge keep-within, backup info from a manifest."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import TYPE_CHECKING, cast

import pytest

from strongroom.retention import (
    BackupInfo,
    RetentionPolicy,
    decide,
    format_duration,
    parse_duration,
)
from tests.retention_helpers import at, info

if TYPE_CHECKING:
    from strongroom.repository.manifest import Manifest

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
