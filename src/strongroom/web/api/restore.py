"""Restore: the plan (a dry run) and the real restore, which needs the typed name."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from strongroom.web.actions import restore as actions
from strongroom.web.api.common import WRITE_ERRORS, accepted, caller
from strongroom.web.api.schemas import (
    JobAccepted,
    RestorePlanRequest,
    RestorePlanResponse,
    RestoreRequest,
)
from strongroom.web.auth import Principal, require_admin
from strongroom.web.context import context_of

router = APIRouter(tags=["restore"])
Admin = Annotated[Principal, Depends(require_admin("restore"))]


@router.post("/backups/{backup_id}/restore/plan", responses=WRITE_ERRORS)
def restore_plan(
    request: Request, backup_id: str, body: RestorePlanRequest, principal: Admin
) -> RestorePlanResponse:
    """What a restore would do; changes nothing. ``database_name`` is the confirmation."""
    ctx = context_of(request)
    manifest = actions.choose_backup(caller(request, principal), backup_id, body.to, body.target)
    engine = actions.destination(ctx, manifest, body.to)
    options = actions.options_of(
        body.missing_roles, body.skip_superuser_objects, body.rewrite_definers
    )
    plan = actions.plan(ctx, manifest, body.to, body.safety_backup, options, body.target)
    return RestorePlanResponse.model_validate(actions.plan_json(plan, engine))


@router.post("/backups/{backup_id}/restore", status_code=202, responses=WRITE_ERRORS)
def restore(
    request: Request, backup_id: str, body: RestoreRequest, principal: Admin
) -> JobAccepted:
    """Restore with the full contract: safety backup, staged restore, verification, swap.
    ``confirm`` must equal the destination database's name (see the plan). The backup is
    its full id (the plan's ``backup_id``) or ``latest``; a prefix is refused (400)."""
    who = caller(request, principal)
    manifest = actions.choose_backup(who, backup_id, body.to, body.target, exact=True)
    job_id = actions.start_restore(
        who,
        manifest,
        body.to,
        body.confirm,
        safety_backup=body.safety_backup,
        drop_old=body.drop_old,
        options=actions.options_of(
            body.missing_roles, body.skip_superuser_objects, body.rewrite_definers
        ),
        target=body.target,
    )
    return accepted(job_id)
