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
import math
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar, cast

from strongroom.errors import ObjectNotFound, StorageError, StorageTransientError, UsageError
from strongroom.storage.base import Storage, list_with_times

logger = logging.getLogger("strongroom.storage")

T = TypeVar("T")

DEFAULT_ATTEMPTS = 5
DEFAULT_BASE_DELAY = 0.5
DEFAULT_DEADLINE = 60.0
DEADLINE_ENV = "STRONGROOM_STORAGE_DEADLINE"
MIN_DEADLINE = 0.1
MAX_DEADLINE = 86400.0  # a day: longer is no deadline at all ("inf", "1e9" are refused)


def _env_number(
    name: str, default: float, *, integer: bool, minimum: float, maximum: float
) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        value = math.nan
    if not minimum <= value <= maximum:  # also refuses nan
        kind = "a whole number" if integer else "a number"
        raise UsageError(f"{name} must be {kind} from {minimum:g} to {maximum:g}, got {raw!r}")
    return value


def storage_deadline(default: float = DEFAULT_DEADLINE) -> float:
    """Seconds one storage operation may take, from ``$STRONGROOM_STORAGE_DEADLINE``."""
    return _env_number(
        DEADLINE_ENV, default, integer=False, minimum=MIN_DEADLINE, maximum=MAX_DEADLINE
    )


def check_deadline(value: float, source: str) -> float:
    """``value`` if it is a usable deadline (from ``source``, named in the error)."""
    if not MIN_DEADLINE <= value <= MAX_DEADLINE:
        raise UsageError(
            f"{source} must be a number from {MIN_DEADLINE:g} to {MAX_DEADLINE:g}, got {value!r}"
        )
    return value


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
                    "STRONGROOM_STORAGE_ATTEMPTS",
                    DEFAULT_ATTEMPTS,
                    integer=True,
                    minimum=1,
                    maximum=1000,
                )
            )
        if base_delay is None:
            base_delay = _env_number(
                "STRONGROOM_STORAGE_BASE_DELAY",
                DEFAULT_BASE_DELAY,
                integer=False,
                minimum=0,
                maximum=60,
            )
        if deadline is None:
            deadline = storage_deadline()
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        if not 0 < deadline < math.inf:
            raise ValueError("deadline must be positive and finite")
        self.deadline = deadline
        self._clock = clock
        self.inner = inner
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 (jitter only)
        self._mutex = threading.Lock()
        self.unsettled_writes = 0  # writes that may still land late (see ``_write``)

    def delay(self, retry: int) -> float:
        """Full-jitter backoff before retry number ``retry`` (0 for the first retry)."""
        cap = min(self.max_delay, self.base_delay * 2**retry)
        return self._rng.uniform(0, cap)

    def _call(
        self, operation: str, key: str, func: Callable[[], T], unsure: list[str] | None = None
    ) -> T:
        return self._call_with_progress(operation, key, lambda _touch: func(), unsure)

    def _call_with_progress(
        self,
        operation: str,
        key: str,
        func: Callable[[Callable[[], None]], T],
        unsure: list[str] | None = None,
    ) -> T:
        """Run ``func`` (which may call its argument to report progress) with retries,
        within the deadline counted from the start or the last progress. Each attempt
        that failed or was abandoned (it may still take effect, late) is appended to
        ``unsure``."""
        progress = self._clock()
        for attempt in range(1, self.attempts + 1):
            call = _Attempt(func, self._clock)
            try:
                finished, result = call.wait(progress, self.deadline)
            except StorageTransientError as exc:
                if unsure is not None:
                    unsure.append(str(exc))
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
                if unsure is not None:
                    unsure.append("no answer")
                raise self._no_answer(operation, key, attempt, self._clock() - progress)
            return cast(T, result)
        raise AssertionError("unreachable")  # pragma: no cover

    def _write(self, operation: str, key: str, func: Callable[[], T], *, late_harms: bool) -> T:
        """A write with retries. An attempt that failed or was abandoned may still land
        later (the server had the request): when that could undo what came after (a
        failed put or create, any delete), ``unsettled_writes`` counts it, and a lock
        released after it is left to expire instead of removed (``repository.locks``)."""
        unsure: list[str] = []
        try:
            result = self._call(operation, key, func, unsure)
        except StorageError:
            if unsure:
                self._unsettled(operation, key)
            raise
        if unsure and late_harms:
            self._unsettled(operation, key)
        return result

    def _unsettled(self, operation: str, key: str) -> None:
        with self._mutex:
            self.unsettled_writes += 1
        logger.debug("storage %s %s may still take effect late", operation, key)

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
        """``put`` with retries (a late copy of an attempt writes the same bytes)."""
        self._write("put", key, lambda: self.inner.put(key, data), late_harms=False)

    def create(self, key: str, data: bytes) -> bool:
        """``create`` with retries. When an attempt failed or got no answer and a retry
        then finds the object, the object is read: if it holds ``data`` the lost attempt
        had landed, and this call created it (True), not another process."""
        unsure: list[str] = []

        def attempt() -> bool:
            if self.inner.create(key, data):
                return True
            try:
                return bool(unsure) and self.inner.get(key) == data
            except ObjectNotFound:
                return False  # removed meanwhile: whoever created it, it is gone

        try:
            return self._call("create", key, attempt, unsure)
        except StorageError:
            if unsure:
                self._unsettled("create", key)
            raise

    def get(self, key: str) -> bytes:
        """``get`` with retries."""
        return self._call("get", key, lambda: self.inner.get(key))

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """``get_range`` with retries (like ``get``)."""
        return self._call("get_range", key, lambda: self.inner.get_range(key, offset, length))

    def exists(self, key: str) -> bool:
        """``exists`` with retries."""
        return self._call("exists", key, lambda: self.inner.exists(key))

    def size(self, key: str) -> int:
        """``size`` with retries."""
        return self._call("size", key, lambda: self.inner.size(key))

    def delete(self, key: str) -> None:
        """``delete`` with retries."""
        self._write("delete", key, lambda: self.inner.delete(key), late_harms=True)

    def list(self, prefix: str) -> Iterator[str]:
        """Materialise the whole listing inside the retry, then yield it."""

        def listing(touch: Callable[[], None]) -> list[str]:
            keys = []
            for key in self.inner.list(prefix):
                keys.append(key)
                touch()
            return keys

        yield from self._call_with_progress("list", f"{prefix}*", listing)

    def list_with_times(self, prefix: str) -> Iterator[tuple[str, float | None]]:
        """``list_with_times`` of the wrapped storage (``None`` times when it has none),
        the whole listing materialised inside the retry."""

        def listing(touch: Callable[[], None]) -> list[tuple[str, float | None]]:
            found = []
            for item in list_with_times(self.inner, prefix):
                found.append(item)
                touch()
            return found

        yield from self._call_with_progress("list", f"{prefix}*", listing)
