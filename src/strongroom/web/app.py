"""The web application: ``create_app(settings, service_db_url)``."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from markupsafe import escape
from starlette.middleware.sessions import SessionMiddleware

from strongroom import __version__
from strongroom.config import Settings
from strongroom.errors import StrongroomError
from strongroom.services.notifications import register_channel_secrets
from strongroom.web.api import api_router
from strongroom.web.api.health import metrics_router
from strongroom.web.auth import csrf_token, current_principal
from strongroom.web.context import WebContext
from strongroom.web.db import ServiceDatabase
from strongroom.web.errors import HANDLERS, on_validation_error
from strongroom.web.index import ManifestIndex
from strongroom.web.jobs import JobRunner
from strongroom.web.jobs import keep_info_records as keep_info_records  # for `serve`
from strongroom.web.middleware import MAX_BODY, BodyLimit, ForwardedClient, SecurityHeaders
from strongroom.web.middleware import SERVER_OPTIONS as SERVER_OPTIONS  # for `serve`
from strongroom.web.models import JobRun
from strongroom.web.scheduler import SchedulerThread
from strongroom.web.status import forget_cache
from strongroom.web.ui import ui_router

log = logging.getLogger("strongroom.web")

STATIC = Path(__file__).resolve().parent / "static"
SESSION_COOKIE = "strongroom_session"
SESSION_SECRET_ENV = "STRONGROOM_SESSION_SECRET"
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
        "frame-ancestors 'none'; form-action 'self'"
    ),
}


def _after_job(ctx: WebContext) -> Callable[[JobRun], None]:
    def refresh(_row: JobRun) -> None:
        forget_cache(ctx)
        ctx.index.sync(ctx.repository())

    return refresh


def create_app(
    settings: Settings,
    service_db_url: str,
    *,
    env: Mapping[str, str] | None = None,
    scheduler: bool = False,
    secure_cookies: bool = False,
    job_workers: int = 2,
) -> FastAPI:
    """The API, the admin UI and (with ``scheduler``) the scheduler of ``strongroom run``,
    with its WAL spool uploader when ``[wal] spool`` is set (without ``scheduler``, none:
    a warning says the spool is not emptied here).

    The service database is migrated to the newest schema first. ``secure_cookies`` marks
    the session cookie Secure (serve over https)."""
    env = dict(os.environ) if env is None else env
    register_channel_secrets(settings.notifications, env)  # before any job logs a line
    db = ServiceDatabase(service_db_url)
    db.upgrade()
    jobs = JobRunner(db, job_workers)
    jobs.mark_abandoned()
    ctx = WebContext(settings, env, db, jobs, ManifestIndex(db), secure_cookies=secure_cookies)
    jobs.after_each(_after_job(ctx))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        running: SchedulerThread | None = None
        try:
            ctx.index.sync(ctx.repository())
        except StrongroomError as exc:
            log.error("could not index the repository: %s", exc.message)
        if scheduler:
            try:
                running = SchedulerThread(ctx)
                running.start()
            except StrongroomError as exc:
                log.error("the scheduler could not start: %s", exc.message)
        elif settings.wal.spool:  # the uploader runs with the scheduler only
            log.warning(
                "WAL spool %s is not emptied by this process (--no-scheduler): run "
                "`strongroom wal-upload` or `strongroom run` beside it",
                settings.wal.spool,
            )
        try:
            yield
        finally:
            if running is not None:
                running.stop()
            jobs.shutdown()

    app = FastAPI(
        title="strongroom",
        version=__version__,
        summary="Encrypted, deduplicated, verified database backups: REST API",
        lifespan=lifespan,
        docs_url=None,  # served below from the vendored Swagger UI: no CDN, no inline script
        redoc_url=None,
    )
    app.state.ctx = ctx
    for exc_class, handler in HANDLERS.items():
        app.add_exception_handler(exc_class, handler)
    app.add_exception_handler(RequestValidationError, on_validation_error)

    # the signed cookie carries the session id; the session itself is a row (web/auth.py)
    secret = env.get(SESSION_SECRET_ENV) or db.secret("session_secret")
    app.add_middleware(
        SessionMiddleware,
        secret_key=secret,
        session_cookie=SESSION_COOKIE,
        max_age=max(60, int(settings.web.session_max_hours * 3600)),
        same_site="lax",
        https_only=secure_cookies,
    )
    # added last is outermost: forwarded headers, then security headers, then the limit
    app.add_middleware(BodyLimit, limit=MAX_BODY)
    app.add_middleware(SecurityHeaders, headers=SECURITY_HEADERS)
    if settings.web.trusted_proxies:
        app.add_middleware(ForwardedClient, trusted=list(settings.web.trusted_proxies))
    app.include_router(api_router())
    app.include_router(metrics_router)
    app.include_router(ui_router())
    app.include_router(docs_router())
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>API documentation · strongroom {version}</title>
<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/static/vendor/swagger-ui/swagger-ui.css">
</head>
<body>
<p style="margin:0;padding:.6rem 1rem;background:#111827;font:15px system-ui,sans-serif">
<a href="/" style="color:#fff;font-weight:700;text-decoration:none">strongroom</a>
<span style="color:#9ca3af">· REST API ·
<a href="{schema}" style="color:#e5e7eb">{schema}</a></span></p>
<div id="swagger-ui" data-openapi-url="{schema}"{csrf}></div>
<script src="/static/vendor/swagger-ui/swagger-ui-bundle.js"></script>
<script src="/static/swagger-init.js"></script>
</body>
</html>
"""


def docs_router() -> APIRouter:
    """``/docs``: Swagger UI for ``/openapi.json``, from the vendored copy (no network).
    Public, like the schema it shows (the API itself needs a token or a session). For a
    signed-in browser, the page carries the session's CSRF token, so "Try it out" works
    for unsafe methods too. ``/api/docs`` (where it was) and ``/api/`` lead to it."""
    router = APIRouter(include_in_schema=False)

    @router.get("/docs")
    def docs(request: Request) -> HTMLResponse:
        principal = current_principal(request)
        csrf = ""
        if principal is not None and principal.via == "session":
            csrf = f' data-csrf="{escape(csrf_token(request))}"'
        schema = request.app.openapi_url or "/openapi.json"
        page = DOCS_PAGE.format(version=escape(__version__), schema=escape(schema), csrf=csrf)
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    @router.get("/api/docs")
    @router.get("/api")
    @router.get("/api/")
    def to_docs() -> RedirectResponse:
        return RedirectResponse("/docs", status_code=307)

    return router
