"""strongroom's errors as HTTP statuses: JSON for the API, a page or fragment for the UI."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from strongroom.errors import (
    BackupNotFound,
    DatabaseError,
    IntegrityError,
    KeyError_,
    RepositoryBusy,
    RepositoryError,
    StorageError,
    StrongroomError,
    UnsupportedDatabaseUrl,
    UsageError,
)
from strongroom.redaction import redact_text
from strongroom.repository.names import printable
from strongroom.web.auth import NotAuthenticated


def status_for(exc: StrongroomError) -> int:
    """400 usage, 404 unknown backup, 409 repository state, 422 database, 503 storage."""
    for kind, status in (
        (BackupNotFound, 404),
        (RepositoryBusy, 409),
        (UsageError, 400),
        (UnsupportedDatabaseUrl, 400),
        (DatabaseError, 422),
        (KeyError_, 500),
        (StorageError, 503),
        (IntegrityError, 409),
        (RepositoryError, 409),
    ):
        if isinstance(exc, kind):
            return status
    return 500


def wants_json(request: Request) -> bool:
    path = request.url.path
    return path.startswith("/api/") or path == "/metrics" or path == "/openapi.json"


def _page(request: Request, status: int, message: str) -> Response:
    from strongroom.web.ui.render import render_error

    return render_error(request, status, message)


async def on_not_authenticated(request: Request, exc: Exception) -> Response:
    if wants_json(request):
        return JSONResponse(
            {"detail": "sign in, or send Authorization: Bearer <token>"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    if request.headers.get("HX-Request"):
        return Response(status_code=204, headers={"HX-Redirect": "/login"})
    return RedirectResponse("/login", status_code=303)


async def on_strongroom_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StrongroomError)
    status = status_for(exc)
    message = redact_text(exc.message)
    if wants_json(request):
        return JSONResponse({"detail": message}, status_code=status)
    return _page(request, status, message)


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if wants_json(request) or exc.status_code in (405,):
        return JSONResponse(
            {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
        )
    return _page(request, exc.status_code, str(exc.detail))


def safe_errors(errors: Any) -> list[dict[str, Any]]:
    """Validation errors as the API shows them: where and what, never the value sent
    (pydantic's ``input`` and ``ctx`` can hold a database URL with its password), and the
    message redacted as every other message is."""
    shown = []
    for error in errors:
        loc = [  # a misspelt field's name is what was sent: it may be a URL with a password
            part if isinstance(part, int) else redact_text(printable(str(part)))[:100]
            for part in error.get("loc", ())
        ]
        shown.append(
            {
                "loc": loc,
                "msg": redact_text(str(error.get("msg", "invalid")))[:300],
                "type": str(error.get("type", "value_error")),
            }
        )
    return shown


async def on_validation_error(request: Request, exc: Exception) -> Response:
    """422 naming each invalid field, without the submitted values."""
    assert isinstance(exc, RequestValidationError)
    errors = safe_errors(exc.errors())
    if wants_json(request):
        return JSONResponse({"detail": errors}, status_code=422)
    fields = "; ".join(
        f"{'.'.join(str(p) for p in e['loc'][1:]) or 'request'}: {e['msg']}" for e in errors
    )
    return _page(request, 422, f"invalid request: {fields}")


HANDLERS = {
    NotAuthenticated: on_not_authenticated,
    StrongroomError: on_strongroom_error,
    StarletteHTTPException: on_http_error,
}
