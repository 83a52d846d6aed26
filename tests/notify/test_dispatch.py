from __future__ import annotations

import logging
import threading
import time

import pytest

from strongroom.notify.base import Channel, NotificationError
from strongroom.notify.dispatch import DeliveryResult, Notifier
from strongroom.notify.events import Event
from strongroom.notify.slack import SlackChannel
from strongroom.notify.webhook import WebhookChannel
from tests.notify.conftest import Receiver

SECRET_PATH = "/services/T1/B1/permanentSECRETpath"


class Scripted:
    """A channel whose sends fail with the given exceptions, then succeed."""

    def __init__(self, name: str, *failures: Exception) -> None:
        self.name = name
        self.failures = list(failures)
        self.calls = 0

    def send(self, event: Event) -> None:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)


def test_permanent_http_failure_never_raises(
    receiver: Receiver, event: Event, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.fail_first = 10**6  # always 500
    sleeps: list[float] = []
    notifier = Notifier([SlackChannel(receiver.url + SECRET_PATH)], sleep=sleeps.append)
    with caplog.at_level(logging.WARNING, logger="strongroom.notify"):
        [result] = notifier.notify(event)
    assert result == DeliveryResult("slack", ok=False, attempts=3, error=result.error)
    assert result.error and "HTTP 500" in result.error
    assert len(receiver.requests) == 3 and sleeps == [1.0, 2.0]
    assert "permanentSECRETpath" not in caplog.text
    assert "permanentSECRETpath" not in (result.error or "")
    assert [r.levelname for r in caplog.records] == ["WARNING"] * 3


def test_client_error_is_not_retried(receiver: Receiver, event: Event) -> None:
    receiver.fail_first, receiver.fail_status = 10**6, 403
    [result] = Notifier([WebhookChannel(receiver.url, "s")], sleep=lambda _: None).notify(event)
    assert not result.ok and result.attempts == 1 and len(receiver.requests) == 1


def test_one_failing_channel_does_not_stop_others(receiver: Receiver, event: Event) -> None:
    broken = Scripted("broken", *(RuntimeError(f"bug {i}") for i in range(5)))
    channels: list[Channel] = [broken, WebhookChannel(receiver.url, None, name="hook")]
    results = Notifier(channels, sleep=lambda _: None).notify(event)
    assert [r.channel for r in results] == ["broken", "hook"]
    assert results[0] == DeliveryResult("broken", False, 3, "RuntimeError: bug 2")
    assert results[1] == DeliveryResult("hook", True, 1)
    assert len(receiver.requests) == 1


def test_backoff_is_exponential_and_capped(event: Event) -> None:
    failures = [NotificationError("down") for _ in range(5)]
    sleeps: list[float] = []
    notifier = Notifier(
        [Scripted("x", *failures)],
        attempts=6,
        base_delay=1.0,
        max_delay=5.0,
        sleep=sleeps.append,
    )
    [result] = notifier.notify(event)
    assert result.ok and result.attempts == 6
    assert sleeps == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_errors_are_redacted(event: Event) -> None:
    ch = Scripted("x", ValueError("cannot reach postgres://u:topsecret@db/x"))
    [result] = Notifier([ch], attempts=1).notify(event)
    assert result.error == "ValueError: cannot reach postgres://u:***@db/x"


def test_channels_are_sent_concurrently(event: Event) -> None:
    barrier = threading.Barrier(2, timeout=5)

    class Waits:
        def __init__(self, name: str) -> None:
            self.name = name

        def send(self, event: Event) -> None:
            barrier.wait()  # both must be in send() at the same time

    start = time.monotonic()
    results = Notifier([Waits("a"), Waits("b")], attempts=1).notify(event)
    assert all(r.ok for r in results) and time.monotonic() - start < 5


def test_broken_sleep_and_empty(event: Event) -> None:
    def bad_sleep(_: float) -> None:
        raise OSError("no sleep")

    [result] = Notifier([Scripted("x", NotificationError("down"))], sleep=bad_sleep).notify(event)
    assert result.ok and result.attempts == 2
    assert Notifier([]).notify(event) == []
    with pytest.raises(ValueError):
        Notifier([], attempts=0)
