"""Health: is every target's newest good backup recent, did its last run succeed, and has a
restore drill passed lately? Exit 0 healthy, 1 warning, 2 critical."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from strongroom.repository.ids import parse_iso
from strongroom.repository.manifest import Manifest
from strongroom.repository.runs import RunRecord
from strongroom.repository.verifications import VerificationStatus

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
        and "pre-restore" not in m.tags
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
