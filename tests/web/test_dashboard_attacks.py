"""Hostile and confused-newcomer cases against the dashboard commit (issue 17): hostile target
names and tags, time zones, the 0003 -> 0004 migration. The other cases are in
test_dashboard_{history,jobs,notification,docs,browser}_attacks.py. A case marked
xfail(strict) is a bug found."""

from __future__ import annotations

import json
import re
import socket
import sqlite3
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from strongroom.config import parse_settings
from strongroom.repository.repository import Repository
from strongroom.repository.runs import RunRecord, record_run
from strongroom.storage.factory import open_storage
from strongroom.web.app import create_app
from strongroom.web.auth import create_token
from strongroom.web.db import ServiceDatabase
from strongroom.web.jobs import get_job
from strongroom.web.ui.charts import card_url, history_url
from strongroom.web.ui.render import short_time, zone_named
from tests.helpers import make_sqlite_db
from tests.web.conftest import VIEWER_PW, WebSetup, build_app, login, wait_job, write_config
from tests.web.dashboard_helpers import EVIL, EVIL_TAG, LONG, _toml_key

UNI = "Ünïcødé 数据 🚀 'q' a?b#c&d"  # a '%' is tested on a real server (TestClient decodes twice)


@pytest.fixture
def hostile(tmp_path: Path) -> WebSetup:
    targets = {}
    for i, name in enumerate((EVIL, UNI, LONG)):
        db = make_sqlite_db(tmp_path / f"db{i}.db", users=30, orders=30)
        targets[_toml_key(name)] = f"sqlite://{db}"
    return build_app(tmp_path, targets)


def _raw_markup(html: str) -> list[str]:
    return re.findall(r"<svg onload|<img src=x onerror", html)


# --- hostile target names and tags ------------------------------------------------------------
def test_hostile_target_names_are_escaped_everywhere_and_their_routes_answer(
    hostile: WebSetup,
) -> None:
    web = hostile
    with TestClient(web.app) as client:
        jobs = {}
        for name in (EVIL, UNI, LONG):
            started = client.post(
                "/api/backups", json={"target": name, "tags": [EVIL_TAG]}, headers=web.admin
            )
            assert started.status_code == 202, started.text
            job = wait_job(client, started.json()["job_id"], web.admin)
            assert job["status"] == "succeeded", job
            jobs[name] = job["job_id"]
        login(client, "victor", VIEWER_PW)
        for url in ("/", "/backups", "/jobs", *(f"/jobs/{j}" for j in jobs.values())):
            page = client.get(url)
            assert page.status_code == 200, url
            assert _raw_markup(page.text) == [], url
        dashboard = client.get("/").text
        assert "&#34;&gt;&lt;svg onload=alert(1)&gt;" in dashboard or (
            "&quot;&gt;&lt;svg onload" in dashboard
        )
        for name, job_id in jobs.items():
            history = client.get(history_url(name))
            assert history.status_code == 200, (name, history.text)
            assert history.json()["target"] == name
            assert history.json()["total_backups"] == 1
            assert history.json()["backups"][0]["raw_size"] > 0
            card = client.get(card_url(name))
            assert card.status_code == 200 and _raw_markup(card.text) == []
            assert f'hx-get="{card_url(name)}"' in card.text or "hx-get=" in card.text
            done = client.get(f"/jobs/{job_id}/progress")
            header = done.headers["HX-Trigger"]
            assert header.isascii()
            assert json.loads(header)["strongroom:job-done"]["of"] == name
            log = client.get(f"/api/jobs/{job_id}/log")
            assert log.status_code == 200 and isinstance(log.json(), list)


def test_a_command_line_backup_with_a_hostile_tag_is_escaped_on_its_job_page(
    hostile: WebSetup,
) -> None:
    web = hostile
    repo = web.ctx.repository()
    record_run(
        repo.storage,
        RunRecord(
            target=EVIL,
            kind="backup",
            ok=False,
            started_at="2026-11-30T10:00:00+00:00",
            finished_at="2026-11-30T10:00:05+00:00",
            tags=(EVIL_TAG,),
            error_kind="<script>alert(3)</script>",
        ),
    )
    with TestClient(web.app) as client:
        login(client, "victor", VIEWER_PW)
        page = client.get("/jobs")
        assert page.status_code == 200
        run = re.search(r'data-job="(run-[0-9a-f]{16})"', page.text)
        assert run is not None
        assert "<script>alert(3)" not in page.text
        one = client.get(f"/jobs/{run.group(1)}")
        assert one.status_code == 200
        assert _raw_markup(one.text) == [] and "<script>alert(3)" not in one.text
        assert "&lt;img src=x onerror=alert(2)&gt;" in one.text
        history = client.get(history_url(EVIL)).json()
        assert history["failed_runs"] == 1
        assert history["runs"][0]["error_kind"] == "<script>alert(3)</script>"


# --- time zones -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("zone", "moment", "expected"),
    [
        ("Pacific/Chatham", "2026-01-15T00:00:00+00:00", "2026-01-15 13:45 UTC+1345"),
        ("Pacific/Chatham", "2026-07-15T00:00:00+00:00", "2026-07-15 12:45 UTC+1245"),
        ("Asia/Kathmandu", "2026-11-30T00:00:00Z", "2026-11-30 05:45 UTC+0545"),
        ("Etc/GMT+5", "2026-11-30T12:00:00+00:00", "2026-11-30 07:00 UTC-05"),
        ("Europe/Berlin", "2026-03-29T00:59:59+00:00", "2026-03-29 01:59 CET"),
        ("Europe/Berlin", "2026-03-29T01:00:00+00:00", "2026-03-29 03:00 CEST"),
        ("Europe/Berlin", "2026-10-25T00:30:00+00:00", "2026-10-25 02:30 CEST"),
        ("Europe/Berlin", "2026-10-25T01:30:00+00:00", "2026-10-25 02:30 CET"),
        ("America/St_Johns", "2026-11-30T12:00:00+00:00", "2026-11-30 08:30 NST"),
        ("UTC", "2026-11-30T12:00:00", "2026-11-30 12:00 UTC"),
        ("Australia/Lord_Howe", "2026-01-01T00:00:00+00:00", "2026-01-01 11:00 UTC+11"),
    ],
)
def test_short_time_in_odd_zones(zone: str, moment: str, expected: str) -> None:
    assert short_time(moment, zone_named(zone)) == expected


def test_short_time_leaves_garbage_alone() -> None:
    assert short_time("not a time", zone_named("Pacific/Chatham")) == "not a time"
    assert short_time(None) == "-" and short_time("") == "-"
    assert zone_named("Mars/Olympus") is zone_named(None)


@pytest.mark.parametrize("zone", ["Pacific/Chatham", "Asia/Kathmandu", "Etc/GMT-14"])
def test_every_page_names_an_odd_zone_and_uses_it(tmp_path: Path, zone: str) -> None:
    db = make_sqlite_db(tmp_path / "shop.db", users=5, orders=5)
    Repository.init(open_storage(str(tmp_path / "repo")), key_file=tmp_path / "repo.key")
    text = write_config(tmp_path, {"shop": f"sqlite://{db}"}).replace(
        'timezone = "UTC"', f'timezone = "{zone}"'
    )
    app = create_app(parse_settings(text), str(tmp_path / "service.db"), env={})
    token = create_token(app.state.ctx.db, "dash", "admin")
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(app) as client:
        started = client.post("/api/backups", json={"target": "shop"}, headers=headers)
        job = wait_job(client, started.json()["job_id"], headers)
        for url in ("/", "/backups", "/jobs", f"/jobs/{job['job_id']}", "/audit"):
            page = client.get(url, headers=headers)
            assert page.status_code == 200, url
            assert zone in page.text, url
            assert " UTC<" not in page.text.replace("(UTC)", ""), url
        history = client.get("/api/targets/shop/history", headers=headers).json()
        assert history["timezone"] == zone
        assert history["backups"][0]["finished_at"].endswith(("+00:00", "Z"))


# --- the service database of the previous version ---------------------------------------------
def test_a_0003_service_database_with_jobs_upgrades_and_shows_them(tmp_path: Path) -> None:
    from alembic import command
    from alembic.config import Config

    from strongroom.web.db import MIGRATIONS

    path = tmp_path / "service.db"
    old = ServiceDatabase(str(path))
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with old.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0003")
    old.dispose()
    with sqlite3.connect(path) as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(job_runs)")]
        assert "log" not in columns
        conn.execute(
            "INSERT INTO job_runs (id, kind, target, status, phase, requested_by, owner,"
            " created_at,"
            " started_at, finished_at, bytes_done, bytes_total, error, result) VALUES"
            " ('old-1','backup','shop','succeeded','done','alice',?,'2026-01-01T00:00:00+00:00',"
            " '2026-01-01T00:00:01+00:00','2026-01-01T00:00:09+00:00',5,5,NULL,"
            ' \'{"backup_id": "20260101T000009Z-abc", "raw_size": 5}\'),'
            " ('old-2','restore','shop','running','restore','alice',?,'2026-01-02T00:00:00+00:00',"
            " '2026-01-02T00:00:01+00:00',NULL,0,0,NULL,NULL)",
            (f"{socket.gethostname()}:999999",) * 2,
        )
    db = make_sqlite_db(tmp_path / "shop.db", users=5, orders=5)
    web = build_app(tmp_path, {"shop": f"sqlite://{db}"}, service_db=str(path))
    with TestClient(web.app) as client:
        page = client.get("/jobs", headers=web.viewer)
        assert page.status_code == 200
        assert 'data-job="old-1"' in page.text and 'data-job="old-2"' in page.text
        one = client.get("/jobs/old-1", headers=web.viewer)
        assert one.status_code == 200 and "ran before log lines were kept" in one.text
        assert client.get("/api/jobs/old-1/log", headers=web.viewer).json() == []
        assert get_job(web.ctx.db, "old-2").status == "failed"  # abandoned at start
