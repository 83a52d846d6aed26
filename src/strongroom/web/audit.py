"""The audit log: who did what, when, from where, with what result."""

from __future__ import annotations

import logging

from sqlalchemy import select

from strongroom.redaction import redact_text
from strongroom.repository.ids import utc_now_iso
from strongroom.repository.names import printable
from strongroom.web.db import ServiceDatabase
from strongroom.web.models import AuditEntry

log = logging.getLogger("strongroom.web.audit")


def record(
    db: ServiceDatabase,
    user: str,
    action: str,
    result: str,
    *,
    subject: str | None = None,
    client: str | None = None,
    detail: str | None = None,
) -> int:
    """Append one entry (secrets redacted; what a request sent, such as a NUL or a line
    break in a backup id or user name, escaped: PostgreSQL refuses NUL in text, and a log
    line stays one line); return its id."""
    entry = AuditEntry(
        at=utc_now_iso(),
        user=printable(user)[:100],
        action=action,
        subject=printable(subject)[:200] if subject else None,
        client=printable(client)[:64] if client else None,
        result=_text(result)[:200],
        detail=_text(detail) if detail else None,
    )
    with db.session() as session:
        session.add(entry)
        session.flush()
        entry_id = entry.id
    log.info(
        "audit: %s %s by %s from %s: %s",
        action,
        entry.subject or "-",
        entry.user,
        entry.client or "-",
        entry.result,
    )
    return entry_id


def _text(text: str) -> str:
    """Secrets redacted; NUL (which PostgreSQL refuses in text) escaped."""
    return redact_text(text).replace("\x00", "\\x00")


def update_result(db: ServiceDatabase, entry_id: int, result: str) -> None:
    """Set the outcome of an entry written when the action started (downloads)."""
    with db.session() as session:
        entry = session.get(AuditEntry, entry_id)
        if entry is not None:
            entry.result = _text(result)[:200]


def recent(
    db: ServiceDatabase, limit: int = 200, action: str | None = None, user: str | None = None
) -> list[AuditEntry]:
    """Newest first."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if action:
        query = query.where(AuditEntry.action == action)
    if user:
        query = query.where(AuditEntry.user == user)
    with db.session() as session:
        return list(session.scalars(query))


def actions(db: ServiceDatabase) -> list[str]:
    """Every action name the audit log holds, sorted (the audit page's filter lists these,
    so a new kind of action, e.g. ``notify-test``, can be filtered without a code change)."""
    with db.session() as session:
        return sorted(session.scalars(select(AuditEntry.action).distinct()))
