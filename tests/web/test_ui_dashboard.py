"""The dashboard's charts and live update in a real headless Chromium (Playwright).

Set STRONGROOM_SCREENSHOTS=docs/screenshots to refresh the README's screenshots."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from zoneinfo import ZoneInfo

import httpx
import pytest
import uvicorn

from strongroom.config import parse_settings
from strongroom.repository.ids import parse_iso
from strongroom.repository.repository import Repository
from strongroom.storage.factory import open_storage
from strongroom.web.app import create_app
from strongroom.web.auth import create_token
from tests.fixtures.postgres import free_port
from tests.helpers import make_sqlite_db
from tests.web.browser import NEEDS_CHROMIUM, browser, login_page, served, shots_folder
from tests.web.conftest import ADMIN_PW, VIEWER_PW, WebSetup, fixture_users, wait_job, write_config

__all__ = ["browser", "served"]  # fixtures
pytestmark = NEEDS_CHROMIUM

ZONE = "Asia/Kolkata"  # UTC+05:30: a time shown in UTC by mistake reads differently
SIZES = [(1366, 768), (1920, 1080), (390, 844)]
UNITS = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}


@pytest.fixture(scope="module")
def charted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[WebSetup, str]]:
    """Four targets in the configured zone Asia/Kolkata: "shop" with three backups a
    second or more apart, "solo" with one, "empty" with none, "broken" with one failed run."""
    tmp = tmp_path_factory.mktemp("charted")
    shop = make_sqlite_db(tmp / "shop.db", users=400, orders=1200)
    solo = make_sqlite_db(tmp / "solo.db", users=100, orders=200, seed=5)
    empty = make_sqlite_db(tmp / "empty.db", users=10, orders=10, seed=6)
    targets = {
        "shop": f"sqlite://{shop}",
        "solo": f"sqlite://{solo}",
        "empty": f"sqlite://{empty}",
        "broken": f"sqlite://{tmp / 'missing' / 'gone.db'}",
    }
    Repository.init(open_storage(str(tmp / "repo")), key_file=tmp / "repo.key")
    config = write_config(tmp, targets).replace('timezone = "UTC"', f'timezone = "{ZONE}"')
    app = create_app(parse_settings(config), str(tmp / "service.db"), env={})
    ctx = app.state.ctx
    fixture_users(ctx.db)  # (the fixture's hashes, made once per process)
    web = WebSetup(tmp, shop, app, create_token(ctx.db, "ci", "admin"), "")
    with _serving(app) as base:
        with httpx.Client(base_url=base) as client:
            for target, grow in [("shop", 300), ("shop", 900), ("shop", 0), ("solo", 0)]:
                job = _backup(client, web, target)
                assert job["status"] == "succeeded", job
                if grow:
                    make_sqlite_db(shop, users=grow, orders=3 * grow, seed=grow)
                time.sleep(1.1)  # a second apart: distinct points on the time axis
            assert _backup(client, web, "broken")["status"] == "failed"
        yield web, base


class _serving:
    """The app on uvicorn in a thread on a free loopback port (as tests/web/browser.py)."""

    def __init__(self, app) -> None:
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.server.started, "uvicorn did not start"
        return self.base

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)


def _backup(client: httpx.Client, web: WebSetup, target: str) -> dict:
    started = client.post("/api/backups", json={"target": target}, headers=web.admin)
    assert started.status_code == 202, started.text
    return wait_job(client, started.json()["job_id"], web.admin)


def _history(base: str, web: WebSetup, target: str) -> dict:
    got = httpx.get(f"{base}/api/targets/{target}/history", headers=web.admin)
    assert got.status_code == 200, got.text
    return got.json()


def _in_zone(iso: str) -> str:
    """What the chart's legend shows for a UTC time: the configured zone's wall clock."""
    return parse_iso(iso).astimezone(ZoneInfo(ZONE)).strftime("%Y-%m-%d %H:%M") + f" {ZONE}"


def _size(text: str) -> float:
    number, unit = text.split()
    return float(number) * UNITS[unit]


def _close(shown: str, expected: int) -> bool:
    """A legend's "1.2 MiB" against a byte count (one decimal of the unit shown)."""
    unit = shown.split()[1]
    return abs(_size(shown) - expected) <= 0.051 * UNITS[unit]


def _legend(page, card: str, chart: str) -> dict[str, str]:
    """The legend of one chart: series label -> value shown."""
    return page.evaluate(
        """([card, chart]) => {
            const fig = document.querySelector(
              `.target-body[data-card="${card}"] figure[data-chart="${chart}"]`);
            const out = {};
            fig.querySelectorAll('.u-legend .u-series').forEach(row => {
              out[row.querySelector('.u-label').textContent.trim()] =
                row.querySelector('.u-value').textContent.trim();
            });
            return out;
        }""",
        [card, chart],
    )


def _point(page, card: str, chart: str, index: int, series: int) -> dict[str, float]:
    """Where point ``index`` of ``series`` is drawn: page coordinates and canvas pixel."""
    return page.evaluate(
        """([card, chart, index, series]) => {
            const plot = document.querySelector(
              `.target-body[data-card="${card}"] figure[data-chart="${chart}"] .chart-plot`);
            const u = plot.uplot;
            const left = u.valToPos(u.data[0][index], 'x');
            const top = u.valToPos(u.data[series][index], 'y');
            const box = u.over.getBoundingClientRect();
            return {x: box.left + left, y: box.top + top, left, top,
                    width: u.bbox.width / devicePixelRatio,
                    cx: Math.round(u.bbox.left + left * devicePixelRatio),
                    cy: Math.round(u.bbox.top + top * devicePixelRatio)};
        }""",
        [card, chart, index, series],
    )


def _hover(page, card: str, chart: str, index: int, series: int) -> None:
    """Move the mouse onto a point; wait until the chart's cursor is on it."""
    page.locator(
        f".target-body[data-card={card}] figure[data-chart={chart}]"
    ).scroll_into_view_if_needed()
    point = _point(page, card, chart, index, series)
    page.mouse.move(point["x"], point["y"])
    page.wait_for_function(
        """([card, chart, index]) => document.querySelector(
            `.target-body[data-card="${card}"] figure[data-chart="${chart}"] .chart-plot`)
            .uplot.cursor.idx === index""",
        arg=[card, chart, index],
        timeout=5_000,
    )


def _pixel(page, card: str, chart: str, x: int, y: int) -> list[int]:
    return page.evaluate(
        """([card, chart, x, y]) => {
            const canvas = document.querySelector(
              `.target-body[data-card="${card}"] figure[data-chart="${chart}"] canvas`);
            return Array.from(canvas.getContext('2d').getImageData(x, y, 1, 1).data);
        }""",
        [card, chart, x, y],
    )


def _drawn(page) -> None:
    page.wait_for_selector(".target-body[data-card=shop] .charts[data-drawn]", timeout=15_000)
    page.wait_for_selector(".target-body[data-card=solo] .charts[data-drawn]", timeout=15_000)
    page.wait_for_selector(".target-body[data-card=broken] .charts[data-drawn]", timeout=15_000)


def test_charts_have_axes_units_zone_and_hover_values_at_three_sizes(charted, browser, tmp_path):
    web, base = charted
    shots = shots_folder(tmp_path)
    history = _history(base, web, "shop")
    points = history["backups"]
    assert len(points) == 3
    for width, height in SIZES:
        context = browser.new_context(viewport={"width": width, "height": height})
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc, errors=errors: errors.append(str(exc)))
        login_page(page, base, "alice", ADMIN_PW)
        _drawn(page)
        card = page.locator(".target-body[data-card=shop]")
        assert card.locator("figure.chart canvas").count() == 3
        labels = [t.strip() for t in card.locator(".chart-y").all_inner_texts()]
        assert re.fullmatch(r"stored \((B|KiB|MiB)\)", labels[0]), labels
        assert labels[1] == "duration (s)" and labels[2] == "outcome"
        for axis in card.locator(".chart-x").all():
            assert axis.is_visible() and ZONE in axis.inner_text()
        caption = card.locator("figure[data-chart=size] figcaption").inner_text()
        assert "new bytes stored by each backup" in caption and "cumulative" in caption
        assert "Backup duration" in card.locator("figure[data-chart=duration]").inner_text()

        # away from the chart the legend shows the newest backup's values
        legend = _legend(page, "shop", "size")
        assert legend["backup of"] == _in_zone(points[-1]["finished_at"])
        assert _close(legend["cumulative"], history["stored_bytes"])
        assert _close(legend["new in this backup"], points[-1]["stored_new_bytes"])

        # hovering the first point shows its values: time in the zone, bytes with units
        _hover(page, "shop", "size", 0, 2)
        legend = _legend(page, "shop", "size")
        assert legend["backup of"] == _in_zone(points[0]["finished_at"])
        assert _close(legend["cumulative"], points[0]["stored_cumulative_bytes"])
        assert _close(legend["new in this backup"], points[0]["stored_new_bytes"])
        assert not _close(legend["cumulative"], history["stored_bytes"])

        # the duration chart's hover names seconds
        _hover(page, "shop", "duration", 1, 1)
        shown = _legend(page, "shop", "duration")["duration"]
        assert re.fullmatch(r"\d+\.\d\d? s", shown), shown
        assert abs(float(shown.split()[0]) - points[1]["duration_seconds"]) <= 0.051
        page.mouse.move(1, 1)
        page.wait_for_function(  # away again: the newest values
            "() => document.querySelector('.target-body[data-card=shop] "
            "figure[data-chart=duration] .chart-plot').uplot.cursor.idx === null"
        )

        assert page.evaluate("document.documentElement.scrollWidth") <= width  # no overflow
        page.screenshot(path=str(shots / f"dashboard-{width}.png"), full_page=True)
        assert errors == []
        context.close()


def test_one_backup_no_backup_and_failed_runs_read_well(charted, browser):
    web, base = charted
    solo = _history(base, web, "solo")["backups"]
    assert len(solo) == 1
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    page = context.new_page()
    login_page(page, base, "victor", VIEWER_PW)  # viewers see the charts too
    _drawn(page)

    # one backup: a drawn dot in the middle of the time axis, its values in the legend
    card = page.locator(".target-body[data-card=solo]")
    assert card.locator("figure.chart canvas").count() == 3
    for chart, series in (("size", 2), ("duration", 1)):
        point = _point(page, "solo", chart, 0, series)
        assert abs(point["left"] - point["width"] / 2) < 2, point  # centred, not at an edge
        red, green, blue, alpha = _pixel(page, "solo", chart, point["cx"], point["cy"])
        assert alpha == 255 and (red, green, blue) != (255, 255, 255), (chart, red, green, blue)
        assert blue > red if chart == "size" else green > red  # the series' colour
    legend = _legend(page, "solo", "size")
    assert legend["backup of"] == _in_zone(solo[0]["finished_at"])
    assert _close(legend["cumulative"], solo[0]["stored_cumulative_bytes"])
    assert _close(legend["new in this backup"], solo[0]["stored_new_bytes"])
    assert legend["cumulative"] == legend["new in this backup"]  # one backup: the same
    assert re.fullmatch(r"\d+\.\d\d? s", _legend(page, "solo", "duration")["duration"])
    assert _legend(page, "solo", "runs")["succeeded"].startswith("yes (")

    # no backup: a sentence instead of each chart
    empty = page.locator(".target-body[data-card=empty]")
    page.wait_for_selector(".target-body[data-card=empty] figure[data-chart=runs] .chart-empty")
    assert empty.locator("canvas").count() == 0
    sentences = empty.locator(".chart-empty").all_inner_texts()
    assert len(sentences) == 3 and all(s.endswith(".") for s in sentences), sentences
    assert "No backups yet" in sentences[0] and "No backup runs recorded" in sentences[2]

    # a target whose only run failed: no size chart, and the failure on the runs chart
    broken = page.locator(".target-body[data-card=broken]")
    assert broken.locator("figure[data-chart=size] .chart-empty").count() == 1
    assert broken.locator("figure[data-chart=runs] canvas").count() == 1
    runs = _legend(page, "broken", "runs")
    assert runs["succeeded"] == "\u2013" and re.fullmatch(r"yes \(\w+\)", runs["failed"]), runs
    context.close()


def test_back_up_now_updates_the_card_and_the_list_in_another_tab(served, browser):
    _, base = served
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    page = context.new_page()
    login_page(page, base, "alice", ADMIN_PW)
    listing = context.new_page()  # a second tab on /backups, same session
    listing.goto(f"{base}/backups")
    rows_before = listing.locator("#backup-rows tr[data-backup]").count()
    page.wait_for_selector(".target-body[data-card=shop] .charts[data-drawn]")
    card = page.locator(".target-body[data-card=shop]")
    count = int(card.locator(".backup-count").inner_text())
    newest = card.locator(".newest a").get_attribute("href")
    for tab in (page, listing):
        tab.evaluate("window.__noReload = true")  # gone if the page is loaded again

    page.click("button.backup-now")
    page.wait_for_selector('.card.target .job[data-status="succeeded"]', timeout=60_000)
    job = page.locator(".card.target .job").first
    backup_id = job.locator("p.ok a").first.inner_text()
    # the finished job's total is what was dumped: the same size on both sides, 100 %
    text = job.locator(".job-bytes").inner_text().strip()
    match = re.fullmatch(r"(\d+\.\d \w+|\d+ B) of (\d+\.\d \w+|\d+ B) · 100 %", text)
    assert match and match.group(1) == match.group(2), text

    page.wait_for_function(
        "([n]) => document.querySelector('.target-body[data-card=shop] .backup-count')"
        ".textContent.trim() === String(n)",
        arg=[count + 1],
        timeout=15_000,
    )
    assert card.locator(".newest a").get_attribute("href") == f"/backups/{backup_id}" != newest
    page.wait_for_function(  # the charts were drawn again with the new backup
        "([n]) => { const p = document.querySelector("
        "'.target-body[data-card=shop] figure[data-chart=size] .chart-plot');"
        " return p && p.uplot && p.uplot.data[0].length === n; }",
        arg=[count + 1],
        timeout=15_000,
    )
    assert page.locator(f'.jobs .job a[href="/backups/{backup_id}"]').count() >= 1  # kept

    listing.wait_for_selector(f'#backup-rows tr[data-backup="{backup_id}"]', timeout=15_000)
    assert listing.locator("#backup-rows tr[data-backup]").count() == rows_before + 1
    for tab in (page, listing):
        assert tab.evaluate("window.__noReload") is True
    context.close()
