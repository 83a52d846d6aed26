"""The scheduler of ``strongroom run``, on a background thread of ``strongroom serve``."""

from __future__ import annotations

import logging
import threading

from strongroom.services.daemon import Daemon
from strongroom.services.notifications import build_notifier
from strongroom.web.context import WebContext

log = logging.getLogger("strongroom.web.scheduler")


class SchedulerThread:
    """Runs ``Daemon.tick`` in a loop until ``stop``; re-indexes after every pass."""

    def __init__(self, ctx: WebContext) -> None:
        self._ctx = ctx
        self.daemon = Daemon(
            ctx.settings,
            ctx.repository(),
            dict(ctx.env),
            notifier=build_notifier(ctx.settings.notifications, ctx.env),
        )
        self._thread = threading.Thread(target=self._loop, name="sr-scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        log.info("scheduler: %d jobs", len(self.daemon.jobs))
        while not self.daemon.stop.is_set():
            try:
                records = self.daemon.tick()
                if records:
                    self._ctx.index.sync(self._ctx.repository())
            except Exception:
                log.exception("scheduler pass failed; trying again later")
            self.daemon.stop.wait(self.daemon.seconds_until_next())
        log.info("scheduler: stopped")

    def stop(self, timeout: float = 10.0) -> None:
        self.daemon.stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
