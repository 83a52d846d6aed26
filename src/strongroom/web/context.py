"""What every request handler needs: settings, the repository, the service database."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

from fastapi import Request

from strongroom.config import Settings
from strongroom.errors import StrongroomError, UsageError
from strongroom.notify.dispatch import Notifier
from strongroom.repository.repository import Repository
from strongroom.services.notifications import build_notifier
from strongroom.services.settings_sources import open_configured
from strongroom.web.db import ServiceDatabase
from strongroom.web.index import ManifestIndex
from strongroom.web.jobs import JobRunner
from strongroom.web.ratelimit import LoginLimiter

CRON_SECRET_ENV = "CRON_SECRET"

log = logging.getLogger("strongroom.web")


@dataclass
class WebContext:
    """One per app; shared by all request threads."""

    settings: Settings
    env: Mapping[str, str]
    db: ServiceDatabase
    jobs: JobRunner
    index: ManifestIndex
    limiter: LoginLimiter = field(default_factory=LoginLimiter)
    secure_cookies: bool = False
    _repo: Repository | None = None
    _repo_lock: threading.Lock = field(default_factory=threading.Lock)
    _notifier: Notifier | None = None
    _notifier_built: bool = False

    def repository(self) -> Repository:
        """The configured repository, opened once (the key is unlocked once)."""
        with self._repo_lock:
            if self._repo is None:
                self._repo = open_configured(self.settings, self.env)
            return self._repo

    def notifier(self) -> Notifier | None:
        """The configured notification channels (the scheduler's), built once; ``None``
        when there are none, or when they cannot be built (logged: e.g. a secret's
        environment variable is not set)."""
        with self._repo_lock:
            if not self._notifier_built:
                self._notifier_built = True
                try:
                    self._notifier = build_notifier(self.settings.notifications, self.env)
                except StrongroomError as exc:
                    log.error("notifications are off: %s", exc.message)
            return self._notifier

    def fresh_repository(self) -> Repository:
        """The repository, with the manifest index synced if it is stale."""
        repo = self.repository()
        self.index.fresh(repo)
        return repo

    @property
    def cron_secret(self) -> str | None:
        return self.env.get(CRON_SECRET_ENV) or None

    def target_names(self) -> list[str]:
        """Configured targets, then any other target that has backups."""
        configured = sorted(self.settings.targets)
        return configured + [t for t in self.index.targets() if t not in configured]

    def database_url(self, target: str) -> str:
        """The configured database URL of a target (never shown: it may hold a password)."""
        settings = self.settings.targets.get(target)
        if settings is None:
            raise UsageError(f"{target!r} is not a configured target; give a database URL")
        return settings.database_url(self.env)


def context_of(request: Request) -> WebContext:
    ctx: WebContext = request.app.state.ctx
    return ctx


def client_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"
