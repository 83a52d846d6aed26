"""The scheduler of ``strongroom run``, on a background thread of ``strongroom serve``."""

from __future__ import annotations

import logging
import threading

from strongroom.services.daemon import Daemon
from strongroom.services.notifications import build_notifier
from strongroom.web.context import WebContext

log = logging.getLogger("strongroom.web.scheduler")


class SchedulerThread:
    """Runs ``Daemon.tick`` in a loop until ``stop``; re-indexes after every pass. With
    ``[wal] spool``, empties the spool meanwhile, as ``strongroom run`` does."""

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
        try:
            # with [wal] spool, the uploader of `strongroom run` too (Daemon.wal_uploader)
            with self.daemon.wal_uploader():
                while not self.daemon.stop.is_set():
                    try:
                        records = self.daemon.tick()
                        if records:
                            self._ctx.index.sync(self._ctx.repository())
                    except Exception:
                        log.exception("scheduler pass failed; trying again later")
                    self.daemon.stop.wait(self.daemon.seconds_until_next())
        except Exception:  # the uploader could not start: the thread ends, logged
            log.exception("scheduler: stopped by an unexpected failure")
            return
        log.info("scheduler: stopped")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the job under way (and the WAL uploader after the file under way);
        waits up to ``timeout`` seconds."""
        self.daemon.stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
