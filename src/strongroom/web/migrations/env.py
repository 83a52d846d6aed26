"""Alembic environment: run with a connection handed over by ``strongroom.web.db``."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from strongroom.web.models import Base

connection: Connection | None = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - always run programmatically
    raise RuntimeError("strongroom's migrations run through strongroom.web.db.upgrade()")
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
