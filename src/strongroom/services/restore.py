"""The restore use case: plan, safety backup, staged restore, verification, swap.

A restore never writes into the target directly. It restores into a new database (or file)
beside the target, compares every table's row count and content checksum with what the
backup recorded, and only then swaps it into the target's place. Any failure before the
swap leaves the target exactly as it was.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from strongroom.engines.base import (
    Engine,
    PlanChecks,
    RestoreOptions,
    TableStats,
    TargetState,
    checksum_method,
)
from strongroom.errors import BackupNotFound, StrongroomError, UsageError
from strongroom.logcontext import log_context
from strongroom.repository.ids import parse_iso
from strongroom.repository.manifest import Manifest, TableRecord
from strongroom.repository.repository import Repository
from strongroom.repository.verifications import last_verifications
from strongroom.services.backup import run_backup
from strongroom.services.progress import NoProgress, ProgressSink

log = logging.getLogger("strongroom.restore")

PRE_RESTORE_TAG = "pre-restore"
ASSUMED_RESTORE_RATE = 40 * 1024 * 1024  # bytes/s, until a verify --restore measured one


@dataclass(frozen=True)
class TableComparison:
    name: str
    expected_rows: int | None  # recorded in the manifest at dump time
    actual_rows: int | None  # counted in the restored database
    expected_checksum: str | None = None
    actual_checksum: str | None = None

    @property
    def checksum_checked(self) -> bool:
        """Both sides have a checksum computed the same way (the part before ``:`` names
        the method; backups taken by older versions may use another one)."""
        if self.expected_checksum is None or self.actual_checksum is None:
            return False
        return checksum_method(self.expected_checksum) == checksum_method(self.actual_checksum)

    @property
    def matches(self) -> bool:
        if self.expected_rows != self.actual_rows:
            return False
        return not self.checksum_checked or self.expected_checksum == self.actual_checksum


@dataclass(frozen=True)
class RestorePlan:
    """What a restore will do; shown by ``--dry-run`` and before the confirmation."""

    manifest: Manifest
    target: str
    state: TargetState
    backup_tables: list[TableRecord]
    safety_backup: bool
    estimated_seconds: float
    estimate_basis: str
    checks: PlanChecks = field(default_factory=PlanChecks)
    options: RestoreOptions = field(default_factory=RestoreOptions)
    engine_state: dict[str, Any] | None = None

    @property
    def will_replace(self) -> bool:
        return self.state.exists and not self.state.empty


@dataclass(frozen=True)
class RestoreReport:
    manifest: Manifest
    target: str
    comparisons: list[TableComparison]
    duration_seconds: float
    swapped: bool
    old_kept_as: str | None = None
    safety_backup_id: str | None = None
    # Statements left out as the user chose (a skipped role's grant, a superuser-only
    # object), as the database reported them.
    left_out: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return all(c.matches for c in self.comparisons)


def compare_tables(expected: list[TableRecord], actual: list[TableStats]) -> list[TableComparison]:
    """Line up recorded and restored tables by name (a missing side is None)."""
    recorded = {t.name: t for t in expected}
    restored = {t.name: t for t in actual}
    result = []
    for name in sorted(set(recorded) | set(restored)):
        e, a = recorded.get(name), restored.get(name)
        result.append(
            TableComparison(
                name,
                e.rows if e else None,
                a.rows if a else None,
                e.checksum if e else None,
                a.checksum if a else None,
            )
        )
    return result


def with_progress(stream: Iterable[bytes], progress: ProgressSink) -> Iterator[bytes]:
    done = 0
    for data in stream:
        done += len(data)
        progress.advance(done)
        yield data


def safety_target_name(engine: Engine) -> str:
    """The target name safety backups of this database are filed under."""
    return engine.database_name()


def _restore_rate(repo: Repository, manifest: Manifest) -> tuple[float, str]:
    """Bytes per second measured by the newest restore drill of this target, if any."""
    records = last_verifications(repo.storage)
    best: tuple[str, float, str] | None = None
    for m in repo.list_backups(manifest.target):
        record = records.get(m.backup_id)
        if record and record.ok and record.restore_seconds:
            rate = m.raw_size / max(record.restore_seconds, 0.001)
            if best is None or record.verified_at > best[0]:
                best = (record.verified_at, rate, m.backup_id)
    if best is None:
        return ASSUMED_RESTORE_RATE, "assumed 40 MiB/s (no verify --restore measured yet)"
    return best[1], f"measured by verify --restore of {best[2]}"


def plan_restore(
    repo: Repository,
    manifest: Manifest,
    engine: Engine,
    *,
    safety_backup: bool = True,
    options: RestoreOptions | None = None,
) -> RestorePlan:
    """Look at the target and the backup; change nothing. ``plan.checks.refusal`` says
    why the restore may not start (missing roles, superuser-only objects…), if it may not."""
    options = options or RestoreOptions()
    if manifest.engine != engine.kind:
        raise UsageError(
            f"backup {manifest.backup_id} is a {manifest.engine} backup; it cannot be restored "
            f"into a {engine.kind} database"
        )
    state = engine.inspect()
    private = repo.private_section(manifest)
    rate, basis = _restore_rate(repo, manifest)
    return RestorePlan(
        manifest=manifest,
        target=engine.describe(),
        state=state,
        backup_tables=private.tables,
        safety_backup=safety_backup and state.exists and not state.empty,
        estimated_seconds=manifest.raw_size / rate,
        estimate_basis=basis,
        checks=engine.plan_checks(private.engine_state, options),
        options=options,
        engine_state=private.engine_state,
    )


def _untouched(plan: RestorePlan) -> str:
    if plan.state.exists:
        return f"the original database {plan.target} is untouched"
    return f"nothing was created at {plan.target}"


def _discard(staged: Engine) -> None:
    try:
        staged.drop()
    except StrongroomError as exc:
        log.error("could not remove the staged restore %s: %s", staged.describe(), exc)


def run_restore(
    repo: Repository,
    manifest: Manifest,
    engine: Engine,
    *,
    safety_backup: bool = True,
    keep_old: bool = True,
    progress: ProgressSink | None = None,
    plan: RestorePlan | None = None,
    options: RestoreOptions | None = None,
) -> RestoreReport:
    """Restore ``manifest`` safely into ``engine``'s target (see the module docstring).

    Raises ``UsageError`` before anything is created when the plan's checks refuse (roles
    missing on the server and no choice made, superuser-only objects…)."""
    with log_context(backup_id=manifest.backup_id, target=manifest.target):
        plan = plan or plan_restore(
            repo, manifest, engine, safety_backup=safety_backup, options=options
        )
        if plan.checks.refusal is not None:
            raise UsageError(plan.checks.refusal)
        return _restore(repo, manifest, engine, safety_backup, keep_old, progress, plan)


def _restore(
    repo: Repository,
    manifest: Manifest,
    engine: Engine,
    safety_backup: bool,
    keep_old: bool,
    progress: ProgressSink | None,
    plan: RestorePlan,
) -> RestoreReport:
    progress = progress or NoProgress()
    _ = repo.chunks  # load the key before touching anything
    safety_id = None
    if plan.safety_backup:
        log.info("taking a safety backup of %s before restoring", plan.target)
        safety = run_backup(
            repo, engine, target=safety_target_name(engine), tags=(PRE_RESTORE_TAG,)
        )
        safety_id = safety.manifest.backup_id
    staged = engine.staging()
    clock = time.monotonic()
    progress.start("restore", manifest.raw_size)
    try:
        staged.restore(
            with_progress(repo.read_stream(manifest), progress),
            size_hint=manifest.raw_size,
            tables_hint=sum(1 for t in plan.backup_tables if t.rows > 0),
            state=plan.engine_state,
            options=plan.options,
        )
        comparisons = compare_tables(plan.backup_tables, staged.table_stats())
    except StrongroomError as exc:
        _discard(staged)
        raise type(exc)(f"{exc.message}; {_untouched(plan)}") from exc
    except BaseException:
        _discard(staged)
        raise
    finally:
        progress.finish()
    duration = time.monotonic() - clock
    left_out = tuple(getattr(staged, "left_out", ()))
    report = RestoreReport(
        manifest, plan.target, comparisons, duration, False, None, safety_id, left_out
    )
    if not report.ok:
        _discard(staged)
        log.error("restore of %s did not verify; %s", manifest.backup_id, _untouched(plan))
        return report
    try:
        old = engine.swap_in(staged, keep_old=keep_old)
    except BaseException:
        _discard(staged)
        raise
    log.warning("restored %s into %s (verified)", manifest.backup_id, plan.target)
    return RestoreReport(
        manifest, plan.target, comparisons, duration, True, old, safety_id, left_out
    )


def newest_good_before(repository: Repository, when: str, target: str | None) -> Manifest:
    """The newest backup of ``target`` (all targets when ``None``) started before ``when``
    (ISO 8601; local time unless it names an offset) whose last verification did not
    fail. Raises ``UsageError`` for a time that does not parse, ``BackupNotFound`` when
    no backup qualifies."""
    try:
        instant = datetime.fromisoformat(when.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise UsageError(f'--before {when!r} is not a time like "2026-11-20 14:00"') from exc
    if instant.tzinfo is None:
        instant = instant.astimezone()  # the machine's local time zone
    verdicts = last_verifications(repository.storage)
    candidates = [
        m
        for m in repository.list_backups(target)
        if parse_iso(m.started_at) < instant
        and not (m.backup_id in verdicts and not verdicts[m.backup_id].ok)
    ]
    if not candidates:
        raise BackupNotFound(f"no good backup started before {instant.isoformat()}")
    return max(candidates, key=lambda m: m.started_at)


def restore_tables(
    repo: Repository,
    manifest: Manifest,
    engine: Engine,
    tables: Sequence[str],
    into: str | None,
) -> list[str]:
    """Restore only ``tables`` of ``manifest`` into ``engine``'s database from the verified
    stream (see ``Engine.restore_tables``); the names restored. Raises ``UsageError`` when
    the backup is of another engine or the engine cannot restore single tables."""
    if manifest.engine != engine.kind:
        raise UsageError(
            f"backup {manifest.backup_id} is a {manifest.engine} backup; its tables cannot be "
            f"restored into a {engine.kind} database"
        )
    private = repo.private_section(manifest)
    with log_context(backup_id=manifest.backup_id, target=manifest.target):
        return engine.restore_tables(
            repo.read_stream(manifest),  # verified chunk by chunk
            tables,
            into=into,
            expected=[TableStats(t.name, t.rows, t.checksum) for t in private.tables],
            source_database=private.database,
        )


def find_rollback_backup(repo: Repository, engine: Engine) -> Manifest:
    """The newest ``pre-restore`` safety backup taken of this target."""
    name = safety_target_name(engine)
    candidates = [m for m in repo.list_backups(name) if PRE_RESTORE_TAG in m.tags]
    if not candidates:
        raise UsageError(
            f"there is no {PRE_RESTORE_TAG} safety backup of {engine.describe()} to roll back to"
        )
    return candidates[-1]
