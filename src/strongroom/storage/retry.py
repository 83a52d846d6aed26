"""Retry transient storage failures with exponential backoff and full jitter."""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from strongroom.errors import StorageError, StorageTransientError, UsageError
from strongroom.storage.base import Storage

logger = logging.getLogger("strongroom.storage")

T = TypeVar("T")

DEFAULT_ATTEMPTS = 5
DEFAULT_BASE_DELAY = 0.5


def _env_number(name: str, default: float, *, integer: bool, minimum: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        kind = "a whole number" if integer else "a number"
        raise UsageError(f"{name} must be {kind} >= {minimum:g}, got {raw!r}")
    return value


class RetryingStorage:
    """Wraps a Storage; retries ``StorageTransientError`` then gives up with ``StorageError``."""

    def __init__(
        self,
        inner: Storage,
        attempts: int | None = None,
        base_delay: float | None = None,
        max_delay: float = 8.0,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if attempts is None:
            attempts = int(
                _env_number(
                    "STRONGROOM_STORAGE_ATTEMPTS", DEFAULT_ATTEMPTS, integer=True, minimum=1
                )
            )
        if base_delay is None:
            base_delay = _env_number(
                "STRONGROOM_STORAGE_BASE_DELAY", DEFAULT_BASE_DELAY, integer=False, minimum=0
            )
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.inner = inner
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 (jitter only)

    def delay(self, retry: int) -> float:
        """Full-jitter backoff before retry number ``retry`` (0 for the first retry)."""
        cap = min(self.max_delay, self.base_delay * 2**retry)
        return self._rng.uniform(0, cap)

    def _call(self, operation: str, key: str, func: Callable[[], T]) -> T:
        for attempt in range(1, self.attempts + 1):
            try:
                return func()
            except StorageTransientError as exc:
                if attempt == self.attempts:
                    raise StorageError(
                        f"{operation} {key} failed after {self.attempts} attempts: {exc}"
                    ) from exc
                wait = self.delay(attempt - 1)
                logger.warning(
                    "storage %s %s failed (attempt %d of %d), retrying in %.2fs: %s",
                    operation,
                    key,
                    attempt,
                    self.attempts,
                    wait,
                    exc,
                )
                self._sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def describe(self) -> str:
        """The wrapped storage's description."""
        return self.inner.describe()

    def sync(self) -> None:
        self.inner.sync()

    def put(self, key: str, data: bytes) -> None:
        """``put`` with retries."""
        self._call("put", key, lambda: self.inner.put(key, data))

    def create(self, key: str, data: bytes) -> bool:
        """``create`` with retries (a retried create that had landed reports False)."""
        return self._call("create", key, lambda: self.inner.create(key, data))

    def get(self, key: str) -> bytes:
        """``get`` with retries."""
        return self._call("get", key, lambda: self.inner.get(key))

    def exists(self, key: str) -> bool:
        """``exists`` with retries."""
        return self._call("exists", key, lambda: self.inner.exists(key))

    def size(self, key: str) -> int:
        """``size`` with retries."""
        return self._call("size", key, lambda: self.inner.size(key))

    def delete(self, key: str) -> None:
        """``delete`` with retries."""
        self._call("delete", key, lambda: self.inner.delete(key))

    def list(self, prefix: str) -> Iterator[str]:
        """Materialise the whole listing inside the retry, then yield it."""
        keys = self._call("list", f"{prefix}*", lambda: [*self.inner.list(prefix)])
        yield from keys
