"""The dashboard's chart labels (ui/charts.py), the card partial, the job box's progress
text and its "job done" trigger, through the test client over a real service database."""

from __future__ import annotations

import json
import re
import uuid

from fastapi.testclient import TestClient

from strongroom.repository.ids import utc_now_iso
from strongroom.web.jobs import JobProgress
from strongroom.web.models import JobRun
from strongroom.web.ui.charts import card_url, charts_for, history_url
from tests.web.conftest import wait_job

MIB = 1024 * 1024


def _job_row(web, **fields) -> str:
    job_id = uuid.uuid4().hex
    values = {
        "kind": "backup",
        "target": "shop",
        "status": "running",
        "phase": "backup",
        "bytes_done": 0,
        "requested_by": "alice",
        "owner": "elsewhere:1",
        "created_at": utc_now_iso(),
        **fields,
    }
    with web.ctx.db.session() as session:
        session.add(JobRun(id=job_id, **values))
    return job_id


def _box(client: TestClient, web, job_id: str):
    response = client.get(f"/jobs/{job_id}/progress", headers=web.viewer)
    assert response.status_code == 200, response.text
    text = re.search(r'<div class="job-bytes">(.*?)</div>', response.text, re.S).group(1)
    pct = re.search(r'aria-valuenow="([\d.]+)"', response.text).group(1)
    return " ".join(text.split()), int(float(pct)), response.headers.get("HX-Trigger")


def test_chart_labels_name_the_zone_and_what_stored_size_means() -> None:
    charts = {c.kind: c for c in charts_for("Europe/Berlin")}
    assert list(charts) == ["size", "duration", "runs"]
    assert all("Europe/Berlin" in c.x_label for c in charts.values())
    size = charts["size"].caption
    assert "new bytes stored by each backup" in size and "cumulative" in size
    assert "running total" in size
    assert all(c.empty.endswith(".") for c in charts.values())
    assert history_url("a b/c") == "/api/targets/a%20b%2Fc/history"
    assert card_url("shop") == "/ui/targets/shop/card"


def test_progress_says_estimate_and_never_overstates(client: TestClient, web) -> None:
    # a running backup: the total is the database's estimate
    text, pct, trigger = _box(
        client, web, _job_row(web, bytes_done=int(1.6 * MIB), bytes_total=int(10.5 * MIB))
    )
    assert text == "1.6 MiB of about 10.5 MiB (estimated) · about 15 %" and pct == 15
    assert trigger is None
    # the dump outgrew the estimate: no percentage, and the bar is not full
    text, pct, _ = _box(
        client, web, _job_row(web, bytes_done=12 * MIB, bytes_total=int(10.5 * MIB))
    )
    assert text == "12.0 MiB so far (more than the estimated 10.5 MiB)" and pct == 99
    assert "%" not in text
    # the API says the same: a running job is never at 100 %
    over = _job_row(web, bytes_done=12 * MIB, bytes_total=int(10.5 * MIB))
    assert client.get(f"/api/jobs/{over}", headers=web.viewer).json()["percent"] == 99.0
    # an exact total (a restore): no "about", and one byte short is not 100 %
    text, pct, _ = _box(
        client,
        web,
        _job_row(
            web, kind="restore", phase="restore", bytes_done=10 * MIB - 1, bytes_total=10 * MIB
        ),
    )
    assert text.endswith(" of 10.0 MiB · 99 %") and "about" not in text and pct == 99


def test_a_finished_job_shows_what_was_done_and_triggers_job_done(client: TestClient, web) -> None:
    # finished: the total shown is the bytes done (an old row still had the estimate)
    job_id = _job_row(
        web,
        status="succeeded",
        phase="done",
        bytes_done=int(1.6 * MIB),
        bytes_total=int(10.5 * MIB),
    )
    text, pct, trigger = _box(client, web, job_id)
    assert text == "1.6 MiB of 1.6 MiB · 100 %" and pct == 100
    event = json.loads(trigger)["strongroom:job-done"]
    assert event == {"job": job_id, "kind": "backup", "status": "succeeded", "of": "shop"}
    assert "target" not in event  # htmx would look for an element of that name
    failed = _job_row(web, status="failed", phase="failed", bytes_done=MIB, bytes_total=9 * MIB)
    text, pct, trigger = _box(client, web, failed)
    assert text == "1.0 MiB done before it stopped" and " of " not in text
    assert json.loads(trigger)["strongroom:job-done"]["status"] == "failed"
    assert client.get("/jobs/nope/progress", headers=web.viewer).status_code == 404


def test_job_progress_finish_sets_the_total_to_the_bytes_done(web) -> None:
    job_id = _job_row(web)
    progress = JobProgress(web.ctx.db, job_id)
    progress.start("backup", int(10.5 * MIB))  # the estimate
    progress.advance(int(1.6 * MIB))
    progress.finish()
    with web.ctx.db.session() as session:
        row = session.get(JobRun, job_id)
        assert (row.bytes_done, row.bytes_total) == (int(1.6 * MIB), int(1.6 * MIB))


def test_a_real_backup_job_ends_with_its_dump_size_as_total(client: TestClient, web) -> None:
    started = client.post("/api/backups", json={"target": "shop"}, headers=web.admin)
    job = wait_job(client, started.json()["job_id"], web.admin)
    assert job["status"] == "succeeded"
    assert job["bytes_total"] == job["bytes_done"] == job["result"]["raw_size"]


def test_card_partial_and_live_update_attributes(client: TestClient, web) -> None:
    page = client.get("/", headers=web.viewer).text
    # no backups yet: a sentence instead of the size and duration charts
    assert page.count('class="chart-empty muted"') == 2 and "No backups yet" in page
    assert 'hx-trigger="strongroom:job-done from:body"' in page
    assert 'data-history="/api/targets/shop/history"' in page and 'data-tz="UTC"' in page
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", page) == []  # CSP: no inline script
    assert '<script src="/static/charts.js" defer></script>' in page

    started = client.post("/api/backups", json={"target": "shop"}, headers=web.admin)
    backup_id = wait_job(client, started.json()["job_id"], web.admin)["result"]["backup_id"]
    card = client.get("/ui/targets/shop/card", headers=web.viewer)
    assert card.status_code == 200
    assert '<span class="backup-count">1</span>' in card.text
    assert f'href="/backups/{backup_id}"' in card.text
    assert card.text.count("<figure") == 3 and 'class="chart-plot"' in card.text
    assert "<html" not in card.text  # a fragment
    missing = client.get("/ui/targets/nope/card", headers=web.viewer)
    assert missing.status_code == 404 and "no such target" in missing.text
    assert client.get("/ui/targets/shop/card", follow_redirects=False).status_code == 303

    backups = client.get("/backups", headers=web.viewer).text
    tbody = re.search(r'<tbody id="backup-rows"[^>]*>', backups).group(0)
    assert 'hx-trigger="strongroom:job-done from:body"' in tbody
    assert 'hx-get="/backups"' in tbody and 'hx-include=".filters"' in tbody
    rows = client.get(
        "/backups?target=shop",
        headers={**web.viewer, "HX-Request": "true", "HX-Target": "backup-rows"},
    )
    assert f'data-backup="{backup_id}"' in rows.text and "<html" not in rows.text
