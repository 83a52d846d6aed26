"""Users and API tokens in the service database, without the web framework: what the
``user`` and ``token`` commands need (importing FastAPI costs a command ~0.3 s of CPU).
:mod:`strongroom.web.auth` re-exports these names for the web side.

Passwords are argon2id hashes; API tokens are random strings stored as SHA-256 hashes.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
from datetime import UTC, datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, insert, select

from strongroom.errors import UsageError
from strongroom.repository.ids import parse_iso, utc_now_iso
from strongroom.web.db import ServiceDatabase
from strongroom.web.models import ApiToken, User, WebSession

ADMIN, VIEWER = "admin", "viewer"
ROLES = (ADMIN, VIEWER)
TOKEN_PREFIX = "sr_"
MIN_PASSWORD = 8

_hasher = PasswordHasher()


@functools.cache
def dummy_hash() -> str:
    """An argon2 hash no password is checked against successfully: :func:`authenticate`
    verifies against it for unknown names, so they cost the same work. Computed once per
    process (~0.2 s of CPU); the web app computes it when it is imported
    (:mod:`strongroom.web.auth`), before the first sign-in, so even the first unknown name
    costs no more than a known one."""
    return _hasher.hash("strongroom-dummy-password")


# --- users and tokens ---------------------------------------------------------------------
def _check_role(role: str) -> None:
    if role not in ROLES:
        raise UsageError(f"role must be one of {', '.join(ROLES)}, not {role!r}")


def add_user(db: ServiceDatabase, name: str, role: str, password: str) -> None:
    """Create a user; the password is stored only as an argon2 hash."""
    _check_role(role)
    if not name or len(name) > 100 or not name.isprintable() or " " in name:
        raise UsageError("a user name is 1-100 printable characters without spaces")
    if len(password) < MIN_PASSWORD:
        raise UsageError(f"a password needs at least {MIN_PASSWORD} characters")
    with db.session() as session:
        if session.scalar(select(User).where(User.name == name)) is not None:
            raise UsageError(f"user {name!r} exists already")
        session.add(
            User(
                name=name,
                role=role,
                password_hash=_hasher.hash(password),
                created_at=utc_now_iso(),
                disabled=False,
            )
        )


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def authenticate(db: ServiceDatabase, name: str, password: str) -> User | None:
    """The user if the password matches (the same work is done for unknown names, and for
    names no user can have, which are not looked up: PostgreSQL refuses a NUL in them)."""
    possible = 0 < len(name) <= 100 and name.isprintable()
    with db.session() as session:
        user = session.scalar(select(User).where(User.name == name)) if possible else None
        stored = user.password_hash if user is not None else dummy_hash()
        try:
            _hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return None
        if user is None or user.disabled:
            return None
        if _hasher.check_needs_rehash(stored):
            user.password_hash = _hasher.hash(password)
        return user


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(
    db: ServiceDatabase, name: str, role: str, expires_at: datetime | None = None
) -> str:
    """A new API token; only its SHA-256 is stored, so it is shown once. A revoked token's
    name can be given again (the revoked row goes); ``expires_at`` None: never expires."""
    _check_role(role)
    if not name or len(name) > 100 or not name.isprintable() or " " in name:
        raise UsageError("a token name is 1-100 printable characters without spaces")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    values: dict[str, object] = {}
    if expires_at is not None:
        values["expires_at"] = (
            expires_at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        )
    with db.session() as session:
        session.execute(delete(ApiToken).where(ApiToken.name == name, ApiToken.revoked.is_(True)))
        if session.scalar(select(ApiToken.id).where(ApiToken.name == name)) is not None:
            raise UsageError(f"token {name!r} exists already")
        # a Core INSERT of these columns only: a database still at revision 0001 (as
        # before `upgrade`) has no expires_at column
        session.execute(
            insert(ApiToken).values(
                name=name,
                role=role,
                token_hash=hash_token(token),
                created_at=utc_now_iso(),
                revoked=False,
                **values,
            )
        )
    return token


def token_expired(expires_at: str | None, now: datetime | None = None) -> bool:
    return expires_at is not None and parse_iso(expires_at) <= (now or datetime.now(UTC))


def end_sessions(db: ServiceDatabase, user_id: int) -> int:
    """End every session of a user (disable, remove, password change); how many ended."""
    with db.session() as session:
        ended = session.execute(delete(WebSession).where(WebSession.user_id == user_id))
        return _rowcount(ended)


def _rowcount(result: object) -> int:
    count = getattr(result, "rowcount", 0)
    return count if isinstance(count, int) else 0
