"""What the repository remembers besides backups: run records, verification records, pins.

The CLI and the web read them through these functions (they take the ``Repository``), so
how and where they are stored stays a matter of ``repository/``.
"""

from __future__ import annotations

from strongroom.repository import pins as _pins
from strongroom.repository import runs as _runs
from strongroom.repository import verifications as _verifications
from strongroom.repository.ids import utc_now_iso
from strongroom.repository.repository import Repository
from strongroom.repository.runs import RunRecord
from strongroom.repository.verifications import VerificationRecord
from strongroom.services.verify import VerifyResult

__all__ = [
    "RunRecord",
    "VerificationRecord",
    "is_pinned",
    "last_verification",
    "last_verifications",
    "pinned_ids",
    "record_read_verification",
    "runs",
    "verification_history",
]


def runs(repo: Repository, target: str | None = None) -> list[RunRecord]:
    """Run records (backups, drills, maintenance), oldest first; of one target if given."""
    return _runs.runs_of(repo.storage, target)


def last_verifications(repo: Repository) -> dict[str, VerificationRecord]:
    """The newest verification record of each backup that has one, by backup id."""
    return _verifications.last_verifications(repo.storage)


def last_verification(repo: Repository, backup_id: str) -> VerificationRecord | None:
    """The newest verification record of one backup, if any."""
    return _verifications.last_verification(repo.storage, backup_id)


def verification_history(repo: Repository, backup_id: str) -> list[VerificationRecord]:
    """Every verification record of one backup, oldest first."""
    return _verifications.verification_history(repo.storage, backup_id)


def record_read_verification(repo: Repository, result: VerifyResult) -> VerificationRecord:
    """Record the outcome of re-reading a backup (kind ``read``); returns the record."""
    record = VerificationRecord(
        result.manifest.backup_id, utc_now_iso(), "read", result.ok, None, 0, 0, result.problem
    )
    _verifications.record_verification(repo.storage, record)
    return record


def pinned_ids(repo: Repository) -> set[str]:
    """Ids of the pinned backups."""
    return _pins.pinned_ids(repo.storage)


def is_pinned(repo: Repository, backup_id: str) -> bool:
    return _pins.is_pinned(repo.storage, backup_id)
