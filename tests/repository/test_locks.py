"""Repository locks: shared/exclusive leases, waiting, staleness, refresh and loss."""

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from strongroom.errors import LockLost, RepositoryBusy
from strongroom.repository.layout import LOCKS_PREFIX, lock_key
from strongroom.repository.locks import (
    EXCLUSIVE,
    MAX_CLOCK_SKEW,
    SHARED,
    LockObserver,
    LockRecord,
    RepositoryLock,
    acquire_exclusive,
    acquire_shared,
    list_locks,
    new_record,
)
from strongroom.storage.memory import MemoryStorage

FAST = {"poll": 0.02}


def _locks(storage):
    return sorted(storage.list(LOCKS_PREFIX))


def _plant(storage, kind, *, expires_in=timedelta(minutes=5), ttl=300.0, purpose="planted"):
    now = datetime.now(UTC)
    record = new_record(kind, purpose, ttl, now=now)
    record = LockRecord(**{**record.__dict__, "expires": _iso(now + expires_in)})
    storage.put(lock_key(record.lock_id), record.to_json())
    return lock_key(record.lock_id)


def _iso(moment):
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_shared_locks_coexist_and_release_removes_them():
    storage = MemoryStorage()
    first = acquire_shared(storage, "backup of a", wait=0, **FAST)
    second = acquire_shared(storage, "backup of b", wait=0, **FAST)
    assert len(_locks(storage)) == 2
    records = {live.record.purpose: live.record for live in list_locks(storage)}
    assert records["backup of a"].kind == SHARED and records["backup of a"].pid > 0
    first.release()
    second.release()
    second.release()  # twice is harmless
    assert _locks(storage) == []


def test_prune_waits_for_a_backup_then_gives_up_cleanly():
    storage = MemoryStorage()
    with acquire_shared(storage, "backup of shop", wait=0, **FAST):
        with pytest.raises(RepositoryBusy, match="backup of shop"):
            acquire_exclusive(storage, "prune", wait=0.2, **FAST)
        assert len(_locks(storage)) == 1  # the prune's own lock is gone again


def test_a_backup_waits_for_prune_then_gives_up_cleanly():
    storage = MemoryStorage()
    with acquire_exclusive(storage, "prune", wait=0, **FAST):
        with pytest.raises(RepositoryBusy, match="prune"):
            acquire_shared(storage, "backup of shop", wait=0.2, **FAST)
        assert len(_locks(storage)) == 1


def test_prune_goes_ahead_when_the_backup_finishes():
    storage = MemoryStorage()
    backup = acquire_shared(storage, "backup", wait=0, **FAST)
    threading.Timer(0.3, backup.release).start()
    started = time.monotonic()
    with acquire_exclusive(storage, "prune", wait=10, **FAST) as lock:
        assert time.monotonic() - started >= 0.25
        lock.ensure_held()


def test_new_backups_queue_behind_a_waiting_prune():
    storage = MemoryStorage()
    running = acquire_shared(storage, "running backup", wait=0, **FAST)
    got: list[RepositoryLock] = []
    waiter = threading.Thread(
        target=lambda: got.append(acquire_exclusive(storage, "prune", wait=10, **FAST))
    )
    waiter.start()
    time.sleep(0.1)
    with pytest.raises(RepositoryBusy):  # the prune's lock is already there
        acquire_shared(storage, "new backup", wait=0.2, **FAST)
    running.release()
    waiter.join(5)
    assert got
    got[0].release()


def test_two_prunes_may_overlap():
    storage = MemoryStorage()
    with acquire_exclusive(storage, "prune 1", wait=0, **FAST):
        with acquire_exclusive(storage, "prune 2", wait=0, **FAST):
            assert len(_locks(storage)) == 2


def test_a_long_expired_lock_is_removed():
    storage = MemoryStorage()
    stale = _plant(storage, SHARED, expires_in=-timedelta(seconds=MAX_CLOCK_SKEW + 60))
    with acquire_exclusive(storage, "prune", wait=0, **FAST):
        assert not storage.exists(stale)


def test_a_lock_expired_within_the_clock_skew_allowance_still_blocks():
    storage = MemoryStorage()
    _plant(storage, SHARED, expires_in=-timedelta(seconds=10))
    with pytest.raises(RepositoryBusy):
        acquire_exclusive(storage, "prune", wait=0.1, **FAST)


def test_a_lock_unchanged_for_its_ttl_is_stale_whatever_its_clock_says():
    storage = MemoryStorage()
    key = _plant(storage, SHARED, expires_in=timedelta(days=365), ttl=300.0)
    clock = [1000.0]
    observer = LockObserver(monotonic=lambda: clock[0])
    assert [live.key for live in observer.live_locks(storage)] == [key]
    clock[0] += 299
    assert observer.live_locks(storage)
    record = LockRecord.from_json(storage.get(key))  # the holder refreshes: seen anew
    storage.put(key, LockRecord(**{**record.__dict__, "sequence": 1}).to_json())
    clock[0] += 200
    assert observer.live_locks(storage)  # first sight of the new version
    clock[0] += 299
    assert observer.live_locks(storage)
    clock[0] += 1
    assert observer.live_locks(storage) == []
    assert not storage.exists(key)


def test_an_unreadable_lock_blocks_both_kinds():
    storage = MemoryStorage()
    storage.put("locks/from-the-future.json", b'{"format": "strongroom-lock", "version": 9}')
    with pytest.raises(RepositoryBusy, match="unreadable lock"):
        acquire_exclusive(storage, "prune", wait=0.1, **FAST)
    with pytest.raises(RepositoryBusy, match="unreadable lock"):
        acquire_shared(storage, "backup", wait=0.1, **FAST)


def test_the_holder_refreshes_its_lock():
    storage = MemoryStorage()
    with acquire_shared(storage, "backup", wait=0, ttl=1.0, **FAST) as lock:
        first = LockRecord.from_json(storage.get(lock.key))
        lock.refresh()
        second = LockRecord.from_json(storage.get(lock.key))
        assert second.sequence == first.sequence + 1 and second.expires >= first.expires
        deadline = time.monotonic() + 10
        while LockRecord.from_json(storage.get(lock.key)).sequence < 3:  # the thread too
            assert time.monotonic() < deadline
            time.sleep(0.05)
        lock.ensure_held()


def test_a_lock_removed_by_another_process_is_lost():
    storage = MemoryStorage()
    with acquire_shared(storage, "backup", wait=0, **FAST) as lock:
        storage.delete(lock.key)  # someone judged it stale
        lock.refresh()
        with pytest.raises(LockLost, match="removed"):
            lock.ensure_held()
        assert not storage.exists(lock.key)  # and it is not written back


def test_a_lease_not_refreshed_for_half_its_ttl_is_not_trusted():
    storage = MemoryStorage()
    lock = RepositoryLock(storage, new_record(EXCLUSIVE, "prune", 0.2))
    lock.write()  # no refreshing thread
    lock.ensure_held()
    time.sleep(0.15)
    with pytest.raises(LockLost, match="could not refresh"):
        lock.ensure_held()
    lock.release()
    assert _locks(storage) == []


def test_lock_objects_round_trip():
    record = new_record(SHARED, "backup of shop", 300.0)
    assert LockRecord.from_json(record.to_json()) == record
    with pytest.raises(ValueError):
        LockRecord.from_json(b"not json")
