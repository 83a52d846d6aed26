"""The UI's actions (htmx POSTs): back up, restore, verify, pin, forget, retention run."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response

from strongroom.errors import StrongroomError
from strongroom.repository.names import TAG_MAX_LENGTH
from strongroom.web.actions import backups as ops
from strongroom.web.actions import restore as restore_ops
from strongroom.web.actions.common import Caller
from strongroom.web.actions.retention import start_retention
from strongroom.web.auth import Principal, require_admin
from strongroom.web.context import context_of
from strongroom.web.errors import status_for
from strongroom.web.jobs import get_job
from strongroom.web.ui.render import render

router = APIRouter()


def _job(request: Request, job_id: str) -> Response:
    return render(request, "_job.html", {"job": get_job(context_of(request).db, job_id)})


def _problem(request: Request, exc: StrongroomError) -> Response:
    return render(
        request,
        "_error.html",
        {"status": status_for(exc), "message": exc.message},
        status_for(exc),
    )


@router.post("/ui/backup")
def backup_now(
    request: Request,
    principal: Annotated[Principal, Depends(require_admin("backup"))],
    target: Annotated[str, Form(max_length=200)],
    tag: Annotated[str, Form(max_length=TAG_MAX_LENGTH)] = "manual",
) -> Response:
    caller = Caller.of(request, principal)
    try:
        job_id = ops.start_backup(caller, target, (tag.strip() or "manual",))
    except StrongroomError as exc:
        return _problem(request, exc)
    return _job(request, job_id)


@router.get("/ui/backups/{backup_id}/restore")
def restore_dialog(
    request: Request,
    principal: Annotated[Principal, Depends(require_admin("restore"))],
    backup_id: str,
) -> Response:
    try:
        manifest = restore_ops.choose_backup(Caller.of(request, principal), backup_id, None, None)
    except StrongroomError as exc:
        return _problem(request, exc)
    configured = manifest.target in context_of(request).settings.targets
    return render(request, "_restore_dialog.html", {"m": manifest, "configured": configured})


@router.post("/ui/backups/{backup_id}/restore/plan")
def restore_plan(
    request: Request,
    principal: Annotated[Principal, Depends(require_admin("restore"))],
    backup_id: str,
    to: Annotated[str, Form(max_length=2000)] = "",
    safety_backup: Annotated[str, Form(max_length=10)] = "",
    missing_roles: Annotated[str, Form(max_length=10)] = "refuse",
    skip_superuser_objects: Annotated[str, Form(max_length=10)] = "",
    rewrite_definers: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    ctx = context_of(request)
    try:
        manifest = restore_ops.choose_backup(Caller.of(request, principal), backup_id, to, None)
        engine = restore_ops.destination(ctx, manifest, to)
        options = restore_ops.options_of(
            missing_roles, skip_superuser_objects == "on", rewrite_definers == "on"
        )
        plan = restore_ops.plan(ctx, manifest, to, safety_backup == "on", options)
    except StrongroomError as exc:
        return _problem(request, exc)
    return render(request, "_plan.html", {"plan": restore_ops.plan_json(plan, engine)})


@router.post("/ui/backups/{backup_id}/restore")
def restore(
    request: Request,
    principal: Annotated[Principal, Depends(require_admin("restore"))],
    backup_id: str,
    confirm: Annotated[str, Form(max_length=200)] = "",
    to: Annotated[str, Form(max_length=2000)] = "",
    safety_backup: Annotated[str, Form(max_length=10)] = "",
    missing_roles: Annotated[str, Form(max_length=10)] = "refuse",
    skip_superuser_objects: Annotated[str, Form(max_length=10)] = "",
    rewrite_definers: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    caller = Caller.of(request, principal)
    try:
        manifest = restore_ops.choose_backup(caller, backup_id, to, None, exact=True)
        job_id = restore_ops.start_restore(
            caller,
            manifest,
            to,
            confirm,
            safety_backup=safety_backup == "on",
            options=restore_ops.options_of(
                missing_roles, skip_superuser_objects == "on", rewrite_definers == "on"
            ),
        )
    except StrongroomError as exc:
        return _problem(request, exc)
    return _job(request, job_id)


@router.post("/ui/backups/{backup_id}/verify")
def verify(
    request: Request,
    principal: Annotated[Principal, Depends(require_admin("verify"))],
    backup_id: str,
    restore: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    caller = Caller.of(request, principal)
    try:
        manifest = ops.resolve(caller, backup_id)
        job_id = (
            ops.start_drill(caller, manifest, None)
            if restore
            else ops.start_verify(caller, manifest)
        )
    except StrongroomError as exc:
        return _problem(request, exc)
    return _job(request, job_id)


@router.post("/ui/backups/{backup_id}/pin")
def pin(
    request: Request,
    principal: Annotated[Principal, Depends(require_admin("pin"))],
    backup_id: str,
    pinned: Annotated[str, Form(max_length=10)] = "yes",
) -> Response:
    try:
        ops.set_pin(Caller.of(request, principal), backup_id, pinned == "yes")
    except StrongroomError as exc:
        return _problem(request, exc)
    return Response(status_code=204, headers={"HX-Refresh": "true"})


@router.post("/ui/backups/{backup_id}/forget")
def forget(
    request: Request,
    principal: Annotated[Principal, Depends(require_admin("forget"))],
    backup_id: str,
) -> Response:
    try:
        ops.forget_one(Caller.of(request, principal), backup_id)
    except StrongroomError as exc:
        return _problem(request, exc)
    return Response(status_code=204, headers={"HX-Redirect": "/backups"})


@router.post("/ui/retention/run")
def retention_run(
    request: Request,
    principal: Annotated[Principal, Depends(require_admin("forget"))],
    target: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    try:
        job_id = start_retention(Caller.of(request, principal), target or None, True)
    except StrongroomError as exc:
        return _problem(request, exc)
    return _job(request, job_id)
