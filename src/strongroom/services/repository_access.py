"""Opening a repository from what the user gave (location, endpoint, key).

Which location, endpoint, key file and passphrase a command uses is decided in
``services/settings_sources.py`` (flags, ``STRONGROOM_*``, the configuration file, the
scripts' variables)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from strongroom.errors import UsageError

if TYPE_CHECKING:  # loaded when a repository is opened (wal-push's start-up stays short)
    from strongroom.repository.repository import Repository
    from strongroom.storage.base import Storage

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
        from strongroom.storage.factory import open_storage

        return open_storage(self.location, self.s3_endpoint, deadline=self.deadline)

    def open(self) -> Repository:
        from strongroom.repository.keys import KeySource
        from strongroom.repository.repository import Repository

        return Repository.open(self.storage(), KeySource(self.key_file, self.passphrase))


@dataclass(frozen=True)
class RepositoryFields:
    """``config.RepositorySettings``'s fields, checked by ``plain_repository`` instead of
    pydantic (``Sources.wal_location``: wal-push imports no pydantic)."""

    location: str
    s3_endpoint: str | None = None
    key_file: str | None = None
    passphrase_env: str | None = None
    storage_deadline: float | None = None


def plain_repository(table: Mapping[str, Any]) -> bool:
    """Whether ``table`` holds only values ``config.RepositorySettings`` accepts as they are
    (anything else goes through its validation and error lines)."""
    if not set(table) <= {f.name for f in fields(RepositoryFields)}:
        return False
    if not isinstance(table.get("location"), str) or not table["location"]:
        return False
    for name in ("s3_endpoint", "key_file", "passphrase_env"):
        if not isinstance(table.get(name), str | None):
            return False
    deadline = table.get("storage_deadline")
    if deadline is None:
        return True
    return isinstance(deadline, int | float) and not isinstance(deadline, bool) and deadline > 0
