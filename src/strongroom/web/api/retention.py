"""Retention: preview (what would be forgotten and why) and run (a job)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from strongroom.web.actions.retention import preview, start_retention
from strongroom.web.api.common import READ_ERRORS, WRITE_ERRORS, accepted, caller
from strongroom.web.api.schemas import JobAccepted, RetentionRunRequest, RetentionTarget
from strongroom.web.auth import Principal, require_admin, require_viewer
from strongroom.web.context import context_of

router = APIRouter(tags=["retention"])


@router.get("/retention", responses=READ_ERRORS)
def retention_preview(
    request: Request,
    _: Annotated[Principal, Depends(require_viewer)],
    target: Annotated[str | None, Query(max_length=200)] = None,
) -> list[RetentionTarget]:
    """Each target's policy and, per backup, keep or forget with the reasons."""
    return [RetentionTarget.model_validate(t) for t in preview(context_of(request), target)]


@router.post("/retention/run", status_code=202, responses=WRITE_ERRORS)
def retention_run(
    request: Request,
    body: RetentionRunRequest,
    principal: Annotated[Principal, Depends(require_admin("forget"))],
) -> JobAccepted:
    """Apply the policies (pinned backups are never forgotten), then prune."""
    return accepted(start_retention(caller(request, principal), body.target, body.prune))
