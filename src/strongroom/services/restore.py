"""The restore use case: plan, safety backup, staged restore, verification, swap.

A restore never writes into the target directly. It restores into a new database (or file)
beside the target, compares every table's row count and content checksum with what the
backup recorded, and only then swaps it into the target's place. Any failure before the
swap leaves the target exactly as it was.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from strongroom.engines.base import (
    Engine,
    PlanChecks,
    RestoreOptions,
    TableStats,
    TargetState,
    checksum_method,
)
from strongroom.errors import (
    DatabaseError,
    RestoreFailed,
    StrongroomError,
    SwapInterrupted,
    UsageError,
)
from strongroom.interrupts import deferred as deferred_interrupts
from strongroom.interrupts import note_outcome
from strongroom.logcontext import log_context
from strongroom.repository.ids import new_backup_id, utc_now_iso
from strongroom.repository.manifest import Manifest, TableRecord
from strongroom.repository.repository import Repository
from strongroom.repository.restores import (
    KIND_RESTORE,
    KIND_ROLLBACK,
    OUTCOME_COMPLETED,
    OUTCOME_FAILED,
    OUTCOME_SWAPPING,
    RestoreRecord,
    write_restore_record,
)
from strongroom.services.backup import run_backup
from strongroom.services.hooks import (
    TargetHooks,
    configured_settings,
    destination_hooks,
    run_post_restore,
)
from strongroom.services.progress import NoProgress, ProgressSink
from strongroom.services.restore_choice import (
    DestinationTarget,
    backup_database_name,
    destination_fingerprint,
    destination_target,
    find_rollback,
)
from strongroom.services.restore_choice import newest_good_before as newest_good_before
from strongroom.services.swaps import settle_interrupted_swaps

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
    # The target the destination database belongs to: its safety backup and restore record
    # are filed under it (services.restore_choice.destination_target), and why.
    destination_target: str = ""
    target_basis: str = ""
    # Set when the backup is of another target than the destination's (shown loudly).
    warning: str | None = None
    undoes: str | None = None  # a rollback: the restore id it undoes

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
    """Where versions before restore records filed this database's safety backups (its
    database name); rollback still finds them there. New ones go to the plan's
    ``destination_target``."""
    return engine.database_name()


def _restore_rate(repo: Repository, manifest: Manifest) -> tuple[float, str]:
    """Bytes per second measured by the newest restore drill of this target, if any."""
    from strongroom.repository.verifications import verification_statuses

    statuses = verification_statuses(repo.storage)
    best: tuple[str, float, str] | None = None
    for m in repo.list_backups(manifest.target):
        status = statuses.get(m.backup_id)
        record = status.last_drill if status else None  # read checks measure no restore
        if record and record.ok and record.restore_seconds:
            rate = m.raw_size / max(record.restore_seconds, 0.001)
            if best is None or record.verified_at > best[0]:
                best = (record.verified_at, rate, m.backup_id)
    if best is None:
        return ASSUMED_RESTORE_RATE, "assumed 40 MiB/s (no verify --restore measured yet)"
    return best[1], f"measured by verify --restore of {best[2]}"


def refuse_base_backup(manifest: Manifest) -> None:
    """Raise ``UsageError`` (exit 2) when ``manifest`` is a base backup: the logical restore,
    the restore drill and the web's restore take dumps of one database only."""
    if manifest.is_base_backup:
        raise UsageError(
            f"backup {manifest.backup_id} is a base backup of a whole PostgreSQL cluster "
            f"(pg_basebackup); it is restored by point-in-time recovery (strongroom restore "
            f"{manifest.backup_id} --to-datadir PATH), not into a database"
        )


def plan_restore(
    repo: Repository,
    manifest: Manifest,
    engine: Engine,
    *,
    safety_backup: bool = True,
    options: RestoreOptions | None = None,
    target: DestinationTarget | None = None,
    undoes: str | None = None,
) -> RestorePlan:
    """Look at the target and the backup; change nothing. ``plan.checks.refusal`` says
    why the restore may not start (missing roles, superuser-only objects…), if it may not.

    ``target``: the target ``engine``'s database belongs to (default:
    ``restore_choice.destination_target`` without configuration; ``UsageError`` when that
    is ambiguous). ``plan.warning`` is set when the backup belongs to another target than
    the destination's and its database name differs. ``undoes``: for a rollback, the
    restore id it undoes (recorded with the rollback)."""
    options = options or RestoreOptions()
    refuse_base_backup(manifest)
    if manifest.engine != engine.kind:
        raise UsageError(
            f"backup {manifest.backup_id} is a {manifest.engine} backup; it cannot be restored "
            f"into a {engine.kind} database"
        )
    settle_interrupted_swaps(engine)  # what a killed swap left (design.md, "Swap journal")
    target = target or destination_target(repo, engine, backup=manifest)
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
        destination_target=target.name,
        target_basis=target.basis,
        warning=_other_target_warning(
            manifest, backup_database_name(repo, manifest), engine, target.name
        )
        if state.exists
        else None,  # nothing is replaced in a database that does not exist yet
        undoes=undoes,
    )


def _other_target_warning(
    manifest: Manifest, backup_database: str, engine: Engine, destination: str
) -> str | None:
    """A line for the plan when the backup is of another target than the destination's."""
    if manifest.target in (destination, engine.database_name()):
        return None
    return (
        f"backup {manifest.backup_id} is of target {manifest.target!r} (database "
        f"{backup_database!r}), but {engine.describe()} is database "
        f"{engine.database_name()!r} of target {destination!r}: its content will be replaced "
        f"by {manifest.target!r}'s"
    )


def _begin_record(
    repo: Repository, manifest: Manifest, engine: Engine, plan: RestorePlan, safety: str | None
) -> RestoreRecord:
    """Record the restore as started (durably) before anything is staged."""
    record = RestoreRecord(
        restore_id=new_backup_id(),
        target=plan.destination_target or engine.database_name(),
        destination=destination_fingerprint(repo, engine),
        backup_id=manifest.backup_id,
        backup_target=manifest.target,
        safety_backup_id=safety,
        started_at=utc_now_iso(),
        kind=KIND_ROLLBACK if plan.undoes else KIND_RESTORE,
        undoes=plan.undoes,
    )
    try:
        write_restore_record(repo.storage, record)
    except StrongroomError as exc:
        raise type(exc)(f"{exc.message}; {_untouched(plan)}") from exc
    return record


def _end_record(repo: Repository, record: RestoreRecord, outcome: str) -> None:
    """Record how the restore ended; a failure to do so is logged, never raised (the
    record then stays ``started``: rollback treats it as interrupted and says so)."""
    try:
        write_restore_record(repo.storage, record.ended(outcome))
    except (StrongroomError, OSError) as exc:
        log.error("could not record that restore %s %s: %s", record.restore_id, outcome, exc)


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
    hooks: TargetHooks | None = None,
) -> RestoreReport:
    """Restore ``manifest`` safely into ``engine``'s target (see the module docstring).

    Raises ``UsageError`` before anything is created when the plan's checks refuse (roles
    missing on the server and no choice made, superuser-only objects…).

    Once the verified copy is swapped in, the ``post_restore`` hooks of the configured
    target whose database ``engine`` is run (``hooks``; ``None``: found in the
    configuration named by ``STRONGROOM_CONFIG``, if any; see ``services/hooks.py``). A
    failing hook raises ``HookFailedAfter`` (exit 8) whose ``result`` is the report: the
    restore is not undone."""
    with log_context(backup_id=manifest.backup_id, target=manifest.target):
        plan = plan or plan_restore(
            repo, manifest, engine, safety_backup=safety_backup, options=options
        )
        if plan.checks.refusal is not None:
            raise UsageError(plan.checks.refusal)
        if hooks is None:  # found before anything changes: a bad configuration stops here
            hooks = destination_hooks(configured_settings(), engine)
        try:
            report = _restore(repo, manifest, engine, safety_backup, keep_old, progress, plan)
        except KeyboardInterrupt as exc:  # SIGINT/SIGTERM (interrupts.Interrupted)
            note_outcome(exc, _untouched(plan))  # unless the swap had completed
            raise
        if report.swapped:
            run_post_restore(
                hooks,
                report,
                backup_id=manifest.backup_id,
                engine=engine,
                safety_backup_id=report.safety_backup_id,
                old_kept_as=report.old_kept_as,
            )
        return report


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
            repo,
            engine,
            target=plan.destination_target or engine.database_name(),
            tags=(PRE_RESTORE_TAG,),
            told="",  # a signal says the original is untouched (run_restore)
        )
        safety_id = safety.manifest.backup_id
    record = _begin_record(repo, manifest, engine, plan, safety_id)
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
        _end_record(repo, record, OUTCOME_FAILED)
        if isinstance(exc, DatabaseError):  # the tool failed: a damaged stream says why
            exc = repo.stream_problem(manifest) or exc
        raise type(exc)(f"{exc.message}; {_untouched(plan)}") from exc
    except BaseException:
        _discard(staged)
        _end_record(repo, record, OUTCOME_FAILED)
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
        _end_record(repo, record, OUTCOME_FAILED)
        log.error("restore of %s did not verify; %s", manifest.backup_id, _untouched(plan))
        return report
    try:  # before the swap: a kill during it leaves "swapping" (outcome unknown)
        write_restore_record(repo.storage, dataclasses.replace(record, outcome=OUTCOME_SWAPPING))
    except (StrongroomError, OSError) as exc:
        _discard(staged)
        _end_record(repo, record, OUTCOME_FAILED)
        raise RestoreFailed(
            f"cannot record the restore before its swap: {exc}; {_untouched(plan)}"
        ) from None
    with deferred_interrupts() as swap:  # a signal waits until the swap is done or undone
        try:
            old = engine.swap_in(
                staged,
                keep_old=keep_old,
                source_database=repo.private_section(manifest).database,
            )
        except SwapInterrupted:
            raise  # the record stays "swapping": the journal decides, later
        except BaseException:
            _discard(staged)
            _end_record(repo, record, OUTCOME_FAILED)
            raise
        _end_record(repo, record, OUTCOME_COMPLETED)
        swap.outcome = f"the restore had completed: {plan.target} holds backup " + (
            f"{manifest.backup_id} (verified)" + (f"; the old one is kept as {old}" if old else "")
        )
    log.info("restored %s into %s (verified)", manifest.backup_id, plan.target)
    return RestoreReport(
        manifest, plan.target, comparisons, duration, True, old, safety_id, left_out
    )


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
    settle_interrupted_swaps(engine)
    private = repo.private_section(manifest)
    with log_context(backup_id=manifest.backup_id, target=manifest.target):
        return engine.restore_tables(
            repo.read_stream(manifest),  # verified chunk by chunk
            tables,
            into=into,
            expected=[TableStats(t.name, t.rows, t.checksum) for t in private.tables],
            source_database=private.database,
        )


def find_rollback_backup(
    repo: Repository, engine: Engine, target: DestinationTarget | None = None
) -> Manifest:
    """The safety backup ``rollback`` restores into ``engine``'s database: the one taken
    before the last restore into it that completed (see
    ``services.restore_choice.find_rollback``, which also says what it undoes). ``target``:
    the target the database belongs to (default: :func:`destination_target` without
    configuration). Raises ``UsageError`` when there is nothing to roll back to."""
    target = target or destination_target(repo, engine)
    return find_rollback(
        repo,
        target.name,
        destination_fingerprint(repo, engine),
        legacy_targets=(safety_target_name(engine),),
    ).manifest
