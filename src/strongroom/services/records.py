"""What the repository remembers besides backups: run records, verification records, pins.

The CLI and the web read them through these functions (they take the ``Repository``), so
how and where they are stored stays a matter of ``repository/``.
"""

from __future__ import annotations

from strongroom.repository import pins as _pins
from strongroom.repository import runs as _runs
from strongroom.repository import verifications as _verifications
from strongroom.repository.repository import Repository
from strongroom.repository.runs import RunRecord
from strongroom.repository.verifications import VerificationRecord, VerificationStatus

__all__ = [
    "RunRecord",
    "VerificationRecord",
    "VerificationStatus",
    "is_pinned",
    "last_verifications",
    "pinned_ids",
    "runs",
    "verification_history",
    "verification_status",
    "verification_statuses",
]


def runs(repo: Repository, target: str | None = None) -> list[RunRecord]:
    """Run records (backups, drills, maintenance), oldest first; of one target if given."""
    return _runs.runs_of(repo.storage, target)


def last_verifications(repo: Repository) -> dict[str, VerificationRecord]:
    """The newest verification record of each backup that has one, by backup id."""
    return _verifications.last_verifications(repo.storage)


def verification_history(repo: Repository, backup_id: str) -> list[VerificationRecord]:
    """Every verification record of one backup, oldest first."""
    return _verifications.verification_history(repo.storage, backup_id)


def verification_statuses(repo: Repository) -> dict[str, VerificationStatus]:
    """Each verified backup's newest record and newest restore drill, by backup id; its
    ``verified_good`` is what retention, health and ``list`` count as verified good."""
    return _verifications.verification_statuses(repo.storage)


def verification_status(repo: Repository, backup_id: str) -> VerificationStatus | None:
    """One backup's :class:`VerificationStatus`; ``None`` when it was never verified."""
    return _verifications.verification_status(repo.storage, backup_id)


def pinned_ids(repo: Repository) -> set[str]:
    """Ids of the pinned backups."""
    return _pins.pinned_ids(repo.storage)


def is_pinned(repo: Repository, backup_id: str) -> bool:
    return _pins.is_pinned(repo.storage, backup_id)
