"""RetryingStorage: retries transient failures with capped, jittered backoff; then gives up."""

from __future__ import annotations

import logging
import random
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from strongroom.errors import (
    ObjectNotFound,
    StorageError,
    StorageFull,
    StorageTransientError,
    UsageError,
)
from strongroom.storage.memory import MemoryStorage
from strongroom.storage.retry import RetryingStorage
from strongroom.storage.s3 import S3Storage, make_client


class FlakyStorage(MemoryStorage):
    """Raises ``StorageTransientError`` on the first ``failures`` calls, then works."""

    def __init__(self, failures: int, error: type[StorageError] = StorageTransientError) -> None:
        super().__init__("flaky")
        self.failures = failures
        self.error = error
        self.calls = 0

    def _maybe_fail(self) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error(f"simulated failure #{self.calls}")

    def put(self, key: str, data: bytes) -> None:
        self._maybe_fail()
        super().put(key, data)

    def get(self, key: str) -> bytes:
        self._maybe_fail()
        return super().get(key)

    def list(self, prefix: str) -> Iterator[str]:
        self._maybe_fail()
        return super().list(prefix)


class CeilingRandom(random.Random):
    """Jitter that always picks the top of the range, so the backoff ceiling is visible."""

    def uniform(self, a: float, b: float) -> float:
        return b


class Sleeps(list[float]):
    """A recording fake for ``time.sleep``."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def test_retries_then_succeeds(caplog: pytest.LogCaptureFixture) -> None:
    inner, sleeps = FlakyStorage(failures=2), Sleeps()
    storage = RetryingStorage(inner, attempts=5, base_delay=0.5, sleep=sleeps)
    with caplog.at_level(logging.WARNING, logger="strongroom.storage"):
        storage.put("config", b"data")
    assert inner.calls == 3
    assert len(sleeps) == 2
    assert storage.get("config") == b"data"
    warnings = [r for r in caplog.records if r.name == "strongroom.storage"]
    assert len(warnings) == 2
    assert all(r.levelno == logging.WARNING for r in warnings)
    assert "put config" in warnings[0].getMessage()
    assert "attempt 1 of 5" in warnings[0].getMessage()


def test_gives_up_with_a_plain_storage_error_naming_operation_and_attempts() -> None:
    inner, sleeps = FlakyStorage(failures=100), Sleeps()
    storage = RetryingStorage(inner, attempts=3, base_delay=0.01, sleep=sleeps)
    with pytest.raises(StorageError) as info:
        storage.get("backups/b1.json")
    assert type(info.value) is StorageError  # no longer "transient": the caller should stop
    assert str(info.value) == ("get backups/b1.json failed after 3 attempts: simulated failure #3")
    assert inner.calls == 3
    assert len(sleeps) == 2  # no pointless sleep after the last attempt


@pytest.mark.parametrize("error", [ObjectNotFound, StorageFull, StorageError])
def test_non_transient_errors_are_not_retried(error: type[StorageError]) -> None:
    inner, sleeps = FlakyStorage(failures=1, error=error), Sleeps()
    storage = RetryingStorage(inner, attempts=5, base_delay=0.01, sleep=sleeps)
    with pytest.raises(error, match="simulated failure #1"):
        storage.put("config", b"x")
    assert inner.calls == 1
    assert sleeps == []


def test_missing_object_passes_through_unchanged() -> None:
    sleeps = Sleeps()
    storage = RetryingStorage(MemoryStorage(), attempts=5, base_delay=0.01, sleep=sleeps)
    with pytest.raises(ObjectNotFound):
        storage.get("nope")
    assert storage.exists("nope") is False
    assert sleeps == []


def test_backoff_grows_exponentially_and_is_capped() -> None:
    inner, sleeps = FlakyStorage(failures=7), Sleeps()
    storage = RetryingStorage(
        inner, attempts=8, base_delay=0.5, max_delay=8.0, sleep=sleeps, rng=CeilingRandom()
    )
    storage.put("config", b"x")
    assert sleeps == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_jitter_stays_within_the_ceiling() -> None:
    storage = RetryingStorage(MemoryStorage(), attempts=3, base_delay=0.5, max_delay=3.0)
    for retry in range(6):
        ceiling = min(3.0, 0.5 * 2**retry)
        delays = [storage.delay(retry) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling / 2  # full jitter spreads over the range


def test_list_is_retried_as_a_whole() -> None:
    inner, sleeps = FlakyStorage(failures=0), Sleeps()
    inner.put("chunks/a", b"1")
    inner.put("chunks/b", b"2")
    inner.failures, inner.calls = 2, 0
    storage = RetryingStorage(inner, attempts=3, base_delay=0.01, sleep=sleeps)
    assert sorted(storage.list("chunks/")) == ["chunks/a", "chunks/b"]
    assert len(sleeps) == 2


def test_defaults_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRONGROOM_STORAGE_ATTEMPTS", "2")
    monkeypatch.setenv("STRONGROOM_STORAGE_BASE_DELAY", "0.25")
    storage = RetryingStorage(FlakyStorage(failures=100), sleep=Sleeps())
    assert (storage.attempts, storage.base_delay) == (2, 0.25)
    with pytest.raises(StorageError, match="failed after 2 attempts"):
        storage.put("config", b"x")

    monkeypatch.delenv("STRONGROOM_STORAGE_ATTEMPTS")
    monkeypatch.delenv("STRONGROOM_STORAGE_BASE_DELAY")
    storage = RetryingStorage(MemoryStorage())
    assert (storage.attempts, storage.base_delay) == (5, 0.5)

    monkeypatch.setenv("STRONGROOM_STORAGE_ATTEMPTS", "zero")
    with pytest.raises(UsageError, match="STRONGROOM_STORAGE_ATTEMPTS"):
        RetryingStorage(MemoryStorage())


def test_unreachable_s3_endpoint_fails_fast_with_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDUNREACHABLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret-key-123")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    # A bound but never-listening socket: connections are refused, and no one else can
    # take the port while the test runs.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as hole:
        hole.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{hole.getsockname()[1]}"
        client = make_client(endpoint, max_attempts=1, connect_timeout=1, read_timeout=2)
        storage = RetryingStorage(
            S3Storage("bucket", "prefix", endpoint_url=endpoint, client=client),
            attempts=2,
            base_delay=0.01,
        )
        started = time.monotonic()
        with pytest.raises(StorageError) as info:
            storage.put("config", b"x")
        elapsed = time.monotonic() - started

    assert type(info.value) is StorageError
    message = str(info.value)
    assert message.startswith("put config failed after 2 attempts: cannot connect to S3 endpoint")
    assert endpoint in message
    assert "very-secret-key-123" not in message
    assert "\n" not in message
    assert elapsed < 5


class HangingStorage(MemoryStorage):
    """``get`` never returns until released; ``list`` yields a key every ``pace`` s."""

    def __init__(self, pace: float = 0.0) -> None:
        super().__init__("hanging")
        self.release = threading.Event()
        self.pace = pace

    def get(self, key: str) -> bytes:
        self.release.wait(30)
        return super().get(key)

    def list(self, prefix: str) -> Iterator[str]:
        for key in sorted(super().list(prefix)):
            time.sleep(self.pace)
            yield key


def test_an_operation_that_never_answers_fails_at_its_deadline() -> None:
    inner = HangingStorage()
    inner.put("config", b"x")
    storage = RetryingStorage(inner, attempts=5, base_delay=0.01, deadline=0.5)
    started = time.monotonic()
    try:
        with pytest.raises(StorageError) as info:
            storage.get("config")
    finally:
        inner.release.set()
    assert time.monotonic() - started < 2
    assert type(info.value) is StorageError
    assert str(info.value).startswith("get config on memory://hanging did not answer within 0.5 s")
    assert "STRONGROOM_STORAGE_DEADLINE" in str(info.value)


def test_retries_stop_at_the_deadline_not_after_all_attempts() -> None:
    clock = [0.0]
    sleeps = Sleeps()

    def sleep(seconds: float) -> None:
        sleeps(seconds)
        clock[0] += seconds

    inner = FlakyStorage(failures=100)
    storage = RetryingStorage(
        inner,
        attempts=10,
        base_delay=4.0,
        sleep=sleep,
        rng=CeilingRandom(),
        deadline=10.0,
        clock=lambda: clock[0],
    )
    with pytest.raises(StorageError) as info:
        storage.get("config")
    assert sleeps == [4.0]  # a second pause (8 s) would end past the 10 s deadline
    assert inner.calls == 2
    assert str(info.value).startswith("get config failed for 4.0 s (2 attempts, deadline 10 s")


def test_a_listing_that_makes_progress_may_take_longer_than_the_deadline() -> None:
    inner = HangingStorage(pace=0.1)
    for number in range(8):
        inner.put(f"chunks/{number}", b"x")
    storage = RetryingStorage(inner, attempts=1, deadline=0.4)
    started = time.monotonic()
    assert len(list(storage.list("chunks/"))) == 8
    assert time.monotonic() - started > 0.4  # longer than the deadline, yet not cut


def test_the_deadline_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRONGROOM_STORAGE_DEADLINE", "2.5")
    assert RetryingStorage(MemoryStorage()).deadline == 2.5
    monkeypatch.delenv("STRONGROOM_STORAGE_DEADLINE")
    assert RetryingStorage(MemoryStorage()).deadline == 60.0
    monkeypatch.setenv("STRONGROOM_STORAGE_DEADLINE", "0")
    with pytest.raises(UsageError, match="STRONGROOM_STORAGE_DEADLINE"):
        RetryingStorage(MemoryStorage())
