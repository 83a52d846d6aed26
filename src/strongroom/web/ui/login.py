"""Sign in and out (audited, rate limited)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from strongroom.web import audit
from strongroom.web.auth import (
    authenticate,
    current_principal,
    end_session,
    start_session,
    verify_csrf,
)
from strongroom.web.context import client_of, context_of
from strongroom.web.ui.render import render

router = APIRouter()


@router.get("/login")
def login_page(request: Request) -> Response:
    return render(request, "login.html")


@router.post("/login")
async def login(
    request: Request,
    username: Annotated[str, Form(max_length=100)] = "",
    password: Annotated[str, Form(max_length=1000)] = "",
) -> Response:
    await verify_csrf(request)
    ctx = context_of(request)
    client = client_of(request)
    name = username.strip()
    if ctx.limiter.blocked(name, client):
        audit.record(ctx.db, name or "-", "login", "refused: too many failures", client=client)
        return render(
            request,
            "login.html",
            {"error": "Too many failed sign-ins. Wait a few minutes.", "username": name},
            429,
        )
    user = authenticate(ctx.db, name, password)
    if user is None:
        ctx.limiter.failed(name, client)
        audit.record(ctx.db, name or "-", "login", "failed: wrong name or password", client=client)
        return render(
            request, "login.html", {"error": "Wrong name or password.", "username": name}, 401
        )
    ctx.limiter.succeeded(name, client)
    start_session(request, user)
    audit.record(ctx.db, user.name, "login", "ok", client=client)
    return RedirectResponse("/", status_code=303)


@router.post("/logout")
def logout(request: Request) -> Response:
    """Sign out: the session ends on the server too, so a copy of the cookie is worthless."""
    ctx = context_of(request)
    principal = current_principal(request)
    if principal is not None and principal.via == "session":
        audit.record(ctx.db, principal.name, "logout", "ok", client=client_of(request))
    end_session(request)
    return RedirectResponse("/login", status_code=303)
