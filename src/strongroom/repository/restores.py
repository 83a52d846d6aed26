"""Restore records: which restore each safety backup protects, and how that restore ended.

``restores/<restore id>.json``, clear JSON (ids, times, the outcome; no database
name, URL or table)::

    {"format": "strongroom-restore", "version": 1, "restore_id": "20261121T140002Z-1a2b3c4d",
     "target": "shop", "destination": "<64 hex>", "kind": "restore" | "rollback",
     "backup_id": "<backup restored>",
     "backup_target": "shop", "safety_backup_id": "<pre-restore backup>" | null,
     "started_at": "…Z", "finished_at": "…Z" | null,
     "outcome": "started" | "completed" | "failed", "undoes": "<restore id>" | null}

A restore writes its record twice: ``started`` once its safety backup is taken (before
anything is staged), then ``completed`` (the restored copy was swapped in: the target
changed) or ``failed`` (it ended before the swap: the target is as it was). A record that
stays ``started`` belongs to a process that was killed: whether it changed the target is
unknown. ``destination`` is a keyed BLAKE3 fingerprint (the repository's chunk-naming
key) of the database restored into (engine, server and database name, or a SQLite file's
real path), so restores of one target into different databases (production and a
staging copy) are told apart without naming them. Manifests are immutable, so this record
(not the safety backup's manifest) says whether the restore a safety backup protects
changed the target; ``rollback`` and retention read it through :func:`last_completed`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace

from strongroom.errors import ObjectNotFound
from strongroom.repository.ids import utc_now_iso
from strongroom.storage.base import Storage

RESTORES_PREFIX = "restores/"
RESTORE_FORMAT = "strongroom-restore"
RESTORE_VERSION = 1

OUTCOME_STARTED = "started"  # stays so only when the process was killed before its swap
# written just before the swap; stays so only when the process was killed (or the swap
# could not settle itself) during it: the next command settled the swap one way or the
# other, and this record cannot tell which
OUTCOME_SWAPPING = "swapping"
OUTCOME_COMPLETED = "completed"  # swapped in: the target changed
OUTCOME_FAILED = "failed"  # ended before the swap: the target is as it was
KIND_RESTORE = "restore"
KIND_ROLLBACK = "rollback"


@dataclass(frozen=True)
class RestoreRecord:
    """One restore (or rollback) into one target; see the module docstring."""

    restore_id: str  # like a backup id: UTC start second + 32 random bits, sorts by time
    target: str  # the target the restored database belongs to (its safety backup's target)
    destination: str  # fingerprint of the database restored into (see the module docstring)
    backup_id: str  # the backup restored
    backup_target: str
    safety_backup_id: str | None  # None: no safety backup was taken
    started_at: str
    outcome: str = OUTCOME_STARTED
    finished_at: str | None = None
    kind: str = KIND_RESTORE
    undoes: str | None = None  # a rollback: the restore id it undoes

    @property
    def completed(self) -> bool:
        return self.outcome == OUTCOME_COMPLETED

    @property
    def interrupted(self) -> bool:
        """The process ended without saying how the restore ended (kill -9, power loss)."""
        return self.outcome in (OUTCOME_STARTED, OUTCOME_SWAPPING)

    @property
    def swap_unknown(self) -> bool:
        """Interrupted during its swap: the target may hold the restored database."""
        return self.outcome == OUTCOME_SWAPPING

    def ended(self, outcome: str) -> RestoreRecord:
        """This record with its final outcome and the time now."""
        return replace(self, outcome=outcome, finished_at=utc_now_iso())

    def to_json(self) -> bytes:
        document = {"format": RESTORE_FORMAT, "version": RESTORE_VERSION, **asdict(self)}
        return json.dumps(document, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_json(cls, raw: bytes) -> RestoreRecord:
        """Parse a record; raises ``ValueError``/``KeyError``/``TypeError`` when malformed."""
        data = json.loads(raw)
        if not isinstance(data, dict) or data.get("format") != RESTORE_FORMAT:
            raise ValueError("not a strongroom restore record")

        def text(name: str) -> str | None:
            value = data.get(name)
            return None if value is None else str(value)

        return cls(
            restore_id=str(data["restore_id"]),
            target=str(data["target"]),
            destination=str(data["destination"]),
            backup_id=str(data["backup_id"]),
            backup_target=str(data["backup_target"]),
            safety_backup_id=text("safety_backup_id"),
            started_at=str(data["started_at"]),
            outcome=str(data["outcome"]),
            finished_at=text("finished_at"),
            kind=str(data.get("kind", KIND_RESTORE)),
            undoes=text("undoes"),
        )


def restore_key(restore_id: str) -> str:
    """The key of one record (the target is inside it: a target or database name may hold
    any character, a key part may not)."""
    return f"{RESTORES_PREFIX}{restore_id}.json"


def write_restore_record(storage: Storage, record: RestoreRecord) -> None:
    """Write (or replace, at the end of the restore) one record; durable on return."""
    storage.put(restore_key(record.restore_id), record.to_json())
    storage.sync()


def restore_history(
    storage: Storage, target: str | None = None, destination: str | None = None
) -> list[RestoreRecord]:
    """Every readable restore record (of ``target``, into ``destination``), oldest first.
    Unreadable ones are skipped: a record is history, never a reason to refuse."""
    records = []
    for key in storage.list(RESTORES_PREFIX):
        try:
            record = RestoreRecord.from_json(storage.get(key))
        except (ObjectNotFound, ValueError, KeyError, TypeError):
            continue
        if (target is None or record.target == target) and (
            destination is None or record.destination == destination
        ):
            records.append(record)
    return sorted(records, key=lambda r: (r.started_at, r.restore_id))


def last_completed(records: Sequence[RestoreRecord]) -> RestoreRecord | None:
    """The newest record whose restore completed (changed the target); ``records`` are of
    one target and destination, oldest first (as :func:`restore_history` returns them)."""
    return next((r for r in reversed(records) if r.completed), None)


def rollback_points(records: Iterable[RestoreRecord]) -> set[str]:
    """The safety backup ids ``rollback`` would restore (or name): per target and
    destination, the one of the last completed restore (when it took one) and those of
    later restores interrupted during their swap."""
    by_place: dict[tuple[str, str], list[RestoreRecord]] = {}
    for record in records:
        by_place.setdefault((record.target, record.destination), []).append(record)
    points = set()
    for history in by_place.values():
        history.sort(key=lambda r: (r.started_at, r.restore_id))
        last = last_completed(history)
        if last is not None and last.safety_backup_id is not None:
            points.add(last.safety_backup_id)
        later = history[history.index(last) + 1 :] if last is not None else history
        points.update(r.safety_backup_id for r in later if r.swap_unknown and r.safety_backup_id)
    return points
