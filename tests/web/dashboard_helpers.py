"""Names and helpers the dashboard attack modules (tests/web/test_dashboard_*attacks.py) share."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from strongroom.web.jobs import JobProgress, get_job
from tests.web.conftest import WebSetup

EVIL = '"><svg onload=alert(1)>'
LONG = "L" * 127 + "Z"
EVIL_TAG = "<img src=x onerror=alert(2)>"


def _toml_key(name: str) -> str:
    """A TOML key for ``name`` (write_config puts it after ``targets.``)."""
    return json.dumps(name, ensure_ascii=False)


def _record(web: WebSetup, raw: bytes, name: str) -> None:
    web.ctx.repository().storage.put(f"runs/shop/{name}.json", raw)


GOOD_RUN = {
    "target": "shop",
    "kind": "backup",
    "ok": True,
    "started_at": "2026-11-30T09:00:00+00:00",
    "finished_at": "2026-11-30T09:00:03+00:00",
}


def _job_with_lines(web: WebSetup, *messages: str) -> str:
    chatty = logging.getLogger("strongroom.tests.attacks")

    def work(_progress: JobProgress) -> dict[str, Any]:
        for message in messages:
            chatty.warning("%s", message)
        return {}

    job_id = web.ctx.jobs.submit("verify", work, requested_by="alice")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        row = get_job(web.ctx.db, job_id)
        if row is not None and row.status in ("succeeded", "failed"):
            return job_id
        time.sleep(0.02)
    raise AssertionError("job did not finish")
