"""Verification records: the outcome of every verification of a backup, kept beside manifests.

``verifications/<backup id>/<verified at>-<kind>.json`` (older records:
``<verified at>.json``), clear JSON (no table names: only counts, times and the outcome).
Two kinds: ``read`` (every chunk re-read and hashed, the whole-stream checksum compared)
and ``restore`` (a restore drill: restored into a throwaway database, every table
verified). The newest record of a backup is its "last verification"; a backup is
"verified good" only when its newest restore drill passed and nothing failed since
(:class:`VerificationStatus`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from strongroom.errors import ObjectNotFound
from strongroom.storage.base import Storage

VERIFICATIONS_PREFIX = "verifications/"
KIND_READ = "read"  # every chunk re-read: hashes and the whole-stream checksum
KIND_RESTORE = "restore"  # a restore drill (verify --restore)
KINDS = (KIND_READ, KIND_RESTORE)


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


@dataclass(frozen=True)
class VerificationStatus:
    """What the verifications of one backup say: its newest record of any kind and its
    newest restore drill (``None``: never drilled)."""

    last: VerificationRecord
    last_drill: VerificationRecord | None

    @property
    def failed(self) -> bool:
        """The newest verification failed: the backup is not good (damaged or unrestorable)."""
        return not self.last.ok

    @property
    def verified_good(self) -> bool:
        """A restore drill of it passed, and no verification of any kind failed since.
        Only this protects a backup in retention ("newest verified good"); a read check
        alone never does."""
        drill = self.last_drill
        return drill is not None and drill.ok and self.last.ok

    @classmethod
    def of(cls, history: list[VerificationRecord]) -> VerificationStatus | None:
        """The status of a backup from its records (any order); ``None`` without any."""
        if not history:
            return None
        ordered = sorted(history, key=lambda r: r.verified_at)
        drills = [r for r in ordered if r.kind == KIND_RESTORE]
        return cls(ordered[-1], drills[-1] if drills else None)


def _key(backup_id: str, verified_at: str, kind: str) -> str:
    """The record's key; the stamp comes first, so keys sort by time, and the kind is in
    the name, so finding a backup's newest drill needs no reading of its read checks."""
    stamp = verified_at.replace(":", "").replace("-", "")
    suffix = f"-{kind}" if kind in KINDS else ""
    return f"{VERIFICATIONS_PREFIX}{backup_id}/{stamp}{suffix}.json"


def _kind_in_key(key: str) -> str | None:
    """The kind a key names, or ``None`` for a record written before kinds were named."""
    for kind in KINDS:
        if key.endswith(f"-{kind}.json"):
            return kind
    return None


def record_verification(storage: Storage, record: VerificationRecord) -> None:
    """Write one record (``verifications/<id>/<time>-<kind>.json``) and sync."""
    storage.put(_key(record.backup_id, record.verified_at, record.kind), record.to_json())
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


def _read_record(storage: Storage, key: str) -> VerificationRecord | None:
    try:
        return VerificationRecord.from_json(storage.get(key))
    except (ObjectNotFound, ValueError, KeyError):
        return None


def _status_from_keys(storage: Storage, keys: list[str]) -> VerificationStatus | None:
    """Read, newest first, until both the newest record and the newest drill are known;
    records whose key names them ``read`` are skipped once the newest is known."""
    last: VerificationRecord | None = None
    for key in sorted(keys, reverse=True):
        if last is not None and _kind_in_key(key) == KIND_READ:
            continue
        record = _read_record(storage, key)
        if record is None:
            continue
        if last is None:
            last = record
        if record.kind == KIND_RESTORE:
            return VerificationStatus(last, record)
    return None if last is None else VerificationStatus(last, None)


def verification_statuses(storage: Storage) -> dict[str, VerificationStatus]:
    """The :class:`VerificationStatus` of every backup that has a record, by backup id
    (one listing; usually one or two reads per backup)."""
    keys: dict[str, list[str]] = {}
    for key in storage.list(VERIFICATIONS_PREFIX):
        backup_id = key[len(VERIFICATIONS_PREFIX) :].split("/", 1)[0]
        keys.setdefault(backup_id, []).append(key)
    result = {}
    for backup_id, own in keys.items():
        status = _status_from_keys(storage, own)
        if status is not None:
            result[backup_id] = status
    return result


def verification_status(storage: Storage, backup_id: str) -> VerificationStatus | None:
    """The :class:`VerificationStatus` of one backup; ``None`` when it was never verified."""
    return _status_from_keys(storage, list(storage.list(f"{VERIFICATIONS_PREFIX}{backup_id}/")))
