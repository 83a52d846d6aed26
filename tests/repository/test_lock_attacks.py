"""Attacks on repository locks (issue 15 item 1-2): lock objects with hostile or odd
contents, locks of other containers and of an earlier boot, zombies and reused pids, a
late refresh, a release after a write that may still land, and prune's sweep of partial
files beside a live backup on another host."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from strongroom.errors import RepositoryBusy
from strongroom.repository.keys import KeySource
from strongroom.repository.layout import LOCKS_PREFIX, lock_key
from strongroom.repository.locks import (
    DEFAULT_TTL,
    SHARED,
    LockObserver,
    LockRecord,
    RepositoryLock,
    acquire_exclusive,
    acquire_shared,
    new_record,
    this_process,
)
from strongroom.repository.repository import Repository
from strongroom.services.prune import prune
from strongroom.storage.local import LocalStorage
from strongroom.storage.memory import MemoryStorage


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _doc(**changes: object) -> bytes:
    record = new_record(SHARED, "backup of shop", DEFAULT_TTL)
    document = {"format": "strongroom-lock", "version": 1, **record.__dict__, **changes}
    return json.dumps(document).encode()


def _observe(storage: MemoryStorage, observer: LockObserver) -> list[str]:
    return [live.key for live in observer.live_locks(storage)]


@pytest.mark.parametrize(
    "changes",
    [
        {"pid": 0},
        {"pid": -1},
        {"pid": "abc"},
        {"pid": 10**30},
        {"pid": float("inf")},
        {"ttl_seconds": float("nan"), "expires": "garbage"},
        {"ttl_seconds": float("inf"), "expires": "9999-12-31T00:00:00Z"},
        {"ttl_seconds": -5.0},
        {"expires": "not a time", "ttl_seconds": 1e12},
        {"sequence": float("inf")},
    ],
)
def test_an_odd_lock_record_neither_crashes_nor_blocks_forever(changes: dict[str, object]) -> None:
    """Valid JSON with odd values: read as a lock (then judged by its pid) or, if not one
    this version reads, stale after a whole default ttl unchanged; never live forever."""
    storage = MemoryStorage()
    storage.put(lock_key("odd"), _doc(**changes))
    clock = _Clock()
    observer = LockObserver(monotonic=clock)
    _observe(storage, observer)  # no crash
    clock.now += DEFAULT_TTL + 1
    assert _observe(storage, observer) == []
    assert list(storage.list(LOCKS_PREFIX)) == []


def test_a_hostile_purpose_is_shown_on_one_line() -> None:
    record = replace(
        new_record(SHARED, "x", DEFAULT_TTL), purpose="backup\nerror: fake\x1b[2J" + "y" * 5000
    )
    shown = record.describe()
    assert "\n" not in shown and "\x1b" not in shown and len(shown) <= 300


def _planted(**changes: object) -> RepositoryLock:
    storage = MemoryStorage()
    record = replace(new_record(SHARED, "backup of shop", DEFAULT_TTL), **changes)  # type: ignore[arg-type]
    lock = RepositoryLock(storage, record)
    lock.write()
    return lock


def test_a_lock_of_another_container_with_our_hostname_and_pid_is_not_stale() -> None:
    """Same host name, same pid (ours: alive), another pid namespace: nothing tells us
    about that process. Only the lease decides."""
    lock = _planted(pid_namespace="pid:[4026599999]", start_ticks=1)
    assert lock.record.gone_because(this_process()) is None


def test_a_lock_from_before_a_reboot_is_judged_by_its_lease_only() -> None:
    """Another boot id may be this host after a reboot, or another machine with the same
    name: the dead-pid rule must not apply (the lease rules end it)."""
    here = this_process()
    lock = _planted(boot_id="00000000-0000-0000-0000-000000000000", pid=999_999_999)
    assert lock.record.gone_because(here) is None


def test_a_reused_pid_and_a_zombie_are_gone() -> None:
    here = this_process()
    reused = replace(new_record(SHARED, "x", DEFAULT_TTL), start_ticks=(here.start_ticks or 0) + 7)
    assert "another process" in (reused.gone_because(here) or "")
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 10
        stat = Path(f"/proc/{child.pid}/stat")
        while time.monotonic() < deadline and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z":
            time.sleep(0.05)  # not reaped yet: a zombie
        zombie = replace(new_record(SHARED, "x", DEFAULT_TTL), pid=child.pid, start_ticks=1)
        assert "is gone" in (zombie.gone_because(here) or "")
    finally:
        child.wait()


def test_an_unreadable_lock_that_keeps_changing_is_someone_writing_it() -> None:
    """Garbage that changes at every look is being written by a live process: it is not
    removed after the short grace; a waiting command names it when it gives up."""
    storage = MemoryStorage()
    clock = _Clock()
    observer = LockObserver(monotonic=clock)
    for step in range(5):
        storage.put(lock_key("garbled"), b"\x00garbage" + bytes([step]))
        clock.now += 30
        assert [live.describe() for live in observer.live_locks(storage)] == [
            "unreadable lock locks/garbled.json"
        ]


def test_a_late_refresh_of_our_own_lock_is_not_someone_else() -> None:
    """A refresh whose put got no answer lands late, over a newer one: the lock is
    still ours (it was not 'replaced by another process')."""
    storage = MemoryStorage()
    lock = RepositoryLock(storage, new_record(SHARED, "backup of shop", DEFAULT_TTL))
    lock.write()
    older = storage.get(lock.key)
    lock.refresh()
    storage.put(lock.key, older)  # the late one
    lock.refresh()
    lock.ensure_held()
    assert LockRecord.from_json(storage.get(lock.key)).sequence == 2
    lock.release()


class _UnsureStorage(MemoryStorage):
    """Memory storage whose writes can be marked as having got no answer."""

    unsettled_writes = 0


def test_a_lock_released_after_a_write_that_may_land_late_is_left_to_expire() -> None:
    storage = _UnsureStorage()
    lock = RepositoryLock(storage, new_record(SHARED, "backup of shop", DEFAULT_TTL))
    lock.write()
    storage.unsettled_writes += 1  # e.g. the manifest put got no answer
    lock.release()
    left = LockRecord.from_json(storage.get(lock.key))
    assert "may land late" in left.purpose
    assert left.hostname is None and left.start_ticks is None  # not stale when we exit
    clock = _Clock()
    observer = LockObserver(monotonic=clock)
    assert _observe(storage, observer) == [lock.key]
    clock.now += DEFAULT_TTL + 1
    assert _observe(storage, observer) == []


def test_prune_waits_for_a_live_backup_elsewhere_before_sweeping_its_old_temp_file(
    tmp_path: Path,
) -> None:
    """On a shared folder a backup on another host has been writing for 2 h; its temp
    file is older than the 1 h sweep age. Its live lock keeps prune out."""
    storage = LocalStorage(tmp_path / "repo")
    Repository.init(storage, key_file=tmp_path / "k")
    now = datetime.now(UTC)
    other = replace(
        new_record(SHARED, "backup of shop", DEFAULT_TTL, now=now - timedelta(hours=2)),
        hostname="other-host",
        refreshed=now.isoformat(),
        expires=(now + timedelta(seconds=DEFAULT_TTL)).isoformat(),
    )
    storage.put(lock_key(other.lock_id), other.to_json())
    partial = tmp_path / "repo" / "chunks" / "ab" / ".tmp-abcd-1234"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"half")
    two_hours_ago = time.time() - 7200
    os.utime(partial, (two_hours_ago, two_hours_ago))
    repo = Repository.open(storage, KeySource(tmp_path / "k"))
    with pytest.raises(RepositoryBusy, match="backup of shop"):
        prune(repo, wait=0.3)
    assert partial.exists()
    storage.delete(lock_key(other.lock_id))  # the backup ended (its file was renamed)
    assert prune(repo, wait=0.3).partial_files == 1
    assert not partial.exists()


def _interrupted_start(self: RepositoryLock) -> None:
    """What a SIGTERM (raised as an exception by the CLI's handler) does when it lands in
    ``Thread.start`` before the new thread said it runs: the thread exists, unstarted."""
    self._thread = threading.Thread(target=lambda: None)
    raise KeyboardInterrupt


@pytest.mark.parametrize("take", ["shared", "exclusive"])
def test_a_signal_while_the_refresh_thread_starts_leaves_no_lock(
    take: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CI caught it: a SIGTERM right after prune wrote its lock made release() fail with
    'cannot join thread before it is started' (exit 70, lock left behind); the shared
    lock was not released at all when the signal landed there."""
    storage = MemoryStorage()
    monkeypatch.setattr(RepositoryLock, "start_refreshing", _interrupted_start)
    acquire = acquire_shared if take == "shared" else acquire_exclusive
    with pytest.raises(KeyboardInterrupt):
        acquire(storage, "interrupted", wait=5, poll=0.02)
    assert list(storage.list(LOCKS_PREFIX)) == []
