"""Issue 14, points 1 and 3 through the web API: ``latest`` resolves within one target
and never to a safety backup; a restore files its safety backup under the destination's
configured target; the plan names the target and warns about another target's backup."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from strongroom.engines.sqlite import SqliteEngine
from strongroom.services.backup import run_backup
from strongroom.services.restore import PRE_RESTORE_TAG
from tests.helpers import make_sqlite_db, sqlite_counts
from tests.web.conftest import build_app, wait_job


def test_latest_stays_in_one_target_and_safety_backups_go_to_theirs(tmp_path: Path) -> None:
    shop = make_sqlite_db(tmp_path / "nc_shop.db", users=40, orders=40)
    blog = make_sqlite_db(tmp_path / "blog.db", users=20, orders=20, seed=3)
    web = build_app(tmp_path, {"shop": f"sqlite://{shop}", "blog": f"sqlite://{blog}"})
    repo = web.ctx.repository()
    blog_backup = run_backup(repo, SqliteEngine(str(blog)), target="blog").manifest
    shop_backup = run_backup(repo, SqliteEngine(str(shop)), target="shop").manifest
    run_backup(repo, SqliteEngine(str(shop)), target="shop", tags=(PRE_RESTORE_TAG,))
    make_sqlite_db(blog, users=5, orders=5, seed=4)  # blog moves on

    with TestClient(web.app) as client:

        def plan(body: dict[str, str]) -> dict:
            answer = client.post("/api/backups/latest/restore/plan", json=body, headers=web.admin)
            assert answer.status_code == 200, answer.text
            return answer.json()

        by_url = plan({"to": f"sqlite://{blog}"})
        assert (by_url["backup_id"], by_url["destination_target"]) == (
            blog_backup.backup_id,
            "blog",
        )
        assert by_url["warning"] is None
        assert plan({"target": "shop"})["backup_id"] == shop_backup.backup_id  # not the safety
        unclear = client.post("/api/backups/latest/restore/plan", json={}, headers=web.admin)
        assert unclear.status_code == 400
        assert '"target"' in unclear.json()["detail"] and "blog, shop" in unclear.json()["detail"]
        crossed = client.post(
            f"/api/backups/{shop_backup.backup_id}/restore/plan",
            json={"to": f"sqlite://{blog}"},
            headers=web.admin,
        ).json()
        assert crossed["destination_target"] == "blog" and "target 'shop'" in crossed["warning"]

        started = client.post(
            "/api/backups/latest/restore",
            json={"target": "blog", "confirm": "blog"},
            headers=web.admin,
        )
        assert started.status_code == 202, started.text
        job = wait_job(client, started.json()["job_id"], web.admin)
        assert job["status"] == "succeeded", job
    assert job["result"]["backup_id"] == blog_backup.backup_id
    assert sqlite_counts(blog) == {"users": 20, "orders": 20}
    safety = repo.load_manifest(job["result"]["safety_backup_id"])
    assert (safety.target, safety.tags) == ("blog", (PRE_RESTORE_TAG,))
