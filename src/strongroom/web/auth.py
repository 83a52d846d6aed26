"""Users, API tokens, sessions, CSRF and login rate limiting.

Passwords are argon2id hashes; API tokens are random strings stored as SHA-256 hashes;
the browser holds a signed session cookie (HttpOnly, SameSite=Lax, Secure over https) that
carries a random session id and a per-session CSRF token, checked on every unsafe request.
A session id is valid only while its row in ``web_sessions`` is (by its SHA-256): sign-out
deletes the row, and a session ends by itself after ``web.session_idle_minutes`` without a
request, ``web.session_max_hours`` after sign-in, when its user is disabled or removed, and
when the user's password changes.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fastapi import HTTPException, Request
from sqlalchemy import delete, select, update

from strongroom.repository.ids import parse_iso, utc_now_iso
from strongroom.web import audit
from strongroom.web.context import WebContext, client_of, context_of
from strongroom.web.credentials import (
    ADMIN,
    MIN_PASSWORD,
    ROLES,
    TOKEN_PREFIX,
    VIEWER,
    _rowcount,
    add_user,
    authenticate,
    create_token,
    dummy_hash,
    end_sessions,
    hash_password,
    hash_token,
    token_expired,
)
from strongroom.web.models import ApiToken, User, WebSession

__all__ = [  # the users and tokens part lives in strongroom.web.credentials (no FastAPI)
    "ADMIN",
    "MIN_PASSWORD",
    "ROLES",
    "TOKEN_PREFIX",
    "VIEWER",
    "Principal",
    "add_user",
    "authenticate",
    "bearer_token",
    "check_csrf",
    "create_token",
    "csrf_token",
    "current_principal",
    "end_session",
    "end_sessions",
    "hash_password",
    "hash_token",
    "require_admin",
    "require_viewer",
    "start_session",
    "token_expired",
    "verify_csrf",
]

CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
SESSION_KEY = "sid"
TOUCH_EVERY = timedelta(seconds=30)  # last_seen_at is written at most this often

dummy_hash()  # now, not at the first sign-in of an unknown name (same work for every name)


@dataclass(frozen=True)
class Principal:
    """Who is calling: a logged-in user (session) or a script (API token)."""

    name: str
    role: str
    via: str  # "session" or "token"

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN


class NotAuthenticated(Exception):
    """No valid session or token: 401 for the API, a redirect to /login for pages."""


def _token_principal(ctx: WebContext, token: str) -> Principal | None:
    if not token.startswith(TOKEN_PREFIX):
        return None
    with ctx.db.session() as session:
        row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
        if row is None or row.revoked or token_expired(row.expires_at):
            return None
        # one UPDATE that matches nothing if the token was revoked or removed meanwhile
        # (an ORM flush would raise StaleDataError for a row deleted under it: a 500)
        used = session.execute(
            update(ApiToken)
            .where(ApiToken.id == row.id, ApiToken.revoked.is_(False))
            .values(last_used_at=utc_now_iso())
        )
        if _rowcount(used) == 0:
            return None
        return Principal(f"token:{row.name}", row.role, "token")


def _stamp(password_hash: str) -> str:
    return hashlib.sha256(password_hash.encode()).hexdigest()


def _expired(ctx: WebContext, row: WebSession, now: datetime) -> bool:
    web = ctx.settings.web
    idle = timedelta(minutes=web.session_idle_minutes)
    lifetime = timedelta(hours=web.session_max_hours)
    return now - parse_iso(row.last_seen_at) > idle or now - parse_iso(row.created_at) > lifetime


def _session_principal(ctx: WebContext, request: Request) -> Principal | None:
    sid = request.session.get(SESSION_KEY)
    if not isinstance(sid, str) or not sid:
        return None
    now = datetime.now(UTC)
    id_hash = hash_token(sid)
    with ctx.db.session() as session:
        # statements, not ORM changes to the row: a sign-out (or another request ending the
        # session) may delete the row between this read and the write, which an ORM flush
        # turns into StaleDataError (a 500); an UPDATE or DELETE matching nothing is fine
        row = session.get(WebSession, id_hash)
        if row is None:
            return None
        user = session.get(User, row.user_id)
        if (
            user is None
            or user.disabled
            or not hmac.compare_digest(row.user_stamp, _stamp(user.password_hash))
            or _expired(ctx, row, now)
        ):
            session.execute(delete(WebSession).where(WebSession.id_hash == id_hash))
            return None
        if now - parse_iso(row.last_seen_at) >= TOUCH_EVERY:
            touched = session.execute(
                update(WebSession)
                .where(WebSession.id_hash == id_hash)
                .values(last_seen_at=utc_now_iso())
            )
            if _rowcount(touched) == 0:
                return None  # ended meanwhile: this request is not signed in either
        return Principal(user.name, user.role, "session")


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def current_principal(request: Request) -> Principal | None:
    """The caller, from a bearer token or the session cookie (cached on the request)."""
    if hasattr(request.state, "principal"):
        cached: Principal | None = request.state.principal
        return cached
    ctx = context_of(request)
    token = bearer_token(request)
    principal = (
        _token_principal(ctx, token) if token is not None else _session_principal(ctx, request)
    )
    request.state.principal = principal
    return principal


# --- sessions and CSRF --------------------------------------------------------------------
def csrf_token(request: Request) -> str:
    """The session's CSRF token (created on first use)."""
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


def start_session(request: Request, user: User) -> None:
    """A fresh session for the user: a new server-side row, a new session id and CSRF
    token in the cookie (what the cookie held before is dropped). Expired sessions of
    every user are deleted on the way."""
    ctx = context_of(request)
    sid = secrets.token_urlsafe(32)
    now = utc_now_iso()
    with ctx.db.session() as session:
        old = request.session.get(SESSION_KEY)
        if isinstance(old, str):
            session.execute(delete(WebSession).where(WebSession.id_hash == hash_token(old)))
        moment = datetime.now(UTC)
        expired = [
            r.id_hash for r in session.scalars(select(WebSession)) if _expired(ctx, r, moment)
        ]
        if expired:
            session.execute(delete(WebSession).where(WebSession.id_hash.in_(expired)))
        session.add(
            WebSession(
                id_hash=hash_token(sid),
                user_id=user.id,
                user_stamp=_stamp(user.password_hash),
                created_at=now,
                last_seen_at=now,
                client=client_of(request)[:64],
            )
        )
    request.session.clear()
    request.session[SESSION_KEY] = sid
    request.session["csrf"] = secrets.token_urlsafe(32)


def end_session(request: Request) -> None:
    """Sign out: the session's row goes (the cookie is worthless from now on, wherever a
    copy of it is), and the cookie is cleared."""
    sid = request.session.get(SESSION_KEY)
    if isinstance(sid, str):
        with context_of(request).db.session() as session:
            session.execute(delete(WebSession).where(WebSession.id_hash == hash_token(sid)))
    request.session.clear()


async def check_csrf(request: Request) -> None:
    """Unsafe requests that rely on the session cookie must carry the session's CSRF token,
    in the ``X-CSRF-Token`` header (htmx, scripts) or the ``csrf_token`` form field.
    (Requests with a bearer token, or without a session, carry no ambient authority.)"""
    if request.method not in UNSAFE or bearer_token(request) is not None:
        return
    if SESSION_KEY not in request.session:
        return
    await verify_csrf(request)


async def verify_csrf(request: Request) -> None:
    """Raise 403 unless the request carries the session's CSRF token."""
    expected = request.session.get("csrf")
    given = request.headers.get(CSRF_HEADER)
    if given is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        form = await request.form()
        value = form.get(CSRF_FIELD)
        given = value if isinstance(value, str) else None
    if not (
        isinstance(expected, str)
        and given is not None
        and hmac.compare_digest(expected.encode(), given.encode())
    ):
        raise HTTPException(403, "missing or wrong CSRF token; reload the page")


# --- dependencies -------------------------------------------------------------------------
def require_viewer(request: Request) -> Principal:
    """Any signed-in user or token (read-only access)."""
    principal = current_principal(request)
    if principal is None:
        raise NotAuthenticated()
    return principal


def require_admin(action: str) -> Callable[[Request], Principal]:
    """A dependency allowing admins only; a refusal is audited under ``action``."""

    def dependency(request: Request) -> Principal:
        principal = require_viewer(request)
        if not principal.is_admin:
            ctx = context_of(request)
            subject = request.path_params.get("backup_id") or request.url.path
            audit.record(
                ctx.db,
                principal.name,
                action,
                "denied: viewer role",
                subject=str(subject),
                client=client_of(request),
            )
            raise HTTPException(403, f"{action} needs the admin role")
        return principal

    return dependency
