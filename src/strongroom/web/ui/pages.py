"""The pages: dashboard, backups, one backup, retention preview, audit log."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from strongroom.services import records
from strongroom.web import audit
from strongroom.web.actions.retention import preview
from strongroom.web.api.targets import summaries
from strongroom.web.auth import Principal, require_viewer
from strongroom.web.context import context_of
from strongroom.web.jobs import recent_jobs
from strongroom.web.ui.charts import card_context
from strongroom.web.ui.render import render

router = APIRouter()
JOB_DONE = "strongroom:job-done"  # the event cards and lists reload on (hx-trigger)
Viewer = Annotated[Principal, Depends(require_viewer)]


@router.get("/")
def dashboard(request: Request, _: Viewer) -> Response:
    ctx = context_of(request)
    cards = [card_context(ctx, target) for target in summaries(ctx)]
    return render(request, "dashboard.html", {"cards": cards, "jobs": recent_jobs(ctx.db, 8)})


@router.get("/ui/targets/{name:path}/card")
def target_card(
    request: Request, _: Viewer, name: Annotated[str, Path(max_length=200)]
) -> Response:
    """One target's card (summary, last restore drill, charts) for the live update after
    a job ends (``strongroom:job-done``); 404 fragment for an unknown target. ``name`` is
    a path parameter: a legacy name with ``/`` (``charts.card_url`` quotes it as ``%2F``,
    which the server decodes before routing) still reaches its card."""
    ctx = context_of(request)
    for target in summaries(ctx):
        if target.name == name:
            return render(request, "_target_card.html", card_context(ctx, target))
    return render(request, "_error.html", {"status": 404, "message": "no such target"}, 404)


@router.get("/backups")
def backups(
    request: Request,
    _: Viewer,
    target: Annotated[str | None, Query(max_length=200)] = None,
    tag: Annotated[str | None, Query(max_length=100)] = None,
    verified: Annotated[str | None, Query(max_length=10)] = None,
    pinned: Annotated[str | None, Query(max_length=5)] = None,
) -> Response:
    ctx = context_of(request)
    ctx.fresh_repository()
    rows = ctx.index.backups(
        target=target or None,
        tag=tag or None,
        verified=verified or None,
        pinned={"yes": True, "no": False}.get(pinned or ""),
    )
    filters = {
        "target": target or "",
        "tag": tag or "",
        "verified": verified or "",
        "pinned": pinned or "",
    }
    name = (
        "_backup_rows.html"
        if request.headers.get("HX-Target") == "backup-rows"
        else ("backups.html")
    )
    return render(request, name, {"rows": rows, "filters": filters, "targets": ctx.target_names()})


@router.get("/backups/{backup_id}")
def backup_page(request: Request, principal: Viewer, backup_id: str) -> Response:
    ctx = context_of(request)
    repo = ctx.fresh_repository()
    manifest = repo.resolve(backup_id)
    row = ctx.index.get(manifest.backup_id)
    if row is None:
        ctx.index.sync(repo)
        row = ctx.index.get(manifest.backup_id)
    private = repo.private_section(manifest)
    history = list(reversed(records.verification_history(repo, manifest.backup_id)))
    return render(
        request,
        "backup.html",
        {"m": manifest, "row": row, "private": private, "verifications": history},
    )


@router.get("/retention")
def retention(
    request: Request, _: Viewer, target: Annotated[str | None, Query(max_length=200)] = None
) -> Response:
    ctx = context_of(request)
    return render(
        request,
        "retention.html",
        {
            "previews": preview(ctx, target or None),
            "targets": ctx.target_names(),
            "target": target or "",
        },
    )


@router.get("/audit")
def audit_log(
    request: Request,
    _: Viewer,
    action: Annotated[str | None, Query(max_length=32)] = None,
) -> Response:
    ctx = context_of(request)
    entries = audit.recent(ctx.db, 300, action=action or None)
    return render(
        request,
        "audit.html",
        {"entries": entries, "action": action or "", "actions": audit.actions(ctx.db)},
    )


@router.get("/jobs/{job_id}/progress")
def job_progress(request: Request, _: Viewer, job_id: str) -> Response:
    """A job's box; once the job has finished, the response carries ``HX-Trigger:
    strongroom:job-done`` (detail: job id, kind, status, and the target as "of") so the
    dashboard's cards and the backup list reload themselves (the index is synced before a
    job is marked finished)."""
    from strongroom.web.jobs import FAILED, SUCCEEDED, get_job

    ctx = context_of(request)
    job = get_job(ctx.db, job_id)
    if job is None:
        return render(request, "_error.html", {"status": 404, "message": "no such job"}, 404)
    response = render(request, "_job.html", {"job": job})
    if job.status in (SUCCEEDED, FAILED):
        # no "target" key: htmx would take it for the element to trigger the event on
        done = {"job": job.id, "kind": job.kind, "status": job.status, "of": job.target}
        response.headers["HX-Trigger"] = json.dumps({JOB_DONE: done})  # ASCII: json escapes
    return response
