"""The web application: ``create_app(settings, service_db_url)``."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.staticfiles import StaticFiles
from starlette.middleware.sessions import SessionMiddleware

from strongroom import __version__
from strongroom.config import Settings
from strongroom.errors import StrongroomError
from strongroom.web.api import api_router
from strongroom.web.api.health import metrics_router
from strongroom.web.context import WebContext
from strongroom.web.db import ServiceDatabase
from strongroom.web.errors import HANDLERS
from strongroom.web.index import ManifestIndex
from strongroom.web.jobs import JobRunner
from strongroom.web.models import JobRun
from strongroom.web.scheduler import SchedulerThread
from strongroom.web.status import forget_cache
from strongroom.web.ui import ui_router

log = logging.getLogger("strongroom.web")

STATIC = Path(__file__).resolve().parent / "static"
SESSION_COOKIE = "strongroom_session"
SESSION_SECONDS = 12 * 3600
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

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if request.url.path.startswith("/api/docs"):
            del response.headers["Content-Security-Policy"]  # the docs page loads its assets
        return response

    secret = env.get(SESSION_SECRET_ENV) or db.secret("session_secret")
    app.add_middleware(
        SessionMiddleware,
        secret_key=secret,
        session_cookie=SESSION_COOKIE,
        max_age=SESSION_SECONDS,
        same_site="lax",
        https_only=secure_cookies,
    )
    app.include_router(api_router())
    app.include_router(metrics_router)
    app.include_router(ui_router())
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
