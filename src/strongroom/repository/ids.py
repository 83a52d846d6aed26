"""Backup ids: sortable by time and unique, e.g. ``20261121T140000Z-3f9a2c1b``."""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime

BACKUP_ID_PATTERN = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{8}$")


def new_backup_id(now: datetime | None = None) -> str:
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{moment:%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def is_backup_id(text: str) -> bool:
    return bool(BACKUP_ID_PATTERN.match(text))


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
