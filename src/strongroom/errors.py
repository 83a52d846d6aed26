"""One exception tree. Every error carries a stable exit code and a one-line message.

The CLI prints ``error: <message>`` and exits with ``exit_code``; messages never contain
secrets (callers pass URLs through :func:`strongroom.redaction.redact_url` first).
"""

from __future__ import annotations


class StrongroomError(Exception):
    """Base of every error strongroom reports to a user."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


# --- usage and configuration (exit 2) -------------------------------------------------
class UsageError(StrongroomError):
    """The command line or environment does not say what is needed."""

    exit_code = 2


class InvalidName(UsageError):
    """A target name or tag breaks the rules of ``repository/names.py``."""


# --- repository (exit 3) ---------------------------------------------------------------
class RepositoryError(StrongroomError):
    exit_code = 3


class RepositoryNotInitialised(RepositoryError):
    pass


class RepositoryAlreadyInitialised(RepositoryError):
    pass


class BackupNotFound(RepositoryError):
    pass


class UnsupportedFormat(RepositoryError):
    pass


class RepositoryBusy(RepositoryError):
    """Another process holds a repository lock this operation must wait for."""


class LockLost(RepositoryError):
    """This process's repository lock expired or was removed while it worked."""


class RepositoryDamaged(RepositoryError):
    """The repository's own objects (its config) are damaged: it cannot be opened."""


class BackupForgotten(RepositoryError):
    """The backup was deleted (forget, prune) while this command was reading it."""


# --- keys (exit 4) ---------------------------------------------------------------------
class KeyError_(StrongroomError):
    """A key is missing, unreadable, or does not open this repository."""

    exit_code = 4


class WrongKey(KeyError_):
    pass


class KeyMissing(KeyError_):
    pass


# --- database side (exit 5) ------------------------------------------------------------
class DatabaseError(StrongroomError):
    exit_code = 5


class DatabaseUnreachable(DatabaseError):
    pass


class DatabaseAuthFailed(DatabaseError):
    pass


class RowSecurityBlocked(DatabaseError):
    """Row-level security would hide rows of a table from the role counting them."""


class ToolMissing(DatabaseError):
    pass


class DumpFailed(DatabaseError):
    pass


class RestoreFailed(DatabaseError):
    pass


class RecoveryEndedEarly(RestoreFailed):
    """PostgreSQL ended point-in-time recovery before the target was reached (the archived
    WAL ends before it, or a segment on the way is missing): never reported as success."""


class SwapInterrupted(RestoreFailed):
    """A swap stopped half-way and could not be settled on the spot: whether the target
    now holds the restored or the original database is decided by the next command that
    settles its journal (or ``strongroom recover``)."""


class TargetNotEmpty(DatabaseError):
    pass


class UnsupportedDatabaseUrl(DatabaseError):
    pass


# --- storage (exit 6) ------------------------------------------------------------------
class StorageError(StrongroomError):
    exit_code = 6


class StorageTransientError(StorageError):
    """A failure worth retrying (network, throttling, 5xx)."""


class StorageFull(StorageError):
    pass


class ObjectNotFound(StorageError):
    pass


# --- integrity (exit 7) ----------------------------------------------------------------
class IntegrityError(StrongroomError):
    """Stored data does not match what was recorded: a damaged chunk, a wrong checksum,
    or restored row counts that differ from the manifest."""

    exit_code = 7


class ChunkDamaged(IntegrityError):
    pass


class ChunkMissing(IntegrityError):
    pass


class VerificationMismatch(IntegrityError):
    pass


class ManifestDamaged(IntegrityError, RepositoryError):
    """A backup's manifest cannot be read: not JSON, fields missing or of the wrong kind,
    a chunk id that is not one, or a private section that does not open with a key that
    opens the repository. ``backup_id`` names the backup (``None`` when unknown). Exit 7
    (integrity); it is a ``RepositoryError`` too, for callers that stop at any unreadable
    repository object (prune)."""

    def __init__(self, message: str, backup_id: str | None = None) -> None:
        super().__init__(message)
        self.backup_id = backup_id


# --- interrupted (exit 130) ------------------------------------------------------------
class Interrupted(StrongroomError):
    exit_code = 130
