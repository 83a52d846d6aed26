"""The storage protocol: a flat key -> bytes object store. Storage knows nothing of databases.

Keys are ``/``-separated relative paths such as ``config`` or ``chunks/ab/ab12...``.
Every backend must make ``put`` atomic: a reader sees either the whole object or nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from strongroom.errors import StorageError


class Storage(Protocol):
    """A place where the repository's objects live (local folder, S3 bucket, memory)."""

    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` atomically, replacing any existing object."""

    def create(self, key: str, data: bytes) -> bool:
        """Store ``data`` only if no object exists under ``key`` (atomically); return
        whether this call created it. Used for claims that exactly one process may win."""

    def get(self, key: str) -> bytes:
        """Return the object's bytes; raise ``ObjectNotFound`` if there is none."""

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """Return exactly ``length`` bytes of the object starting at byte ``offset`` (a
        pack's blob: one ranged read). Raises ``ObjectNotFound`` if there is no object,
        ``StorageError`` naming the key when the object ends before ``offset + length``
        (a short read), ``ValueError`` for a negative offset or length."""

    def exists(self, key: str) -> bool:
        """Whether an object is stored under ``key``."""

    def list(self, prefix: str) -> Iterator[str]:
        """Yield the keys that start with ``prefix`` (any order, no temp objects)."""

    def delete(self, key: str) -> None:
        """Remove the object; removing a missing object is not an error."""

    def size(self, key: str) -> int:
        """Size in bytes of a stored object; raise ``ObjectNotFound`` if there is none."""

    def sync(self) -> None:
        """Make every object put so far durable (a barrier before a commit point)."""

    def describe(self) -> str:
        """Where this storage points, safe to show (no credentials)."""


@runtime_checkable
class LeavesPartialFiles(Protocol):
    """A storage whose ``put`` writes a temp file first (local directories): a process
    killed mid-write leaves it behind. ``prune`` sweeps them (see ``services.prune``)."""

    def sweep_partial_files(self, older_than: float, *, remove: bool = True) -> int:
        """Remove (or with ``remove=False`` only count) the temp files not modified for
        ``older_than`` seconds; return how many."""


@runtime_checkable
class TracksUnsettledWrites(Protocol):
    """A storage whose writes can take effect after the call gave up on them (a request
    the server had, whose answer never came: ``RetryingStorage``). ``unsettled_writes``
    counts such writes that could undo later ones (a delete; a put or create that failed)."""

    unsettled_writes: int


@runtime_checkable
class ListsWithTimes(Protocol):
    """A storage that can give each key's last-modified time with its listing at no extra
    request (a local folder's ``stat``, S3's ListObjectsV2 ``LastModified``). The WAL
    status reads segment times this way (``services.wal_status``)."""

    def list_with_times(self, prefix: str) -> Iterator[tuple[str, float | None]]:
        """Yield ``(key, modified)`` for the keys starting with ``prefix`` (any order, no
        temp objects); ``modified`` is POSIX seconds (UTC), ``None`` when unknown."""


def check_range(offset: int, length: int) -> None:
    """Raise ``ValueError`` unless ``offset`` and ``length`` are usable for ``get_range``."""
    if offset < 0 or length < 0:
        raise ValueError(f"a range needs offset >= 0 and length >= 0, got {offset}, {length}")


class ShortRead(StorageError):
    """A ranged read found fewer bytes than asked: the object is shorter than
    ``offset + length`` (truncated, or not what the index says). Not transient."""


def short_read(key: str, where: str, offset: int, length: int, got: int) -> ShortRead:
    """The error of a ranged read that found fewer bytes than asked, naming the key."""
    return ShortRead(
        f"short read of {key} in {where}: asked for {length} bytes at offset {offset}, "
        f"got {got} (the object is shorter than expected)"
    )


def list_with_times(storage: Storage, prefix: str) -> Iterator[tuple[str, float | None]]:
    """``(key, modified)`` for every key under ``prefix``: the times when ``storage``
    lists them (``ListsWithTimes``), else ``None`` for each (a plain ``list``)."""
    if isinstance(storage, ListsWithTimes):
        yield from storage.list_with_times(prefix)
        return
    for key in storage.list(prefix):
        yield key, None
