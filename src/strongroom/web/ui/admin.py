"""The admin page (admin role only): users and API tokens, through web/accounts.py.

Plain forms with the session's CSRF token; each action answers with the page again (a
refusal with its status: 400, 404, or 409 for the last active admin). A new token is shown
on that one answer only; it is never in a URL, a log or the audit log."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response

from strongroom.errors import StrongroomError
from strongroom.web import accounts
from strongroom.web.auth import ROLES, Principal, require_admin
from strongroom.web.context import client_of, context_of
from strongroom.web.errors import status_for
from strongroom.web.ui.render import render

router = APIRouter()
Admin = Annotated[Principal, Depends(require_admin("admin"))]
Name = Annotated[str, Form(min_length=1, max_length=100)]
Role = Annotated[str, Form(max_length=16)]
Password = Annotated[str, Form(max_length=1000)]


def _actor(request: Request, principal: Principal) -> accounts.Actor:
    return accounts.Actor(principal.name, client_of(request))


def _page(request: Request, status: int = 200, **extra: Any) -> Response:
    db = context_of(request).db
    values = {
        "users": accounts.list_users(db),
        "tokens": accounts.list_tokens(db),
        "roles": ROLES,
        **extra,
    }
    return render(request, "admin.html", values, status)


def _status(exc: StrongroomError) -> int:
    if isinstance(exc, accounts.LastAdmin):
        return 409
    if isinstance(exc, accounts.UnknownAccount):
        return 404
    return status_for(exc)


def _done(request: Request, message: str, act: Callable[[], object]) -> Response:
    try:
        act()
    except StrongroomError as exc:
        return _page(request, _status(exc), error=exc.message)
    return _page(request, notice=message)


@router.get("/admin")
def admin_page(request: Request, _: Admin) -> Response:
    return _page(request)


@router.post("/admin/users/add")
def user_add(
    request: Request,
    principal: Admin,
    name: Name,
    password: Password,
    password_again: Password,
    role: Role = "viewer",
) -> Response:
    db, actor = context_of(request).db, _actor(request, principal)
    if password != password_again:
        return _page(request, 400, error="the passwords differ; nothing was changed")
    return _done(
        request,
        f"user {name} added ({role})",
        lambda: accounts.add(db, actor, name, role, password),
    )


@router.post("/admin/users/disable")
def user_disable(request: Request, principal: Admin, name: Name) -> Response:
    db, actor = context_of(request).db, _actor(request, principal)
    return _done(
        request,
        f"user {name} disabled; their sessions ended",
        lambda: accounts.set_disabled(db, actor, name, True),
    )


@router.post("/admin/users/enable")
def user_enable(request: Request, principal: Admin, name: Name) -> Response:
    db, actor = context_of(request).db, _actor(request, principal)
    return _done(
        request, f"user {name} enabled", lambda: accounts.set_disabled(db, actor, name, False)
    )


@router.post("/admin/users/remove")
def user_remove(request: Request, principal: Admin, name: Name) -> Response:
    db, actor = context_of(request).db, _actor(request, principal)
    return _done(request, f"user {name} removed", lambda: accounts.remove(db, actor, name))


@router.post("/admin/users/password")
def user_password(
    request: Request, principal: Admin, name: Name, password: Password, password_again: Password
) -> Response:
    db, actor = context_of(request).db, _actor(request, principal)
    if password != password_again:
        return _page(request, 400, error="the passwords differ; nothing was changed")
    return _done(
        request,
        f"password of {name} changed; their sessions ended",
        lambda: accounts.set_password(db, actor, name, password),
    )


@router.post("/admin/users/role")
def user_role(request: Request, principal: Admin, name: Name, role: Role) -> Response:
    db, actor = context_of(request).db, _actor(request, principal)
    return _done(
        request, f"user {name} is now {role}", lambda: accounts.set_role(db, actor, name, role)
    )


@router.post("/admin/tokens/create")
def token_create(
    request: Request,
    principal: Admin,
    name: Name,
    role: Role = "viewer",
    expires: Annotated[str, Form(max_length=16)] = "",
) -> Response:
    db, actor = context_of(request).db, _actor(request, principal)
    try:
        token = accounts.new_token(db, actor, name, role, expires or None)
    except StrongroomError as exc:
        return _page(request, _status(exc), error=exc.message)
    response = _page(request, notice=f"token {name} created", new_token=token, token_name=name)
    response.headers["Cache-Control"] = "no-store"
    return response


@router.post("/admin/tokens/revoke")
def token_revoke(request: Request, principal: Admin, name: Name) -> Response:
    db, actor = context_of(request).db, _actor(request, principal)
    return _done(request, f"token {name} revoked", lambda: accounts.revoke(db, actor, name))
