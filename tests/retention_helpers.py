"""Backups, decisions and reasons the retention test modules (tests/test_retention*.py) build
and read: small helpers over :mod:`strongroom.retention`."""

from __future__ import annotations

from datetime import UTC, datetime

from strongroom.retention import BackupInfo

TAGS = ("daily", "manual", "release", "pre-restore")


# --- helpers -----------------------------------------------------------------------------


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def info(when: str | datetime, target: str = "app", **kwargs: object) -> BackupInfo:
    moment = at(when) if isinstance(when, str) else when
    stamp = moment.astimezone(UTC)
    return BackupInfo(
        backup_id=f"{stamp:%Y%m%dT%H%M%SZ}-{sum(map(ord, target)):08x}",
        target=target,
        time=moment,
        **kwargs,  # type: ignore[arg-type]
    )
