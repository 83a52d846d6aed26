"""Hostile and confused-newcomer cases against the dashboard's backup history (issue 17):
the history and card routes, run records that are damaged, a thousand run records, damaged
manifests, thousands of backups, a legacy target name with a slash. A case marked
xfail(strict) is a bug found."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from strongroom.web.app import create_app
from strongroom.web.auth import create_token
from strongroom.web.ui.charts import card_url, history_url
from tests.helpers import make_sqlite_db
from tests.web.conftest import WebSetup, build_app, wait_job
from tests.web.dashboard_helpers import GOOD_RUN, _record


# --- the history route ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "url",
    [
        "/api/targets/" + "x" * 201 + "/history",
        "/api/targets/nope/history",
        "/api/targets/shop/history?limit=0",
        "/api/targets/shop/history?limit=1001",
        "/api/targets/shop/history?limit=-5",
        "/api/targets/shop/history?limit=99999999999999999999999",
        "/api/targets/shop/history?limit=abc",
        "/api/targets/%2E%2E/history",
        "/api/targets/sh%00op/history",
        "/ui/targets/%3Cscript%3E/card",
        "/ui/targets/" + "y" * 201 + "/card",
    ],
)
def test_bad_history_and_card_requests_are_4xx(client: TestClient, web: WebSetup, url: str) -> None:
    answer = client.get(url, headers=web.viewer)
    assert 400 <= answer.status_code < 500, (url, answer.status_code, answer.text[:200])


def test_the_history_route_needs_a_sign_in(client: TestClient) -> None:
    assert client.get("/api/targets/shop/history").status_code == 401
    assert client.get("/ui/targets/shop/card", follow_redirects=False).status_code in (303, 401)


def test_the_history_of_a_configured_target_without_backups_is_empty(
    client: TestClient, web: WebSetup
) -> None:
    answer = client.get("/api/targets/shop/history", headers=web.viewer)
    assert answer.status_code == 200
    body = answer.json()
    assert body["backups"] == [] and body["runs"] == [] and body["total_backups"] == 0
    assert body["last_restore_drill"] is None and body["timezone"] == "UTC"


def test_a_run_record_that_is_not_json_is_skipped(client: TestClient, web: WebSetup) -> None:
    _record(web, json.dumps(GOOD_RUN).encode(), "good")
    _record(web, b"{not json at all", "broken")
    _record(web, b"\xff\xfe\x00garbage", "binary")
    _record(web, json.dumps({**GOOD_RUN, "surprise": 1}).encode(), "extra-key")
    history = client.get("/api/targets/shop/history", headers=web.viewer)
    assert history.status_code == 200 and len(history.json()["runs"]) == 1
    page = client.get("/jobs", headers=web.viewer)
    assert page.status_code == 200 and page.text.count('data-job="run-') == 1


def test_a_run_record_with_a_bad_time_does_not_break_the_history(
    client: TestClient, web: WebSetup
) -> None:
    _record(web, json.dumps(GOOD_RUN).encode(), "good")
    _record(web, json.dumps({**GOOD_RUN, "finished_at": "yesterday-ish"}).encode(), "bad-time")
    client_no_raise = TestClient(web.app, raise_server_exceptions=False)
    history = client_no_raise.get("/api/targets/shop/history", headers=web.viewer)
    assert history.status_code == 200, history.status_code
    page = client_no_raise.get("/jobs", headers=web.viewer)
    assert page.status_code == 200, page.status_code


def test_a_run_record_with_a_number_for_a_time_does_not_break_the_jobs_page(
    client: TestClient, web: WebSetup
) -> None:
    _record(web, json.dumps(GOOD_RUN).encode(), "good")
    _record(web, json.dumps({**GOOD_RUN, "finished_at": 1764493200}).encode(), "number")
    no_raise = TestClient(web.app, raise_server_exceptions=False)
    assert no_raise.get("/jobs", headers=web.viewer).status_code == 200


def test_a_run_record_without_an_offset_does_not_break_the_jobs_page(
    client: TestClient, web: WebSetup
) -> None:
    _record(web, json.dumps(GOOD_RUN).encode(), "good")
    naive = {
        **GOOD_RUN,
        "started_at": "2026-11-30T08:00:00",
        "finished_at": "2026-11-30T08:00:02",
    }
    _record(web, json.dumps(naive).encode(), "naive")
    no_raise = TestClient(web.app, raise_server_exceptions=False)
    answer = no_raise.get("/jobs", headers=web.viewer)
    assert answer.status_code == 200, answer.status_code


def test_a_thousand_run_records_page_and_the_history_is_capped(
    client: TestClient, web: WebSetup
) -> None:
    storage = web.ctx.repository().storage
    for n in range(1000):
        minute, second = divmod(n, 60)
        hour, minute = divmod(minute, 60)
        stamp = f"2026-11-{1 + hour:02d}T00:{minute:02d}:{second:02d}+00:00"
        record = {**GOOD_RUN, "started_at": stamp, "finished_at": stamp, "ok": n % 7 != 0}
        storage.put(f"runs/shop/{n:05d}.json", json.dumps(record).encode())
    started = time.monotonic()
    history = client.get("/api/targets/shop/history", headers=web.viewer).json()
    assert len(history["runs"]) == 200
    assert history["runs"][-1]["at"] >= history["runs"][0]["at"]
    assert history["failed_runs"] == sum(1 for r in history["runs"] if not r["ok"])
    assert (
        len(client.get("/api/targets/shop/history?limit=1000", headers=web.viewer).json()["runs"])
        == 1000
    )
    page = client.get("/jobs?page=20", headers=web.viewer)
    assert page.status_code == 200 and "page 20 of 20" in page.text
    assert page.text.count('data-job="run-') == 50
    assert time.monotonic() - started < 30


def test_a_run_record_that_is_a_json_list_is_skipped(client: TestClient, web: WebSetup) -> None:
    _record(web, json.dumps(GOOD_RUN).encode(), "good")
    _record(web, b"[1, 2, 3]", "a-list")
    no_raise = TestClient(web.app, raise_server_exceptions=False)
    history = no_raise.get("/api/targets/shop/history", headers=web.viewer)
    page = no_raise.get("/jobs", headers=web.viewer)
    assert (history.status_code, page.status_code) == (200, 200)


# --- damaged manifests, thousands of backups --------------------------------------------------
def test_a_damaged_manifest_does_not_take_the_dashboard_and_the_history_down(
    tmp_path: Path,
) -> None:
    db = make_sqlite_db(tmp_path / "shop.db", users=20, orders=20)
    web = build_app(tmp_path, {"shop": f"sqlite://{db}"})
    ids = []
    with TestClient(web.app) as client:
        for _ in range(2):
            started = client.post("/api/backups", json={"target": "shop"}, headers=web.admin)
            ids.append(wait_job(client, started.json()["job_id"], web.admin)["backup_id"])
    (tmp_path / "repo" / "backups" / f"{ids[0]}.json").write_bytes(b"\x00garbage{not a manifest")
    again = create_app(web.ctx.settings, str(tmp_path / "service2.db"), env={})
    token = create_token(again.state.ctx.db, "dash", "viewer")
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(again, raise_server_exceptions=False) as client:
        statuses = {
            url: client.get(url, headers=headers).status_code
            for url in ("/api/targets/shop/history", "/", "/jobs", "/ui/targets/shop/card")
        }
        assert all(code < 500 for code in statuses.values()), statuses
        history = client.get("/api/targets/shop/history", headers=headers)
        assert history.status_code == 200
        assert [b["backup_id"] for b in history.json()["backups"]] == [ids[1]]


def test_thousands_of_backups_keep_the_history_and_the_dashboard_quick(
    client: TestClient, web: WebSetup
) -> None:
    from strongroom.web.models import IndexedBackup

    started = client.post("/api/backups", json={"target": "shop"}, headers=web.admin)
    wait_job(client, started.json()["job_id"], web.admin)
    client.get("/api/targets/shop/history", headers=web.viewer)  # synced: rows below stay 30 s
    with web.ctx.db.session() as session:
        for n in range(3000):
            day, rest = divmod(n, 24)
            date = f"2020-{1 + day // 28 % 12:02d}-{1 + day % 28:02d}"
            session.add(
                IndexedBackup(
                    backup_id=f"20200101T000000Z-{n:08x}",
                    target="shop",
                    engine="sqlite",
                    engine_version="3",
                    dump_format="sql",
                    started_at=f"{date}T{rest:02d}:00:00+00:00",
                    finished_at=f"{date}T{rest:02d}:00:09+00:00",
                    duration_seconds=9.0,
                    tags="daily",
                    status="complete",
                    created_by="test",
                    raw_size=1000 + n,
                    stored_new_bytes=10,
                    chunk_count=1,
                    new_chunk_count=1,
                )
            )
    began = time.monotonic()
    history = client.get("/api/targets/shop/history", headers=web.viewer).json()
    assert history["total_backups"] == 3001 and len(history["backups"]) == 200
    assert history["stored_bytes"] >= 30_000
    assert history["backups"][-1]["stored_cumulative_bytes"] == history["stored_bytes"]
    assert client.get("/", headers=web.viewer).status_code == 200
    assert client.get("/ui/targets/shop/card", headers=web.viewer).status_code == 200
    assert time.monotonic() - began < 10


def test_a_legacy_target_name_with_a_slash_still_gets_its_charts(tmp_path: Path) -> None:
    db = make_sqlite_db(tmp_path / "shop.db", users=20, orders=20)
    web = build_app(tmp_path, {"shop": f"sqlite://{db}"})
    with TestClient(web.app) as client:
        started = client.post("/api/backups", json={"target": "shop"}, headers=web.admin)
        backup_id = wait_job(client, started.json()["job_id"], web.admin)["backup_id"]
    manifest = tmp_path / "repo" / "backups" / f"{backup_id}.json"
    manifest.write_text(manifest.read_text().replace('"target":"shop"', '"target":"eu/shop"', 1))
    again = create_app(web.ctx.settings, str(tmp_path / "service2.db"), env={})
    token = create_token(again.state.ctx.db, "dash", "viewer")
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(again) as client:
        dashboard = client.get("/", headers=headers)
        assert dashboard.status_code == 200
        assert 'data-card="eu/shop"' in dashboard.text  # the legacy target has a card
        assert client.get(history_url("eu/shop"), headers=headers).status_code == 200
        assert client.get(card_url("eu/shop"), headers=headers).status_code == 200
