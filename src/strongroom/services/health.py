"""Health: is every target's newest good backup recent, did its last run succeed, and has a
restore drill passed lately? Exit 0 healthy, 1 warning, 2 critical."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from strongroom.repository.ids import parse_iso
from strongroom.repository.manifest import Manifest
from strongroom.repository.runs import RunRecord
from strongroom.repository.verifications import VerificationStatus
from strongroom.retention import is_regular
from strongroom.services.wal_status import StreamStatus, WalStatus

HEALTHY, WARNING, CRITICAL = "healthy", "warning", "critical"
EXIT_CODES = {HEALTHY: 0, WARNING: 1, CRITICAL: 2}
DRILL_MAX_AGE = timedelta(days=7)
_RANK = {HEALTHY: 0, WARNING: 1, CRITICAL: 2}


@dataclass(frozen=True)
class TargetHealth:
    target: str
    status: str
    reasons: list[str] = field(default_factory=list)
    newest_backup_id: str | None = None
    newest_backup_at: str | None = None
    newest_age_seconds: float | None = None
    expected_interval_seconds: float = 0.0
    last_run_ok: bool | None = None
    last_verified_restore_at: str | None = None
    last_verified_restore_seconds: float | None = None
    # targets with base backups (point-in-time recovery): their WAL stream(s); no stream or
    # segment names here, /api/health shows this unauthenticated
    wal_window_start: str | None = None  # ISO 8601 UTC: the oldest moment recoverable
    wal_window_end: str | None = None  # the newest archived segment's time
    wal_last_segment_at: str | None = None
    wal_lag_seconds: float | None = None
    wal_gap: bool | None = None  # None: no base backup of this target


def _worst(a: str, b: str) -> str:
    return a if _RANK[a] >= _RANK[b] else b


def _hours(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 3600:.1f} h"


def evaluate_target(
    target: str,
    manifests: list[Manifest],
    runs: list[RunRecord],
    verifications: Mapping[str, VerificationStatus],
    interval: timedelta,
    grace: timedelta,
    now: datetime,
) -> TargetHealth:
    """Warning when the newest good backup is older than interval + grace (the familiar
    "25 hours" for a daily schedule), critical past twice that or when the last run failed;
    a warning too when no restore drill passed in the last 7 days.

    ``verifications``: each backup's status (``records.verification_statuses``). A backup
    whose newest verification failed is not good; only restore drills count as drills
    (read checks never do)."""
    status = HEALTHY
    reasons: list[str] = []
    good = [
        m
        for m in manifests
        if m.target == target
        and is_regular(m.tags)
        and not (m.backup_id in verifications and verifications[m.backup_id].failed)
    ]
    newest = max(good, key=lambda m: m.finished_at) if good else None
    limit = interval + grace
    age: timedelta | None = None
    if newest is None:
        status = CRITICAL
        reasons.append("no good backup yet")
    else:
        age = now - parse_iso(newest.finished_at)
        if age > 2 * limit:
            status = CRITICAL
            reasons.append(
                f"newest good backup is {_hours(age)} old (critical past {_hours(2 * limit)})"
            )
        elif age > limit:
            status = WARNING
            reasons.append(
                f"newest good backup is {_hours(age)} old (warning past {_hours(limit)})"
            )
    backup_runs = [r for r in runs if r.target == target and r.kind == "backup"]
    last_run_ok = backup_runs[-1].ok if backup_runs else None
    if last_run_ok is False:
        status = CRITICAL
        reasons.append(f"the last backup run failed ({backup_runs[-1].error_kind or 'error'})")
    drills = [
        v
        for m in manifests
        if m.target == target and m.backup_id in verifications
        for v in [verifications[m.backup_id].last_drill]
        if v is not None and v.ok
    ]
    last_drill = max(drills, key=lambda v: v.verified_at) if drills else None
    if last_drill is None:
        status = _worst(status, WARNING)
        reasons.append("no restore drill has passed yet (strongroom verify --restore)")
    elif now - parse_iso(last_drill.verified_at) > DRILL_MAX_AGE:
        status = _worst(status, WARNING)
        reasons.append(f"the last passed restore drill is older than {DRILL_MAX_AGE.days} days")
    return TargetHealth(
        target=target,
        status=status,
        reasons=reasons,
        newest_backup_id=newest.backup_id if newest else None,
        newest_backup_at=newest.finished_at if newest else None,
        newest_age_seconds=age.total_seconds() if age is not None else None,
        expected_interval_seconds=interval.total_seconds(),
        last_run_ok=last_run_ok,
        last_verified_restore_at=last_drill.verified_at if last_drill else None,
        last_verified_restore_seconds=last_drill.restore_seconds if last_drill else None,
    )


def overall(results: list[TargetHealth]) -> str:
    status = HEALTHY
    for result in results:
        status = _worst(status, result.status)
    return status


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment is not None else None


def apply_wal(
    result: TargetHealth, streams: list[StreamStatus], recovery_point: timedelta
) -> TargetHealth:
    """``result`` with the WAL of the target's base backups (``streams``: the target's,
    ``WalStatus.for_target``): critical when WAL a retained base backup needs is missing,
    a warning when archiving lags more than ``recovery_point`` (``[wal] recovery_point``)
    or continuity cannot be judged. Reasons name no stream or segment (``strongroom
    check`` does)."""
    if not streams:
        return result
    status = result.status
    reasons = list(result.reasons)
    if any(s.gaps for s in streams):
        status = CRITICAL
        reasons.append(
            "WAL has a gap: a retained base backup cannot be recovered past it "
            "(strongroom check names it)"
        )
    if any(s.unsure for s in streams):
        status = _worst(status, WARNING)
        reasons.append("WAL continuity cannot be judged (strongroom check says why)")
    lags = [s.lag_seconds for s in streams if s.lag_seconds is not None]
    lag = min(lags) if lags else None
    if lag is not None and lag > recovery_point.total_seconds():
        status = _worst(status, WARNING)
        reasons.append(
            f"WAL archiving lags {lag / 60:.1f} min (recovery point "
            f"{recovery_point.total_seconds() / 60:g} min; an idle server archives only "
            "at archive_timeout: set it below the recovery point)"
        )
    elif lag is None and not any(s.newest_segment for s in streams):
        status = _worst(status, WARNING)
        reasons.append("no WAL archived for its base backups")
    newest = max(
        (s for s in streams if s.newest_time is not None),
        key=lambda s: s.newest_time or datetime.min,
        default=None,
    )
    starts = [s.window_start for s in streams if s.window_start is not None]
    return replace(
        result,
        status=status,
        reasons=reasons,
        wal_window_start=_iso(min(starts)) if starts else None,
        wal_window_end=_iso(newest.window_end) if newest is not None else None,
        wal_last_segment_at=_iso(newest.newest_time) if newest is not None else None,
        wal_lag_seconds=round(lag, 3) if lag is not None else None,
        wal_gap=any(s.gaps for s in streams),
    )


def with_wal(
    results: list[TargetHealth], status: WalStatus, recovery_point: timedelta
) -> list[TargetHealth]:
    """``apply_wal`` for each target with base backups in ``status``."""
    return [apply_wal(r, status.for_target(r.target), recovery_point) for r in results]
