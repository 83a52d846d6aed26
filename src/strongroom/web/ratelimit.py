"""Login rate limiting: too many failures for one user name from one address -> 429, and
too many failures from one address whatever the names (guessing one password for many
user names, or one user name spelt many ways) -> 429 too."""

from __future__ import annotations

import threading
import time
import unicodedata
from collections import deque
from collections.abc import Callable

ANY_NAME = "\x00any"  # the key counting an address's failures for every name together
PER_ADDRESS = 4  # an address may fail this many times ``limit``, summed over all names
SWEEP_AT = 10_000  # keys kept before those whose failures all aged out are dropped


def name_key(name: str) -> str:
    """How a user name is counted: case, compatibility forms (full-width letters), and
    invisible (format, control) characters and spaces do not make another name (a service
    database with a case- or accent-insensitive collation may sign them in as the same)."""
    folded = unicodedata.normalize("NFKC", name).casefold()
    return "".join(c for c in folded if unicodedata.category(c)[0] not in "CZ")


class LoginLimiter:
    """At most ``limit`` failed logins per ``window`` seconds per (user name, address),
    and ``PER_ADDRESS`` times that per address.

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

    def _count(self, key: tuple[str, str]) -> int:
        """Failures within the window (a key whose failures all aged out is dropped, so
        names tried once do not pile up in memory)."""
        failures = self._failures.get(key)
        if failures is None:
            return 0
        now = self._clock()
        while failures and now - failures[0] > self.window:
            failures.popleft()
        if not failures:
            del self._failures[key]
        return len(failures)

    def blocked(self, name: str, client: str) -> bool:
        with self._lock:
            return (
                self._count((name_key(name), client)) >= self.limit
                or self._count((ANY_NAME, client)) >= self.limit * PER_ADDRESS
            )

    def failed(self, name: str, client: str) -> None:
        with self._lock:
            if len(self._failures) > SWEEP_AT:
                for old in list(self._failures):
                    self._count(old)
            moment = self._clock()
            for key in ((name_key(name), client), (ANY_NAME, client)):
                self._count(key)
                self._failures.setdefault(key, deque()).append(moment)

    def succeeded(self, name: str, client: str) -> None:
        with self._lock:
            self._failures.pop((name_key(name), client), None)
