from dataclasses import replace
from datetime import UTC, datetime, timedelta

from strongroom.repository.manifest import Manifest
from strongroom.repository.runs import RunRecord
from strongroom.repository.verifications import VerificationRecord, VerificationStatus
from strongroom.services.health import CRITICAL, HEALTHY, WARNING, evaluate_target, overall

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
GRACE = timedelta(hours=1)


def _manifest(backup_id, hours_ago, target="shop", tags=("daily",)):
    at = (NOW - timedelta(hours=hours_ago)).isoformat().replace("+00:00", "Z")
    return Manifest(
        backup_id,
        target,
        "sqlite",
        "3",
        "x",
        "sqlite3-database",
        at,
        at,
        1.0,
        tags,
        "complete",
        "me",
        100,
        10,
        1,
        "0" * 64,
        (),
        {"encoding": "plain", "data": {}},
    )


def _drill(backup_id, days_ago, ok=True):
    at = (NOW - timedelta(days=days_ago)).isoformat().replace("+00:00", "Z")
    return VerificationRecord(backup_id, at, "restore", ok, 3.5, 2, 0, None if ok else "x")


def _read(backup_id, days_ago, ok=True):
    at = (NOW - timedelta(days=days_ago)).isoformat().replace("+00:00", "Z")
    return VerificationRecord(backup_id, at, "read", ok, None, 0, 0, None if ok else "x")


def _evaluate(manifests, runs=(), verifications=None):
    """``verifications``: backup id -> one record or a list of records (its history)."""
    statuses = {
        backup_id: VerificationStatus.of(history if isinstance(history, list) else [history])
        for backup_id, history in (verifications or {}).items()
    }
    return evaluate_target("shop", manifests, list(runs), statuses, DAY, GRACE, NOW)


def test_healthy_when_recent_and_drilled():
    m = _manifest("a", 3)
    result = _evaluate([m], verifications={"a": _drill("a", 1)})
    assert result.status == HEALTHY and result.reasons == []
    assert result.last_verified_restore_seconds == 3.5


def test_the_familiar_25_hours():
    drilled = {"a": _drill("a", 1)}
    assert _evaluate([_manifest("a", 24.5)], verifications=drilled).status == HEALTHY
    warning = _evaluate([_manifest("a", 26)], verifications=drilled)
    assert warning.status == WARNING and "25.0 h" in warning.reasons[0]
    assert _evaluate([_manifest("a", 51)], verifications=drilled).status == CRITICAL


def test_failed_last_run_is_critical_and_no_backup_is_critical():
    drilled = {"a": _drill("a", 1)}
    run = RunRecord(
        "shop",
        "backup",
        False,
        "2026-11-21T11:00:00Z",
        "2026-11-21T11:01:00Z",
        error_kind="DatabaseUnreachable",
    )
    result = _evaluate([_manifest("a", 2)], [run], drilled)
    assert result.status == CRITICAL and "DatabaseUnreachable" in result.reasons[0]
    assert _evaluate([]).status == CRITICAL


def test_stale_or_missing_drills_warn_and_failed_verifications_do_not_count_as_good():
    assert _evaluate([_manifest("a", 2)]).status == WARNING
    old = _evaluate([_manifest("a", 2)], verifications={"a": _drill("a", 8)})
    assert old.status == WARNING and "older than 7 days" in old.reasons[0]
    failed = {"b": _drill("b", 0, ok=False), "a": _drill("a", 1)}
    result = _evaluate([_manifest("a", 30), _manifest("b", 1)], verifications=failed)
    assert result.newest_backup_id == "a" and result.status == WARNING


def test_safety_backups_do_not_count_and_overall_takes_the_worst():
    safety = replace(_manifest("s", 1), tags=("pre-restore",))
    result = _evaluate([_manifest("a", 30), safety], verifications={"a": _drill("a", 1)})
    assert result.newest_backup_id == "a" and result.status == WARNING
    assert overall([result, _evaluate([])]) == CRITICAL


def test_read_checks_are_no_drills_and_a_failed_one_makes_a_backup_not_good():
    # only read checks: still "no restore drill has passed"
    read_only = _evaluate([_manifest("a", 2)], verifications={"a": _read("a", 0)})
    assert read_only.status == WARNING and "no restore drill" in read_only.reasons[0]
    # a read check after a passed drill: the drill still counts
    both = _evaluate([_manifest("a", 2)], verifications={"a": [_drill("a", 1), _read("a", 0)]})
    assert both.status == HEALTHY and both.last_verified_restore_seconds == 3.5
    # a failed read check after the drill: that backup is no longer good
    damaged = _evaluate(
        [_manifest("a", 30), _manifest("b", 2)],
        verifications={"b": [_drill("b", 1), _read("b", 0, ok=False)]},
    )
    assert damaged.newest_backup_id == "a"
