"""Opening a repository from what the user gave (location, endpoint, key).

Which location, endpoint, key file and passphrase a command uses is decided in
``services/settings_sources.py`` (flags, ``STRONGROOM_*``, the configuration file, the
scripts' variables)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from strongroom.errors import UsageError
from strongroom.repository.keys import KeySource
from strongroom.repository.repository import Repository
from strongroom.storage.base import Storage
from strongroom.storage.factory import open_storage

NO_REPOSITORY = (
    "no repository given: use --repo PATH_OR_URL, set STRONGROOM_REPO (or BACKUP_DIR / "
    "BACKUP_S3_BUCKET), or write [repository] location in strongroom.toml"
)


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
            raise UsageError(NO_REPOSITORY)
        return open_storage(self.location, self.s3_endpoint, deadline=self.deadline)

    def open(self) -> Repository:
        return Repository.open(self.storage(), KeySource(self.key_file, self.passphrase))
