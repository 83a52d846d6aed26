"""Opening a repository from what the user typed (location, endpoint, key)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from strongroom.errors import UsageError
from strongroom.repository.keys import KeySource
from strongroom.repository.repository import Repository
from strongroom.storage.base import Storage
from strongroom.storage.factory import open_storage

if TYPE_CHECKING:  # pydantic models are slow to import; only `run`/`serve` need them
    from strongroom.config import Settings


@dataclass(frozen=True)
class RepositoryLocation:
    """The repository a command works on, and how to unlock it."""

    location: str | None
    s3_endpoint: str | None = None
    key_file: Path | None = None
    passphrase: str | None = None
    deadline: float | None = None  # seconds per storage operation (None: the default)

    def storage(self) -> Storage:
        if not self.location:
            raise UsageError("no repository given: use --repo PATH_OR_URL or set STRONGROOM_REPO")
        return open_storage(self.location, self.s3_endpoint, deadline=self.deadline)

    def open(self) -> Repository:
        return Repository.open(self.storage(), KeySource(self.key_file, self.passphrase))


def open_configured(settings: Settings, env: Mapping[str, str] | None = None) -> Repository:
    """Open the repository a configuration names (the key's passphrase from the environment)."""
    env = os.environ if env is None else env
    repo = settings.repository
    passphrase = env.get(repo.passphrase_env or "STRONGROOM_PASSPHRASE") or None
    key_file = Path(repo.key_file).expanduser() if repo.key_file else None
    deadline = None if env.get("STRONGROOM_STORAGE_DEADLINE") else repo.storage_deadline
    return RepositoryLocation(
        repo.location, repo.s3_endpoint, key_file, passphrase, deadline=deadline
    ).open()
