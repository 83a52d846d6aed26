"""Thread-safe in-memory storage, for unit tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from strongroom.errors import ObjectNotFound
from strongroom.storage.base import check_range, short_read
from strongroom.storage.local import validate_key


class MemoryStorage:
    """A dict of key -> bytes guarded by a lock.

    Data is copied to immutable ``bytes`` on the way in (a caller's ``bytearray`` cannot
    change a stored object), so handing out the stored ``bytes`` is safe.
    """

    def __init__(self, name: str | None = None) -> None:
        self.name = name if name is not None else f"{id(self):x}"
        self._objects: dict[str, bytes] = {}
        self._times: dict[str, float] = {}
        self._lock = threading.Lock()

    def describe(self) -> str:
        """``memory://<name>``."""
        return f"memory://{self.name}"

    def sync(self) -> None:
        """Nothing to flush in memory."""

    def put(self, key: str, data: bytes) -> None:
        """Store a copy of ``data``."""
        validate_key(key)
        copy = bytes(data)
        with self._lock:
            self._objects[key] = copy
            self._times[key] = time.time()

    def create(self, key: str, data: bytes) -> bool:
        """Store a copy of ``data`` unless ``key`` exists."""
        validate_key(key)
        with self._lock:
            if key in self._objects:
                return False
            self._objects[key] = bytes(data)
            self._times[key] = time.time()
            return True

    def get(self, key: str) -> bytes:
        """Return the stored (immutable) bytes."""
        with self._lock:
            data = self._objects.get(key)
        if data is None:
            raise ObjectNotFound(f"object {key} not found in {self.describe()}")
        return data

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """``length`` bytes of the stored object from ``offset``."""
        check_range(offset, length)
        data = self.get(key)
        part = data[offset : offset + length]
        if len(part) != length:
            raise short_read(key, self.describe(), offset, length, len(part))
        return part

    def exists(self, key: str) -> bool:
        """Whether ``key`` is stored."""
        with self._lock:
            return key in self._objects

    def size(self, key: str) -> int:
        """Length of the stored bytes."""
        with self._lock:
            data = self._objects.get(key)
        if data is None:
            raise ObjectNotFound(f"object {key} not found in {self.describe()}")
        return len(data)

    def delete(self, key: str) -> None:
        """Remove ``key`` if present."""
        with self._lock:
            self._objects.pop(key, None)
            self._times.pop(key, None)

    def list(self, prefix: str) -> Iterator[str]:
        """Yield a snapshot of the keys starting with ``prefix``."""
        with self._lock:
            keys = [key for key in self._objects if key.startswith(prefix)]
        yield from keys

    def list_with_times(self, prefix: str) -> Iterator[tuple[str, float | None]]:
        """Yield ``(key, time it was stored)`` for the keys starting with ``prefix``."""
        with self._lock:
            found = [(key, self._times.get(key)) for key in self._objects if key.startswith(prefix)]
        yield from found
