"""The web application: ``create_app(settings, service_db_url)``."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from starlette.middleware.sessions import SessionMiddleware

from strongroom import __version__
from strongroom.config import Settings
from strongroom.errors import StrongroomError
from strongroom.web.api import api_router
from strongroom.web.api.health import metrics_router
from strongroom.web.context import WebContext
from strongroom.web.db import ServiceDatabase
from strongroom.web.errors import HANDLERS, on_validation_error
from strongroom.web.index import ManifestIndex
from strongroom.web.jobs import JobRunner
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
    """The API, the admin UI and (with ``scheduler``) the scheduler of ``strongroom run``.

    The service database is migrated to the newest schema first. ``secure_cookies`` marks
    the session cookie Secure (serve over https)."""
    env = dict(os.environ) if env is None else env
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
        docs_url="/api/docs",
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
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
