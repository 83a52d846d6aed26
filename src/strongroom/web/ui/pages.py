"""The pages: dashboard, backups, one backup, retention preview, audit log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from strongroom.services import records
from strongroom.web import audit
from strongroom.web.actions.retention import preview
from strongroom.web.api.targets import summaries
from strongroom.web.auth import Principal, require_viewer
from strongroom.web.context import context_of
from strongroom.web.jobs import recent_jobs
from strongroom.web.ui.charts import sparkline
from strongroom.web.ui.render import render

router = APIRouter()
Viewer = Annotated[Principal, Depends(require_viewer)]


@router.get("/")
def dashboard(request: Request, _: Viewer) -> Response:
    ctx = context_of(request)
    cards = []
    for target in summaries(ctx):
        rows = list(reversed(ctx.index.backups(target=target.name, limit=60)))
        stored, total = [], 0
        for row in rows:
            total += row.stored_new_bytes
            stored.append(float(total))
        cards.append(
            {
                "target": target,
                "size_chart": sparkline(stored, f"stored size of {target.name} over time"),
                "duration_chart": sparkline(
                    [r.duration_seconds for r in rows],
                    f"backup duration of {target.name} over time",
                    "#d97706",
                ),
            }
        )
    return render(request, "dashboard.html", {"cards": cards, "jobs": recent_jobs(ctx.db, 8)})


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
    return render(request, "audit.html", {"entries": entries, "action": action or ""})


@router.get("/jobs/{job_id}/progress")
def job_progress(request: Request, _: Viewer, job_id: str) -> Response:
    from strongroom.web.jobs import get_job

    ctx = context_of(request)
    job = get_job(ctx.db, job_id)
    if job is None:
        return render(request, "_error.html", {"status": 404, "message": "no such job"}, 404)
    return render(request, "_job.html", {"job": job})
