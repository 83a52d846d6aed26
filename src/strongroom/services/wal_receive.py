"""``wal-receive``: stream a PostgreSQL cluster's WAL into the repository with a recovery
point of about a second (docs/design.md, "Streaming WAL (wal-receive)").

``pg_receivewal`` writes into a private spool folder through a replication slot (the
server keeps the WAL while strongroom is down). A loop, every ``interval`` seconds:

1. archives every completed file of the spool (segments, timeline ``.history`` files)
   through the same code as ``wal-push`` (``services.wal.archive_wal``: name, digest,
   duplicate and conflict rules, the header check against the cluster's system
   identifier), deletes the segment's snapshots, and deletes the file from the spool once
   it is durable (the newest segment stays until a newer one is archived: it is where
   ``pg_receivewal`` resumes);
2. when every completed file is archived, snapshots the growing ``.partial`` segment if it
   changed (``repository.log_snapshots``: only the newest snapshot of a segment is kept).

``pg_receivewal`` dying (the server restarting, the network) is restarted with growing
delays (one warning per outage). A signal stops it cleanly and archives what it wrote
before the command exits (128 + the signal's number).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from strongroom import interrupts
from strongroom.engines.postgresql.receivewal import (
    DEFAULT_SLOT,
    ReplicationFacts,
    ReplicationSource,
    RunningReceiver,
    SlotMissing,
)
from strongroom.engines.postgresql.wal import (
    WalFileName,
    check_segment_belongs,
    parse_wal_name,
    segment_size,
    stream_name,
)
from strongroom.errors import DatabaseError, StorageError, StrongroomError, UsageError
from strongroom.repository.log_snapshots import LogSnapshots, trimmed_length
from strongroom.repository.logs import LogArchive
from strongroom.services.wal import archive_wal

if TYPE_CHECKING:
    from strongroom.repository.repository import Repository

log = logging.getLogger("strongroom.wal_receive")

LOCK_NAME = ".strongroom-wal-receive.lock"
BACKOFF = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)  # seconds between restarts of pg_receivewal
HEALTHY_AFTER = 10.0  # a pg_receivewal that ran this long ends an outage
_FATAL = ("does not exist", "is active for pid", "replication role", "permission denied")


def default_spool(stream: str) -> Path:
    """``$XDG_STATE_HOME/strongroom/wal-receive/<stream>`` (``~/.local/state/…``)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "strongroom" / "wal-receive" / stream


@dataclass(frozen=True)
class ReceiveOptions:
    slot: str = DEFAULT_SLOT
    create_slot: bool = False
    spool: Path | None = None  # None: default_spool(stream)
    interval: float = 1.0  # seconds between two passes (snapshots at most this often)


@dataclass
class ReceiveStats:
    """What a run did so far (the CLI prints it at the end)."""

    stream: str = ""
    spool: Path = Path()
    segments: int = 0  # completed files archived (or found archived)
    snapshots: int = 0  # snapshots stored
    snapshot_bytes: int = 0  # stored bytes of those snapshots
    snapshot_seconds: float = 0.0  # time spent reading and storing them
    restarts: int = 0
    newest: str = ""  # the newest WAL in the repository: a segment, or segment + offset
    created_slot: bool = False


def _lock(spool: Path) -> IO[str]:
    """The spool's lock (``flock``, held until the process ends); ``UsageError`` when
    another wal-receive holds it."""
    handle = (spool / LOCK_NAME).open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise UsageError(f"another wal-receive uses the spool {spool}") from None
    return handle


def _prepare_spool(spool: Path) -> None:
    try:
        spool.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(spool, 0o700)
    except OSError as exc:
        raise UsageError(f"cannot use {spool} as the spool: {exc.strerror or exc}") from exc


class _Pass:
    """One receiver's state between passes over the spool."""

    def __init__(self, repo: Repository, stream: str, system_identifier: int, spool: Path) -> None:
        self.archive = LogArchive(repo)
        self.snapshots = LogSnapshots(repo, self.archive)
        self.stream = stream
        self.system_identifier = system_identifier
        self.spool = spool
        self.archived: set[str] = set()  # completed files archived by this run
        self.whole: dict[str, bool] = {}  # segment -> archived whole already (repository)
        self.snapped: dict[str, int] = {}  # segment -> end of its newest snapshot
        self.seen: dict[str, tuple[int, int]] = {}  # .partial -> (mtime_ns, size) last read

    def _names(self) -> list[WalFileName]:
        found = []
        for entry in os.listdir(self.spool):
            with contextlib.suppress(UsageError):
                found.append(parse_wal_name(entry))
        return sorted(found, key=lambda n: n.name)

    def run(self, stats: ReceiveStats) -> None:
        names = self._names()
        present = {n.name for n in names} | {n.name[: -len(".partial")] for n in names}
        self.archived &= present  # forget what left the spool: memory stays bounded
        for done in [s for s in self.whole if s not in present]:
            del self.whole[done]
            self.snapped.pop(done, None)
        self.seen = {k: v for k, v in self.seen.items() if k in present}
        completed = [n for n in names if n.kind in ("segment", "history")]
        for name in completed:
            if name.name not in self.archived:
                self._archive(name, stats)
        segments = [n.name for n in completed if n.kind == "segment"]
        keep = segments[-1] if segments else None
        for name in completed:  # durable now: keep only the newest segment (resume point)
            if name.name != keep:
                with contextlib.suppress(FileNotFoundError):
                    (self.spool / name.name).unlink()
        for name in names:
            if name.kind == "partial":
                self._snapshot(name, stats)

    def _archive(self, name: WalFileName, stats: ReceiveStats) -> None:
        data = (self.spool / name.name).read_bytes()
        result = archive_wal(self.archive, self.stream, name, data, self.system_identifier)
        if name.kind == "segment":
            self.snapshots.forget(self.stream, name.group, name.name)
            self.whole[name.name] = True
            stats.newest = f"{name.name} (whole)"
        self.archived.add(name.name)
        stats.segments += 1
        log.info(
            "%s %s (%d bytes -> %d stored)",
            "archived" if result.stored else "already archived:",
            name.name,
            len(data),
            result.stored_bytes,
        )

    def _snapshot(self, partial: WalFileName, stats: ReceiveStats) -> None:
        path = self.spool / partial.name
        try:
            info = path.stat()
        except FileNotFoundError:
            return  # completed (renamed) meanwhile: the next pass archives it
        if self.seen.get(partial.name) == (info.st_mtime_ns, info.st_size):
            return
        segment = partial.name[: -len(".partial")]
        if segment not in self.whole:
            self.whole[segment] = bool(self.archive.copies(self.stream, partial.group, segment))
        if self.whole[segment]:
            return
        clock = time.monotonic()
        data = path.read_bytes()
        self.seen[partial.name] = (info.st_mtime_ns, info.st_size)
        end = trimmed_length(data)
        if end <= self.snapped.get(segment, 0):
            return
        if segment_size(data[: min(end, 512)]) is None:  # not even its first page header
            self.seen.pop(partial.name, None)
            return
        check_segment_belongs(partial, data, self.system_identifier)
        result = self.snapshots.push(self.stream, partial.group, segment, data[:end])
        self.snapped[segment] = end
        if result is None:
            return
        seconds = time.monotonic() - clock
        stats.snapshots += 1
        stats.snapshot_bytes += result.stored_bytes
        stats.snapshot_seconds += seconds
        stats.newest = f"{segment} up to byte {end}"
        log.info(
            "snapshot of %s: %d bytes -> %d stored in %.3f s",
            segment,
            end,
            result.stored_bytes,
            seconds,
        )


class _Supervisor:
    """Keeps one ``pg_receivewal`` running: restarts with growing delays, one warning
    per outage."""

    def __init__(
        self, source: ReplicationSource, spool: Path, facts: ReplicationFacts, stats: ReceiveStats
    ) -> None:
        self.source, self.spool, self.facts, self.stats = source, spool, facts, stats
        self.running: RunningReceiver | None = None
        self.started_at = 0.0
        self.next_start = 0.0
        self.failures = 0
        self.ever_streamed = False

    def tend(self) -> None:
        now = time.monotonic()
        if self.running is not None:
            code = self.running.exit_code()
            if code is None:
                if now - self.started_at >= HEALTHY_AFTER:
                    if self.failures:
                        log.warning("pg_receivewal streams again")
                    self.failures, self.ever_streamed = 0, True
                return
            self._ended(code, now)
        if now >= self.next_start:
            self.running = self.source.start(self.spool, self.facts)
            self.started_at = now

    def _ended(self, code: int, now: float) -> None:
        assert self.running is not None
        reason = self.running.reason()
        self.running.finish()
        self.running = None
        lowered = reason.lower()
        if not self.ever_streamed and now - self.started_at < HEALTHY_AFTER:
            if "slot" in lowered and "does not exist" in lowered:
                raise SlotMissing(
                    f"replication slot {self.source.slot} does not exist: run wal-receive "
                    "once with --create-slot"
                )
            if any(word in lowered for word in _FATAL) and self.failures == 0:
                raise DatabaseError(f"pg_receivewal cannot stream: {reason}")
        delay = BACKOFF[min(self.failures, len(BACKOFF) - 1)]
        if self.failures == 0:
            log.warning(
                "pg_receivewal stopped (%s; exit %d): restarting it, every %.0f s at most "
                "while it fails",
                reason,
                code,
                BACKOFF[-1],
            )
        self.failures += 1
        self.stats.restarts += 1
        self.next_start = now + delay

    def finish(self) -> None:
        if self.running is not None:
            self.running.finish()
            self.running = None


def wal_receive(
    repo: Repository,
    url: str,
    options: ReceiveOptions,
    stats: ReceiveStats | None = None,
    *,
    keep_going: Callable[[], bool] = lambda: True,
    on_start: Callable[[ReceiveStats], None] | None = None,
) -> ReceiveStats:
    """Stream the cluster's WAL into the repository until a signal (``Interrupted``,
    raised after the final pass) or ``keep_going`` returns ``False``. Raises
    ``DatabaseAuthFailed``/``DatabaseUnreachable``/``SlotMissing`` (exit 5) before
    anything runs, ``UsageError`` (exit 2) for a bad slot name or a spool in use,
    ``LogConflict``/``WalMismatch`` (exit 7) for WAL the repository refuses."""
    stats = stats or ReceiveStats()
    source = ReplicationSource(url, options.slot)
    facts = source.identify()
    stats.created_slot = source.ensure_slot(facts, create=options.create_slot)
    stats.stream = stream_name(facts.system_identifier)
    spool = options.spool or default_spool(stats.stream)
    _prepare_spool(spool)
    lock = _lock(spool)
    stats.spool = spool
    passes = _Pass(repo, stats.stream, facts.system_identifier, spool)
    supervisor = _Supervisor(source, spool, facts, stats)
    try:
        passes.run(stats)  # what an earlier run left in the spool
        if on_start is not None:
            on_start(stats)
        outage = False
        while keep_going():
            supervisor.tend()
            try:
                passes.run(stats)
                if outage:
                    log.warning("the repository answers again: archiving resumed")
                outage = False
            except StorageError as error:  # the spool and the slot keep the WAL meanwhile
                if not outage:
                    log.warning("cannot archive (%s): retrying every pass", error.message)
                outage = True
            time.sleep(options.interval)
    except KeyboardInterrupt as exc:
        with interrupts.deferred():  # a second signal waits for the final pass
            supervisor.finish()
            try:
                passes.run(stats)
            except StrongroomError as error:
                log.error("the final pass failed: %s", error)
            interrupts.note_outcome(
                exc, f"wal-receive stopped; the newest WAL in the repository: {stats.newest}"
            )
        raise
    finally:
        supervisor.finish()
        lock.close()
    passes.run(stats)
    return stats
