"""Which staleness alerts were sent, kept in the repository so that every scheduler run
(``run --once`` from cron, a restarted ``run`` or ``serve``, a second machine) sees them.

``alerts/stale/<target>/<condition>.json``: present while ``<target>`` is stale under
``<condition>`` (the id of its newest good backup, or ``none`` when it has no good backup)
and the alert for it was sent. The alert is sent by whoever creates that object first
(``Storage.create``: atomic, so two schedulers send it once); the folder is emptied when
the target is fresh again, and a new condition (another newest good backup) replaces the
old one, so it alerts once more. An alert no channel accepted is :meth:`withdrawn
<StaleAlerts.withdraw>`, so the next pass sends it again. Anything else found in a
target's folder (or an object where its folder should be) is garbage and is removed.
"""

from __future__ import annotations

import hashlib
import json
import re

from strongroom.repository.ids import utc_now_iso
from strongroom.storage.base import Storage

STALE_PREFIX = "alerts/stale/"
NO_GOOD_BACKUP = "none"
_PLAIN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}")


def _part(name: str) -> str:
    """A key segment for a target or condition: itself when plain, else a stable hash."""
    if _PLAIN.fullmatch(name):
        return name
    return "h-" + hashlib.sha256(name.encode()).hexdigest()[:32]


class StaleAlerts:
    """The sent staleness alerts of a repository, listed once (per scheduler pass)."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._keys = set(storage.list(STALE_PREFIX))

    def _folder(self, target: str) -> str:
        return f"{STALE_PREFIX}{_part(target)}/"

    def _of(self, target: str) -> list[str]:
        folder = self._folder(target)
        return sorted(k for k in self._keys if k.startswith(folder))

    def first_alert(self, target: str, condition: str) -> bool:
        """Record that ``target`` is stale under ``condition``; ``True`` when no alert was
        sent for it yet (the caller sends one now), ``False`` when one was."""
        key = f"{self._folder(target)}{_part(condition)}.json"
        if key in self._keys:
            return False
        blocker = self._folder(target).rstrip("/")
        if blocker in self._keys:  # garbage where the folder belongs (a local file)
            self._storage.delete(blocker)
            self._keys.discard(blocker)
        body = json.dumps({"target": target, "condition": condition, "alerted_at": utc_now_iso()})
        created = self._storage.create(key, body.encode() + b"\n")
        if created:
            self._storage.sync()
        for old in self._of(target):
            self._storage.delete(old)  # an earlier condition: over
            self._keys.discard(old)
        self._keys.add(key)
        return created

    def clear(self, target: str) -> None:
        """``target`` is fresh: the next staleness alerts again."""
        for key in self._of(target):
            self._storage.delete(key)
            self._keys.discard(key)

    def withdraw(self, target: str, condition: str) -> None:
        """The alert for ``condition`` reached no channel: forget it was sent, so that the
        next pass sends it again."""
        key = f"{self._folder(target)}{_part(condition)}.json"
        self._storage.delete(key)
        self._keys.discard(key)
