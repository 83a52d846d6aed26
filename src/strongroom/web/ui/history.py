"""The job history: ``/jobs`` (schedules, notification channels, every job newest first)
and ``/jobs/{id}`` (one job with its log lines).

Two sources are merged. Jobs started from the web (a signed-in user, an API token, the
cron endpoint) are rows of ``job_runs``, with their log lines. Jobs the scheduler ran
(``strongroom serve``'s scheduler thread or ``strongroom run``) and backups taken on the
command line are the repository's run records (``services.records.runs``), which hold the
outcome, sizes and the error's kind, never its text. A web backup writes a run record too;
it is shown once, as the web job.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from strongroom.errors import StrongroomError
from strongroom.repository.ids import parse_iso
from strongroom.services import records
from strongroom.services.schedule import Job, jobs_of, next_run
from strongroom.web.auth import Principal, require_viewer
from strongroom.web.context import WebContext, context_of
from strongroom.web.jobs import get_job, job_log_lines, job_result, recent_jobs
from strongroom.web.models import JobRun
from strongroom.web.ui import notify_test
from strongroom.web.ui.notify_test import channel_rows
from strongroom.web.ui.render import (
    human_bytes,
    human_seconds,
    render,
    render_error,
    zone_abbreviation,
    zone_named,
)

router = APIRouter()
router.include_router(notify_test.router)  # POST /ui/notifications/{index}/test
Viewer = Annotated[Principal, Depends(require_viewer)]

PAGE_SIZE = 50
WEB_JOBS_READ = 5000  # newest web jobs merged into the history
RUN_PREFIX = "run-"

# what each source calls a kind -> the history's kinds
JOB_KINDS = {"verify-restore": "drill"}  # web jobs: backup, restore, verify, retention as is
RUN_KINDS = {"verify": "drill", "maintenance": "retention"}  # run records
KINDS = ("backup", "restore", "verify", "drill", "retention")
STATUSES = ("succeeded", "failed", "running", "queued")
ORIGINS = {
    "web": "web user",
    "api": "API token",
    "cron": "cron endpoint",
    "schedule": "schedule",
    "cli": "command line",
}


@dataclass(frozen=True)
class Entry:
    """One line of the history. ``origin`` is a key of :data:`ORIGINS`; ``who`` the user,
    token or "schedule"; times are ISO 8601 (UTC); ``duration_seconds`` from start to end."""

    id: str
    kind: str
    status: str
    origin: str
    who: str
    target: str | None
    backup_id: str | None
    at: str  # when it was asked for (web) or started (run record): the sort key
    started_at: str | None
    finished_at: str | None
    duration_seconds: float | None
    error: str | None
    tags: tuple[str, ...] = ()
    scheduled_for: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def origin_label(self) -> str:
        return ORIGINS.get(self.origin, self.origin)


def _seconds(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    try:
        return max(0.0, (parse_iso(end) - parse_iso(start)).total_seconds())
    except ValueError:
        return None


def _origin(requested_by: str) -> tuple[str, str]:
    """(origin, who) of a web job from its ``requested_by``."""
    if requested_by.startswith("token:"):
        return "api", requested_by.removeprefix("token:")
    if requested_by == "cron":
        return "cron", "cron"
    return "web", requested_by


FACT_LABELS = {
    "raw_size": "Database dump",
    "stored_new_bytes": "New data stored",
    "duration_seconds": "Backup took",
    "destination": "Restored into",
    "tables_verified": "Tables verified",
    "tables_checked": "Tables checked",
    "restore_seconds": "Restore took",
    "safety_backup_id": "Safety backup",
    "old_kept_as": "Old database kept as",
    "bytes_checked": "Read and checked",
    "pruned_bytes": "Space freed",
}
HIDDEN_FACTS = ("backup_id", "ok", "dedup_ratio")  # shown elsewhere, or not telling


def facts_of(values: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, text) pairs of what a job reported (sizes and durations made readable)."""
    shown = []
    for key, value in values.items():
        if key in HIDDEN_FACTS or value is None or value == "":
            continue
        if key == "forgotten" and isinstance(value, list):
            text = f"{len(value)} backup(s)" + (f": {', '.join(map(str, value))}" if value else "")
            shown.append(("Forgotten by policy", text))
            continue
        if isinstance(value, dict | list):
            continue
        label = FACT_LABELS.get(key, key.replace("_", " ").capitalize())
        sized = key.endswith(("_size", "_bytes")) or key.startswith("bytes_")
        if sized and isinstance(value, int | float):
            text = human_bytes(value)
        elif key.endswith("_seconds") and isinstance(value, int | float):
            text = human_seconds(value)
        else:
            text = str(value)
        shown.append((label, text))
    return shown


def job_entry(row: JobRun) -> Entry:
    origin, who = _origin(row.requested_by)
    return Entry(
        id=row.id,
        kind=JOB_KINDS.get(row.kind, row.kind),
        status=row.status,
        origin=origin,
        who=who,
        target=row.target,
        backup_id=row.backup_id,
        at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        duration_seconds=_seconds(row.started_at, row.finished_at),
        error=row.error,
        facts=job_result(row) if row.status == "succeeded" else {},
    )


def run_id(record: records.RunRecord) -> str:
    """A stable id for a run record (it has none): a hash of its contents."""
    return RUN_PREFIX + hashlib.sha256(record.to_json()).hexdigest()[:16]


def _from_schedule(record: records.RunRecord) -> bool:
    """Only the scheduler records drills and retention runs; its backups name their
    scheduled time."""
    return record.kind != "backup" or record.scheduled_for is not None


def run_entry(record: records.RunRecord) -> Entry:
    scheduled = _from_schedule(record)
    facts: dict[str, Any] = {}
    if record.raw_size is not None:
        facts["raw_size"] = record.raw_size
    if record.stored_new_bytes is not None:
        facts["stored_new_bytes"] = record.stored_new_bytes
    error = None
    if not record.ok:
        error = f"failed ({record.error_kind})" if record.error_kind else "failed"
    return Entry(
        id=run_id(record),
        kind=RUN_KINDS.get(record.kind, record.kind),
        status="succeeded" if record.ok else "failed",
        origin="schedule" if scheduled else "cli",
        who="schedule" if scheduled else "command line",
        target=record.target,
        backup_id=record.backup_id,
        at=record.started_at,
        started_at=record.started_at,
        finished_at=record.finished_at,
        duration_seconds=_seconds(record.started_at, record.finished_at),
        error=error,
        tags=record.tags,
        scheduled_for=record.scheduled_for,
        facts=facts,
    )


class _WebBackups:
    """The web's backup jobs, to tell which run records they wrote: the same backup, or
    one written while such a job of the same target ran."""

    def __init__(self, rows: list[JobRun]) -> None:
        now = datetime.now(UTC)
        self._ids = {row.backup_id for row in rows if row.backup_id}
        self._spans: dict[str | None, list[tuple[datetime, datetime]]] = {}
        for row in rows:
            if row.started_at is None:
                continue
            try:
                end = parse_iso(row.finished_at) if row.finished_at else now
                span = (parse_iso(row.started_at), end)
            except ValueError:
                continue
            self._spans.setdefault(row.target, []).append(span)

    def wrote(self, record: records.RunRecord) -> bool:
        if record.kind != "backup" or record.scheduled_for is not None:
            return False
        if record.backup_id in self._ids:
            return True
        try:
            finished = parse_iso(record.finished_at)
        except ValueError:
            return False
        return any(a <= finished <= b for a, b in self._spans.get(record.target, ()))


def _sort_key(entry: Entry) -> datetime:
    try:
        return parse_iso(entry.at)
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)


def _run_records(ctx: WebContext) -> tuple[list[records.RunRecord], str | None]:
    """The repository's run records, and why they could not be read (or ``None``)."""
    try:
        return records.runs(ctx.repository()), None
    except StrongroomError as exc:
        return [], exc.message


def entries(ctx: WebContext, runs: list[records.RunRecord]) -> list[Entry]:
    """Every job, newest first: the web's jobs and the run records not of a web job."""
    rows = recent_jobs(ctx.db, WEB_JOBS_READ)
    web = _WebBackups([row for row in rows if row.kind == "backup"])
    merged = [job_entry(row) for row in rows]
    merged += [run_entry(r) for r in runs if not web.wrote(r)]
    merged.sort(key=_sort_key, reverse=True)
    return merged


def _one_of(value: str | None, choices: tuple[str, ...] | dict[str, str]) -> str:
    return value if value is not None and value in choices else ""


@dataclass(frozen=True)
class ScheduleRow:
    """One configured schedule: its next run and the last run the scheduler recorded."""

    job: Job
    label: str
    next_run: str | None
    last: Entry | None


def _last_run(job: Job, runs: list[records.RunRecord]) -> records.RunRecord | None:
    for record in reversed(runs):  # newest first
        if record.target != job.target:
            continue
        if job.kind == "backup":
            if record.kind == "backup" and record.scheduled_for and job.tag in record.tags:
                return record
        elif record.kind == "verify":
            return record
    return None


def schedules(ctx: WebContext, runs: list[records.RunRecord]) -> list[ScheduleRow]:
    now = datetime.now(UTC)
    rows = []
    for job in jobs_of(ctx.settings):
        try:
            upcoming: str | None = next_run(job, now, ctx.settings.timezone).isoformat()
        except ValueError:
            upcoming = None
        last = _last_run(job, runs)
        label = f"backup, tag {job.tag}" if job.kind == "backup" else "restore drill"
        rows.append(ScheduleRow(job, label, upcoming, run_entry(last) if last else None))
    return rows


@router.get("/jobs")
def history_page(
    request: Request,
    _: Viewer,
    kind: Annotated[str | None, Query(max_length=20)] = None,
    status: Annotated[str | None, Query(max_length=20)] = None,
    origin: Annotated[str | None, Query(max_length=20)] = None,
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
) -> Response:
    """Schedules, notification channels and the history (filtered, 50 a page)."""
    ctx = context_of(request)
    filters = {
        "kind": _one_of(kind, KINDS),
        "status": _one_of(status, STATUSES),
        "origin": _one_of(origin, ORIGINS),
    }
    runs, problem = _run_records(ctx)
    everything = entries(ctx, runs)
    shown = [
        e
        for e in everything
        if (not filters["kind"] or e.kind == filters["kind"])
        and (not filters["status"] or e.status == filters["status"])
        and (not filters["origin"] or e.origin == filters["origin"])
    ]
    pages = max(1, -(-len(shown) // PAGE_SIZE))
    page = min(page, pages)

    def page_url(number: int) -> str:
        return "/jobs?" + urlencode({**{k: v for k, v in filters.items() if v}, "page": number})

    return render(
        request,
        "jobs.html",
        {
            "entries": shown[(page - 1) * PAGE_SIZE : page * PAGE_SIZE],
            "total": len(shown),
            "page": page,
            "pages": pages,
            "newer": page_url(page - 1) if page > 1 else None,
            "older": page_url(page + 1) if page < pages else None,
            "filters": filters,
            "kinds": KINDS,
            "statuses": STATUSES,
            "origins": ORIGINS,
            "problem": problem,
            "schedules": schedules(ctx, runs),
            "timezone": ctx.settings.timezone,
            "channels": channel_rows(ctx),
        },
    )


@router.get("/jobs/{entry_id}")
def job_page(
    request: Request, _: Viewer, entry_id: Annotated[str, Path(max_length=40)]
) -> Response:
    """One job: what it did, who started it, its outcome and its log lines."""
    ctx = context_of(request)
    if entry_id.startswith(RUN_PREFIX):
        runs, _problem = _run_records(ctx)
        for record in runs:
            if run_id(record) == entry_id:
                entry = run_entry(record)
                context = {"e": entry, "facts": facts_of(entry.facts), "lines": None}
                return render(request, "job.html", context)
        return render_error(request, 404, "no such job")
    row = get_job(ctx.db, entry_id)
    if row is None:
        return render_error(request, 404, "no such job")
    entry = job_entry(row)
    context = {
        "e": entry,
        "facts": facts_of(entry.facts),
        "row": row,
        "lines": _local_times(job_log_lines(row), ctx.settings.timezone),
        "timezone": ctx.settings.timezone,
    }
    return render(request, "job.html", context)


def _local_times(lines: list[dict[str, str]], timezone: str) -> list[dict[str, str]]:
    """Each line with ``time``: ``HH:MM:SS CEST`` in the configured zone, with the zone's
    abbreviation at that moment (the repeated hour of an autumn change reads apart)."""
    zone = zone_named(timezone)
    shown = []
    for line in lines:
        try:
            local = parse_iso(line["at"]).astimezone(zone)
            time = f"{local:%H:%M:%S} {zone_abbreviation(local)}".strip()
        except ValueError:
            time = line["at"]
        shown.append({**line, "time": time})
    return shown
