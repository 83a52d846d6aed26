"""Named restore points: ``restore-points/<stream>/<name>.json`` records where a point
made with ``strongroom restore-point NAME`` is in a log stream (its LSN, time and
timeline), so that ``restore --to-restore-point NAME`` can choose the base backup that
ends before it and check the WAL up to it. Plain JSON like pins: a name and a position
in the WAL, nothing secret. The name is claimed (a ``pending`` record, created only if
absent) before the server makes the point, then the record is written over the claim; a
second point of the same name in the same stream is refused (PostgreSQL would recover to
the first one it meets), and so is a name whose claim was never completed."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from strongroom.errors import ObjectNotFound, UsageError
from strongroom.repository.layout import RESTORE_POINTS_PREFIX
from strongroom.storage.base import Storage

RESTORE_POINT_FORMAT = "strongroom-restore-point"
RESTORE_POINT_VERSION = 1
_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True)
class RestorePoint:
    """A restore point: ``lsn`` as PostgreSQL prints it (``X/Y``), ``time`` UTC ISO 8601,
    ``timeline`` the timeline it was made on, ``stream`` the cluster's log stream."""

    name: str
    lsn: str
    time: str
    timeline: int
    stream: str

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "lsn": self.lsn,
            "time": self.time,
            "timeline": self.timeline,
            "stream": self.stream,
        }


def restore_point_key(stream: str, name: str) -> str:
    """Where point ``name`` of ``stream`` is recorded; ``UsageError`` for names that could
    leave their folder."""
    for part, what in ((stream, "stream"), (name, "restore point")):
        if _PART.fullmatch(part) is None:
            raise UsageError(f"{part[:60]!r} is not a valid {what} name")
    return f"{RESTORE_POINTS_PREFIX}{stream}/{name}.json"


def reserve_restore_point(storage: Storage, stream: str, name: str) -> None:
    """Claim ``name`` in ``stream`` before the server makes the point: one creator wins
    (``Storage.create``), so two concurrent calls or a retry after a kill never put two
    points of one name in the WAL. ``UsageError`` (exit 2) when the name is taken, or was
    claimed by a call that never finished (the point may be in the WAL)."""
    key = restore_point_key(stream, name)
    document = {
        "format": RESTORE_POINT_FORMAT,
        "version": RESTORE_POINT_VERSION,
        "name": name,
        "stream": stream,
        "state": "pending",
        "started": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if storage.create(key, json.dumps(document, sort_keys=True).encode() + b"\n"):
        storage.sync()
        return
    try:
        existing = json.loads(storage.get(key))
    except (ObjectNotFound, ValueError):
        existing = {}
    if isinstance(existing, dict) and existing.get("state") == "pending":
        raise UsageError(
            f"a restore point named {name!r} was begun in stream {stream} at "
            f"{existing.get('started', '?')} and never recorded (interrupted, or under way): "
            "it may be in the WAL already; choose another name"
        )
    raise UsageError(
        f"a restore point named {name!r} exists already in stream {stream}: "
        "choose another name (recovery would stop at the first of the two)"
    )


def release_restore_point(storage: Storage, stream: str, name: str) -> None:
    """Drop the claim on ``name`` (the server made no point)."""
    storage.delete(restore_point_key(stream, name))
    storage.sync()


def write_restore_point(storage: Storage, point: RestorePoint) -> None:
    """Record ``point`` (over its claim, ``reserve_restore_point``)."""
    key = restore_point_key(point.stream, point.name)
    document = {"format": RESTORE_POINT_FORMAT, "version": RESTORE_POINT_VERSION}
    document.update(point.to_dict())
    storage.put(key, json.dumps(document, sort_keys=True).encode() + b"\n")
    storage.sync()


def _parse(raw: bytes) -> RestorePoint | None:
    try:
        doc = json.loads(raw)
        point = RestorePoint(
            name=str(doc["name"]),
            lsn=str(doc["lsn"]),
            time=str(doc["time"]),
            timeline=int(doc["timeline"]),
            stream=str(doc["stream"]),
        )
    except (ValueError, KeyError, TypeError):
        return None
    return point


def list_restore_points(storage: Storage, stream: str | None = None) -> list[RestorePoint]:
    """Every readable restore point (of ``stream``, else of all streams), oldest first;
    an unreadable record is skipped."""
    prefix = RESTORE_POINTS_PREFIX + (f"{stream}/" if stream else "")
    points = []
    for key in storage.list(prefix):
        if not key.endswith(".json"):
            continue
        try:
            point = _parse(storage.get(key))
        except ObjectNotFound:
            continue
        if point is not None:
            points.append(point)
    return sorted(points, key=lambda p: (p.time, p.stream, p.name))


def find_restore_points(storage: Storage, name: str) -> list[RestorePoint]:
    """The points named ``name`` (one per stream that has one)."""
    return [p for p in list_restore_points(storage) if p.name == name]
