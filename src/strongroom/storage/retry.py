"""Retry transient storage failures with exponential backoff and full jitter, within an
overall deadline per operation.

Every operation (its attempts and the pauses between them) must finish within
``deadline`` seconds (``STRONGROOM_STORAGE_DEADLINE``, default 60): each attempt runs in
a helper thread that the caller stops waiting for when the deadline passes, so an
endpoint that accepts connections and never answers costs ``deadline`` seconds, not the
S3 library's read timeout times its retries times ours. A listing counts its deadline
from the last key it received, so a long listing that keeps making progress is not cut.
The S3 client's own retries are off (``storage.s3.make_client``): this class owns the
retry budget.
"""

from __future__ import annotations

import contextvars
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar, cast

from strongroom.errors import StorageError, StorageTransientError, UsageError
from strongroom.storage.base import Storage

logger = logging.getLogger("strongroom.storage")

T = TypeVar("T")

DEFAULT_ATTEMPTS = 5
DEFAULT_BASE_DELAY = 0.5
DEFAULT_DEADLINE = 60.0
DEADLINE_ENV = "STRONGROOM_STORAGE_DEADLINE"


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


def storage_deadline(default: float = DEFAULT_DEADLINE) -> float:
    """Seconds one storage operation may take, from ``$STRONGROOM_STORAGE_DEADLINE``."""
    return _env_number(DEADLINE_ENV, default, integer=False, minimum=0.1)


class _Attempt(Generic[T]):
    """One attempt, run in a daemon thread so that the caller can stop waiting for it."""

    def __init__(self, func: Callable[[Callable[[], None]], T], clock: Callable[[], float]):
        self._func = func
        self._clock = clock
        self._done = threading.Event()
        self._result: T | None = None
        self._error: BaseException | None = None
        self.progress = float("-inf")  # when func last reported progress (never yet)
        context = contextvars.copy_context()  # log fields (backup id, target) follow
        self._thread = threading.Thread(
            target=context.run, args=(self._run,), name="sr-storage-call", daemon=True
        )

    def _touch(self) -> None:
        self.progress = self._clock()

    def _run(self) -> None:
        try:
            self._result = self._func(self._touch)
        except BaseException as exc:  # handed to the waiting caller
            self._error = exc
        finally:
            self._done.set()

    def wait(self, last_progress: float, deadline: float) -> tuple[bool, T | None]:
        """Start, and wait until done (True) or ``deadline`` s pass without progress."""
        self._thread.start()
        while True:
            anchor = max(last_progress, self.progress)
            remaining = anchor + deadline - self._clock()
            if remaining <= 0 or self._done.wait(min(remaining, 1.0)):
                break
        if not self._done.is_set():
            return False, None
        if self._error is not None:
            raise self._error
        return True, self._result


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
        deadline: float | None = None,
        clock: Callable[[], float] = time.monotonic,
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
        if deadline is None:
            deadline = storage_deadline()
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        if deadline <= 0:
            raise ValueError("deadline must be positive")
        self.deadline = deadline
        self._clock = clock
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
        return self._call_with_progress(operation, key, lambda _touch: func())

    def _call_with_progress(
        self, operation: str, key: str, func: Callable[[Callable[[], None]], T]
    ) -> T:
        """Run ``func`` (which may call its argument to report progress) with retries,
        within the deadline counted from the start or the last progress."""
        progress = self._clock()
        for attempt in range(1, self.attempts + 1):
            call = _Attempt(func, self._clock)
            try:
                finished, result = call.wait(progress, self.deadline)
            except StorageTransientError as exc:
                progress = max(progress, call.progress)
                if attempt == self.attempts:
                    raise StorageError(
                        f"{operation} {key} failed after {self.attempts} attempts: {exc}"
                    ) from exc
                wait = self.delay(attempt - 1)
                if self._clock() + wait - progress >= self.deadline:
                    waited = self._clock() - progress
                    raise StorageError(
                        f"{operation} {key} failed for {waited:.1f} s ({attempt} attempts, "
                        f"deadline {self.deadline:g} s, {DEADLINE_ENV}): {exc}"
                    ) from exc
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
                continue
            if not finished:
                raise self._no_answer(operation, key, attempt, self._clock() - progress)
            return cast(T, result)
        raise AssertionError("unreachable")  # pragma: no cover

    def _no_answer(self, operation: str, key: str, attempt: int, waited: float) -> StorageError:
        tries = "1 attempt" if attempt == 1 else f"{attempt} attempts"
        return StorageError(
            f"{operation} {key} on {self.inner.describe()} did not answer within "
            f"{waited:.1f} s ({tries}; raise {DEADLINE_ENV}, now {self.deadline:g} s, "
            "to wait longer)"
        )

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

        def listing(touch: Callable[[], None]) -> list[str]:
            keys = []
            for key in self.inner.list(prefix):
                keys.append(key)
                touch()
            return keys

        yield from self._call_with_progress("list", f"{prefix}*", listing)
