"""Every failed backup notifies, however it was started: the web's "Back up now" (API and
UI button), the cron endpoint, and the scheduler (`run --once`, which also exits non-zero).
A real webhook receiver on loopback records what arrives."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from tests.helpers import cli_ok, make_sqlite_db, run_cli
from tests.notify.conftest import Receiver
from tests.web.conftest import ADMIN_PW, CRON_SECRET, build_app, login, wait_job


def _events(receiver: Receiver) -> list[dict]:
    return [json.loads(r.body) for r in receiver.requests]


def _channel(receiver: Receiver) -> str:
    return f'[[notifications.channels]]\ntype = "webhook"\nurl = "{receiver.url}/hook"\n'


def test_failed_web_and_cron_backups_notify(tmp_path, receiver):
    missing = tmp_path / "gone.db"  # the target's database does not exist: every backup fails
    web = build_app(tmp_path, {"shop": f"sqlite://{missing}"}, extra=_channel(receiver))
    with TestClient(web.app) as client:
        started = client.post("/api/backups", json={"target": "shop"}, headers=web.admin)
        job = wait_job(client, started.json()["job_id"], web.admin)
        assert job["status"] == "failed" and "does not exist" in job["error"]
        assert [e["kind"] for e in _events(receiver)] == ["backup_failed"]  # sent before done

        cron = client.post("/api/cron/backup", headers={"Authorization": f"Bearer {CRON_SECRET}"})
        assert cron.status_code == 202, cron.text
        for accepted in cron.json()["jobs"]:
            assert wait_job(client, accepted["job_id"], web.admin)["status"] == "failed"
        assert [e["kind"] for e in _events(receiver)] == ["backup_failed"] * 2

        csrf = login(client, "alice", ADMIN_PW)
        button = client.post("/ui/backup", data={"target": "shop"}, headers={"X-CSRF-Token": csrf})
        assert button.status_code == 200, button.text
        job_id = next(j["job_id"] for j in client.get("/api/jobs", headers=web.admin).json())
        assert wait_job(client, job_id, web.admin)["status"] == "failed"
    events = _events(receiver)
    assert [e["kind"] for e in events] == ["backup_failed"] * 3
    assert all(e["target"] == "shop" and "does not exist" in e["summary"] for e in events)
    assert receiver.requests[0].headers["x-strongroom-event"] == "backup_failed"


def test_a_failed_post_backup_hook_of_a_web_backup_notifies(tmp_path, receiver):
    db = make_sqlite_db(tmp_path / "shop.db", users=20, orders=20)
    extra = 'hooks = { post_backup = ["exit 4"] }\n' + _channel(receiver)
    web = build_app(tmp_path, {"shop": f"sqlite://{db}"}, extra=extra)
    with TestClient(web.app) as client:
        started = client.post("/api/backups", json={"target": "shop"}, headers=web.admin)
        job = wait_job(client, started.json()["job_id"], web.admin)
        assert job["status"] == "failed"
        listed = client.get("/api/backups", headers=web.viewer).json()
    events = _events(receiver)
    assert [e["kind"] for e in events] == ["hook_failed"]
    assert events[0]["details"]["backup_id"] == listed[0]["backup_id"]  # the kept backup


def _config(tmp_path, url: str, receiver: Receiver) -> dict[str, str]:
    config = tmp_path / "strongroom.toml"
    config.write_text(
        f"""
timezone = "UTC"
[repository]
location = "{tmp_path / "repo"}"
key_file = "{tmp_path / "repo.key"}"

[targets.shop]
url = "{url}"
schedule = {{ daily = "0 2 * * *" }}
retention = {{ keep_last = 50 }}

{_channel(receiver)}
"""
    )
    repo = {"STRONGROOM_REPO": str(tmp_path / "repo"), "STRONGROOM_KEY_FILE": str(tmp_path / "k")}
    cli_ok(run_cli("init", "--key-file", str(tmp_path / "repo.key"), env=repo))
    return {"STRONGROOM_CONFIG": str(config)}


def test_run_once_exits_with_the_failed_jobs_code_and_alerts_once(tmp_path, receiver):
    env = _config(tmp_path, f"sqlite://{tmp_path / 'gone.db'}", receiver)
    failed = run_cli("run", "--once", env=env)
    assert failed.returncode == 5, failed.stderr.decode()  # the failed backup's own code
    errors = [line for line in failed.stderr.decode().splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: backup of shop failed: ")
    kinds = [e["kind"] for e in _events(receiver)]
    assert sorted(kinds) == ["backup_failed", "backup_stale"]
    stale = next(e for e in _events(receiver) if e["kind"] == "backup_stale")
    assert stale["title"].endswith("STALE (no good backup yet)") and "0.0 h" not in str(stale)

    again = run_cli("run", "--once", env=env)  # nothing due; the same stale condition
    assert again.returncode == 0, again.stderr.decode()
    assert len(receiver.requests) == 2  # not alerted again

    health = run_cli("health", env=env)
    out = health.stdout.decode()
    assert health.returncode == 2
    assert "newest good backup none; no good backup yet" in out and " - old" not in out


def test_a_failed_cli_backup_notifies_the_configured_channels(tmp_path, receiver):
    """`strongroom backup` with a configuration (STRONGROOM_CONFIG) notifies like the
    scheduler: a failure arrives as backup_failed, a success sends nothing (on_success
    is off by default), and the exit code is the failure's own."""
    env = _config(tmp_path, f"sqlite://{tmp_path / 'gone.db'}", receiver)
    failed = run_cli("backup", "--target", "shop", env=env)
    assert failed.returncode == 5, failed.stderr.decode()
    assert [e["kind"] for e in _events(receiver)] == ["backup_failed"]
    assert _events(receiver)[0]["target"] == "shop"
    db = make_sqlite_db(tmp_path / "there.db", users=5, orders=5)
    cli_ok(run_cli("backup", f"sqlite://{db}", "--target", "shop", env=env))
    assert [e["kind"] for e in _events(receiver)] == ["backup_failed"]
