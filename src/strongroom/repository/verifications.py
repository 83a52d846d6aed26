"""Verification records: the outcome of ``verify --restore`` drills, kept beside manifests.

``verifications/<backup id>/<verified at>.json``, clear JSON (no table names: only counts,
times and the outcome). The newest record of a backup is its "last verification".
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from strongroom.errors import ObjectNotFound
from strongroom.storage.base import Storage

VERIFICATIONS_PREFIX = "verifications/"


@dataclass(frozen=True)
class VerificationRecord:
    """One verification of one backup."""

    backup_id: str
    verified_at: str  # ISO 8601 UTC, milliseconds
    kind: str  # "restore" (verify --restore) or "read" (chunk and checksum re-read)
    ok: bool
    restore_seconds: float | None  # measured restore time (RTO) for kind "restore"
    tables_checked: int
    checks_run: int  # user SQL checks (--check-sql)
    problem: str | None = None

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode() + b"\n"

    @classmethod
    def from_json(cls, raw: bytes) -> VerificationRecord:
        data = json.loads(raw)
        return cls(
            backup_id=str(data["backup_id"]),
            verified_at=str(data["verified_at"]),
            kind=str(data["kind"]),
            ok=bool(data["ok"]),
            restore_seconds=None
            if data.get("restore_seconds") is None
            else float(data["restore_seconds"]),
            tables_checked=int(data.get("tables_checked", 0)),
            checks_run=int(data.get("checks_run", 0)),
            problem=data.get("problem"),
        )


def _key(backup_id: str, verified_at: str) -> str:
    stamp = verified_at.replace(":", "").replace("-", "")
    return f"{VERIFICATIONS_PREFIX}{backup_id}/{stamp}.json"


def record_verification(storage: Storage, record: VerificationRecord) -> None:
    storage.put(_key(record.backup_id, record.verified_at), record.to_json())
    storage.sync()


def verification_history(storage: Storage, backup_id: str) -> list[VerificationRecord]:
    """Every verification of a backup, oldest first."""
    records = []
    for key in sorted(storage.list(f"{VERIFICATIONS_PREFIX}{backup_id}/")):
        try:
            records.append(VerificationRecord.from_json(storage.get(key)))
        except (ObjectNotFound, ValueError, KeyError):
            continue
    return sorted(records, key=lambda r: r.verified_at)


def last_verification(storage: Storage, backup_id: str) -> VerificationRecord | None:
    history = verification_history(storage, backup_id)
    return history[-1] if history else None


def last_verifications(storage: Storage) -> dict[str, VerificationRecord]:
    """The newest verification of every backup that has one (one listing, then reads)."""
    newest_key: dict[str, str] = {}
    for key in storage.list(VERIFICATIONS_PREFIX):
        backup_id = key[len(VERIFICATIONS_PREFIX) :].split("/", 1)[0]
        if key > newest_key.get(backup_id, ""):
            newest_key[backup_id] = key
    result = {}
    for backup_id, key in newest_key.items():
        try:
            result[backup_id] = VerificationRecord.from_json(storage.get(key))
        except (ObjectNotFound, ValueError, KeyError):
            continue
    return result
