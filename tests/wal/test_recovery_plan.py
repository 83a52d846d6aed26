"""``plan_recovery`` on a hand-built archive (no server): which segments recovery from a
base backup reads across a timeline switch, the first missing one named with its stream
(exit 7), timelines not archived or on another branch (exit 3, naming the timelines
there), an LSN after the newest archived WAL (exit 5)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from strongroom.errors import IntegrityError
from strongroom.repository.keys import KeySource
from strongroom.repository.logs import LogArchive
from strongroom.repository.repository import Repository
from strongroom.services.recovery_plan import (
    TargetPastArchive,
    TimelineUnavailable,
    WalGap,
    ended_early,
    parse_timeline,
    parse_xid,
    plan_recovery,
)
from strongroom.storage.memory import MemoryStorage

STREAM = "postgresql-7350000000000000001"
FACTS: dict[str, Any] = {
    "stream": STREAM,
    "timeline": 1,
    "start_lsn": "0/2000028",  # segment 2
    "stop_lsn": "0/2000138",
}


def _push(repo: Repository, name: str, data: bytes = b"wal") -> None:
    group = "history" if name.endswith(".history") else name[:16]
    LogArchive(repo).push(STREAM, group, name, data)


@pytest.fixture()
def repo(tmp_path: Path) -> Repository:
    """Timeline 1 segments 1-5 (5 also as .partial), timeline 2 branching at 0/5800000
    (in segment 5) with segments 5-7; timeline 3 branching from 1 at 0/1800000, before
    the base backup began."""
    storage = MemoryStorage()
    Repository.init(storage, key_file=tmp_path / "k")
    repository = Repository.open(storage, KeySource(key_file=tmp_path / "k"))
    for number in range(1, 6):
        _push(repository, f"0000000100000000000000{number:02X}")
    _push(repository, "000000010000000000000005.partial")
    _push(repository, "00000002.history", b"1\t0/5800000\tno recovery target specified\n")
    for number in range(5, 8):
        _push(repository, f"0000000200000000000000{number:02X}")
    _push(repository, "00000003.history", b"1\t0/1800000\tbefore the base backup\n")
    return repository


def test_latest_follows_the_switch_to_timeline_2(repo: Repository) -> None:
    # timeline 3 exists but does not follow 2: PostgreSQL probes 2, 3 upward; here 3's
    # parent is 1, left before the backup began, so latest must stop being 3
    storage = repo.storage
    for key in list(storage.list("logs/")):
        if "00000003.history" in key:
            storage.delete(key)
    plan = plan_recovery(repo, FACTS)
    assert plan.timeline == 2 and plan.timelines == (1, 2)
    assert plan.first == "000000010000000000000002"
    assert plan.last == "000000020000000000000007"
    assert plan.segments == 3 + 3  # 1/2..1/4, then 2/5..2/7 (5 read from timeline 2)
    assert "6 WAL segments" in plan.describe()


def test_current_and_a_number_stay_on_timeline_1(repo: Repository) -> None:
    for wanted in ("current", "1"):
        plan = plan_recovery(repo, FACTS, timeline=wanted)
        assert plan.timelines == (1,) and plan.last == "000000010000000000000005"


def test_a_missing_segment_is_named_with_its_stream(repo: Repository) -> None:
    storage = repo.storage
    (key,) = [k for k in storage.list("logs/") if "/000000020000000000000006-" in k]
    storage.delete(key)
    with pytest.raises(WalGap) as info:
        plan_recovery(repo, FACTS, timeline="2")
    assert isinstance(info.value, IntegrityError) and info.value.exit_code == 7
    message = str(info.value)
    assert "000000020000000000000006" in message and STREAM in message
    # timeline 1 alone does not need it
    assert plan_recovery(repo, FACTS, timeline="1").segments == 4


def test_a_timeline_not_archived_names_the_timelines_there(repo: Repository) -> None:
    with pytest.raises(TimelineUnavailable) as info:
        plan_recovery(repo, FACTS, timeline="9")
    assert info.value.exit_code == 3
    assert "timeline 9 is not in the archive (timelines there: 1, 2, 3)" in str(info.value)


def test_a_timeline_of_another_branch_is_refused(repo: Repository) -> None:
    with pytest.raises(TimelineUnavailable) as info:
        plan_recovery(repo, FACTS, timeline="3")
    assert "does not descend from the base backup's timeline 1" in str(info.value)
    # and latest, probing 2 then 3, lands on 3: refused the same way (PostgreSQL would
    # stop with "requested timeline 3 is not a child of this server's history")
    with pytest.raises(TimelineUnavailable):
        plan_recovery(repo, FACTS)


def test_an_lsn_target_stops_the_plan_there(repo: Repository) -> None:
    plan = plan_recovery(repo, FACTS, timeline="2", target_lsn=0x3800000)
    assert plan.timelines == (1,) and plan.last == "000000010000000000000003"
    plan = plan_recovery(repo, FACTS, timeline="2", target_lsn=0x6000100)
    assert plan.timelines == (1, 2) and plan.last == "000000020000000000000006"
    with pytest.raises(TargetPastArchive) as info:
        plan_recovery(repo, FACTS, timeline="2", target_lsn=0x9000000)
    assert info.value.exit_code == 5
    assert "0/9000000 is after the newest archived WAL" in str(info.value)
    assert "000000020000000000000007" in str(info.value)


def test_ended_early_compares_redo_done_with_the_last_segment(repo: Repository) -> None:
    plan = plan_recovery(repo, FACTS, timeline="1")
    assert ended_early(plan, 0x5000200) is None
    reason = ended_early(plan, 0x3000200)
    assert reason is not None and "0/3000200" in reason and plan.last in reason


@pytest.mark.parametrize("text", ["x", "0", "-1", "1.5", "", "4294967296", "٣"])
def test_bad_timelines_are_usage_errors(text: str) -> None:
    with pytest.raises(Exception) as info:
        parse_timeline(text)
    assert getattr(info.value, "exit_code", None) == 2


@pytest.mark.parametrize("text", ["x", "0", "2", "-5", "1e3", "٣٣٣"])
def test_bad_xids_are_usage_errors(text: str) -> None:
    with pytest.raises(Exception) as info:
        parse_xid(text)
    assert getattr(info.value, "exit_code", None) == 2


def test_a_time_past_the_newest_stored_segment_names_it(repo: Repository) -> None:
    now = datetime.now(UTC)
    plan_recovery(repo, FACTS, timeline="2", target_time=now - timedelta(hours=1))
    plan_recovery(repo, FACTS, timeline="2", target_time=now + timedelta(seconds=30))  # margin
    with pytest.raises(TargetPastArchive) as info:
        plan_recovery(repo, FACTS, timeline="2", target_time=now + timedelta(minutes=5))
    message = str(info.value)
    assert "past the end of the archived WAL" in message
    assert "000000020000000000000007" in message and STREAM in message
