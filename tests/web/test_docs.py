"""The API documentation at /docs, from the vendored Swagger UI (no network), and the
URLs `strongroom serve` prints, which all answer."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from fastapi.testclient import TestClient

from strongroom.cli.web_cmd import serve_banner
from tests.fixtures.postgres import free_port
from tests.helpers import REPO_ROOT, STRONGROOM, make_sqlite_db
from tests.web.browser import NEEDS_CHROMIUM, browser, login_page, served, shots_folder
from tests.web.conftest import ADMIN_PW, WebSetup, login, write_config

__all__ = ["browser", "served"]  # fixtures

SWAGGER_JS = "/static/vendor/swagger-ui/swagger-ui-bundle.js"
SWAGGER_CSS = "/static/vendor/swagger-ui/swagger-ui.css"


# --- the page, over HTTP ------------------------------------------------------------------
def test_docs_is_served_from_the_vendored_swagger_ui_without_inline_script(
    client: TestClient,
) -> None:
    page = client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src" not in page.headers["content-security-policy"]  # default-src 'self'
    html = page.text
    scripts = re.findall(r"<script\b[^>]*>", html)
    assert scripts == [f'<script src="{SWAGGER_JS}">', '<script src="/static/swagger-init.js">']
    assert re.findall(r"<script\b[^>]*>([^<]*)</script>", html) == ["", ""]  # nothing inline
    assert f'href="{SWAGGER_CSS}"' in html and 'data-openapi-url="/openapi.json"' in html
    assert "cdn." not in html and "https://" not in html
    assert "data-csrf" not in html  # nobody is signed in
    for asset in (SWAGGER_JS, SWAGGER_CSS, "/static/swagger-init.js", "/openapi.json"):
        assert client.get(asset).status_code == 200, asset


def test_the_old_and_the_announced_api_urls_lead_to_the_docs(client: TestClient) -> None:
    for old in ("/api/docs", "/api/", "/api"):
        answer = client.get(old, follow_redirects=False)
        assert (answer.status_code, answer.headers["location"]) == (307, "/docs"), old
        assert client.get(old).url.path == "/docs"


def test_a_signed_in_browser_gets_its_csrf_token_for_try_it_out(
    client: TestClient, web: WebSetup
) -> None:
    csrf = login(client, "alice", ADMIN_PW)
    assert f'data-csrf="{csrf}"' in client.get("/docs").text
    # a token (no session, nothing to protect against) gets no CSRF token in the page
    client.cookies.clear()
    assert "data-csrf" not in client.get("/docs", headers=web.admin).text


# --- the URLs `strongroom serve` prints ------------------------------------------------------
def test_the_banner_names_urls_with_brackets_for_ipv6() -> None:
    assert serve_banner("::1", 8080) == (
        "strongroom serve: http://[::1]:8080/ (API documentation http://[::1]:8080/docs, "
        "OpenAPI schema http://[::1]:8080/openapi.json)"
    )
    assert "/api/" not in serve_banner("127.0.0.1", 8080)


@dataclass
class Served:
    base: str
    banner: str
    process: subprocess.Popen[str]
    service_db: Path
    env: dict[str, str]


@contextmanager
def serve_process(tmp: Path) -> Iterator[Served]:
    """The real `strongroom serve` (no scheduler) on a free loopback port, over a new
    repository with a SQLite target "shop"; stopped (and its output collected) after."""
    db = make_sqlite_db(tmp / "shop.db", users=200, orders=400)
    config = tmp / "strongroom.toml"
    config.write_text(write_config(tmp, {"shop": f"sqlite://{db}"}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    env.update(
        PYTHONPATH=os.pathsep.join([str(REPO_ROOT / "src"), str(REPO_ROOT)]),
        PYTHONUNBUFFERED="1",
        HOME=str(tmp),
    )
    init = subprocess.run(
        [*STRONGROOM, "init", "--config", str(config)],
        env=env,
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert init.returncode == 0, init.stderr
    port = free_port()
    service_db = tmp / "service.db"
    args = ["serve", "--config", str(config), "--port", str(port)]
    args += ["--service-db", str(service_db), "--no-scheduler"]
    process = subprocess.Popen(
        [*STRONGROOM, *args],
        env=env,
        cwd=tmp,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline().strip()
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{base}/api/health", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        yield Served(base, banner, process, service_db, env)
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def test_every_url_strongroom_serve_prints_answers_200(tmp_path: Path) -> None:
    with serve_process(tmp_path) as served_app:
        urls = re.findall(r"https?://\S+?(?=[),\s]|$)", served_app.banner)
        assert len(urls) == 3, served_app.banner
        assert urls[0] == f"{served_app.base}/"
        for url in urls:
            answer = httpx.get(url, follow_redirects=True, timeout=10)
            assert answer.status_code == 200, (url, answer.status_code)
        docs, schema = urls[1], urls[2]
        assert httpx.get(docs, timeout=10).status_code == 200  # no redirect either
        assert httpx.get(schema, timeout=10).json()["info"]["title"] == "strongroom"
        assert httpx.get(f"{served_app.base}/api/", timeout=10).status_code == 307


# --- the page in the real Chromium ----------------------------------------------------------
@NEEDS_CHROMIUM
def test_docs_render_in_chromium_with_no_request_off_the_host(served, browser, tmp_path):
    web, base = served
    shots = shots_folder(tmp_path)
    before = len(web.ctx.index.backups(target="shop"))
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    page = context.new_page()
    requests: list[str] = []
    problems: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.goto(f"{base}/docs")
    page.wait_for_selector(".opblock-summary", timeout=30_000)
    operations = page.locator(".opblock")
    assert operations.count() >= 15
    assert page.locator(".opblock-summary-path", has_text="/api/backups").count() >= 1
    assert "strongroom" in page.locator(".info .title").inner_text()
    page.screenshot(path=str(shots / "docs-1366.png"))
    # open one operation: its parameters and responses render too
    page.locator(".opblock-get .opblock-summary", has_text="/api/jobs/{job_id}").first.click()
    page.wait_for_selector(".opblock.is-open .responses-wrapper")
    assert requests and all(url.startswith(base + "/") for url in requests), requests
    assert f"{base}/openapi.json" in requests
    assert not [p for p in problems if "Content Security Policy" in p or "Refused" in p], problems
    assert not problems, problems

    # signed in, "Try it out" calls the API with the session; an unsafe method carries the
    # page's CSRF token (static/swagger-init.js), so a POST is accepted, not refused (403)
    login_page(page, base, "alice", ADMIN_PW)
    page.goto(f"{base}/docs")
    block = page.locator(
        ".opblock-post",
        has=page.locator(".opblock-summary-path", has_text=re.compile(r"^/api/backups$")),
    ).first
    block.locator(".opblock-summary").click()
    block.locator("button.try-out__btn").click()
    block.locator("textarea.body-param__text").fill('{"target": "shop", "tags": ["docs"]}')
    block.locator("button.execute").click()
    status = block.locator(".live-responses-table tbody .response-col_status").first
    status.wait_for(timeout=20_000)
    assert status.inner_text().strip() == "202", block.locator(".live-responses-table").inner_text()
    assert all(url.startswith(base + "/") for url in requests), requests
    deadline = time.monotonic() + 60
    while len(web.ctx.index.backups(target="shop")) == before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(web.ctx.index.backups(target="shop")) == before + 1
    context.close()
