"""Issue 14 through the web service: hooks run for "Back up now", the cron endpoint and a
web restore (point 7); the Verify button records a read check that never makes a backup
"verified good", so retention keeps the backup whose restore drill passed (point 8)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from fastapi.testclient import TestClient

from tests.helpers import make_sqlite_db, sqlite_counts
from tests.web.conftest import CRON_SECRET, WebSetup, build_app, wait_job


def _hooks(log: Path) -> str:
    line = f'echo "$STRONGROOM_HOOK ${{STRONGROOM_BACKUP_ID:--}}" >> {log}'
    return (
        f"hooks = {{ pre_backup = ['{line}'], post_backup = ['{line}'], "
        f"post_restore = ['{line}'] }}"
    )


def _job(client: TestClient, web: WebSetup, response) -> dict:
    assert response.status_code == 202, response.text
    job = wait_job(client, response.json()["job_id"], web.admin)
    assert job["status"] == "succeeded", job
    return job


def test_back_up_now_cron_and_web_restore_run_the_hooks(tmp_path):
    log = tmp_path / "hooks.log"
    db = make_sqlite_db(tmp_path / "shop.db", users=100, orders=200)
    web = build_app(tmp_path, {"shop": f"sqlite://{db}"}, extra=_hooks(log))
    with TestClient(web.app) as client:
        now = _job(
            client, web, client.post("/api/backups", json={"target": "shop"}, headers=web.admin)
        )
        first = now["result"]["backup_id"]
        assert log.read_text().splitlines() == ["pre_backup -", f"post_backup {first}"]

        cron = client.post("/api/cron/backup", headers={"Authorization": f"Bearer {CRON_SECRET}"})
        assert cron.status_code == 202, cron.text
        (job,) = cron.json()["jobs"]
        second = wait_job(client, job["job_id"], web.admin)["result"]["backup_id"]
        assert log.read_text().splitlines()[2:] == ["pre_backup -", f"post_backup {second}"]

        with sqlite3.connect(db) as conn:
            conn.execute("DELETE FROM orders")
        restore = client.post(
            f"/api/backups/{first}/restore", json={"confirm": "shop"}, headers=web.admin
        )
        _job(client, web, restore)
        assert sqlite_counts(db) == {"users": 100, "orders": 200}
        assert log.read_text().splitlines()[4:] == [f"post_restore {first}"]


def test_a_failing_post_restore_hook_fails_the_job_and_says_the_restore_stays(tmp_path):
    db = make_sqlite_db(tmp_path / "shop.db", users=50, orders=50)
    web = build_app(
        tmp_path, {"shop": f"sqlite://{db}"}, extra='hooks = { post_restore = ["exit 7"] }'
    )
    with TestClient(web.app) as client:
        backup = _job(
            client, web, client.post("/api/backups", json={"target": "shop"}, headers=web.admin)
        )
        backup_id = backup["result"]["backup_id"]
        with sqlite3.connect(db) as conn:
            conn.execute("DELETE FROM users")
        started = client.post(
            f"/api/backups/{backup_id}/restore", json={"confirm": "shop"}, headers=web.admin
        )
        job = wait_job(client, started.json()["job_id"], web.admin)
        assert job["status"] == "failed"
        assert "completed and verified and stays in place" in job["error"]
        assert "post_restore hook 'exit 7' exited with status 7" in job["error"]
        assert sqlite_counts(db) == {"users": 50, "orders": 50}


def test_a_read_check_never_protects_a_backup_a_passed_drill_does(tmp_path):
    """The issue's case: the oldest backup passed a restore drill; a newer one was checked
    with the Verify button (a read check). Retention keeping the last backup must keep the
    drilled one as "newest verified good", not the read-checked one."""
    db = make_sqlite_db(tmp_path / "shop.db", users=50, orders=50)
    web = build_app(tmp_path, {"shop": f"sqlite://{db}"}, extra="retention = { keep_last = 1 }")
    with TestClient(web.app) as client:
        ids = [
            _job(
                client, web, client.post("/api/backups", json={"target": "shop"}, headers=web.admin)
            )["result"]["backup_id"]
            for _ in range(3)
        ]
        drilled, read_checked, newest = ids
        _job(
            client,
            web,
            client.post(f"/api/backups/{drilled}/verify-restore", json={}, headers=web.admin),
        )
        _job(client, web, client.post(f"/api/backups/{read_checked}/verify", headers=web.admin))
        # a read check of the drilled backup too: its drill still counts
        _job(client, web, client.post(f"/api/backups/{drilled}/verify", headers=web.admin))

        shown = client.get(f"/api/backups/{read_checked}", headers=web.admin).json()
        assert [(v["kind"], v["ok"]) for v in shown["verifications"]] == [("read", True)]

        (preview,) = client.get("/api/retention", headers=web.viewer).json()
        decisions = {b["backup_id"]: (b["keep"], b["reasons"]) for b in preview["backups"]}
        assert decisions[drilled] == (True, ["newest verified good"])
        assert decisions[read_checked][0] is False
        assert decisions[newest] == (True, ["last 1 of 1"])

        health = client.get("/api/health").json()["targets"][0]
        assert health["last_verified_restore_at"] is not None  # the drill, not the read check
