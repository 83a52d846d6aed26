"""The REST API through FastAPI's test client, over a real local repository and SQLite."""

from __future__ import annotations

import sqlite3
import time

from tests.helpers import sqlite_counts
from tests.web.conftest import CRON_SECRET, wait_job


def _backup(client, web, tags=("manual",)) -> dict:
    response = client.post(
        "/api/backups", json={"target": "shop", "tags": list(tags)}, headers=web.admin
    )
    assert response.status_code == 202, response.text
    job = wait_job(client, response.json()["job_id"], web.admin)
    assert job["status"] == "succeeded", job
    return job


def test_backup_job_list_show_and_targets(client, web):
    job = _backup(client, web)
    assert job["percent"] == 100.0 and job["bytes_done"] > 0
    assert job["bytes_total"] == job["bytes_done"]
    backup_id = job["result"]["backup_id"]

    listed = client.get("/api/backups", headers=web.viewer).json()
    assert [b["backup_id"] for b in listed] == [backup_id]
    assert listed[0]["tags"] == ["manual"] and listed[0]["created_by"] == "token:ci (web)"
    assert listed[0]["last_verification"] is None

    detail = client.get(f"/api/backups/{backup_id}", headers=web.viewer).json()
    assert {t["name"]: t["rows"] for t in detail["tables"]} == {"users": 300, "orders": 900}

    targets = client.get("/api/targets", headers=web.viewer).json()
    assert targets[0]["name"] == "shop" and targets[0]["newest_backup_id"] == backup_id
    assert targets[0]["health"] in ("healthy", "warning")

    assert client.get("/api/backups?tag=nope", headers=web.viewer).json() == []
    assert client.get("/api/backups/nonexistent", headers=web.viewer).status_code == 404


def test_auth_is_required_and_viewers_are_read_only(client, web):
    assert client.get("/api/backups").status_code == 401
    assert client.get("/api/backups", headers=web.headers("sr_wrong")).status_code == 401
    job = _backup(client, web)
    backup_id = job["result"]["backup_id"]
    for method, path, body in [
        ("post", "/api/backups", {"target": "shop"}),
        ("get", f"/api/backups/{backup_id}/download", None),
        ("delete", f"/api/backups/{backup_id}", None),
        ("put", f"/api/backups/{backup_id}/pin", None),
        ("post", f"/api/backups/{backup_id}/restore", {"confirm": "shop"}),
        ("post", f"/api/backups/{backup_id}/restore/plan", {}),
    ]:
        kwargs = {"json": body} if body is not None else {}
        response = client.request(method.upper(), path, headers=web.viewer, **kwargs)
        assert response.status_code == 403, (method, path, response.text)
    audit = client.get("/audit", headers=web.viewer)  # the page accepts tokens too
    assert "denied: viewer role" in audit.text


def test_download_streams_the_raw_dump_and_is_audited(client, web):
    backup_id = _backup(client, web)["result"]["backup_id"]
    with client.stream("GET", f"/api/backups/{backup_id}/download", headers=web.admin) as r:
        assert r.status_code == 200
        assert r.headers["content-disposition"] == f'attachment; filename="shop-{backup_id}.db"'
        data = b"".join(r.iter_bytes())
    copy = web.tmp / "copy.db"
    copy.write_bytes(data)
    assert sqlite_counts(copy) == sqlite_counts(web.db_path)
    entries = [e for e in _audit(web) if e.action == "download"]
    assert entries and entries[0].result == "ok" and entries[0].user == "token:ci"
    assert entries[0].client  # the client address is recorded


def _audit(web):
    from strongroom.web import audit

    return audit.recent(web.ctx.db)


def test_restore_plan_confirmation_and_job(client, web):
    backup_id = _backup(client, web)["result"]["backup_id"]
    scratch = web.tmp / "scratch.db"
    plan = client.post(
        f"/api/backups/{backup_id}/restore/plan",
        json={"to": f"sqlite://{scratch}"},
        headers=web.admin,
    )
    assert plan.status_code == 200, plan.text
    body = plan.json()
    assert body["database_name"] == "scratch" and body["exists"] is False
    assert {t["name"] for t in body["tables"]} == {"users", "orders"}

    wrong = client.post(
        f"/api/backups/{backup_id}/restore",
        json={"to": f"sqlite://{scratch}", "confirm": "shop"},
        headers=web.admin,
    )
    assert wrong.status_code == 400 and "scratch" in wrong.json()["detail"]
    assert not scratch.exists()

    # into the configured target itself (it exists: a safety backup is taken first)
    db = sqlite3.connect(web.db_path)
    db.execute("DELETE FROM orders WHERE id > 100")
    db.commit()
    db.close()
    started = client.post(
        f"/api/backups/{backup_id}/restore", json={"confirm": "shop"}, headers=web.admin
    )
    assert started.status_code == 202, started.text
    job = wait_job(client, started.json()["job_id"], web.admin)
    assert job["status"] == "succeeded", job
    assert job["result"]["safety_backup_id"] and job["result"]["tables_verified"] == 2
    assert sqlite_counts(web.db_path) == {"users": 300, "orders": 900}
    restores = [e for e in _audit(web) if e.action == "restore"]
    assert restores[0].result == "ok (verified)"
    assert restores[1].result == "refused: confirmation did not match"


def test_pin_forget_verify_and_retention(client, web):
    first = _backup(client, web)["result"]["backup_id"]
    second = _backup(client, web)["result"]["backup_id"]
    assert client.put(f"/api/backups/{first}/pin", headers=web.admin).json()["pinned"] is True
    assert client.delete(f"/api/backups/{first}", headers=web.admin).status_code == 409
    listed = {b["backup_id"]: b for b in client.get("/api/backups", headers=web.admin).json()}
    assert listed[first]["pinned"] is True

    verify = client.post(f"/api/backups/{second}/verify", headers=web.admin)
    assert wait_job(client, verify.json()["job_id"], web.admin)["status"] == "succeeded"
    drill = client.post(f"/api/backups/{second}/verify-restore", headers=web.admin, json={})
    assert wait_job(client, drill.json()["job_id"], web.admin)["status"] == "succeeded"
    shown = client.get(f"/api/backups/{second}", headers=web.admin).json()
    assert [v["kind"] for v in shown["verifications"]] == ["restore", "read"]
    assert shown["last_verification"]["ok"] is True

    preview = client.get("/api/retention", headers=web.viewer).json()
    assert preview[0]["target"] == "shop" and len(preview[0]["backups"]) == 2

    assert client.delete(f"/api/backups/{second}", headers=web.admin).json()["forgotten"]
    assert [b["backup_id"] for b in client.get("/api/backups", headers=web.admin).json()] == [first]
    run = client.post("/api/retention/run", json={"prune": True}, headers=web.admin)
    assert wait_job(client, run.json()["job_id"], web.admin)["status"] == "succeeded"
    actions = [e.action for e in _audit(web)]
    assert "forget" in actions and "pin" in actions


def test_cron_endpoint(client, web):
    assert client.post("/api/cron/backup").status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert client.post("/api/cron/backup", headers=wrong).status_code == 401
    ok = client.post("/api/cron/backup", headers={"Authorization": f"Bearer {CRON_SECRET}"})
    assert ok.status_code == 202
    (job,) = ok.json()["jobs"]
    done = wait_job(client, job["job_id"], web.admin)
    assert done["status"] == "succeeded" and done["requested_by"] == "cron"
    web.ctx.env.pop("CRON_SECRET")  # type: ignore[attr-defined]
    assert client.post("/api/cron/backup", headers=wrong).status_code == 404


def test_health_and_metrics_need_no_auth_and_show_no_secrets(client, web):
    _backup(client, web)
    health = client.get("/api/health")
    assert health.status_code == 200
    body = health.json()
    assert body["status"] in ("healthy", "warning") and body["targets"][0]["target"] == "shop"
    assert str(web.tmp) not in health.text
    metrics = client.get("/metrics")
    assert 'strongroom_last_backup_raw_bytes{target="shop"}' in metrics.text


def test_openapi_documents_the_api(client):
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    for path in (
        "/api/backups",
        "/api/backups/{backup_id}/download",
        "/api/jobs/{job_id}",
        "/api/backups/{backup_id}/restore/plan",
        "/api/cron/backup",
        "/api/health",
    ):
        assert path in paths
    assert not any(p.startswith("/ui") or p == "/login" for p in paths)


def test_the_scheduler_runs_in_the_server(tmp_path):
    import time

    from fastapi.testclient import TestClient

    from tests.helpers import make_sqlite_db
    from tests.web.conftest import build_app

    db = make_sqlite_db(tmp_path / "shop.db", users=50, orders=50)
    web = build_app(
        tmp_path,
        {"shop": f"sqlite://{db}"},
        extra='schedule = { hourly = "0 * * * *" }',
        scheduler=True,
    )
    with TestClient(web.app) as client:  # the missed hourly occurrence runs at start
        deadline = time.monotonic() + 30
        listed: list = []
        while not listed and time.monotonic() < deadline:
            web.ctx.index.invalidate()
            listed = client.get("/api/backups", headers=web.viewer).json()
            time.sleep(0.1)
        assert listed and listed[0]["tags"] == ["hourly"]
        target = client.get("/api/targets", headers=web.viewer).json()[0]
        assert target["next_run"] is not None


def _poll_hard(client, job_id, headers, timeout=60.0):
    """Poll a job without pausing, so a job read as finished is acted on at once."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}", headers=headers).json()
        if job["status"] in ("succeeded", "failed"):
            return job
    raise AssertionError(f"job {job_id} did not finish")


def test_a_succeeded_backup_job_is_listed_at_once(client, web):
    """Ten "back up now" jobs, back to back: as soon as a job reads succeeded, its backup
    (named at the job's top level too) is in GET /api/backups."""
    seen = []
    for _ in range(10):
        started = client.post("/api/backups", json={"target": "shop"}, headers=web.admin)
        job = _poll_hard(client, started.json()["job_id"], web.admin)
        assert job["status"] == "succeeded", job
        assert job["backup_id"] == job["result"]["backup_id"]
        seen.append(job["backup_id"])
        listed = {b["backup_id"] for b in client.get("/api/backups", headers=web.viewer).json()}
        assert seen[-1] in listed, f"job {len(seen)}: {seen[-1]} not listed yet"
    listed = {b["backup_id"] for b in client.get("/api/backups", headers=web.viewer).json()}
    assert set(seen) <= listed and len(set(seen)) == 10
