"""``strongroom run``: run due backups, then retention and prune, and scheduled restore
drills; notify; write metrics. One tick at a time, in the foreground."""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from strongroom.config import Settings, TargetSettings
from strongroom.engines import open_engine
from strongroom.errors import StrongroomError
from strongroom.notify.dispatch import Notifier
from strongroom.notify.events import Event
from strongroom.repository.ids import parse_iso, utc_now_iso
from strongroom.repository.manifest import Manifest
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
from strongroom.services.backup import BackupReport, record_backup_run, recorded_backup
from strongroom.services.health import HEALTHY, evaluate_target
from strongroom.services.hooks import HookFailedAfter, hooks_of
from strongroom.services.metrics import build_registry, write_metrics_file
from strongroom.services.schedule import Job, interval_of, jobs_of, latest_due, next_run

log = logging.getLogger("strongroom.daemon")

MAX_SLEEP = 60.0


@dataclass
class Daemon:
    """The scheduler loop. ``tick`` is one pass; ``run_forever`` repeats it until stopped."""

    settings: Settings
    repo: Repository
    env: Mapping[str, str]
    notifier: Notifier | None = None
    metrics_file: Path | None = None
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    owner: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    stop: threading.Event = field(default_factory=threading.Event)
    _stale_notified: set[str] = field(default_factory=set)

    @property
    def jobs(self) -> list[Job]:
        return jobs_of(self.settings)

    # --- one pass ---------------------------------------------------------------------
    def tick(self) -> list[RunRecord]:
        """Run everything due now (each missed job once), then check staleness."""
        now = self.clock()
        records: list[RunRecord] = []
        claims: dict[str, list[tuple[Job, Claim]]] = {}
        drills: list[tuple[Job, Claim]] = []
        for job in self.jobs:
            due = latest_due(job, now, self.settings.timezone)
            claim = try_claim(self.repo.storage, job.job_id, due.isoformat(), self.owner, now)
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
            record = self._backup(target, claimed)
            records.append(record)
            for _, claim in claimed:
                mark_done(self.repo.storage, claim, record)
            if record.ok:
                self._maintain(target)
        for job, claim in drills:
            if self.stop.is_set():
                release(self.repo.storage, claim)
                continue
            record = self._drill(job)
            records.append(record)
            mark_done(self.repo.storage, claim, record)
        self._check_staleness(now)
        self.write_metrics()
        return records

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
            self._backup_failed(target, tags, exc)
            return record
        # the same path as `strongroom backup` and the web: hooks, backup, run record
        run = recorded_backup(
            self.repo,
            engine,
            target=target,
            tags=tags,
            scheduled_for=scheduled,
            hooks=hooks_of(self.settings, target, self.env),
        )
        if run.report is None:
            assert run.error is not None
            self._backup_failed(target, tags, run.error)
            return run.record
        if isinstance(run.error, HookFailedAfter):
            self._notify(
                Event(
                    "hook_failed",
                    target,
                    run.error.message,
                    {"backup_id": run.report.manifest.backup_id, "hook": "post_backup"},
                )
            )
        self._after_success(run.report)
        return run.record

    def _backup_failed(self, target: str, tags: tuple[str, ...], exc: StrongroomError) -> None:
        log.error("backup of %s failed: %s", target, exc.message)
        self._notify(
            Event(
                "backup_failed",
                target,
                f"backup of {target} failed: {exc.message}",
                {"error": exc.message, "tags": ", ".join(tags)},
            )
        )

    def _after_success(self, report: BackupReport) -> None:
        m = report.manifest
        notes = self.settings.notifications
        if notes.on_success:
            self._notify(
                Event(
                    "backup_succeeded",
                    m.target,
                    f"backup {m.backup_id} of {m.target} complete",
                    {
                        "backup_id": m.backup_id,
                        "raw_size": m.raw_size,
                        "stored_new_bytes": m.stored_new_bytes,
                    },
                )
            )
        if notes.size_change_percent is not None:
            previous = _previous(self.repo.list_backups(m.target), m)
            if previous is not None and previous.raw_size > 0:
                change = 100.0 * (m.raw_size - previous.raw_size) / previous.raw_size
                if abs(change) >= notes.size_change_percent:
                    self._notify(
                        Event(
                            "size_changed",
                            m.target,
                            f"backup of {m.target} changed size by {change:+.1f}%",
                            {
                                "backup_id": m.backup_id,
                                "raw_size": m.raw_size,
                                "previous_raw_size": previous.raw_size,
                                "change_percent": round(change, 1),
                            },
                        )
                    )

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
            backups = [m for m in self.repo.list_backups(target) if "pre-restore" not in m.tags]
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
            self._notify(
                Event(
                    "verify_failed",
                    target,
                    f"restore drill of {manifest.backup_id} failed: {result.record.problem}",
                )
            )
        return record

    def _check_staleness(self, now: datetime) -> None:
        if not self.settings.notifications.on_stale:
            return
        manifests = self.repo.list_backups()
        runs = runs_of(self.repo.storage)
        verifications = verification_statuses(self.repo.storage)
        for name, target in self.settings.targets.items():
            interval = interval_of(list(target.schedule.values()), now, self.settings.timezone)
            health = evaluate_target(
                name, manifests, runs, verifications, interval, self.settings.grace, now
            )
            stale = (
                health.newest_age_seconds is None
                or health.newest_age_seconds > (interval + self.settings.grace).total_seconds()
            )
            if stale and name not in self._stale_notified:
                self._stale_notified.add(name)
                age = (health.newest_age_seconds or 0) / 3600
                self._notify(
                    Event(
                        "backup_stale",
                        name,
                        f"newest good backup of {name} is {age:.1f} h old",
                        {"age_hours": round(age, 1)},
                    )
                )
            elif not stale and health.status == HEALTHY:
                self._stale_notified.discard(name)

    def _notify(self, event: Event) -> None:
        if self.notifier is not None:
            self.notifier.notify(event)

    def write_metrics(self) -> None:
        if self.metrics_file is None:
            return
        registry = build_registry(
            self.repo.list_backups(),
            runs_of(self.repo.storage),
            verification_statuses(self.repo.storage),
        )
        write_metrics_file(self.metrics_file, registry)

    # --- the loop -----------------------------------------------------------------------
    def seconds_until_next(self) -> float:
        now = self.clock()
        upcoming = [next_run(job, now, self.settings.timezone) for job in self.jobs]
        if not upcoming:
            return MAX_SLEEP
        wait = (min(upcoming) - now).total_seconds()
        return max(1.0, min(MAX_SLEEP, wait + random.uniform(0, 2)))  # noqa: S311 (jitter)

    def run_forever(self) -> None:
        log.info("strongroom run: %d jobs, time zone %s", len(self.jobs), self.settings.timezone)
        while not self.stop.is_set():
            self.tick()
            self.stop.wait(self.seconds_until_next())
        log.info("strongroom run: stopped")


def _previous(backups: list[Manifest], current: Manifest) -> Manifest | None:
    earlier = [
        m
        for m in backups
        if m.backup_id != current.backup_id
        and "pre-restore" not in m.tags
        and parse_iso(m.finished_at) <= parse_iso(current.finished_at)
    ]
    return earlier[-1] if earlier else None


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
