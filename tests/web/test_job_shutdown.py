"""A running web job stops when the server shuts down, through its cleanup, and is marked
failed with why (``web.jobs``: the next progress report raises ``Interrupted``)."""

from __future__ import annotations

import threading
import time

from strongroom.web.db import ServiceDatabase
from strongroom.web.jobs import FAILED, JobRunner
from strongroom.web.models import JobRun


def test_shutdown_stops_a_running_job_through_its_cleanup(tmp_path):
    db = ServiceDatabase(str(tmp_path / "service.db"))
    db.upgrade()
    runner = JobRunner(db, workers=1)
    started, cleaned = threading.Event(), threading.Event()

    def work(progress):
        progress.start("backup", 100)
        started.set()
        try:
            for done in range(10_000):
                progress.advance(done)
                time.sleep(0.01)
        finally:
            cleaned.set()  # as a backup's lock release or a restore's staged drop
        return {}

    job_id = runner.submit("backup", work, requested_by="test")
    assert started.wait(60)
    runner.shutdown()
    assert cleaned.wait(60)
    deadline = time.monotonic() + 60
    while True:
        with db.session() as session:
            row = session.get(JobRun, job_id)
            status, error = row.status, row.error
        if status == FAILED or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert status == FAILED
    assert error == "stopped: the server shut down"
    db.dispose()
