"""Repository locks: shared/exclusive leases, waiting, staleness, refresh and loss; locks
of dead processes on this host and locks that are not JSON; real commands killed -9."""

import json
import logging
import os
import subprocess
import sys
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
    UNREADABLE_GRACE,
    LockObserver,
    LockRecord,
    RepositoryLock,
    acquire_exclusive,
    acquire_shared,
    list_locks,
    new_record,
    process_start_ticks,
    this_process,
)
from strongroom.repository.repository import Repository
from strongroom.storage.factory import open_storage
from strongroom.storage.local import LocalStorage
from strongroom.storage.memory import MemoryStorage
from tests.helpers import REPO_ROOT, STRONGROOM, make_sqlite_db, run_cli

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


# --- a lock whose process is gone (this host), and a lock that is not valid JSON -------


def _plant_for(storage, kind, **fields):
    record = LockRecord(**{**new_record(kind, "planted", 300.0).__dict__, **fields})
    storage.put(lock_key(record.lock_id), record.to_json())
    return lock_key(record.lock_id)


def _dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_new_locks_say_which_process_on_which_machine_holds_them():
    record = new_record(SHARED, "backup", 300.0)
    me = this_process()
    assert record.pid == os.getpid() and record.hostname == me.hostname
    assert record.start_ticks == process_start_ticks(os.getpid()) is not None
    assert record.boot_id and record.pid_namespace  # Linux: /proc tells
    assert LockRecord.from_json(record.to_json()) == record


def test_a_lock_of_a_dead_process_on_this_host_is_stale_at_once():
    storage = MemoryStorage()
    dead = _plant_for(storage, SHARED, pid=_dead_pid())
    started = time.monotonic()
    with acquire_exclusive(storage, "prune", wait=5, **FAST):
        assert time.monotonic() - started < 1
        assert not storage.exists(dead)


def test_a_lock_whose_pid_was_reused_is_stale_at_once():
    storage = MemoryStorage()
    ours = process_start_ticks(os.getpid())
    reused = _plant_for(storage, EXCLUSIVE, start_ticks=ours - 1)  # our pid, other start
    with acquire_shared(storage, "backup", wait=0, **FAST):
        assert not storage.exists(reused)


def test_a_lock_of_a_live_process_on_this_host_blocks():
    storage = MemoryStorage()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        _plant_for(storage, SHARED, pid=child.pid, start_ticks=process_start_ticks(child.pid))
        with pytest.raises(RepositoryBusy, match="planted"):
            acquire_exclusive(storage, "prune", wait=0.2, **FAST)
    finally:
        child.kill()
        child.wait()


@pytest.mark.parametrize(
    "elsewhere",
    [
        {"hostname": "another-host"},
        {"boot_id": "00000000-0000-0000-0000-000000000000"},  # a clone with our host name
        {"pid_namespace": "pid:[1]"},  # another container: its pids are not ours
        {"hostname": None, "boot_id": None, "pid_namespace": None, "start_ticks": None},
    ],
)
def test_a_dead_pid_proves_nothing_about_a_lock_from_elsewhere_or_an_older_version(elsewhere):
    storage = MemoryStorage()
    _plant_for(storage, SHARED, pid=_dead_pid(), **elsewhere)
    with pytest.raises(RepositoryBusy, match="planted"):
        acquire_exclusive(storage, "prune", wait=0.1, **FAST)


def test_a_lock_written_by_an_older_version_is_read_and_follows_the_lease_rules():
    document = json.loads(new_record(SHARED, "old backup", 300.0).to_json())
    for name in ("hostname", "boot_id", "pid_namespace", "start_ticks"):
        del document[name]
    document["pid"] = _dead_pid()
    storage = MemoryStorage()
    storage.put("locks/old.json", json.dumps(document).encode())
    record = LockRecord.from_json(storage.get("locks/old.json"))
    assert record.start_ticks is None and record.hostname is None
    with pytest.raises(RepositoryBusy, match="old backup"):
        acquire_exclusive(storage, "prune", wait=0.1, **FAST)


def test_a_lock_that_is_not_json_is_removed_after_a_short_grace(caplog):
    storage = MemoryStorage()
    storage.put("locks/garbled.json", b'{"format": "strongroom-lo')
    clock = [50.0]
    observer = LockObserver(monotonic=lambda: clock[0])
    assert [live.describe() for live in observer.live_locks(storage)] == [
        "unreadable lock locks/garbled.json"
    ]
    clock[0] += UNREADABLE_GRACE - 0.5
    assert observer.live_locks(storage)
    clock[0] += 0.5
    with caplog.at_level(logging.WARNING, logger="strongroom.locks"):
        assert observer.live_locks(storage) == []
    assert not storage.exists("locks/garbled.json")
    assert "removing unreadable lock locks/garbled.json: not valid JSON" in caplog.text


def test_a_lock_of_a_newer_version_is_not_removed_after_the_short_grace():
    storage = MemoryStorage()
    storage.put("locks/newer.json", b'{"format": "strongroom-lock", "version": 9}')
    clock = [50.0]
    observer = LockObserver(monotonic=lambda: clock[0])
    observer.live_locks(storage)
    clock[0] += UNREADABLE_GRACE * 10
    assert observer.live_locks(storage)  # a newer strongroom may still hold it
    assert storage.exists("locks/newer.json")


# --- the real command line, killed with SIGKILL -----------------------------------------


def _run_cli(*args, env, timeout=60):
    started = time.monotonic()
    result = run_cli(*args, env=env, timeout=timeout)
    return result, time.monotonic() - started


def test_prune_goes_ahead_at_once_after_a_backup_was_killed(tmp_path, s3_bucket, fault_proxy):
    _, bucket = s3_bucket
    location = f"s3://{bucket}/shop"
    Repository.init(open_storage(location, fault_proxy.url), key_file=tmp_path / "k")
    env = {"STRONGROOM_REPO": location, "STRONGROOM_KEY_FILE": str(tmp_path / "k")}
    db = make_sqlite_db(tmp_path / "shop.db", users=300, orders=800)
    # The backup's first pack upload never gets an answer: it is held mid-run, its
    # shared lock written, until the test kills it (chunks go into packs since issue 19).
    fault_proxy.set_fault("blackhole", methods=frozenset({"PUT"}), key_contains="/packs/")
    full = {**os.environ, **env}
    backup = subprocess.Popen(
        [*STRONGROOM, "backup", str(db), "--s3-endpoint", fault_proxy.url],
        env=full,
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while fault_proxy.faults == 0:
            assert backup.poll() is None, "the backup ended before uploading a chunk"
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        backup.kill()
        backup.wait()
    fault_proxy.set_fault(None)
    storage = open_storage(location, fault_proxy.url)
    [lock] = list_locks(storage)
    assert lock.record is not None and lock.record.pid == backup.pid  # left behind

    result, seconds = _run_cli("prune", "--wait", "15", "--s3-endpoint", fault_proxy.url, env=env)
    assert result.returncode == 0, result.stderr.decode()
    assert seconds < 10, seconds  # not the 15 s wait (nor the lock's 300 s TTL)
    assert list_locks(storage) == []


def test_a_backup_does_not_wait_after_a_prune_was_killed(tmp_path):
    repo_dir, key = tmp_path / "repo", tmp_path / "k"
    storage = LocalStorage(repo_dir)
    Repository.init(storage, key_file=key)
    env = {"STRONGROOM_REPO": str(repo_dir), "STRONGROOM_KEY_FILE": str(key)}
    db = make_sqlite_db(tmp_path / "shop.db", users=300, orders=800)
    running = acquire_shared(storage, "a backup elsewhere")  # the prune waits for it
    try:
        prune = subprocess.Popen(
            [*STRONGROOM, "prune", "--wait", "600"],
            env={**os.environ, **env},
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while len(list_locks(storage)) < 2:  # its exclusive lock is written
            assert prune.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        prune.kill()
        prune.wait()
    finally:
        running.release()
    [left] = list_locks(storage)
    assert left.kind == EXCLUSIVE and left.record.pid == prune.pid

    result, seconds = _run_cli("backup", str(db), env=env, timeout=30)  # waits 1 h if wrong
    assert result.returncode == 0, result.stderr.decode()
    assert "waits for" not in result.stderr.decode()
    assert seconds < 10, seconds
    assert list_locks(storage) == []
