"""The job history (/jobs, /jobs/{id}): web jobs and the scheduler's run records merged,
the schedules' last runs, and "Send a test notification" per channel (admin, CSRF,
audited, no secret shown), over HTTP and in the real Chromium."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from strongroom.config import parse_settings
from strongroom.engines import open_engine
from strongroom.repository.repository import Repository
from strongroom.services.backup import recorded_backup
from strongroom.services.daemon import Daemon
from strongroom.storage.factory import open_storage
from strongroom.web import audit
from strongroom.web.app import create_app
from strongroom.web.auth import create_token
from strongroom.web.jobs import keep_info_records
from strongroom.web.models import JobRun
from tests.helpers import make_sqlite_db
from tests.notify.conftest import Receiver, SmtpServer, free_port, receiver, smtp_plain
from tests.web.browser import NEEDS_CHROMIUM, browser, login_page, served, shots_folder
from tests.web.conftest import (
    ADMIN_PW,
    VIEWER_PW,
    WebSetup,
    build_app,
    fixture_users,
    login,
    wait_job,
    write_config,
)

__all__ = ["browser", "receiver", "served", "smtp_plain"]  # fixtures

SCHEDULES = 'schedule = { daily = "0 2 * * *" }\nverify = { schedule = "0 3 * * *" }'
HOOK_TOKEN = "T0pSecretHookToken-8c1f2e"
HOOK_SECRET = "hmac-signing-secret-55aa"
SLACK_TOKEN = "SlackS3cretPart-99xyz"
SMTP_PW = "smtp-Pa55-word-q7"
SECRETS = (HOOK_TOKEN, HOOK_SECRET, SLACK_TOKEN, SMTP_PW)


def _rows(html: str) -> list[dict[str, str]]:
    """The history table's rows: id, kind, status and origin of each, in order."""
    found = re.findall(
        r'<tr data-job="([^"]+)" data-kind="([^"]+)" data-status="([^"]+)" data-origin="([^"]+)"',
        html,
    )
    return [dict(zip(("id", "kind", "status", "origin"), row, strict=True)) for row in found]


def _schedule_row(html: str, job_id: str) -> str:
    return html.split(f'data-schedule="{job_id}"', 1)[1].split("</tr>", 1)[0]


# --- the history ---------------------------------------------------------------------------
@pytest.fixture
def scheduled(tmp_path: Path) -> WebSetup:
    db = make_sqlite_db(tmp_path / "shop.db", users=300, orders=900)
    return build_app(tmp_path, {"shop": f"sqlite://{db}"}, extra=SCHEDULES)


def test_the_history_merges_web_api_command_line_and_scheduled_jobs(scheduled: WebSetup) -> None:
    web = scheduled
    with TestClient(web.app) as client:
        csrf = login(client, "alice", ADMIN_PW)
        answer = client.post("/ui/backup", data={"target": "shop"}, headers={"X-CSRF-Token": csrf})
        ui_job = answer.text.split('data-job="', 1)[1].split('"', 1)[0]
        assert wait_job(client, ui_job, web.viewer)["status"] == "succeeded"
        started = client.post("/api/backups", json={"target": "shop"}, headers=web.admin)
        api_job = started.json()["job_id"]
        assert wait_job(client, api_job, web.viewer)["status"] == "succeeded"
        repo = web.ctx.repository()
        settings = web.ctx.settings.targets["shop"]
        # `strongroom backup` on the command line: a run record without a scheduled time
        recorded_backup(repo, open_engine(settings.database_url({})), target="shop", tags=("cli",))
        # one pass of the scheduler, as `strongroom serve` runs it: the missed daily backup,
        # retention, and the restore drill
        daemon = Daemon(web.ctx.settings, repo, {})
        records = daemon.tick()
        assert [(r.kind, r.ok) for r in records] == [("backup", True), ("verify", True)]
        client.cookies.clear()
        login(client, "victor", VIEWER_PW)

        page = client.get("/jobs")
        assert page.status_code == 200
        rows = _rows(page.text)
        # newest first: the drill, the scheduled backup, the CLI's, the API's, the UI's
        assert [(r["kind"], r["origin"]) for r in rows] == [
            ("drill", "schedule"),
            ("backup", "schedule"),
            ("backup", "cli"),
            ("backup", "api"),
            ("backup", "web"),
        ]
        assert [r["id"] for r in rows[-2:]] == [api_job, ui_job]
        assert {r["status"] for r in rows} == {"succeeded"}
        assert 'href="/jobs"' in page.text and 'aria-current="page">Jobs' in page.text

        # filters
        only = _rows(client.get("/jobs?origin=schedule").text)
        assert [r["kind"] for r in only] == ["drill", "backup"]
        assert [r["origin"] for r in _rows(client.get("/jobs?kind=drill").text)] == ["schedule"]
        none = client.get("/jobs?kind=backup&status=failed")
        assert _rows(none.text) == [] and "No jobs match these filters" in none.text
        assert len(_rows(client.get("/jobs?kind=nonsense").text)) == 5  # unknown: no filter

        # the schedules: last run, result, duration, next run
        daily = _schedule_row(page.text, "backup:shop:daily")
        drill = _schedule_row(page.text, "verify:shop:drill")
        for row, scheduled_run in ((daily, rows[1]), (drill, rows[0])):
            assert f'href="/jobs/{scheduled_run["id"]}"' in row
            assert "s-succeeded" in row and "not run yet" not in row
            assert re.search(r"\d+\.\d s<", row)
        assert "0 2 * * *" in daily and "backup, tag daily" in daily
        assert "restore drill" in drill

        # a scheduled run's page shows what its run record holds
        run_page = client.get(f"/jobs/{rows[1]['id']}").text
        assert "schedule" in run_page and "run-record-note" in run_page
        assert "Scheduled for" in run_page and "daily" in run_page
        assert records[0].backup_id is not None and records[0].backup_id in run_page


def test_a_failed_scheduled_run_shows_its_error_kind(tmp_path: Path) -> None:
    web = build_app(tmp_path, {"gone": f"sqlite://{tmp_path / 'no' / 'such.db'}"}, extra=SCHEDULES)
    with TestClient(web.app) as client:
        Daemon(web.ctx.settings, web.ctx.repository(), {}).tick()
        page = client.get("/jobs", headers=web.viewer).text
        rows = _rows(page)
        assert [(r["kind"], r["status"], r["origin"]) for r in rows] == [
            ("drill", "failed", "schedule"),
            ("backup", "failed", "schedule"),
        ]
        assert "failed (StrongroomError)" in page  # the record keeps the error's kind only
        daily = _schedule_row(page, "backup:gone:daily")
        assert "s-failed" in daily and "failed (DatabaseUnreachable)" in daily


def test_the_pages_need_a_sign_in(client: TestClient, web: WebSetup) -> None:
    for url in ("/jobs", "/jobs/abc", "/jobs/run-0123456789abcdef"):
        answer = client.get(url, follow_redirects=False)
        assert (answer.status_code, answer.headers["location"]) == (303, "/login"), url
    assert client.get("/jobs/run-0123456789abcdef", headers=web.viewer).status_code == 404
    assert client.get("/jobs?page=0", headers=web.viewer).status_code == 422
    assert client.get("/jobs/" + "x" * 41, headers=web.viewer).status_code == 422


def test_the_history_is_paged(client: TestClient, web: WebSetup) -> None:
    with web.ctx.db.session() as session:
        for n in range(120):
            session.add(
                JobRun(
                    id=f"{n:032x}",
                    kind="retention",
                    status="succeeded",
                    phase="done",
                    bytes_done=0,
                    requested_by="alice",
                    owner="test",
                    created_at=f"2026-01-01T00:{n // 60:02d}:{n % 60:02d}Z",
                )
            )
    first = client.get("/jobs?kind=retention", headers=web.viewer).text
    assert [r["id"] for r in _rows(first)] == [f"{n:032x}" for n in range(119, 69, -1)]
    assert "page 1 of 3 (120 jobs)" in first and 'rel="next"' in first
    assert 'href="/jobs?kind=retention&amp;page=2" rel="next"' in first
    last = client.get("/jobs?kind=retention&page=9", headers=web.viewer).text  # past the end
    assert [r["id"] for r in _rows(last)] == [f"{n:032x}" for n in range(19, -1, -1)]
    assert 'href="/jobs?kind=retention&amp;page=2" rel="prev"' in last
    assert 'rel="next"' not in last


# --- test notifications ----------------------------------------------------------------------
@pytest.fixture
def notifying(
    tmp_path: Path, receiver: Receiver, smtp_plain: SmtpServer
) -> Iterator[tuple[WebSetup, TestClient, Receiver, SmtpServer]]:
    """Five channels: a webhook that delivers, a Slack URL nobody listens on, an email
    server that refuses the login, an email server that delivers, and a webhook whose
    variable is not set."""
    closed = free_port()
    tail = f"""
[[notifications.channels]]
type = "webhook"
name = "ops-hook"
url_env = "HOOK_URL"
secret_env = "HOOK_SECRET"

[[notifications.channels]]
type = "slack"
name = "chat"
webhook_url_env = "SLACK_URL"

[[notifications.channels]]
type = "email"
name = "mail-auth"
host = "127.0.0.1"
port = {smtp_plain.port}
sender = "strongroom@example.com"
recipients = ["ops@example.com"]
username = "alerts@example.com"
password_env = "SMTP_PW"
starttls = false

[[notifications.channels]]
type = "email"
name = "mail"
host = "127.0.0.1"
port = {smtp_plain.port}
sender = "strongroom@example.com"
recipients = ["ops@example.com", "dba@example.com"]
starttls = false

[[notifications.channels]]
type = "webhook"
name = "unset"
url_env = "MISSING_HOOK_URL"
"""
    env = {
        "HOOK_URL": f"{receiver.url}/hooks/{HOOK_TOKEN}",
        "HOOK_SECRET": HOOK_SECRET,
        "SLACK_URL": f"http://127.0.0.1:{closed}/services/T000/B000/{SLACK_TOKEN}",
        "SMTP_PW": SMTP_PW,
    }
    db = make_sqlite_db(tmp_path / "shop.db", users=10, orders=10)
    Repository.init(open_storage(str(tmp_path / "repo")), key_file=tmp_path / "repo.key")
    settings = parse_settings(write_config(tmp_path, {"shop": f"sqlite://{db}"}, tail=tail))
    app = create_app(settings, str(tmp_path / "service.db"), env=env)
    ctx = app.state.ctx
    fixture_users(ctx.db)  # (the fixture's hashes, made once per process)
    web = WebSetup(
        tmp_path,
        db,
        app,
        create_token(ctx.db, "ci", "admin"),
        create_token(ctx.db, "dash", "viewer"),
    )
    with TestClient(app) as client:
        yield web, client, receiver, smtp_plain


def _result(html: str) -> tuple[str, str]:
    ok = re.search(r'data-ok="(yes|no)"', html)
    assert ok is not None, html
    return ok.group(1), re.sub(r"<[^>]+>", "", html)


def test_an_admin_sends_a_test_notification_per_channel(
    notifying: tuple[WebSetup, TestClient, Receiver, SmtpServer], caplog: pytest.LogCaptureFixture
) -> None:
    web, client, hook, smtp = notifying
    caplog.set_level(logging.DEBUG)
    csrf = login(client, "alice", ADMIN_PW)
    page = client.get("/jobs").text
    assert page.count('class="secondary send-test"') == 5
    assert f"{hook.url}/…" in page and "$MISSING_HOOK_URL is not set" in page
    assert f"127.0.0.1:{smtp.port}, 2 recipients" in page

    def send(index: int) -> tuple[str, str]:
        answer = client.post(f"/ui/notifications/{index}/test", headers={"X-CSRF-Token": csrf})
        assert answer.status_code == 200
        return _result(answer.text)

    assert send(0) == ("yes", "Delivered.")
    [request] = hook.requests
    assert request.path == f"/hooks/{HOOK_TOKEN}"  # delivered where configured
    body = json.loads(request.body)
    assert body["kind"] == "test" and "alice" in body["summary"]
    assert request.headers["x-strongroom-signature"].startswith("sha256=")

    ok, text = send(1)
    assert ok == "no" and "chat" in text and "ConnectError" in text
    ok, text = send(2)
    assert ok == "no" and "mail-auth" in text and "SMTPNotSupportedError" in text
    assert send(3) == ("yes", "Delivered.")
    [mail] = smtp.handler.messages
    assert b"Subject: strongroom: test notification for mail" in mail.content
    ok, text = send(4)
    assert ok == "no" and "MISSING_HOOK_URL" in text and "not set" in text
    assert client.post("/ui/notifications/5/test", headers={"X-CSRF-Token": csrf}).status_code == (
        404
    )

    entries = audit.recent(web.ctx.db, action="notify-test")
    assert [(e.user, e.subject, e.result.split(":")[0]) for e in reversed(entries)] == [
        ("alice", "webhook channel ops-hook", "ok"),
        ("alice", "slack channel chat", "failed"),
        ("alice", "email channel mail-auth", "failed"),
        ("alice", "email channel mail", "ok"),
        ("alice", "webhook channel unset", "failed"),
    ]
    # strongroom's own log lines (httpx's request lines are off in `strongroom serve`:
    # cli/logs.py keeps httpx and httpcore at WARNING)
    logged = [r.getMessage() for r in caplog.records if r.name.startswith("strongroom")]
    assert any("notify-test" in line for line in logged)
    shown = " ".join(
        [client.get("/jobs").text, client.get("/audit").text, *logged]
        + [f"{e.result} {e.detail} {e.subject}" for e in entries]
    )
    for secret in SECRETS:
        assert secret not in shown, secret
    # the audit page's filter offers the new action (its list comes from the log itself)
    assert '<option value="notify-test"' in client.get("/audit").text
    filtered = client.get("/audit", params={"action": "notify-test"}).text
    assert filtered.count('data-action="notify-test"') == 5


def test_a_test_notification_needs_the_admin_role_and_the_csrf_token(
    notifying: tuple[WebSetup, TestClient, Receiver, SmtpServer],
) -> None:
    web, client, hook, _smtp = notifying
    csrf = login(client, "victor", VIEWER_PW)
    page = client.get("/jobs").text
    assert "ops-hook" in page and "send-test" not in page  # a viewer sees the channels only
    refused = client.post("/ui/notifications/0/test", headers={"X-CSRF-Token": csrf})
    assert refused.status_code == 403
    assert client.post("/ui/notifications/0/test", headers=web.viewer).status_code == 403
    denied = audit.recent(web.ctx.db, action="notify-test")
    assert [(e.user, e.result) for e in denied] == [
        ("token:dash", "denied: viewer role"),
        ("victor", "denied: viewer role"),
    ]

    client.cookies.clear()
    login(client, "alice", ADMIN_PW)
    assert client.post("/ui/notifications/0/test").status_code == 403  # no CSRF token
    assert (
        client.post("/ui/notifications/0/test", headers={"X-CSRF-Token": "wrong"}).status_code
        == 403
    )
    assert hook.requests == []
    assert client.post("/ui/notifications/0/test").status_code == 403
    # a script with an admin token sends no CSRF token (it has no ambient authority)
    client.cookies.clear()
    answer = client.post("/ui/notifications/0/test", headers=web.admin)
    assert _result(answer.text)[0] == "yes" and len(hook.requests) == 1
    assert audit.recent(web.ctx.db, action="notify-test")[0].user == "token:ci"


# --- in the real Chromium --------------------------------------------------------------------
@NEEDS_CHROMIUM
def test_the_jobs_page_in_chromium(served, browser, tmp_path):
    web, base = served
    shots = shots_folder(tmp_path)
    undo = keep_info_records()  # as `strongroom serve` does: jobs keep their INFO lines
    try:
        with httpx.Client(base_url=base) as http:
            started = http.post("/api/backups", json={"target": "shop"}, headers=web.admin)
            assert wait_job(http, started.json()["job_id"], web.admin)["status"] == "succeeded"
    finally:
        undo()
    Daemon(web.ctx.settings, web.ctx.repository(), {}).tick()  # a scheduled backup
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    page = context.new_page()
    login_page(page, base, "alice", ADMIN_PW)
    page.click("nav a[href='/jobs']")
    page.wait_for_url(f"{base}/jobs")
    rows = page.locator("table.history tbody tr[data-job]")
    assert rows.count() == 4
    assert rows.first.get_attribute("data-origin") == "schedule"
    assert page.locator("tr[data-schedule='backup:shop:daily'] .s-succeeded").count() == 1
    page.screenshot(path=str(shots / "jobs-1366.png"), full_page=True)
    wide = page.evaluate("document.documentElement.scrollWidth")
    assert wide <= 1366, wide

    # one web job's page: its log lines
    page.locator("table.history tr[data-origin='api'] a").first.click()
    page.wait_for_selector("table.log")
    assert page.locator("table.log tr.level-error").count() == 0
    assert "complete" in page.locator("table.log").inner_text()
    page.screenshot(path=str(shots / "job-1366.png"), full_page=True)

    phone = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=1)
    small = phone.new_page()
    login_page(small, base, "victor", VIEWER_PW)
    small.goto(f"{base}/jobs")
    small.wait_for_selector("table.history tbody tr[data-job]")
    small.screenshot(path=str(shots / "jobs-390.png"), full_page=True)
    width = small.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, width
    cell = small.locator("table.history tbody tr[data-job] td[data-label='Started by']").first
    assert cell.bounding_box()["width"] <= 390
    context.close()
    phone.close()
