"""Shared pieces of the API routers: error responses and the backup lookup."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from strongroom.repository.manifest import Manifest
from strongroom.web.actions.backups import resolve
from strongroom.web.actions.common import Caller
from strongroom.web.api.schemas import JobAccepted, Problem
from strongroom.web.auth import Principal

READ_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "no valid session or token"},
    404: {"model": Problem, "description": "no such backup, target or job"},
}
WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    **READ_ERRORS,
    400: {"model": Problem, "description": "invalid request"},
    403: {"model": Problem, "description": "needs the admin role (or a CSRF token)"},
    409: {"model": Problem, "description": "conflicts with the repository's state"},
    422: {"model": Problem, "description": "the database could not be used"},
}


def caller(request: Request, principal: Principal) -> Caller:
    return Caller.of(request, principal)


def manifest_of(request: Request, principal: Principal, backup_id: str) -> Manifest:
    return resolve(caller(request, principal), backup_id)


def accepted(job_id: str) -> JobAccepted:
    return JobAccepted(job_id=job_id, status_url=f"/api/jobs/{job_id}")
