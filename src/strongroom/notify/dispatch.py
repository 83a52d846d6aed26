"""Send one event to every channel, retrying each; never raise to the caller.

A broken notification channel must never fail (or delay without bound) a backup, so
:meth:`Notifier.notify` catches every ``Exception`` from a channel, logs it on the
``strongroom.notify`` logger at WARNING with secrets removed, and reports it in the result.
Channels are tried concurrently, so a slow SMTP server does not hold back a Slack alert.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from strongroom.notify.base import Channel, NotificationError, scrub
from strongroom.notify.events import Event

logger = logging.getLogger("strongroom.notify")


@dataclass(frozen=True)
class DeliveryResult:
    """How delivery of one event to one channel ended."""

    channel: str
    ok: bool
    attempts: int
    error: str | None = None


class Notifier:
    """Fans an event out to ``channels`` with per-channel exponential-backoff retries.

    Attempt ``n`` (1-based) that fails with a transient error is followed by a pause of
    ``min(base_delay * 2 ** (n - 1), max_delay)`` seconds; a permanent ``NotificationError``
    (``transient=False``: bad credentials, unknown webhook) ends that channel's attempts.
    """

    def __init__(
        self,
        channels: Sequence[Channel],
        *,
        attempts: int = 3,
        base_delay: float = 1.0,
        max_delay: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        if base_delay < 0 or max_delay < 0:
            raise ValueError("delays must not be negative")
        self.channels = tuple(channels)
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._sleep = sleep

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return float(min(self.base_delay * 2 ** (attempt - 1), self.max_delay))

    def notify(self, event: Event) -> list[DeliveryResult]:
        """Send ``event`` everywhere; one result per channel, in channel order. Never raises."""
        if not self.channels:
            return []
        if len(self.channels) == 1:
            return [self._guarded(self.channels[0], event)]
        with ThreadPoolExecutor(
            max_workers=len(self.channels), thread_name_prefix="strongroom-notify"
        ) as pool:
            futures: list[Future[DeliveryResult] | None] = []
            for channel in self.channels:
                try:
                    futures.append(pool.submit(self._guarded, channel, event))
                except RuntimeError:  # no thread available: this one is sent below, inline
                    futures.append(None)
            return [
                f.result() if f is not None else self._guarded(ch, event)
                for f, ch in zip(futures, self.channels, strict=True)
            ]

    def _guarded(self, channel: Channel, event: Event) -> DeliveryResult:
        try:
            return self._deliver(channel, event)
        except Exception as exc:  # a bug outside channel.send (e.g. in a log handler)
            error = f"{type(exc).__name__}: {scrub(str(exc), ())}"
            return DeliveryResult(_channel_name(channel), ok=False, attempts=0, error=error)

    def _deliver(self, channel: Channel, event: Event) -> DeliveryResult:
        name = _channel_name(channel)
        for attempt in range(1, self.attempts + 1):
            try:
                channel.send(event)
            except NotificationError as exc:
                error, transient = scrub(exc.message, ()), exc.transient
            except Exception as exc:
                error, transient = f"{type(exc).__name__}: {scrub(str(exc), ())}", True
            else:
                if attempt > 1:
                    logger.info(
                        "notification %s via %s delivered on attempt %d", event.kind, name, attempt
                    )
                return DeliveryResult(name, ok=True, attempts=attempt)
            if not transient or attempt == self.attempts:
                logger.warning(
                    "notification %s via %s failed after %d attempt%s: %s",
                    event.kind,
                    name,
                    attempt,
                    "" if attempt == 1 else "s",
                    error,
                )
                return DeliveryResult(name, ok=False, attempts=attempt, error=error)
            pause = self.delay(attempt)
            logger.warning(
                "notification %s via %s failed (attempt %d/%d), retrying in %gs: %s",
                event.kind,
                name,
                attempt,
                self.attempts,
                pause,
                error,
            )
            try:
                self._sleep(pause)
            except Exception as exc:  # an injected sleep must not break the promise either
                logger.warning("notification retry pause failed: %s", exc)
        raise AssertionError("unreachable")  # pragma: no cover


def _channel_name(channel: Channel) -> str:
    try:
        return str(channel.name)
    except Exception:
        return type(channel).__name__
