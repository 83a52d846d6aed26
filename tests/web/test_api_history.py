"""GET /api/targets/{name}/history: what the dashboard's charts draw, over a real repository."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from strongroom.repository.ids import parse_iso
from tests.helpers import make_sqlite_db
from tests.web.conftest import build_app, wait_job


def _job(client: TestClient, web, path: str, body: dict | None = None) -> dict:
    response = client.post(path, json=body, headers=web.admin)
    assert response.status_code == 202, response.text
    return wait_job(client, response.json()["job_id"], web.admin)


def test_history_sizes_runs_and_restore_drill(tmp_path: Path) -> None:
    db = make_sqlite_db(tmp_path / "shop.db", users=300, orders=900)
    web = build_app(
        tmp_path,
        {"shop": f"sqlite://{db}", "broken": f"sqlite://{tmp_path / 'missing' / 'x.db'}"},
    )
    with TestClient(web.app) as client:
        first = _job(client, web, "/api/backups", {"target": "shop"})
        make_sqlite_db(db, users=200, orders=600, seed=3)  # the second one adds new bytes
        second = _job(client, web, "/api/backups", {"target": "shop"})
        assert first["status"] == second["status"] == "succeeded"
        failed = _job(client, web, "/api/backups", {"target": "broken"})
        assert failed["status"] == "failed"
        ids = [first["result"]["backup_id"], second["result"]["backup_id"]]
        drill = _job(client, web, f"/api/backups/{ids[0]}/verify-restore")
        assert drill["status"] == "succeeded", drill
        read = _job(client, web, f"/api/backups/{ids[1]}/verify")
        assert read["status"] == "succeeded", read

        got = client.get("/api/targets/shop/history", headers=web.viewer)
        assert got.status_code == 200, got.text
        history = got.json()
        assert history["target"] == "shop" and history["timezone"] == "UTC"
        backups = history["backups"]
        assert [b["backup_id"] for b in backups] == ids  # oldest first
        news = [b["stored_new_bytes"] for b in backups]
        assert all(n > 0 for n in news)
        # cumulative is the running total of the per-backup bytes, not a copy of them
        assert [b["stored_cumulative_bytes"] for b in backups] == [news[0], news[0] + news[1]]
        assert history["stored_bytes"] == sum(news) and history["total_backups"] == 2
        for point in backups:
            assert point["at"] == int(parse_iso(point["finished_at"]).timestamp())
            assert point["duration_seconds"] > 0 and point["raw_size"] > 0
        assert [r["ok"] for r in history["runs"]] == [True, True]
        assert [r["backup_id"] for r in history["runs"]] == ids
        assert history["failed_runs"] == 0
        # the drill of the first backup stays the last restore drill after a read check
        assert history["last_restore_drill"]["backup_id"] == ids[0]
        assert history["last_restore_drill"]["ok"] is True
        assert history["last_restore_drill"]["kind"] == "restore"
        assert history["last_verification"]["backup_id"] == ids[1]
        assert history["last_verification"]["kind"] == "read"

        # a failed run is recorded and shown although it made no backup
        broken = client.get("/api/targets/broken/history", headers=web.viewer).json()
        assert broken["backups"] == [] and broken["total_backups"] == 0
        assert len(broken["runs"]) == 1 and broken["failed_runs"] == 1
        run = broken["runs"][0]
        assert run["ok"] is False and run["backup_id"] is None and run["error_kind"]
        assert broken["last_restore_drill"] is None

        # limit keeps the newest points; the cumulative value still counts every backup
        newest = client.get("/api/targets/shop/history?limit=1", headers=web.viewer).json()
        assert [b["backup_id"] for b in newest["backups"]] == [ids[1]]
        assert newest["backups"][0]["stored_cumulative_bytes"] == sum(news)
        assert len(newest["runs"]) == 1 and newest["total_backups"] == 2


def test_history_errors_and_schema(tmp_path: Path) -> None:
    db = make_sqlite_db(tmp_path / "shop.db", users=50, orders=100)
    web = build_app(tmp_path, {"shop": f"sqlite://{db}"})
    with TestClient(web.app) as client:
        assert client.get("/api/targets/shop/history").status_code == 401
        unknown = client.get("/api/targets/nope/history", headers=web.viewer)
        assert unknown.status_code == 404
        assert unknown.json() == {"detail": "no target 'nope'"}
        for bad in ("0", "1001", "x"):
            got = client.get(f"/api/targets/shop/history?limit={bad}", headers=web.viewer)
            assert got.status_code == 422
        empty = client.get("/api/targets/shop/history", headers=web.viewer).json()
        assert empty["backups"] == [] and empty["runs"] == [] and empty["stored_bytes"] == 0
        schema = client.get("/openapi.json").json()
        operation = schema["paths"]["/api/targets/{name}/history"]["get"]
        ok = operation["responses"]["200"]["content"]["application/json"]["schema"]
        assert ok == {"$ref": "#/components/schemas/TargetHistory"}
        assert set(operation["responses"]) >= {"200", "401", "404", "422"}
        fields = schema["components"]["schemas"]["HistoryBackup"]["properties"]
        assert "running total" in fields["stored_cumulative_bytes"]["description"]
