"""The admin UI in a real headless Chromium (Debian's /usr/bin/chromium) via Playwright.

Set STRONGROOM_SCREENSHOTS=docs/screenshots to refresh the README's screenshots."""

from __future__ import annotations

from tests.helpers import sqlite_counts
from tests.web.browser import NEEDS_CHROMIUM, browser, login_page, served, shots_folder
from tests.web.conftest import ADMIN_PW, VIEWER_PW

__all__ = ["browser", "served"]  # fixtures
pytestmark = NEEDS_CHROMIUM


def test_admin_backs_up_restores_and_a_viewer_is_refused(served, browser, tmp_path):
    web, base = served
    shots = shots_folder(tmp_path)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(f"{base}/login")
    page.screenshot(path=str(shots / "login.png"))
    login_page(page, base, "alice", ADMIN_PW)

    # start a backup and watch its progress bar reach done
    page.click("button.backup-now")
    job = page.locator(".card.target .job").first
    job.wait_for()
    page.wait_for_selector('.card.target .job[data-status="succeeded"]', timeout=60_000)
    assert job.locator(".bar").get_attribute("aria-valuenow") == "100"
    backup_id = job.locator("a").first.inner_text()
    page.reload()

    page.goto(f"{base}/backups")
    page.wait_for_selector(f'tr[data-backup="{backup_id}"]')
    page.click(f'a[href="/backups/{backup_id}"]')
    page.wait_for_selector("text=Tables")
    assert page.locator("td", has_text="orders").count() == 1

    # the restore dialog shows the plan for the configured database first
    page.click("button.restore-open")
    page.wait_for_selector("dialog[open] .plan")
    assert page.locator(".plan .dbname").inner_text() == "shop"
    assert page.locator("dialog select[name=missing_roles]").count() == 1
    assert page.locator("dialog .plan .refusal").count() == 0  # SQLite: nothing to decide

    # restore into a scratch SQLite file instead
    scratch = tmp_path / "scratch.db"
    page.fill("dialog input[name=to]", f"sqlite://{scratch}")
    page.click("dialog button:has-text('Show plan')")
    page.wait_for_selector('dialog .plan[data-database="scratch"]')
    page.fill("dialog input[name=confirm]", "scratch")
    page.click("dialog button:has-text('Restore')")
    page.wait_for_selector(
        '#restore-result .job[data-status="succeeded"], #restore-result .job[data-status="failed"],'
        " #restore-result .problem",
        timeout=60_000,
    )
    assert page.locator('#restore-result .job[data-status="succeeded"]').count() == 1, page.locator(
        "#restore-result"
    ).inner_text()
    assert sqlite_counts(scratch) == sqlite_counts(web.db_path)
    page.click("dialog .close-dialog")

    page.goto(f"{base}/audit")
    row = page.locator('tr[data-action="restore"]').first
    assert "ok (verified)" in row.inner_text() and "alice" in row.inner_text()
    assert f"sqlite://{scratch}" not in page.content()
    page.goto(f"{base}/retention")
    page.wait_for_selector("text=Retention preview")

    phone = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=1)
    small = phone.new_page()
    login_page(small, base, "alice", ADMIN_PW)
    small.goto(f"{base}/backups/{backup_id}")
    assert small.evaluate("document.documentElement.scrollWidth") <= 400  # no sideways page
    phone.close()

    # a viewer sees no restore button and is refused the restore itself
    viewer = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    login_page(viewer, base, "victor", VIEWER_PW)
    viewer.goto(f"{base}/backups/{backup_id}")
    assert viewer.locator("button.restore-open").count() == 0
    assert viewer.locator("text=Download").count() == 0
    viewer.goto(f"{base}/ui/backups/{backup_id}/restore")
    assert "Not allowed" in viewer.content()
    status = viewer.evaluate(
        """async ([id]) => {
            const csrf = JSON.parse(document.body.getAttribute('hx-headers'))['X-CSRF-Token'];
            const r = await fetch(`/ui/backups/${id}/restore`, {method: 'POST',
              headers: {'X-CSRF-Token': csrf, 'Content-Type': 'application/x-www-form-urlencoded'},
              body: 'confirm=shop'});
            return r.status;
        }""",
        [backup_id],
    )
    assert status == 403
    from strongroom.web import audit

    denied = [e for e in audit.recent(web.ctx.db, action="restore") if e.user == "victor"]
    assert denied and denied[0].result == "denied: viewer role"
    context.close()
