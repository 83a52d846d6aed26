"""Repository locks: leases in ``locks/`` that keep ``prune`` and running backups apart.

A backup holds a *shared* lock from before it lists ``chunks/`` until its manifest is
written; ``prune`` holds an *exclusive* lock while it decides and deletes. Shared locks do
not exclude each other; an exclusive lock excludes shared ones (two prunes may overlap:
both only delete chunks no manifest references while no backup runs).

Taking a lock is "write, then look": write your own lock object, then list ``locks/``. Of
two conflicting writers at least one sees the other (storage lists what was put before),
so they can never both go on. A lock is a lease: its holder rewrites it every
``ttl / 5`` seconds and stops trusting it ``ttl / 2`` seconds after its last successful
rewrite. Others treat a lock as stale (and delete it) when its written expiry lies more
than ``MAX_CLOCK_SKEW`` in their past, or when they have watched it stay unchanged for a
whole ``ttl`` on their own monotonic clock. The reasoning is in docs/design.md.

Two faster rules. A lock taken on this machine (same host name, boot id and pid
namespace: the record says so) whose process is gone, or whose pid now belongs to a
process started at another time, is stale at once: a killed command does not block the
next one for a whole ``ttl``. A lock object that is not valid JSON (damaged: puts are
atomic) is stale once it has stayed unchanged for ``UNREADABLE_GRACE`` seconds. Locks
written by older versions (without these fields) follow the lease rules only.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import random
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta

from strongroom.errors import LockLost, ObjectNotFound, RepositoryBusy, StorageError
from strongroom.interrupts import deferred, join_thread, pending
from strongroom.processes import ProcessIdentity, process_start_ticks, this_process
from strongroom.repository.ids import parse_iso
from strongroom.repository.layout import LOCKS_PREFIX, lock_key
from strongroom.storage.base import Storage, TracksUnsettledWrites

log = logging.getLogger("strongroom.locks")

LOCK_FORMAT = "strongroom-lock"
LOCK_VERSION = 1
SHARED = "shared"
EXCLUSIVE = "exclusive"

DEFAULT_TTL = 300.0  # seconds a lock stays valid after its last refresh
MAX_CLOCK_SKEW = 120.0  # how far another machine's clock may be behind ours
POLL_INTERVAL = 1.0  # seconds between looks while waiting for a lock
BACKUP_WAIT = 3600.0  # how long a backup waits for a running prune
PRUNE_WAIT = 600.0  # how long prune waits for running backups
UNREADABLE_GRACE = 10.0  # seconds a lock that is not valid JSON must stay unchanged
MAX_TTL = 86400.0  # a lock claiming a longer lease is not one this version reads


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def owner_name() -> str:
    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    except (KeyError, OSError):
        return socket.gethostname()


@dataclass(frozen=True)
class LockRecord:
    """The content of one lock object (clear JSON)."""

    lock_id: str
    kind: str  # SHARED or EXCLUSIVE
    purpose: str  # e.g. "backup of shop", "prune"
    owner: str  # user@host
    pid: int
    created: str
    refreshed: str
    expires: str  # refreshed + ttl, by the holder's clock
    ttl_seconds: float
    sequence: int  # +1 at each refresh, so every rewrite changes the object
    # Who holds it, precisely enough to tell on the same machine that it is gone (absent
    # from locks written by older versions: then None, and only the lease rules apply).
    hostname: str | None = None
    boot_id: str | None = None
    pid_namespace: str | None = None
    start_ticks: int | None = None

    def to_json(self) -> bytes:
        document = {"format": LOCK_FORMAT, "version": LOCK_VERSION, **asdict(self)}
        return json.dumps(document, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_json(cls, raw: bytes) -> LockRecord:
        """Parse a lock object; ``ValueError`` if it is not one this version understands."""
        try:
            doc = json.loads(raw)
            if doc.get("format") != LOCK_FORMAT or doc.get("version") != LOCK_VERSION:
                raise ValueError("not a version 1 strongroom lock")
            record = cls(
                lock_id=str(doc["lock_id"]),
                kind=str(doc["kind"]),
                purpose=str(doc["purpose"]),
                owner=str(doc["owner"]),
                pid=int(doc["pid"]),
                created=str(doc["created"]),
                refreshed=str(doc["refreshed"]),
                expires=str(doc["expires"]),
                ttl_seconds=float(doc["ttl_seconds"]),
                sequence=int(doc["sequence"]),
                hostname=_optional_str(doc, "hostname"),
                boot_id=_optional_str(doc, "boot_id"),
                pid_namespace=_optional_str(doc, "pid_namespace"),
                start_ticks=_optional_int(doc, "start_ticks"),
            )
            # A ttl of NaN, infinity or <= 0, or an expiry that is no time, would make the
            # lock never stale: such a record is not one this version reads (lease rule).
            if not 0 < record.ttl_seconds <= MAX_TTL:
                raise ValueError(f"ttl_seconds {record.ttl_seconds!r} out of range")
            parse_iso(record.expires)
            return record
        except (ValueError, TypeError, AttributeError, KeyError, OverflowError) as exc:
            raise ValueError(f"unreadable lock ({exc!r})") from exc

    def describe(self) -> str:
        """One line (anyone can write a lock object: its fields are cut and cleaned)."""
        return _printable(f"{self.purpose} by {self.owner} (pid {self.pid}) since {self.created}")

    def gone_because(self, here: ProcessIdentity) -> str | None:
        """Why this lock's process certainly no longer runs, judged from ``here`` (a
        process on the machine asking); None when it runs or this machine cannot tell."""
        if (
            self.start_ticks is None
            or self.hostname != here.hostname
            or self.boot_id is None
            or self.boot_id != here.boot_id
            or self.pid_namespace is None
            or self.pid_namespace != here.pid_namespace
        ):
            return None
        started = process_start_ticks(self.pid)
        if started is None:
            return f"its process (pid {self.pid}) on this host is gone"
        if started != self.start_ticks:
            return f"its pid {self.pid} now belongs to another process"
        return None


def _printable(text: str, limit: int = 300) -> str:
    cleaned = "".join(ch if ch.isprintable() else "?" for ch in text)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."


def _optional_str(doc: dict[str, object], name: str) -> str | None:
    value = doc.get(name)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"lock field {name} is not a string")
    return value


def _optional_int(doc: dict[str, object], name: str) -> int | None:
    value = doc.get(name)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise ValueError(f"lock field {name} is not a whole number")
    return value


def new_record(kind: str, purpose: str, ttl: float, now: datetime | None = None) -> LockRecord:
    moment = now or datetime.now(UTC)
    me = this_process()
    return LockRecord(
        lock_id=f"{moment:%Y%m%dT%H%M%SZ}-{secrets.token_hex(8)}",
        kind=kind,
        purpose=purpose,
        owner=owner_name(),
        pid=os.getpid(),
        created=_iso(moment),
        refreshed=_iso(moment),
        expires=_iso(moment + timedelta(seconds=ttl)),
        ttl_seconds=ttl,
        sequence=0,
        hostname=me.hostname,
        boot_id=me.boot_id,
        pid_namespace=me.pid_namespace,
        start_ticks=me.start_ticks,
    )


@dataclass(frozen=True)
class LiveLock:
    """A lock someone else holds (``record`` is None when it cannot be read)."""

    key: str
    record: LockRecord | None

    @property
    def kind(self) -> str | None:
        return self.record.kind if self.record else None

    def describe(self) -> str:
        return self.record.describe() if self.record else f"unreadable lock {self.key}"


def _is_json(raw: bytes) -> bool:
    try:
        json.loads(raw)
    except ValueError:  # UnicodeDecodeError and JSONDecodeError included
        return False
    return True


class LockObserver:
    """Lists locks and removes stale ones, remembering when it first saw each version."""

    def __init__(
        self,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
        here: ProcessIdentity | None = None,
    ) -> None:
        self._wall = wall
        self._monotonic = monotonic
        self._here = here or this_process()
        self._seen: dict[str, tuple[bytes, float]] = {}

    def live_locks(
        self, storage: Storage, own_key: str | None = None, remove_stale: bool = True
    ) -> list[LiveLock]:
        """Every lock but ``own_key`` that is not stale; stale ones are deleted."""
        live = []
        for key in sorted(storage.list(LOCKS_PREFIX)):
            if key == own_key or not key.endswith(".json"):
                continue
            try:
                raw = storage.get(key)
            except ObjectNotFound:
                continue  # released meanwhile
            try:
                record: LockRecord | None = LockRecord.from_json(raw)
            except ValueError:
                record = None
            stale = self._stale_because(key, raw, record)
            if stale is not None:
                if remove_stale:
                    if record is None:
                        log.warning("removing unreadable lock %s: %s", key, stale)
                    else:
                        log.info("removing stale lock %s (%s): %s", key, record.describe(), stale)
                    storage.delete(key)
                continue
            live.append(LiveLock(key, record))
        return live

    def _stale_because(self, key: str, raw: bytes, record: LockRecord | None) -> str | None:
        now = self._monotonic()
        seen = self._seen.get(key)
        if seen is None or seen[0] != raw:
            self._seen[key] = (raw, now)
            unchanged_for = 0.0
        else:
            unchanged_for = now - seen[1]
        if record is None:
            # Not valid JSON: damaged (puts are atomic), nobody refreshes it. Valid JSON we
            # do not understand may be a newer version's live lock: the lease rule only.
            garbled = not _is_json(raw)
            limit = UNREADABLE_GRACE if garbled else DEFAULT_TTL
            if unchanged_for >= limit:
                what = "not valid JSON" if garbled else "not a lock this version reads"
                return f"{what}, unchanged for {unchanged_for:.0f} s"
            return None
        gone = record.gone_because(self._here)
        if gone is not None:
            return gone
        if unchanged_for >= record.ttl_seconds:
            return f"not refreshed for {unchanged_for:.0f} s"
        try:
            expires = parse_iso(record.expires)
        except ValueError:
            return None
        if expires.utcoffset() is None:
            expires = expires.replace(tzinfo=UTC)
        overdue = (self._wall() - expires).total_seconds()
        if overdue > MAX_CLOCK_SKEW:
            return f"expired {overdue:.0f} s ago"
        return None


class RepositoryLock:
    """A lock this process holds, rewritten in the background until it is released."""

    def __init__(self, storage: Storage, record: LockRecord) -> None:
        self._storage = storage
        self._record = record
        self.key = lock_key(record.lock_id)
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lost: str | None = None
        self._released = False
        self._written = b""
        self._last_write = time.monotonic()
        self._unsettled_at = _unsettled_writes(storage)

    @property
    def record(self) -> LockRecord:
        return self._record

    def write(self) -> None:
        """Put the lock object (first write); its lease counts from before the write."""
        started = time.monotonic()
        raw = self._record.to_json()
        self._storage.put(self.key, raw)
        self._written, self._last_write = raw, started

    def start_refreshing(self) -> None:
        """Start the refresh thread. A signal may interrupt ``Thread.start`` before or
        after the thread runs; ``release`` copes with both."""
        thread = threading.Thread(
            target=self._refresh_loop, name=f"sr-lock-{self._record.lock_id}", daemon=True
        )
        self._thread = thread
        thread.start()

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self._record.ttl_seconds / 5):
            self.refresh()

    def refresh(self) -> None:
        """Rewrite the lock with a new expiry, unless someone removed it (then it is lost)."""
        with self._mutex:
            if self._released or self._lost is not None:
                return
            started = time.monotonic()
            try:
                current = self._storage.get(self.key)
            except ObjectNotFound:
                self._lost = "was removed by another process that found it stale"
                log.warning("repository lock %s %s", self.key, self._lost)
                return
            except StorageError as exc:
                log.warning("cannot refresh repository lock %s: %s", self.key, exc)
                return
            if current != self._written and not self._is_own(current):
                self._lost = "was replaced by another process"
                log.warning("repository lock %s %s", self.key, self._lost)
                return
            now = datetime.now(UTC)
            record = replace(
                self._record,
                refreshed=_iso(now),
                expires=_iso(now + timedelta(seconds=self._record.ttl_seconds)),
                sequence=self._record.sequence + 1,
            )
            raw = record.to_json()
            try:
                self._storage.put(self.key, raw)
            except StorageError as exc:
                log.warning("cannot refresh repository lock %s: %s", self.key, exc)
                return
            self._record, self._written, self._last_write = record, raw, started

    def _is_own(self, raw: bytes) -> bool:
        """Whether ``raw`` is one of this lock's own versions: a refresh whose put got no
        answer may land late, after (or instead of) the next one."""
        try:
            record = LockRecord.from_json(raw)
        except ValueError:
            return False
        mine = self._record
        return (record.lock_id, record.pid, record.hostname) == (
            mine.lock_id,
            mine.pid,
            mine.hostname,
        )

    def ensure_held(self) -> None:
        """Raise ``LockLost`` unless the lease is certainly still ours for a while."""
        if self._lost is not None:
            raise LockLost(f"lost the repository lock {self.key}: it {self._lost}; stopped")
        age = time.monotonic() - self._last_write
        if age > self._record.ttl_seconds / 2:
            raise LockLost(
                f"could not refresh the repository lock {self.key} for {age:.0f} s; stopped "
                "(another process may treat it as stale)"
            )

    def release(self) -> None:
        """Stop refreshing and delete the lock object (a failure leaves it to expire). A
        signal in the main thread waits until it is done (``interrupts.deferred``): raised
        between marking the lock released and deleting it, it left the lock behind. A
        signal already pending (a deferred section that ended in an error, e.g. a failed
        manifest write) is not raised here: that error is the command's message."""
        if pending() is not None:  # a later signal cannot raise either (only the first does)
            self._release()
            return
        with deferred():
            self._release()

    def _release(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None:
            # if a signal cut start() short, the thread never runs or finds _stop set
            # at once; refresh() also checks _released under the mutex taken below
            join_thread(thread)
        with self._mutex:
            if self._released:
                return
            self._released = True
        if _unsettled_writes(self._storage) > self._unsettled_at:
            self._leave_to_expire()
            return
        try:
            self._storage.delete(self.key)
        except StorageError as exc:
            log.warning("cannot remove repository lock %s (it will expire): %s", self.key, exc)

    def _leave_to_expire(self) -> None:
        """A write made under this lock got no answer and may still land (a manifest,
        a delete): removing the lock now could let a prune (or a backup) run before it
        does. Rewrite it without the process's identity, so that it is stale only once
        its lease ends, not as soon as this process exits."""
        now = datetime.now(UTC)
        ttl = self._record.ttl_seconds
        record = replace(
            self._record,
            purpose=f"{self._record.purpose} (ended; a write that got no answer may land late)",
            refreshed=_iso(now),
            expires=_iso(now + timedelta(seconds=ttl)),
            sequence=self._record.sequence + 1,
            hostname=None,
            boot_id=None,
            pid_namespace=None,
            start_ticks=None,
        )
        log.warning(
            "leaving repository lock %s to expire within %.0f s: a storage write that got "
            "no answer may still take effect",
            self.key,
            ttl + MAX_CLOCK_SKEW,
        )
        try:
            self._storage.put(self.key, record.to_json())
        except StorageError as exc:
            log.warning("cannot rewrite repository lock %s: %s", self.key, exc)

    def __enter__(self) -> RepositoryLock:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


def _unsettled_writes(storage: Storage) -> int:
    return storage.unsettled_writes if isinstance(storage, TracksUnsettledWrites) else 0


def _pause(poll: float) -> None:
    time.sleep(poll * random.uniform(0.5, 1.5))  # noqa: S311 (jitter, not cryptography)


def _busy(what: str, waited: float, blockers: list[LiveLock]) -> RepositoryBusy:
    return RepositoryBusy(
        f"repository is busy: {what} waited {waited:.0f} s for {blockers[0].describe()}"
        + (f" and {len(blockers) - 1} more" if len(blockers) > 1 else "")
    )


def acquire_shared(
    storage: Storage,
    purpose: str,
    *,
    wait: float = BACKUP_WAIT,
    ttl: float = DEFAULT_TTL,
    poll: float = POLL_INTERVAL,
) -> RepositoryLock:
    """Take a shared lock; wait (up to ``wait`` s) while an exclusive lock is live."""
    observer = LockObserver()
    started = time.monotonic()
    announced = False
    while True:
        lock = RepositoryLock(storage, new_record(SHARED, purpose, ttl))
        try:  # the write too: a signal during it must not leave the lock behind
            lock.write()
            blockers = [
                live for live in observer.live_locks(storage, lock.key) if live.kind != SHARED
            ]
            if not blockers:
                lock.start_refreshing()
        except BaseException:
            lock.release()
            raise
        if not blockers:
            return lock
        lock.release()  # step aside: a waiting prune must be able to see no shared lock
        waited = time.monotonic() - started
        if waited >= wait:
            raise _busy(purpose, waited, blockers)
        if not announced:
            log.warning("%s waits for %s", purpose, blockers[0].describe())
            announced = True
        _pause(poll)


def acquire_exclusive(
    storage: Storage,
    purpose: str,
    *,
    wait: float = PRUNE_WAIT,
    ttl: float = DEFAULT_TTL,
    poll: float = POLL_INTERVAL,
) -> RepositoryLock:
    """Take an exclusive lock; keep it (so new backups wait) until no shared lock is live."""
    observer = LockObserver()
    started = time.monotonic()
    announced = False
    lock = RepositoryLock(storage, new_record(EXCLUSIVE, purpose, ttl))
    try:  # the write too: a signal during it must not leave the lock behind
        lock.write()
        lock.start_refreshing()
        while True:
            blockers = [
                live for live in observer.live_locks(storage, lock.key) if live.kind != EXCLUSIVE
            ]
            if not blockers:
                lock.ensure_held()
                return lock
            waited = time.monotonic() - started
            if waited >= wait:
                raise _busy(purpose, waited, blockers)
            if not announced:
                log.warning(
                    "%s waits for %d running backup(s): %s",
                    purpose,
                    len(blockers),
                    blockers[0].describe(),
                )
                announced = True
            _pause(poll)
    except BaseException:
        lock.release()
        raise


def list_locks(storage: Storage) -> list[LiveLock]:
    """Every lock object now (stale or not), without removing any."""
    result = []
    for key in sorted(storage.list(LOCKS_PREFIX)):
        try:
            raw = storage.get(key)
        except ObjectNotFound:
            continue
        try:
            result.append(LiveLock(key, LockRecord.from_json(raw)))
        except ValueError:
            result.append(LiveLock(key, None))
    return result
