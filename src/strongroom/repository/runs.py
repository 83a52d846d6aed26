"""Run records and job claims, kept in the repository so every machine sees them.

``runs/<target>/<finished>-<kind>-<rand>.json``: one record per job run (scheduled or
manual): outcome, sizes, the error's kind (never its text: that may name hosts or tables).

``jobs/<job id>/<scheduled time>/``: the claim and the done marker of one scheduled run, so
two daemons on the same repository never run the same job twice. The claim is created
with an atomic create-if-absent (``Storage.create``: a hard link locally, a conditional
``If-None-Match: *`` PUT on S3), so exactly one daemon wins it.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any

from strongroom.errors import ObjectNotFound
from strongroom.repository.ids import parse_iso, utc_now_iso
from strongroom.storage.base import Storage

RUNS_PREFIX = "runs/"
JOBS_PREFIX = "jobs/"
CLAIM_TTL = timedelta(hours=24)

log = logging.getLogger("strongroom.runs")


class BadRunRecord(ValueError):
    """A run record that is not a JSON object of :class:`RunRecord`'s shape."""


_TIMES = ("started_at", "finished_at")
_OPTIONAL_TIMES = ("scheduled_for",)
_TEXTS = ("target", "kind")
_OPTIONAL_TEXTS = ("backup_id", "error_kind")
_OPTIONAL_COUNTS = ("raw_size", "stored_new_bytes")


def _aware_time(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise BadRunRecord(f"{name} is not a text")
    try:
        moment = parse_iso(value)
    except ValueError:
        raise BadRunRecord(f"{name} is not an ISO 8601 time") from None
    if moment.utcoffset() is None:
        raise BadRunRecord(f"{name} has no UTC offset")
    return value


def _checked(data: object) -> dict[str, Any]:
    """``data`` as :class:`RunRecord`'s keyword arguments; :class:`BadRunRecord` when it
    is not an object with exactly its fields, each of its type, times ISO 8601 with offset."""
    if not isinstance(data, dict):
        raise BadRunRecord("not a JSON object")
    known = {f.name for f in fields(RunRecord)}
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        raise BadRunRecord(f"unknown fields {unknown}")
    missing = [n for n in (*_TEXTS, "ok", *_TIMES) if n not in data]
    if missing:
        raise BadRunRecord(f"missing fields {missing}")
    for name in _TEXTS:
        if not isinstance(data[name], str):
            raise BadRunRecord(f"{name} is not a text")
    for name in _OPTIONAL_TEXTS:
        if not isinstance(data.get(name), str | None):
            raise BadRunRecord(f"{name} is not a text")
    if not isinstance(data["ok"], bool):
        raise BadRunRecord("ok is not true or false")
    for name in _TIMES:
        _aware_time(name, data[name])
    for name in _OPTIONAL_TIMES:
        if data.get(name) is not None:
            _aware_time(name, data[name])
    for name in _OPTIONAL_COUNTS:
        value = data.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise BadRunRecord(f"{name} is not a whole number")
        if value is not None and value < 0:
            raise BadRunRecord(f"{name} is negative")
    duration = data.get("duration_seconds")
    if duration is not None and (
        isinstance(duration, bool) or not isinstance(duration, int | float) or duration < 0
    ):
        raise BadRunRecord("duration_seconds is not a number of seconds")
    tags = data.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise BadRunRecord("tags is not a list of texts")
    return {**data, "tags": tuple(tags)}


@dataclass(frozen=True)
class RunRecord:
    target: str
    kind: str  # "backup", "verify", "maintenance"
    ok: bool
    started_at: str
    finished_at: str
    tags: tuple[str, ...] = ()
    scheduled_for: str | None = None
    backup_id: str | None = None
    raw_size: int | None = None
    stored_new_bytes: int | None = None
    duration_seconds: float | None = None
    error_kind: str | None = None

    def to_json(self) -> bytes:
        data = asdict(self)
        data["tags"] = list(self.tags)
        return json.dumps(data, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_json(cls, raw: bytes) -> RunRecord:
        """The record in ``raw`` (UTF-8 JSON, as :meth:`to_json` writes it).

        Raises :class:`BadRunRecord` (a ``ValueError``) when ``raw`` is not JSON, not an
        object, has unknown or missing fields, a field of the wrong type, or a time that is
        not ISO 8601 with a UTC offset."""
        try:
            data = json.loads(raw)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
            raise BadRunRecord(f"not JSON: {exc}") from None
        return cls(**_checked(data))


def _stamp(iso: str) -> str:
    return iso.replace("-", "").replace(":", "").replace(".", "")


def record_run(storage: Storage, record: RunRecord) -> None:
    key = (
        f"{RUNS_PREFIX}{record.target}/{_stamp(record.finished_at)}-{record.kind}-"
        f"{secrets.token_hex(3)}.json"
    )
    storage.put(key, record.to_json())
    storage.sync()


def runs_of(storage: Storage, target: str | None = None) -> list[RunRecord]:
    """Run records, oldest first by ``finished_at`` (of one target, or all).

    A record that is gone meanwhile is left out; one that does not have the shape
    (:meth:`RunRecord.from_json`) is left out with one warning naming its key, so every
    reader (health, the daemon, the web's history and charts) only sees valid records."""
    prefix = f"{RUNS_PREFIX}{target}/" if target else RUNS_PREFIX
    records = []
    for key in storage.list(prefix):
        try:
            records.append(RunRecord.from_json(storage.get(key)))
        except ObjectNotFound:
            continue
        except BadRunRecord as exc:
            log.warning("skipped the damaged run record %s: %s", key, exc)
    return sorted(records, key=lambda r: parse_iso(r.finished_at))


@dataclass(frozen=True)
class Claim:
    job_id: str
    scheduled_for: str
    key: str


def _job_folder(job_id: str, scheduled_for: str) -> str:
    return f"{JOBS_PREFIX}{job_id.replace(':', '/')}/{_stamp(scheduled_for)}/"


def is_done(storage: Storage, job_id: str, scheduled_for: str) -> bool:
    return storage.exists(_job_folder(job_id, scheduled_for) + "done.json")


def try_claim(
    storage: Storage,
    job_id: str,
    scheduled_for: str,
    owner: str,
    now: datetime | None = None,
    holder_gone: Callable[[str], bool] | None = None,
) -> Claim | None:
    """Claim one scheduled run; ``None`` if it is done or another process holds it.

    The claim is created atomically (``Storage.create``), so exactly one of several
    daemons wins; a claim whose holder died expires after ``CLAIM_TTL``, or at once when
    ``holder_gone(owner)`` says its holder no longer runs (one killed on this machine)."""
    folder = _job_folder(job_id, scheduled_for)
    if storage.exists(folder + "done.json"):
        return None
    moment = now or datetime.now(UTC)
    key = folder + "claim.json"
    body = json.dumps(
        {
            "owner": owner,
            "claimed_at": utc_now_iso(),
            "expires_at": (moment + CLAIM_TTL).isoformat(),
        }
    ).encode()
    for _ in range(2):
        if storage.create(key, body):
            storage.sync()
            return Claim(job_id, scheduled_for, key)
        try:
            held = json.loads(storage.get(key))
            expires = parse_iso(held["expires_at"])
            holder = str(held.get("owner", ""))
        except ObjectNotFound:
            continue  # released meanwhile: try again
        except (ValueError, KeyError, TypeError, AttributeError):
            expires, holder = moment, ""  # unreadable: treat as expired
        if expires > moment and not (holder_gone is not None and holder_gone(holder)):
            return None
        storage.delete(key)  # the holder died: its claim expired
    return None


def mark_done(storage: Storage, claim: Claim, record: RunRecord) -> None:
    folder = _job_folder(claim.job_id, claim.scheduled_for)
    storage.put(folder + "done.json", record.to_json())
    storage.sync()
    storage.delete(claim.key)


def release(storage: Storage, claim: Claim) -> None:
    """Withdraw a claim without marking the run done (it will be tried again)."""
    storage.delete(claim.key)
