"""Restore records (restores/<restore id>.json): round trip, history, the rollback point."""

from __future__ import annotations

from dataclasses import replace

from strongroom.repository.restores import (
    OUTCOME_COMPLETED,
    OUTCOME_FAILED,
    RESTORES_PREFIX,
    RestoreRecord,
    last_completed,
    restore_history,
    rollback_points,
    write_restore_record,
)
from strongroom.storage.memory import MemoryStorage

PROD, STAGING = "a" * 64, "b" * 64


def record(n: int, outcome: str, target: str = "shop", destination: str = PROD) -> RestoreRecord:
    return RestoreRecord(
        restore_id=f"20261121T1400{n:02d}Z-0000000{n % 10}",
        target=target,
        destination=destination,
        backup_id=f"20261120T020000Z-0000000{n % 10}",
        backup_target="shop",
        safety_backup_id=f"20261121T1400{n:02d}Z-5afe000{n % 10}",
        started_at=f"2026-11-21T14:00:{n:02d}.000Z",
    ).ended(outcome)


def test_a_record_is_rewritten_in_place_when_the_restore_ends() -> None:
    storage = MemoryStorage()
    started = replace(record(1, OUTCOME_COMPLETED), outcome="started", finished_at=None)
    write_restore_record(storage, started)
    assert restore_history(storage) == [started] and started.interrupted
    write_restore_record(storage, started.ended(OUTCOME_COMPLETED))
    [only] = restore_history(storage)
    assert only.completed and only.finished_at is not None
    assert list(storage.list(RESTORES_PREFIX)) == [f"restores/{started.restore_id}.json"]


def test_history_is_per_target_and_destination_oldest_first_and_skips_junk() -> None:
    storage = MemoryStorage()
    for r in (
        record(3, OUTCOME_FAILED),
        record(1, OUTCOME_COMPLETED),
        record(2, OUTCOME_COMPLETED, destination=STAGING),
        record(4, OUTCOME_COMPLETED, target="blog"),
    ):
        write_restore_record(storage, r)
    storage.put("restores/garbage.json", b"{not json")
    storage.put("restores/other.json", b'{"format": "something-else"}')
    shop_prod = restore_history(storage, "shop", PROD)
    assert [r.restore_id[-1] for r in shop_prod] == ["1", "3"]
    assert len(restore_history(storage)) == 4
    assert [r.target for r in restore_history(storage, "blog")] == ["blog"]


def test_the_rollback_point_is_the_last_completed_restore_per_database() -> None:
    # A completed restore, then two failed attempts (each took a safety backup): the point
    # stays the completed one's safety backup; another database of the target has its own.
    history = [
        record(1, OUTCOME_COMPLETED),
        record(2, OUTCOME_FAILED),
        record(3, OUTCOME_FAILED),
        record(4, OUTCOME_COMPLETED, destination=STAGING),
    ]
    prod = [r for r in history if r.destination == PROD]
    last = last_completed(prod)
    assert last is not None and last.restore_id == history[0].restore_id
    assert rollback_points(history) == {history[0].safety_backup_id, history[3].safety_backup_id}
    assert last_completed([record(5, OUTCOME_FAILED)]) is None
    assert rollback_points([record(5, OUTCOME_FAILED)]) == set()
