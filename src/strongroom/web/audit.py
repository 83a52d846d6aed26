"""The audit log: who did what, when, from where, with what result."""

from __future__ import annotations

import logging

from sqlalchemy import select

from strongroom.redaction import redact_text
from strongroom.repository.ids import utc_now_iso
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
    """Append one entry (secrets redacted); return its id."""
    entry = AuditEntry(
        at=utc_now_iso(),
        user=user[:100],
        action=action,
        subject=subject[:200] if subject else None,
        client=client[:64] if client else None,
        result=redact_text(result)[:200],
        detail=redact_text(detail) if detail else None,
    )
    with db.session() as session:
        session.add(entry)
        session.flush()
        entry_id = entry.id
    log.info("audit: %s %s by %s from %s: %s", action, subject or "-", user, client or "-", result)
    return entry_id


def update_result(db: ServiceDatabase, entry_id: int, result: str) -> None:
    """Set the outcome of an entry written when the action started (downloads)."""
    with db.session() as session:
        entry = session.get(AuditEntry, entry_id)
        if entry is not None:
            entry.result = redact_text(result)[:200]


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
