"""Login rate limiting: too many failures for one user name from one address -> 429."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable


class LoginLimiter:
    """At most ``limit`` failed logins per ``window`` seconds per (user name, address).

    Kept in memory: with several workers each counts its own failures (a limit of N per
    worker), which still stops online guessing."""

    def __init__(
        self, limit: int = 5, window: float = 300.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: tuple[str, str]) -> deque[float]:
        now = self._clock()
        failures = self._failures.setdefault(key, deque())
        while failures and now - failures[0] > self.window:
            failures.popleft()
        return failures

    def blocked(self, name: str, client: str) -> bool:
        with self._lock:
            return len(self._recent((name.lower(), client))) >= self.limit

    def failed(self, name: str, client: str) -> None:
        with self._lock:
            self._recent((name.lower(), client)).append(self._clock())

    def succeeded(self, name: str, client: str) -> None:
        with self._lock:
            self._failures.pop((name.lower(), client), None)
