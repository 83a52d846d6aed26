"""A web job keeps its log lines (INFO and above, redacted, bounded), and shows them."""

from __future__ import annotations

import json
import logging
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from strongroom.web.db import ServiceDatabase
from strongroom.web.jobs import (
    LOG_BYTES,
    LOG_LINES,
    JobProgress,
    JobRunner,
    get_job,
    keep_info_records,
)
from tests.web.conftest import ADMIN_PW, WebSetup, build_app, login, wait_job

SECRET = "TopSecretPw-4711"


@pytest.fixture
def info_kept() -> Iterator[None]:
    """What `strongroom serve` does: strongroom's INFO records are made (jobs keep them)."""
    undo = keep_info_records()
    try:
        yield
    finally:
        undo()


def _wait(db: ServiceDatabase, job_id: str) -> Any:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        row = get_job(db, job_id)
        if row is not None and row.status in ("succeeded", "failed"):
            return row
        time.sleep(0.02)
    raise AssertionError("the job did not finish")


def test_a_web_backup_keeps_its_log_lines_and_the_job_page_shows_them(
    client: TestClient, web: WebSetup, info_kept: None
) -> None:
    csrf = login(client, "alice", ADMIN_PW)
    answer = client.post("/ui/backup", data={"target": "shop"}, headers={"X-CSRF-Token": csrf})
    job_id = answer.text.split('data-job="', 1)[1].split('"', 1)[0]
    job = wait_job(client, job_id, web.viewer)
    assert job["status"] == "succeeded"
    backup_id = job["backup_id"]

    lines = client.get(f"/api/jobs/{job_id}/log", headers=web.viewer).json()
    messages = [line["message"] for line in lines]
    assert messages[0] == "backup of shop started (requested by alice)"
    assert f"backup {backup_id} of shop complete" in messages
    assert any(m.startswith(f"job {job_id} succeeded in ") for m in messages)
    assert {line["level"] for line in lines} == {"INFO"}
    assert all(line["at"].endswith("+00:00") for line in lines)

    page = client.get(f"/jobs/{job_id}", headers=web.viewer)
    assert page.status_code == 200
    assert f"backup {backup_id} of shop complete" in page.text
    assert "alice" in page.text and "(web user)" in page.text
    assert 'class="log"' in page.text


def test_a_failing_job_shows_its_error_and_its_error_lines(tmp_path: Path) -> None:
    web = build_app(tmp_path, {"gone": f"sqlite://{tmp_path / 'no' / 'such.db'}"})
    with TestClient(web.app) as client:
        started = client.post("/api/backups", json={"target": "gone"}, headers=web.admin)
        job = wait_job(client, started.json()["job_id"], web.admin)
        assert job["status"] == "failed" and job["error"]
        lines = client.get(f"/api/jobs/{job['job_id']}/log", headers=web.viewer).json()
        errors = [line for line in lines if line["level"] == "ERROR"]
        assert errors and job["error"] in errors[-1]["message"]
        page = client.get(f"/jobs/{job['job_id']}", headers=web.viewer).text
        assert 'class="problem bad job-error"' in page and job["error"] in page
        assert "level-error" in page
        listing = client.get("/jobs?status=failed", headers=web.viewer).text
        assert f'data-job="{job["job_id"]}"' in listing and job["error"] in listing
        assert (
            client.get("/jobs?status=succeeded", headers=web.viewer).text.count(
                f'data-job="{job["job_id"]}"'
            )
            == 0
        )


def test_the_log_is_redacted_one_line_each_and_bounded(tmp_path: Path, info_kept: None) -> None:
    db = ServiceDatabase(str(tmp_path / "service.db"))
    db.upgrade()
    runner = JobRunner(db, 1)
    chatty = logging.getLogger("strongroom.tests.chatty")

    def work(_progress: JobProgress) -> dict[str, Any]:
        chatty.debug("debug lines are not kept")
        chatty.info("first line, soon dropped")
        chatty.warning("connect to postgresql://app:%s@db:5432/shop\nfailed", SECRET)
        for n in range(LOG_LINES + 100):
            chatty.info("line %d %s", n, "x" * 400)
        chatty.error("%s", "y" * 10_000)
        return {}

    row = _wait(db, runner.submit("backup", work, requested_by="alice"))
    runner.shutdown()
    assert row.status == "succeeded"
    assert row.log is not None and len(row.log) <= LOG_BYTES + 200
    lines = json.loads(row.log)
    assert len(lines) <= LOG_LINES + 1
    assert "earlier line(s) left out" in lines[0]["message"]
    assert SECRET not in row.log and "debug lines" not in row.log
    assert "first line" not in row.log
    messages = [line["message"] for line in lines]
    assert messages[-1].startswith("job ") and "succeeded" in messages[-1]
    long = next(m for m in messages if m.startswith("yyy"))
    assert len(long) == 2000 and long.endswith("…")
    assert all("\n" not in m for m in messages)


def test_the_redacted_secret_line_is_kept_while_it_fits(tmp_path: Path) -> None:
    db = ServiceDatabase(str(tmp_path / "service.db"))
    db.upgrade()
    runner = JobRunner(db, 1)

    def work(_progress: JobProgress) -> dict[str, Any]:
        logging.getLogger("strongroom.tests").warning(
            "connect to postgresql://app:%s@db:5432/shop\nfailed", SECRET
        )
        raise ValueError(f"boom with password={SECRET}")

    row = _wait(db, runner.submit("restore", work, requested_by="token:ci"))
    runner.shutdown()
    assert row.status == "failed" and row.error == "unexpected failure (ValueError)"
    lines = json.loads(row.log or "[]")
    assert SECRET not in (row.log or "")
    warning = next(line for line in lines if line["level"] == "WARNING")
    assert warning["message"] == "connect to postgresql://app:***@db:5432/shop failed"
    crash = next(line for line in lines if line["level"] == "ERROR")
    assert "failed unexpectedly (ValueError: boom with password=***" in crash["message"]


def test_only_the_jobs_own_thread_is_captured_and_the_console_is_unchanged(
    tmp_path: Path,
) -> None:
    """INFO lines are kept in the job although the process logs WARNING and above: a
    handler on the root logger (the console of `strongroom serve`) still gets only those."""
    root = logging.getLogger()
    seen: list[logging.LogRecord] = []

    class Console(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    console = Console()
    old_level = root.level
    root.setLevel(logging.WARNING)
    root.addHandler(console)
    undo = keep_info_records()
    other = threading.Event()
    go = threading.Event()

    def elsewhere() -> None:  # another thread logging while the job runs
        go.wait(10)
        logging.getLogger("strongroom.tests.other").warning("from another thread")
        logging.getLogger("strongroom.tests.other").info("info from another thread")
        other.set()

    thread = threading.Thread(target=elsewhere)
    thread.start()
    try:
        db = ServiceDatabase(str(tmp_path / "service.db"))
        db.upgrade()
        runner = JobRunner(db, 1)

        def work(_progress: JobProgress) -> dict[str, Any]:
            logging.getLogger("strongroom.tests.job").info("an info line")
            logging.getLogger("strongroom.tests.job").warning("a warning line")
            logging.getLogger("elsewhere.library").warning("not strongroom's")
            go.set()
            assert other.wait(10)
            return {}

        row = _wait(db, runner.submit("verify", work, requested_by="alice"))
        runner.shutdown()
    finally:
        undo()
        root.removeHandler(console)
        root.setLevel(old_level)
        thread.join(10)
    kept = [line["message"] for line in json.loads(row.log or "[]")]
    assert "an info line" in kept and "a warning line" in kept
    assert "from another thread" not in kept and "not strongroom's" not in kept
    shown = [r.getMessage() for r in seen if r.name.startswith(("strongroom", "elsewhere"))]
    assert shown == ["a warning line", "not strongroom's", "from another thread"]
    assert logging.getLogger("strongroom").level == logging.NOTSET  # undone
    assert not console.filters


@pytest.mark.parametrize("job_id", ["x", "0" * 32])
def test_the_log_of_an_unknown_job_is_404(client: TestClient, web: WebSetup, job_id: str) -> None:
    assert client.get(f"/api/jobs/{job_id}/log", headers=web.viewer).status_code == 404
    assert client.get(f"/jobs/{job_id}", headers=web.viewer).status_code == 404
    assert client.get(f"/api/jobs/{job_id}/log").status_code == 401


def test_strongroom_serve_keeps_info_lines_in_jobs_but_not_on_its_console(
    tmp_path: Path,
) -> None:
    """The real `strongroom serve` (logging WARNING and above, no -v): a backup's job keeps
    its INFO lines, and the console shows none of them."""
    import httpx

    from tests.helpers import STRONGROOM
    from tests.web.test_docs import serve_process

    with serve_process(tmp_path) as served:
        where = f"--service-db={served.service_db}"
        created = subprocess.run(
            [*STRONGROOM, "token", "create", "ci", "--role=admin", where],
            env=served.env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        headers = {"Authorization": f"Bearer {created.stdout.strip()}"}
        with httpx.Client(base_url=served.base, timeout=10) as http:
            started = http.post("/api/backups", json={"target": "shop"}, headers=headers)
            assert started.status_code == 202, started.text
            job = wait_job(http, started.json()["job_id"], headers)
            assert job["status"] == "succeeded"
            lines = http.get(f"/api/jobs/{job['job_id']}/log", headers=headers).json()
    messages = [line["message"] for line in lines]
    assert f"backup {job['backup_id']} of shop complete" in messages
    assert served.process.stderr is not None
    console = served.process.stderr.read()
    assert "complete" not in console and "INFO" not in console, console
