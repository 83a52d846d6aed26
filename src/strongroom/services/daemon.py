"""``strongroom run``: run due backups, then retention and prune, and scheduled restore
drills; notify; write metrics. One tick at a time, in the foreground."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

from strongroom.config import Settings, TargetSettings
from strongroom.engines import open_engine
from strongroom.errors import InvalidName, StrongroomError, VerificationMismatch
from strongroom.notify.dispatch import Notifier
from strongroom.notify.events import Event
from strongroom.processes import process_start_ticks, this_process
from strongroom.redaction import redact_text
from strongroom.repository.ids import utc_now_iso
from strongroom.repository.names import check_target_name
from strongroom.repository.repository import Repository
from strongroom.repository.runs import (
    Claim,
    RunRecord,
    mark_done,
    record_run,
    release,
    runs_of,
    try_claim,
)
from strongroom.repository.verifications import verification_statuses
from strongroom.retention import is_regular
from strongroom.services.alerts import (
    NO_GOOD_BACKUP,
    STALE_PREFIX,
    alert_once,
    clear_alert,
    open_alerts,
)
from strongroom.services.backup import BackupRun, record_backup_run, recorded_backup
from strongroom.services.health import evaluate_target
from strongroom.services.hooks import hooks_of
from strongroom.services.metrics import build_registry, write_metrics_file
from strongroom.services.notifications import backup_failed_event, notify_backup
from strongroom.services.schedule import Job, interval_of, jobs_of, latest_due, next_run
from strongroom.services.wal_alerts import check_wal_alerts
from strongroom.services.wal_status import WalStatus, wal_status

log = logging.getLogger("strongroom.daemon")

MAX_SLEEP = 60.0


@dataclass(frozen=True)
class JobFailure:
    """A job of the last pass that failed: ``job`` says which ("backup of shop")."""

    job: str
    message: str
    exit_code: int


class JobsFailed(StrongroomError):
    """``run --once``: a job of the pass failed. The exit code is the first failed job's
    own (5 database, 7 failed drill, 8 hook…); the message names it, and how many more."""

    def __init__(self, failures: list[JobFailure]) -> None:
        first = failures[0]
        more = len(failures) - 1
        extra = f" ({more} more job{'s' if more > 1 else ''} failed too)" if more else ""
        super().__init__(f"{first.job} failed: {first.message}{extra}")
        self.exit_code = first.exit_code
        self.failures = failures


class JobCrashed(StrongroomError):
    """A job ended with an unexpected exception (a bug, or a case nobody foresaw): that
    job failed, exit 70, and the pass goes on with the others."""

    exit_code = 70

    def __init__(self, exc: BaseException) -> None:
        detail = " ".join(str(exc).split())[:300]
        text = f"unexpected failure ({type(exc).__name__})" + (f": {detail}" if detail else "")
        super().__init__(redact_text(text))


# --- who holds a claim: enough to tell, on this machine, that it was killed ---------------
def _machine() -> str:
    """This boot of this machine's pid namespace ("" when ``/proc`` cannot tell)."""
    me = this_process()
    if me.boot_id is None or me.pid_namespace is None:
        return ""
    return f"{me.boot_id[:8]}-{''.join(c for c in me.pid_namespace if c.isdigit())}"


def claim_owner() -> str:
    """``host:pid:start ticks:machine``: the holder written into a run's claim."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{process_start_ticks(pid) or ''}:{_machine()}"


def holder_gone(owner: str) -> bool:
    """True when the claim's holder ran on this machine (same host, boot and pid
    namespace) and no longer runs: a scheduler killed after claiming a run. Holders on
    other machines, or written by older versions, are left to the claim's expiry."""
    parts = owner.split(":")
    if len(parts) != 4 or not parts[1].isdigit() or not parts[2].isdigit():
        return False
    host, pid, ticks, machine = parts
    if host != socket.gethostname() or not machine or machine != _machine():
        return False
    return process_start_ticks(int(pid)) != int(ticks)


def _hours(seconds: float) -> str:
    hours = seconds / 3600
    return f"{hours:.0f} h" if hours >= 10 else f"{hours:.1f} h"


def stale_event(
    target: str, newest_backup_id: str | None, age_seconds: float | None, limit: timedelta
) -> Event:
    """The alert for a stale target, saying what is true: it has no good backup yet, or
    how old its newest good backup is."""
    expected = f"expected within {_hours(limit.total_seconds())}"
    if newest_backup_id is None or age_seconds is None:
        return Event(
            "backup_stale",
            target,
            f"no good backup of {target} yet ({expected})",
            {"last_good_backup": None},
        )
    return Event(
        "backup_stale",
        target,
        f"last good backup of {target} {_hours(age_seconds)} ago ({expected})",
        {"last_good_backup": newest_backup_id, "age_hours": round(age_seconds / 3600, 1)},
    )


@dataclass
class Daemon:
    """The scheduler loop. ``tick`` is one pass; ``run_forever`` repeats it until stopped."""

    settings: Settings
    repo: Repository
    env: Mapping[str, str]
    notifier: Notifier | None = None
    metrics_file: Path | None = None
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    owner: str = field(default_factory=claim_owner)
    stop: threading.Event = field(default_factory=threading.Event)
    failures: list[JobFailure] = field(default_factory=list)  # of the last pass
    _logged: set[str] = field(default_factory=set)  # refused targets, logged once

    @property
    def jobs(self) -> list[Job]:
        return jobs_of(self.settings)

    # --- one pass ---------------------------------------------------------------------
    def tick(self) -> list[RunRecord]:
        """Run everything due now (each missed job once), then check staleness. The jobs
        that failed are in ``failures`` afterwards."""
        now = self.clock()
        self.failures = []
        records: list[RunRecord] = []
        claims: dict[str, list[tuple[Job, Claim]]] = {}
        drills: list[tuple[Job, Claim]] = []
        for job in self.jobs:
            if not self._valid_target(job):
                continue
            due = latest_due(job, now, self.settings.timezone)
            claim = try_claim(
                self.repo.storage, job.job_id, due.isoformat(), self.owner, now, holder_gone
            )
            if claim is None:
                continue
            if job.kind == "backup":
                claims.setdefault(job.target, []).append((job, claim))
            else:
                drills.append((job, claim))
        for target, claimed in claims.items():
            if self.stop.is_set():
                for _, claim in claimed:
                    release(self.repo.storage, claim)
                continue
            tags = tuple(sorted({str(job.tag) for job, _ in claimed}))
            scheduled = min(claim.scheduled_for for _, claim in claimed)
            record = self._guarded(
                "backup", target, tags, partial(self._backup, target, claimed), scheduled
            )
            records.append(record)
            for _, claim in claimed:
                mark_done(self.repo.storage, claim, record)
            if record.ok:
                self._guarded("maintenance", target, (), partial(self._maintain, target), scheduled)
        for job, claim in drills:
            if self.stop.is_set():
                release(self.repo.storage, claim)
                continue
            record = self._guarded(
                "verify", job.target, (), partial(self._drill, job), claim.scheduled_for
            )
            records.append(record)
            mark_done(self.repo.storage, claim, record)
        self._check_staleness(now)
        wal = self._check_wal(now)
        self.write_metrics(wal)
        return records

    def _valid_target(self, job: Job) -> bool:
        """A target name the rules refuse (``config check`` lets ``..`` and ``a/b`` pass)
        fails its jobs (exit 2, logged once), without touching the repository."""
        try:
            check_target_name(job.target)
        except InvalidName as exc:
            label = f"{'backup' if job.kind == 'backup' else 'restore drill'} of {job.target}"
            if label not in self._logged:
                self._logged.add(label)
                log.error("%s refused: %s", label, exc.message)
            if all(f.job != label for f in self.failures):
                self._failed(label, exc)
            return False
        return True

    def _guarded(
        self,
        kind: str,
        target: str,
        tags: tuple[str, ...],
        work: Callable[[], RunRecord | None],
        scheduled_for: str | None = None,
    ) -> RunRecord:
        """Run one job; an unexpected exception fails that job alone (exit 70, recorded,
        notified), not the pass: the other due jobs still run and their claims are kept.
        ``scheduled_for``: the slot the job ran for, kept in the failure's run record (the
        job history shows it as a scheduled run of that schedule)."""
        started = utc_now_iso()
        try:
            record = work()
        except Exception as exc:
            label = {"backup": "backup", "verify": "restore drill"}.get(kind, "retention")
            error = exc if isinstance(exc, StrongroomError) else JobCrashed(exc)
            log.error("%s of %s failed: %s", label, target, error.message)
            log.debug("details", exc_info=exc)
            self._failed(f"{label} of {target}", error)
            record = RunRecord(
                target,
                kind,
                False,
                started,
                utc_now_iso(),
                tags,
                scheduled_for=scheduled_for,
                error_kind=type(exc).__name__,
            )
            try:
                record_run(self.repo.storage, record)
            except StrongroomError as also:
                log.error("the run record of %s could not be written: %s", target, also.message)
            if kind == "backup":
                self._notify(backup_failed_event(target, tags, error))
            elif kind == "verify":
                summary = f"restore drill of {target} failed: {error.message}"
                self._notify(Event("verify_failed", target, summary))
            return record
        return record if record is not None else RunRecord(target, kind, True, started, started)

    def _target(self, name: str) -> TargetSettings:
        return self.settings.targets[name]

    def _backup(self, target: str, claimed: list[tuple[Job, Claim]]) -> RunRecord:
        tags = tuple(sorted({str(job.tag) for job, _ in claimed}))
        scheduled = min(claim.scheduled_for for _, claim in claimed)
        settings = self._target(target)
        started = utc_now_iso()
        log.info("backup of %s (%s) starts", target, ", ".join(tags))
        try:
            engine = open_engine(settings.database_url(self.env))
        except StrongroomError as exc:
            record = record_backup_run(self.repo, target, tags, started, scheduled, error=exc)
            run = BackupRun(record, None, exc)
        else:
            # the same path as `strongroom backup` and the web: hooks, backup, run record
            run = recorded_backup(
                self.repo,
                engine,
                target=target,
                tags=tags,
                scheduled_for=scheduled,
                hooks=hooks_of(self.settings, target, self.env),
            )
        if run.error is not None:
            if run.report is None:
                log.error("backup of %s failed: %s", target, run.error.message)
            self._failed(f"backup of {target}", run.error)
        notify_backup(self.notifier, self.settings.notifications, self.repo, target, tags, run)
        return run.record

    def _failed(self, job: str, error: StrongroomError) -> None:
        self.failures.append(JobFailure(job, error.message, error.exit_code))

    def _maintain(self, target: str) -> None:
        """Retention for this target, then prune (per its policy)."""
        from strongroom.services.forget import forget
        from strongroom.services.prune import prune

        settings = self._target(target)
        policy = self.settings.retention_for(target, self.env)
        started = utc_now_iso()
        try:
            result = forget(self.repo, policy, target=target)
            if result.forgotten and (settings.retention is None or settings.retention.prune):
                prune(self.repo)
        except StrongroomError as exc:
            log.error("retention of %s failed: %s", target, exc.message)
            self._failed(f"retention of {target}", exc)
            record_run(
                self.repo.storage,
                RunRecord(
                    target,
                    "maintenance",
                    False,
                    started,
                    utc_now_iso(),
                    error_kind=type(exc).__name__,
                ),
            )

    def _drill(self, job: Job) -> RunRecord:
        from strongroom.services.drill import read_check_queries, scratch_for, verify_by_restore

        target = job.target
        verify = self._target(target).verify
        assert verify is not None
        started = utc_now_iso()
        try:
            backups = [
                m
                for m in self.repo.list_backups(target)
                if is_regular(m.tags) and not m.is_base_backup
            ]
            if not backups:
                raise StrongroomError(f"no backup of {target} to drill")
            manifest = backups[-1]
            scratch_url = verify.scratch_url or (self.env.get(verify.scratch_url_env or "") or None)
            scratch = scratch_for(
                manifest,
                scratch_url=scratch_url,
                server_url=self._target(target).database_url(self.env),
                prefix="strongroom_drill",
            )
            checks = read_check_queries(Path(verify.check_sql)) if verify.check_sql else []
            result = verify_by_restore(self.repo, manifest, scratch, checks=checks)
        except StrongroomError as exc:
            log.error("restore drill of %s failed: %s", target, exc.message)
            self._failed(f"restore drill of {target}", exc)
            record = RunRecord(
                target, "verify", False, started, utc_now_iso(), error_kind=type(exc).__name__
            )
            record_run(self.repo.storage, record)
            self._notify(
                Event("verify_failed", target, f"restore drill of {target} failed: {exc.message}")
            )
            return record
        record = RunRecord(
            target,
            "verify",
            result.ok,
            started,
            utc_now_iso(),
            (),
            None,
            manifest.backup_id,
            manifest.raw_size,
            None,
            result.restore_seconds,
            None if result.ok else "VerificationMismatch",
        )
        record_run(self.repo.storage, record)
        if not result.ok:
            problem = result.record.problem or "the restored copy did not verify"
            log.error("restore drill of %s failed: %s", manifest.backup_id, problem)
            self._failed(f"restore drill of {target}", VerificationMismatch(problem))
            self._notify(
                Event(
                    "verify_failed",
                    target,
                    f"restore drill of {manifest.backup_id} failed: {result.record.problem}",
                )
            )
        return record

    def _check_staleness(self, now: datetime) -> None:
        """Alert once per stale condition of a target (no good backup yet; or the newest
        good backup, older than its schedule allows); the sent alerts are kept in the
        repository (``services/alerts.py``), so a new pass or process does not repeat them."""
        if not self.settings.notifications.on_stale:
            return
        manifests = self.repo.list_backups()
        runs = runs_of(self.repo.storage)
        verifications = verification_statuses(self.repo.storage)
        alerts = open_alerts(self.repo.storage, STALE_PREFIX)
        for name, target in sorted(self.settings.targets.items()):
            interval = interval_of(list(target.schedule.values()), now, self.settings.timezone)
            health = evaluate_target(
                name, manifests, runs, verifications, interval, self.settings.grace, now
            )
            limit = interval + self.settings.grace
            age = health.newest_age_seconds
            if age is not None and age <= limit.total_seconds():
                clear_alert(alerts, STALE_PREFIX, name)
                continue
            event = stale_event(name, health.newest_backup_id, age, limit)
            condition = health.newest_backup_id or NO_GOOD_BACKUP
            alert_once(alerts, STALE_PREFIX, name, condition, partial(self._notify, event))

    def _check_wal(self, now: datetime) -> WalStatus | None:
        """The WAL of the targets with base backups: alert once per change of state when
        archiving lags past ``[wal] recovery_point`` (``on_stale``) or WAL has a gap
        (``on_failure``); ``services/wal_alerts.py``. The status, for the metrics; a
        repository that cannot tell is logged (no job fails for it)."""
        if self.notifier is None and self.metrics_file is None:
            return None  # nobody to tell
        try:
            manifests = self.repo.list_backups()
            if not any(m.is_base_backup for m in manifests):
                return None
            status = wal_status(self.repo, now=now)
            check_wal_alerts(self.repo.storage, self.settings, manifests, status, now, self._notify)
        except StrongroomError as exc:
            log.error("WAL status could not be checked: %s", exc.message)
            return None
        return status

    def _notify(self, event: Event) -> bool:
        """Send ``event``; False when there are channels and none of them accepted it."""
        if event.kind == "verify_failed" and not self.settings.notifications.on_failure:
            return True
        if event.kind == "backup_failed" and not self.settings.notifications.on_failure:
            return True
        if self.notifier is None:
            return True
        results = self.notifier.notify(event)
        return not results or any(r.ok for r in results)

    def write_metrics(self, wal: WalStatus | None = None) -> None:
        """The metrics file (``--metrics-file``); ``wal``: the pass's WAL status, when
        it has one."""
        if self.metrics_file is None:
            return
        manifests = self.repo.list_backups()
        if wal is None and any(m.is_base_backup for m in manifests):
            wal = wal_status(self.repo)
        registry = build_registry(
            manifests, runs_of(self.repo.storage), verification_statuses(self.repo.storage), wal
        )
        write_metrics_file(self.metrics_file, registry)

    # --- the loop -----------------------------------------------------------------------
    def seconds_until_next(self) -> float:
        now = self.clock()
        # compared in UTC: times of one zone compare by wall clock (wrong in a repeated hour)
        upcoming = [next_run(job, now, self.settings.timezone).astimezone(UTC) for job in self.jobs]
        if not upcoming:
            return MAX_SLEEP
        wait = (min(upcoming) - now).total_seconds()
        return max(1.0, min(MAX_SLEEP, wait + random.uniform(0, 2)))  # noqa: S311 (jitter)

    @contextlib.contextmanager
    def wal_uploader(self) -> Iterator[threading.Thread | None]:
        """While the scheduler runs (``run`` and ``serve`` alike): with ``[wal] spool``,
        the uploader that empties the spool into the repository (``wal_spool.Uploader``,
        a pass every second). On the way out ``stop`` is set and the uploader joined: the
        pass under way finishes the file it is moving (a file is deleted from the spool
        only once archived) and leaves the rest for the next start."""
        if not self.settings.wal.spool:
            yield None
            return
        from strongroom.services.wal_spool import Uploader

        spool = Path(self.settings.wal.spool).expanduser()
        uploader = Uploader(spool, self.repo, self.stop)
        uploader.start()
        log.info("WAL spool %s: uploading what waits there every second", spool)
        try:
            yield uploader
        finally:
            self.stop.set()
            uploader.join()

    def run_forever(self) -> None:
        log.info("strongroom run: %d jobs, time zone %s", len(self.jobs), self.settings.timezone)
        with self.wal_uploader():
            while not self.stop.is_set():
                self.tick()
                self.stop.wait(self.seconds_until_next())
        log.info("strongroom run: stopped")


def upcoming_runs(
    settings: Settings, now: datetime, count: int = 3
) -> list[tuple[Job, list[datetime]]]:
    """The next ``count`` runs of every job (for ``strongroom schedule``)."""
    result = []
    for job in jobs_of(settings):
        times = []
        moment = now
        for _ in range(count):
            moment = next_run(job, moment, settings.timezone)
            times.append(moment)
        result.append((job, times))
    return result
