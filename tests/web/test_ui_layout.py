"""The admin UI's layout in a real headless Chromium at 1366x768, 1920x1080 and 390x844:
no page scrolls sideways, no table column is cut off, phone tables show every column as a
labelled block, the restore dialog's buttons are on screen without scrolling, the pin is
an icon that does not depend on a font, and the site has an icon (/favicon.ico).

Screenshots go to shots_folder(tmp_path) as ``<page>-<width>.png``; set
STRONGROOM_SCREENSHOTS=docs/screenshots to refresh the README's."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import httpx
import pytest

from tests.web.browser import NEEDS_CHROMIUM, browser, login_page, served, shots_folder
from tests.web.conftest import ADMIN_PW

__all__ = ["browser", "served"]  # fixtures
pytestmark = NEEDS_CHROMIUM

SIZES = {1366: 768, 1920: 1080, 390: 844}
PHONE = 390
LONG_TAGS = ["manual", "pre-deploy", "release-2026-11-30"]
EXTRA_TABLES = [f"inventory_snapshot_{n:02d}" for n in range(14)]  # a longer plan to scroll


def _wait(client: httpx.Client, job_id: str, headers: dict[str, str]) -> dict:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}", headers=headers).json()
        if job["status"] in ("succeeded", "failed"):
            assert job["status"] == "succeeded", job
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")


@pytest.fixture
def rich(served, tmp_path: Path):
    """The served app with what makes pages wide: a backup with long tags, pinned, verified
    by a restore drill; a read-verified one; a restore into a file with a long path (the
    audit log's Result shows it); more tables (a longer plan)."""
    web, base = served
    db = sqlite3.connect(web.db_path)
    for name in EXTRA_TABLES:
        db.execute(f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, sku TEXT, qty INT)")
        db.executemany(f"INSERT INTO {name} (sku, qty) VALUES (?, ?)", [("a", 1), ("b", 2)])
    db.commit()
    db.close()
    with httpx.Client(base_url=base, timeout=30) as client:
        older_id = client.get("/api/backups", headers=web.admin).json()[-1]["backup_id"]
        started = client.post(
            "/api/backups", json={"target": "shop", "tags": LONG_TAGS}, headers=web.admin
        )
        newest = _wait(client, started.json()["job_id"], web.admin)["result"]["backup_id"]
        assert client.put(f"/api/backups/{newest}/pin", headers=web.admin).status_code == 200
        drill = client.post(f"/api/backups/{newest}/verify-restore", headers=web.admin)
        _wait(client, drill.json()["job_id"], web.admin)
        read = client.post(f"/api/backups/{older_id}/verify", headers=web.admin)
        _wait(client, read.json()["job_id"], web.admin)
        folder = tmp_path / "restores" / "a-rather-long-folder-name-for-the-copies-of-the-shop"
        folder.mkdir(parents=True)
        restored = client.post(
            f"/api/backups/{newest}/restore",
            json={
                "to": f"sqlite://{folder}/shop-copy-for-the-audit.db",
                "confirm": "shop-copy-for-the-audit",
            },
            headers=web.admin,
        )
        assert restored.status_code == 202, restored.text
        _wait(client, restored.json()["job_id"], web.admin)
    return web, base, newest


PAGE_WIDTH = "document.documentElement.scrollWidth"

# Each table's cells that lie outside what its scroll box shows (a cut-off column), and
# each cell whose own content is wider than the cell (clipped text).
HIDDEN_CELLS = """(selector) => {
  const out = [];
  for (const table of document.querySelectorAll(selector)) {
    const box = (table.closest('.scroll') || table).getBoundingClientRect();
    const right = Math.min(box.right, window.innerWidth);
    for (const cell of table.querySelectorAll('th, td')) {
      const r = cell.getBoundingClientRect();
      if (r.width === 0) continue;  // a visually hidden phone header
      const cut = r.right > right + 0.5 || r.left < box.left - 0.5;
      if (cut || cell.scrollWidth > cell.clientWidth + 1)
        out.push(`${cell.tagName} ${cell.dataset.label || cell.textContent.trim().slice(0, 30)}`
                 + ` [${Math.round(r.left)}-${Math.round(r.right)}`
                 + ` in ${Math.round(box.left)}-${Math.round(right)},`
                 + ` scroll ${cell.scrollWidth}/${cell.clientWidth}]`);
    }
  }
  return out;
}"""

# On a phone: per stacked table, the header labels and, per row, each cell's label (its
# ::before), whether it shows, and whether it lies inside the viewport.
PHONE_ROWS = """(selector) => [...document.querySelectorAll(selector)].map(table => {
  const labels = [...table.querySelectorAll('thead th')].map(th => th.textContent.trim());
  const rows = [...table.querySelectorAll('tbody tr:not(.empty)')].map(tr =>
    [...tr.children].map(td => {
    const r = td.getBoundingClientRect();
    const before = getComputedStyle(td, '::before').content;
    return {label: td.dataset.label || '', before: before, text: td.innerText.trim(),
            shown: r.width > 0 && r.height > 0 && getComputedStyle(td).display === 'block',
            inside: r.left >= -0.5 && r.right <= window.innerWidth + 0.5,
            value_left: r.left + parseFloat(getComputedStyle(td).paddingLeft),
            label_right: r.left + parseFloat(getComputedStyle(td, '::before').width)};
  }));
  const head = table.querySelector('thead').getBoundingClientRect();
  return {labels, rows, head_hidden: head.width <= 1 && head.height <= 1};
})"""


# Times shown in table cells that break over more than one line.
WRAPPED_TIMES = """() => [...document.querySelectorAll('main td.time, main td .time')]
.filter(el => {
  const range = document.createRange();
  range.selectNodeContents(el);
  return new Set([...range.getClientRects()].map(r => Math.round(r.top))).size > 1;
}).map(el => el.textContent.trim())"""


def _check_phone_tables(page, selector: str, where: str) -> None:
    tables = page.evaluate(PHONE_ROWS, selector)
    assert tables, f"{where}: no {selector}"
    for table in tables:
        assert table["head_hidden"], f"{where}: the header row still shows on a phone"
        assert table["rows"], f"{where}: no rows"
        for row in table["rows"]:
            labels = [cell["label"] for cell in row]
            # every column is in the block, under its header's name (the actions column of
            # the tokens table has a visually hidden header "Actions")
            assert labels == table["labels"], (where, labels, table["labels"])
            for cell in row:
                assert cell["shown"] and cell["inside"], (where, cell)
                assert cell["before"] == f'"{cell["label"]}"', (where, cell)
                assert cell["value_left"] >= cell["label_right"] - 0.5, (where, cell)


def _no_sideways_scroll(page, where: str) -> None:
    width = page.evaluate(PAGE_WIDTH)
    inner = page.evaluate("window.innerWidth")
    assert width <= inner, f"{where}: the page is {width} px wide in a {inner} px viewport"


def test_pages_fit_at_three_sizes(rich, browser, tmp_path):
    _web, base, newest = rich
    shots = shots_folder(tmp_path)
    pages = {
        "dashboard": "/",
        "backups": "/backups",
        "backup": f"/backups/{newest}",
        "retention": "/retention",
        "audit": "/audit",
        "admin": "/admin",
    }
    measured = {}
    for width, height in SIZES.items():
        context = browser.new_context(viewport={"width": width, "height": height})
        page = context.new_page()
        login_page(page, base, "alice", ADMIN_PW)
        for name, path in pages.items():
            page.goto(f"{base}{path}")
            page.wait_for_load_state("networkidle")
            where = f"{name} at {width}px"
            _no_sideways_scroll(page, where)
            assert page.evaluate(WRAPPED_TIMES) == [], where
            page.screenshot(path=str(shots / f"{name}-{width}.png"), full_page=True)
            # nothing cut off: every cell of every table is inside its table's visible box
            # (on a phone: of each table that stays a table, such as a backup's 3 columns)
            tables = "main table:not(.stack)" if width == PHONE else "main table"
            assert page.evaluate(HIDDEN_CELLS, tables) == [], where
        if width != PHONE:
            page.goto(f"{base}/backups")
            verified = page.locator("table.backups th", has_text="Verified")
            box = verified.bounding_box()
            assert box is not None and box["x"] + box["width"] <= width, box
            measured[width] = round(box["x"] + box["width"])
            page.goto(f"{base}/retention")
            why = page.locator("table.retention td[data-label=Why]")
            assert why.count() >= 3 and any("pinned" in t for t in why.all_inner_texts())
            assert page.evaluate(HIDDEN_CELLS, "table.retention") == []
            page.goto(f"{base}/audit")
            result = page.locator('tr[data-action="restore"] td[data-label=Result]').first
            assert "shop-copy-for-the-audit" in result.inner_text()
            assert page.evaluate(HIDDEN_CELLS, "table.audit") == []
        else:
            for name, selector in [
                ("backups", "table.backups"),
                ("backup", "table.verifications"),
                ("retention", "table.retention"),
                ("audit", "table.audit"),
                ("admin", "table.stack"),
            ]:
                page.goto(f"{base}{pages[name]}")
                _check_phone_tables(page, selector, f"{name} at {width}px")
        context.close()
    assert measured  # (the Verified header's right edge, per width: printed on failure)


def test_restore_dialog_buttons_show_without_scrolling(rich, browser, tmp_path):
    _web, base, newest = rich
    shots = shots_folder(tmp_path)
    for width, height in [(1366, 768), (1366, 900), (1920, 1080), (PHONE, 844)]:
        context = browser.new_context(viewport={"width": width, "height": height})
        page = context.new_page()
        login_page(page, base, "alice", ADMIN_PW)
        page.goto(f"{base}/backups/{newest}")
        page.click("button.restore-open")
        page.wait_for_selector("dialog[open] .plan")
        page.wait_for_selector("dialog input[name=confirm]")
        where = f"restore dialog at {width}x{height}"
        for label in ("Restore", "Show plan", "Close"):
            button = page.locator("dialog button", has_text=label).last
            assert button.is_visible(), (where, label)
            box = button.bounding_box()
            assert box is not None, (where, label)
            assert 0 <= box["y"] and box["y"] + box["height"] <= height, (where, label, box)
            assert 0 <= box["x"] and box["x"] + box["width"] <= width, (where, label, box)
        confirm = page.locator("dialog input[name=confirm]").bounding_box()
        assert confirm is not None and confirm["y"] + confirm["height"] <= height, where
        assert page.evaluate("window.scrollY") == 0, where
        _no_sideways_scroll(page, where)
        if height == 768:  # the options and the plan are taller than the dialog: they scroll
            scroll = page.evaluate(
                "(() => { const s = document.querySelector('dialog .dialog-scroll');"
                " return [s.scrollHeight, s.clientHeight]; })()"
            )
            assert scroll[0] > scroll[1], scroll
        if height != 900:  # 1366x768 is the one named restore-dialog-1366.png
            page.screenshot(path=str(shots / f"restore-dialog-{width}.png"))
        if (width, height) == (1366, 768):
            # another destination: its plan and its confirmation replace the old ones
            page.fill("dialog input[name=to]", f"sqlite://{tmp_path}/elsewhere.db")
            page.click("dialog button:has-text('Show plan')")
            page.wait_for_selector('dialog .plan[data-database="elsewhere"]')
            assert page.locator("dialog #restore-confirm .confirm-name").inner_text() == "elsewhere"
            # no plan (a problem instead): no confirmation on show
            page.fill("dialog input[name=to]", "nosuchengine://x/y")
            page.click("dialog button:has-text('Show plan')")
            page.wait_for_selector("dialog #plan .problem")
            assert not page.locator("dialog input[name=confirm]").is_visible()
            assert not page.locator("dialog button.danger", has_text="Restore").is_visible()
        context.close()


def test_the_pin_is_a_drawn_icon_not_a_font_glyph(rich, browser):
    _web, base, newest = rich
    page = browser.new_context(viewport={"width": 1366, "height": 768}).new_page()
    login_page(page, base, "alice", ADMIN_PW)
    for path, selector in [
        ("/backups", f'tr[data-backup="{newest}"] .pin'),
        (f"/backups/{newest}", "h1 .pin"),
    ]:
        page.goto(f"{base}{path}")
        pin = page.locator(selector)
        assert pin.count() == 1, path
        icon = pin.locator("svg")
        assert icon.count() == 1, path
        box = icon.bounding_box()
        assert box is not None and box["width"] >= 8 and box["height"] >= 8, (path, box)
        shape = page.evaluate(
            "(sel) => { const p = document.querySelector(sel + ' svg path').getBBox();"
            " return [p.width, p.height]; }",
            selector,
        )
        assert shape[0] > 0 and shape[1] > 0, (path, shape)
        # no emoji or other character that a font must supply
        text = pin.evaluate(
            "(el) => [...el.childNodes].filter(n => n.nodeType === 3)"
            ".map(n => n.textContent).join('')"
        )
        assert all(ord(ch) < 0x2000 for ch in text), (path, text)
    page.goto(f"{base}/backups")
    assert "📌" not in page.content()


def test_favicon_is_served_without_signing_in(served, browser):
    _web, base = served
    with httpx.Client(base_url=base) as client:
        icon = client.get("/favicon.ico")
        assert icon.status_code == 200, icon.text
        assert icon.headers["content-type"].startswith("image/")
        assert icon.content[:4] == b"\x00\x00\x01\x00"  # an ICO file
        svg = client.get("/static/favicon.svg")
        assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg")
        login = client.get("/login").text
        assert 'rel="icon"' in login and "/favicon.ico" in login
    # the browser loads the linked icon (no 404 in the console)
    page = browser.new_context().new_page()
    failed: list[str] = []
    page.on("response", lambda r: failed.append(r.url) if r.status >= 400 else None)
    page.goto(f"{base}/login")
    size = page.evaluate(
        "async () => { const r = await fetch('/favicon.ico'); return (await r.blob()).size; }"
    )
    assert size > 100 and failed == []
