"""Account administration shared by the CLI (``strongroom user …``/``token …``) and the
admin page: users (add, list, disable, enable, remove, password, role) and API tokens
(create with an optional expiry, list, revoke).

Every action, done or refused, is one audit entry, whoever took it (``cli:<os user>`` from
the command line, the signed-in admin from the web). Disabling or removing a user or
changing their password ends their sessions at once. The last active admin can be neither
disabled, removed nor demoted (:class:`LastAdmin`: exit 2 on the CLI, 409 on the web).
Listings never hold a password hash or a token, only a token's name, role and times.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from strongroom.errors import UsageError
from strongroom.web import audit
from strongroom.web.credentials import (
    ADMIN,
    MIN_PASSWORD,
    ROLES,
    add_user,
    create_token,
    end_sessions,
    hash_password,
    token_expired,
)
from strongroom.web.db import ServiceDatabase
from strongroom.web.models import ApiToken, User
from strongroom.web.ratelimit import name_key

T = TypeVar("T")

_DURATION = re.compile(r"^\s*(\d{1,5})\s*([mhdw])\s*$", re.ASCII)
# Cyrillic and Greek letters drawn like Latin ones (after NFKC and casefold): "admin" with
# a Cyrillic "a" (U+0430) would read as "admin" in every listing and in the audit log
_LOOKALIKES = str.maketrans(
    "аеорсухіјѕԁһԛԝвкмнтӏαβεικνορτυχϲ",
    "aeopcyxijsdhqwbkmhtlabeikvoptuxc",
)
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class LastAdmin(UsageError):
    """The change would leave no active admin (exit 2; HTTP 409)."""


class UnknownAccount(UsageError):
    """No user or token of that name (exit 2; HTTP 404)."""


@dataclass(frozen=True)
class Actor:
    """Who takes an action, for the audit log: ``cli:<os user>`` or a signed-in admin."""

    name: str
    client: str | None = None


@dataclass(frozen=True)
class UserInfo:
    name: str
    role: str
    disabled: bool
    created_at: str


@dataclass(frozen=True)
class TokenInfo:
    name: str
    role: str
    created_at: str
    last_used_at: str | None
    expires_at: str | None
    revoked: bool

    @property
    def state(self) -> str:
        if self.revoked:
            return "revoked"
        return "expired" if token_expired(self.expires_at) else "active"


MAX_TOKEN_LIFETIME = timedelta(days=3660)  # about ten years


def parse_expiry(text: str | None, now: datetime | None = None) -> datetime | None:
    """``30d``, ``12h``, ``90m``, ``2w`` from now; empty or ``never``: None."""
    if text is None or text.strip().lower() in ("", "never"):
        return None
    match = _DURATION.match(text)
    if match is None or int(match.group(1)) == 0:
        raise UsageError(f"an expiry is a number and m, h, d or w (e.g. 30d), not {text!r}")
    try:
        delta = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    except OverflowError:
        delta = MAX_TOKEN_LIFETIME + timedelta(days=1)
    if delta > MAX_TOKEN_LIFETIME:  # "never" is said as never, not as the year 3943
        raise UsageError(
            f"an expiry is at most {MAX_TOKEN_LIFETIME.days} days (or never), not {text!r}"
        )
    return (now or datetime.now(UTC)) + delta


def _audited(
    db: ServiceDatabase, actor: Actor, action: str, subject: str, act: Callable[[], T]
) -> T:
    """Run ``act``; audit it as ``ok`` or ``refused: <why>`` (and re-raise)."""
    try:
        outcome = act()
    except UsageError as exc:
        audit.record(
            db, actor.name, action, f"refused: {exc.message}", subject=subject, client=actor.client
        )
        raise
    except Exception:
        audit.record(db, actor.name, action, "failed", subject=subject, client=actor.client)
        raise
    audit.record(db, actor.name, action, "ok", subject=subject, client=actor.client)
    return outcome


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise UsageError(f"role must be one of {', '.join(ROLES)}, not {role!r}")


# --- users --------------------------------------------------------------------------------
def list_users(db: ServiceDatabase) -> list[UserInfo]:
    with db.session() as session:
        return [
            UserInfo(u.name, u.role, bool(u.disabled), u.created_at)
            for u in session.scalars(select(User).order_by(User.name))
        ]


def _user(session: Session, name: str) -> User:
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        raise UnknownAccount(f"no user {name!r}")
    return user


def _keep_an_admin(session: Session, user: User, what: str) -> None:
    """Refuse when ``user`` is the only active admin left."""
    if user.role != ADMIN or user.disabled:
        return
    others = session.scalar(
        select(func.count())
        .select_from(User)
        .where(User.role == ADMIN, User.disabled.is_(False), User.id != user.id)
    )
    if not others:
        raise LastAdmin(f"{user.name} is the last active admin; cannot {what} them")


def _skeleton(name: str) -> str:
    return name_key(name).translate(_LOOKALIKES)


def add(db: ServiceDatabase, actor: Actor, name: str, role: str, password: str) -> None:
    """A new user, whose name must not read like an existing one's (case, full-width,
    invisible characters or Cyrillic and Greek look-alikes)."""

    def act() -> None:
        skeleton = _skeleton(name)
        for other in list_users(db):
            if other.name != name and _skeleton(other.name) == skeleton:
                raise UsageError(f"user name {name!r} reads like the existing {other.name!r}")
        add_user(db, name, role, password)

    _audited(db, actor, "user-add", name, act)


def set_disabled(db: ServiceDatabase, actor: Actor, name: str, disabled: bool) -> int:
    """Disable (ending the user's sessions; how many) or enable a user."""

    def act() -> int:
        with db.session() as session:
            user = _user(session, name)
            if disabled:
                _keep_an_admin(session, user, "disable")
            user.disabled = disabled
            user_id = user.id
        return end_sessions(db, user_id) if disabled else 0

    return _audited(db, actor, "user-disable" if disabled else "user-enable", name, act)


def remove(db: ServiceDatabase, actor: Actor, name: str) -> None:
    def act() -> None:
        with db.session() as session:
            user = _user(session, name)
            _keep_an_admin(session, user, "remove")
            user_id = user.id
            session.execute(delete(User).where(User.id == user_id))
        end_sessions(db, user_id)

    _audited(db, actor, "user-remove", name, act)


def set_password(db: ServiceDatabase, actor: Actor, name: str, password: str) -> None:
    """A new password; the user's sessions end."""

    def act() -> None:
        if len(password) < MIN_PASSWORD:
            raise UsageError(f"a password needs at least {MIN_PASSWORD} characters")
        with db.session() as session:
            user = _user(session, name)
            user.password_hash = hash_password(password)
            user_id = user.id
        end_sessions(db, user_id)

    _audited(db, actor, "user-passwd", name, act)


def set_role(db: ServiceDatabase, actor: Actor, name: str, role: str) -> None:
    def act() -> None:
        _check_role(role)
        with db.session() as session:
            user = _user(session, name)
            if role != ADMIN:
                _keep_an_admin(session, user, "demote")
            user.role = role

    _audited(db, actor, "user-role", f"{name}: {role}", act)


# --- tokens -------------------------------------------------------------------------------
def list_tokens(db: ServiceDatabase) -> list[TokenInfo]:
    with db.session() as session:
        return [
            TokenInfo(t.name, t.role, t.created_at, t.last_used_at, t.expires_at, bool(t.revoked))
            for t in session.scalars(select(ApiToken).order_by(ApiToken.name))
        ]


def new_token(
    db: ServiceDatabase, actor: Actor, name: str, role: str, expires: str | None = None
) -> str:
    """A new token (returned once, never audited or logged)."""
    return _audited(
        db,
        actor,
        "token-create",
        f"{name} ({role}, expires {expires or 'never'})",
        lambda: create_token(db, name, role, parse_expiry(expires)),
    )


def revoke(db: ServiceDatabase, actor: Actor, name: str) -> None:
    def act() -> None:
        with db.session() as session:
            token = session.scalar(select(ApiToken).where(ApiToken.name == name))
            if token is None or token.revoked:
                raise UnknownAccount(f"no active token {name!r}")
            token.revoked = True

    _audited(db, actor, "token-revoke", name, act)
