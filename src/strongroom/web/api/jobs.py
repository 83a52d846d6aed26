"""Jobs: phase, bytes done and total of long operations."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, Field

from strongroom.web.api.common import READ_ERRORS
from strongroom.web.api.schemas import Job
from strongroom.web.auth import Principal, require_viewer
from strongroom.web.context import context_of
from strongroom.web.jobs import get_job, job_log_lines, recent_jobs

router = APIRouter(tags=["jobs"])
Viewer = Annotated[Principal, Depends(require_viewer)]


@router.get("/jobs", responses=READ_ERRORS)
def list_jobs(
    request: Request, _: Viewer, limit: Annotated[int, Query(ge=1, le=500)] = 50
) -> list[Job]:
    """Recent jobs, newest first."""
    return [Job.of(row) for row in recent_jobs(context_of(request).db, limit)]


@router.get("/jobs/{job_id}", responses=READ_ERRORS)
def show_job(request: Request, _: Viewer, job_id: str) -> Job:
    """One job's status, phase, and bytes done of the total."""
    row = get_job(context_of(request).db, job_id)
    if row is None:
        raise HTTPException(404, f"no job {job_id!r}")
    return Job.of(row)


class JobLogLine(BaseModel):
    at: str = Field(description="ISO 8601 UTC, to the second")
    level: str = Field(description="INFO, WARNING, ERROR or CRITICAL")
    logger: str
    message: str = Field(description="one line, secrets redacted")


@router.get("/jobs/{job_id}/log", responses=READ_ERRORS)
def show_job_log(request: Request, _: Viewer, job_id: str) -> list[JobLogLine]:
    """The log lines a finished job kept (its last 200, at most 64 KiB), oldest first;
    ``[]`` while it runs, or when it logged nothing."""
    row = get_job(context_of(request).db, job_id)
    if row is None:
        raise HTTPException(404, f"no job {job_id!r}")
    return [JobLogLine(**line) for line in job_log_lines(row)]
