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

The WAL of targets with base backups is alerted the same way (:class:`SentAlerts` with
another prefix, ``services/wal_alerts.py``): ``alerts/wal-lag/<target>/<condition>.json``
while archiving lags past the recovery point (the condition: the newest archived segment,
or ``none``), ``alerts/wal-gap/<target>/<condition>.json`` while WAL a retained base
backup needs is missing (the condition: the first missing segment of each gap).
:func:`alert_once` is the bookkeeping every such alert goes through.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable

from strongroom.errors import StrongroomError
from strongroom.repository.ids import utc_now_iso
from strongroom.storage.base import Storage

log = logging.getLogger("strongroom.daemon")

STALE_PREFIX = "alerts/stale/"
WAL_LAG_PREFIX = "alerts/wal-lag/"
WAL_GAP_PREFIX = "alerts/wal-gap/"
NO_GOOD_BACKUP = "none"
_PLAIN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}")


def _part(name: str) -> str:
    """A key segment for a target or condition: itself when plain, else a stable hash."""
    if _PLAIN.fullmatch(name):
        return name
    return "h-" + hashlib.sha256(name.encode()).hexdigest()[:32]


class SentAlerts:
    """The sent alerts of one kind (``prefix``) in a repository, listed once (per
    scheduler pass)."""

    prefix = STALE_PREFIX

    def __init__(self, storage: Storage, prefix: str | None = None) -> None:
        self._storage = storage
        if prefix is not None:
            self.prefix = prefix
        self._keys = set(storage.list(self.prefix))

    def _folder(self, target: str) -> str:
        return f"{self.prefix}{_part(target)}/"

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

    def clear(self, target: str) -> bool:
        """``target`` is fine again: the next time it is not, it alerts again. ``True``
        when an alert had been recorded (the condition is over)."""
        keys = self._of(target)
        for key in keys:
            self._storage.delete(key)
            self._keys.discard(key)
        return bool(keys)

    def withdraw(self, target: str, condition: str) -> None:
        """The alert for ``condition`` reached no channel: forget it was sent, so that the
        next pass sends it again."""
        key = f"{self._folder(target)}{_part(condition)}.json"
        self._storage.delete(key)
        self._keys.discard(key)


class StaleAlerts(SentAlerts):
    """The sent staleness alerts (``alerts/stale/``)."""

    prefix = STALE_PREFIX


_LABELS = {STALE_PREFIX: "stale", WAL_LAG_PREFIX: "WAL lag", WAL_GAP_PREFIX: "WAL gap"}


def bookkeeping_failed(prefix: str, exc: StrongroomError) -> None:
    """The sent alerts could not be read or written: no job fails for that, the alert is
    sent (a repeat is better than silence), and it is logged."""
    what = _LABELS.get(prefix, "sent")
    log.error("%s alert bookkeeping failed (alerts are sent anyway): %s", what, exc.message)


def open_alerts(storage: Storage, prefix: str) -> SentAlerts | None:
    """The sent alerts under ``prefix``; ``None`` (logged) when they cannot be listed."""
    try:
        return SentAlerts(storage, prefix)
    except StrongroomError as exc:
        bookkeeping_failed(prefix, exc)
        return None


def alert_once(
    alerts: SentAlerts | None,
    prefix: str,
    target: str,
    condition: str,
    send: Callable[[], bool],
) -> bool:
    """Send an alert for ``target`` under ``condition`` unless one was sent (by this or
    another scheduler); ``send`` returns whether any channel took it, and when none did
    the record is withdrawn, so the next pass sends it again. ``alerts`` ``None`` (not
    listable): sent. ``True`` when it was sent now."""
    recorded = False
    if alerts is not None:
        try:
            if not alerts.first_alert(target, condition):
                return False  # sent before
            recorded = True
        except StrongroomError as exc:  # not known whether it was sent: send
            bookkeeping_failed(prefix, exc)
    delivered = send()
    if recorded and not delivered and alerts is not None:
        try:
            alerts.withdraw(target, condition)
        except StrongroomError as exc:
            bookkeeping_failed(prefix, exc)
    return True


def clear_alert(alerts: SentAlerts | None, prefix: str, target: str) -> bool:
    """``target``'s condition is over: its record goes. ``True`` when there was one."""
    if alerts is None:
        return False
    try:
        return alerts.clear(target)
    except StrongroomError as exc:
        bookkeeping_failed(prefix, exc)
        return False
