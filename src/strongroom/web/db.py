"""The service database: engine, sessions, and Alembic migrations run at startup."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from strongroom.redaction import redact_url
from strongroom.web.models import ServiceSetting

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
SERVICE_DB_ENV = "STRONGROOM_SERVICE_DB"


def default_service_db() -> str:
    """``$XDG_DATA_HOME/strongroom/service.db`` (``~/.local/share/…`` by default)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(base) / "strongroom" / "service.db")


def normalise_url(url: str) -> str:
    """A SQLAlchemy URL: a plain path means SQLite; PostgreSQL goes through psycopg 3."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    if "://" not in url:
        path = Path(url).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    return url


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


class ServiceDatabase:
    """One engine and session factory; safe to share between threads."""

    def __init__(self, url: str) -> None:
        self.url = normalise_url(url)
        sqlite = self.url.startswith("sqlite")
        self.engine: Engine = create_engine(
            self.url,
            connect_args={"check_same_thread": False, "timeout": 10} if sqlite else {},
            pool_pre_ping=not sqlite,
        )
        if sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def describe(self) -> str:
        return redact_url(self.url)

    def upgrade(self) -> None:
        """Bring the schema to the newest migration (idempotent)."""
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session committed on success, rolled back on error."""
        with self._sessions() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def setting(self, key: str, default: str | None = None) -> str | None:
        with self.session() as session:
            row = session.get(ServiceSetting, key)
            return row.value if row else default

    def secret(self, key: str) -> str:
        """A random secret created on first use and shared by every worker."""
        try:
            with self.session() as session:
                row = session.get(ServiceSetting, key)
                if row is None:
                    row = ServiceSetting(key=key, value=secrets.token_urlsafe(48))
                    session.add(row)
                return row.value
        except IntegrityError:  # another worker created it first
            return str(self.setting(key))

    def dispose(self) -> None:
        self.engine.dispose()
