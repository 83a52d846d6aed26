"""A real headless Chromium (Debian's /usr/bin/chromium) driven by Playwright, and the app
served by uvicorn on a loopback port: the fixtures every UI test uses.

Set STRONGROOM_SCREENSHOTS=docs/screenshots to refresh the README's screenshots."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from tests.fixtures.postgres import free_port
from tests.helpers import REPO_ROOT, make_sqlite_db
from tests.web.conftest import WebSetup, build_app

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

NEEDS_CHROMIUM = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs /usr/bin/chromium")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[WebSetup, str]]:
    """The app on a real uvicorn server in a thread, on a free loopback port."""
    db = make_sqlite_db(tmp_path / "shop.db", users=3000, orders=12000)
    web = build_app(
        tmp_path, {"shop": f"sqlite://{db}"}, extra='schedule = { daily = "0 2 * * *" }'
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(web.app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    _history(web, f"http://127.0.0.1:{port}")
    try:
        yield web, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


def _history(web: WebSetup, base: str) -> None:
    """Two earlier backups (the database grows between them), for the dashboard's charts."""
    import httpx

    from tests.web.conftest import wait_job

    with httpx.Client(base_url=base) as client:
        for grow in (True, False):
            started = client.post(
                "/api/backups", json={"target": "shop", "tags": ["daily"]}, headers=web.admin
            )
            assert wait_job(client, started.json()["job_id"], web.admin)["status"] == "succeeded"
            if grow:
                make_sqlite_db(web.db_path, users=300, orders=3000, seed=11)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """One headless Chromium per test module (a launch costs ~1.2 s and ~1 s of CPU); each
    test opens its own context (``browser.new_context``: its own cookies, storage and
    pages) and closes it, as Playwright's own pytest plugin shares one browser."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield instance
        finally:
            instance.close()


def shots_folder(tmp_path: Path) -> Path:
    target = os.environ.get("STRONGROOM_SCREENSHOTS")
    folder = (REPO_ROOT / target) if target else tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def login_page(page, base: str, name: str, password: str) -> None:
    page.goto(f"{base}/login")
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")
