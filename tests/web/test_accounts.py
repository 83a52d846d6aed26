"""Issue 17, "Credentials and accounts": the admin page (users and API tokens), sessions
that end when an account changes, token expiry and revocation, the last active admin."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from strongroom.web import accounts, audit
from strongroom.web.auth import create_token
from tests.helpers import make_sqlite_db
from tests.web.conftest import ADMIN_PW, VIEWER_PW, WebSetup, build_app, login

BOB_PW = "bob-pass-1234"


@pytest.fixture
def small(tmp_path: Path) -> WebSetup:
    db = make_sqlite_db(tmp_path / "shop.db", users=10, orders=10)
    return build_app(tmp_path, {"shop": f"sqlite://{db}"})


@pytest.fixture
def admin(small: WebSetup) -> Iterator[tuple[TestClient, str]]:
    """A browser signed in as alice (the only admin user) and its CSRF token."""
    with TestClient(small.app) as browser:
        yield browser, login(browser, "alice", ADMIN_PW)


def _post(browser: TestClient, csrf: str, path: str, **data: str):
    return browser.post(path, data={"csrf_token": csrf, **data})


def _actions(setup: WebSetup, action: str) -> list[tuple[str, str | None, str]]:
    return [(e.user, e.subject, e.result) for e in audit.recent(setup.ctx.db, action=action)]


def test_the_admin_page_is_for_admins_only(small: WebSetup) -> None:
    with TestClient(small.app) as browser:
        assert browser.get("/admin", follow_redirects=False).status_code in (302, 303, 401)
        csrf = login(browser, "victor", VIEWER_PW)
        assert browser.get("/admin").status_code == 403
        added = _post(
            browser,
            csrf,
            "/admin/users/add",
            name="mallory",
            password=BOB_PW,
            password_again=BOB_PW,
            role="admin",
        )
        assert added.status_code == 403
    assert "mallory" not in [u.name for u in accounts.list_users(small.ctx.db)]
    assert ("victor", "/admin/users/add", "denied: viewer role") in _actions(small, "admin")


def test_forms_need_the_csrf_token(small: WebSetup, admin: tuple[TestClient, str]) -> None:
    browser, _ = admin
    refused = browser.post(
        "/admin/users/add", data={"name": "bob", "password": BOB_PW, "password_again": BOB_PW}
    )
    assert refused.status_code == 403
    assert "bob" not in [u.name for u in accounts.list_users(small.ctx.db)]


def test_add_disable_enable_password_role_remove(
    small: WebSetup, admin: tuple[TestClient, str]
) -> None:
    browser, csrf = admin
    page = _post(
        browser,
        csrf,
        "/admin/users/add",
        name="bob",
        password=BOB_PW,
        password_again=BOB_PW,
        role="viewer",
    )
    assert page.status_code == 200 and 'data-user="bob"' in page.text
    assert BOB_PW not in page.text and "$argon2" not in page.text
    assert ("alice", "bob", "ok") in _actions(small, "user-add")

    with TestClient(small.app) as bob:
        login(bob, "bob", BOB_PW)
        assert bob.get("/api/backups").status_code == 200
        disabled = _post(browser, csrf, "/admin/users/disable", name="bob")
        assert disabled.status_code == 200
        assert bob.get("/api/backups").status_code == 401  # the session ended
        assert ("alice", "bob", "ok") in _actions(small, "user-disable")

        assert _post(browser, csrf, "/admin/users/enable", name="bob").status_code == 200
        login(bob, "bob", BOB_PW)
        assert bob.get("/api/backups").status_code == 200
        changed = _post(
            browser,
            csrf,
            "/admin/users/password",
            name="bob",
            password="bob-new-pass-99",
            password_again="bob-new-pass-99",
        )
        assert changed.status_code == 200 and "bob-new-pass-99" not in changed.text
        assert bob.get("/api/backups").status_code == 401
        login(bob, "bob", "bob-new-pass-99")

        promoted = _post(browser, csrf, "/admin/users/role", name="bob", role="admin")
        assert promoted.status_code == 200
        assert bob.get("/admin").status_code == 200  # the role holds at once
        assert ("alice", "bob: admin", "ok") in _actions(small, "user-role")

        removed = _post(browser, csrf, "/admin/users/remove", name="bob")
        assert removed.status_code == 200 and 'data-user="bob"' not in removed.text
        assert bob.get("/api/backups").status_code == 401
    gone = _post(browser, csrf, "/admin/users/remove", name="bob")
    assert gone.status_code == 404
    assert ("alice", "bob", "refused: no user 'bob'") in _actions(small, "user-remove")


def test_mismatched_or_short_passwords_change_nothing(
    small: WebSetup, admin: tuple[TestClient, str]
) -> None:
    browser, csrf = admin
    differ = _post(
        browser,
        csrf,
        "/admin/users/add",
        name="bob",
        password=BOB_PW,
        password_again=BOB_PW + "x",
    )
    short = _post(
        browser, csrf, "/admin/users/add", name="bob", password="short", password_again="short"
    )
    assert differ.status_code == 400 and short.status_code == 400
    assert "bob" not in [u.name for u in accounts.list_users(small.ctx.db)]


def test_the_last_active_admin_stays(small: WebSetup, admin: tuple[TestClient, str]) -> None:
    browser, csrf = admin
    for path, extra in (
        ("/admin/users/disable", {}),
        ("/admin/users/remove", {}),
        ("/admin/users/role", {"role": "viewer"}),
    ):
        refused = _post(browser, csrf, path, name="alice", **extra)
        assert refused.status_code == 409, (path, refused.text)
        assert "last active admin" in refused.text
    assert browser.get("/admin").status_code == 200  # still signed in, still admin
    assert any(
        r.startswith("refused: alice is the last") for _, _, r in _actions(small, "user-remove")
    )
    # with a second admin, alice may go
    _post(browser, csrf, "/admin/users/role", name="victor", role="admin")
    assert _post(browser, csrf, "/admin/users/disable", name="alice").status_code == 200
    assert browser.get("/admin", follow_redirects=False).status_code != 200


def test_a_token_is_shown_once_lists_its_use_and_can_be_revoked(
    small: WebSetup, admin: tuple[TestClient, str]
) -> None:
    browser, csrf = admin
    created = _post(
        browser, csrf, "/admin/tokens/create", name="deploy", role="viewer", expires="30d"
    )
    assert created.status_code == 200
    assert created.headers["cache-control"] == "no-store"
    token = re.search(r"<code>(sr_[^<]+)</code>", created.text)
    assert token is not None
    bearer = {"Authorization": f"Bearer {token.group(1)}"}
    assert browser.get("/api/backups", headers=bearer).status_code == 200
    # viewer role: no backups
    assert browser.post("/api/backups", json={"target": "shop"}, headers=bearer).status_code == 403

    listing = browser.get("/admin").text
    assert token.group(1) not in listing
    row = listing.split('data-token="deploy"', 1)[1].split("</tr>", 1)[0]
    assert "active" in row and "never" not in row  # used, and it expires
    info = {t.name: t for t in accounts.list_tokens(small.ctx.db)}["deploy"]
    assert info.last_used_at is not None and info.expires_at is not None
    expires = datetime.fromisoformat(info.expires_at.replace("Z", "+00:00"))
    assert timedelta(days=29) < expires - datetime.now(UTC) <= timedelta(days=30)
    entries = audit.recent(small.ctx.db, action="token-create")
    assert entries and all(token.group(1) not in (e.subject or "") + e.result for e in entries)

    revoked = _post(browser, csrf, "/admin/tokens/revoke", name="deploy")
    assert revoked.status_code == 200
    assert browser.get("/api/backups", headers=bearer).status_code == 401
    assert ("alice", "deploy", "ok") in _actions(small, "token-revoke")
    bad = _post(browser, csrf, "/admin/tokens/create", name="x", expires="soon")
    assert bad.status_code == 400 and "expiry" in bad.text


def test_an_expired_token_answers_401(small: WebSetup) -> None:
    past = create_token(small.ctx.db, "old", "admin", datetime.now(UTC) - timedelta(seconds=1))
    future = create_token(small.ctx.db, "new", "admin", datetime.now(UTC) + timedelta(hours=1))
    with TestClient(small.app) as client:
        assert (
            client.get("/api/backups", headers={"Authorization": f"Bearer {past}"}).status_code
            == 401
        )
        assert (
            client.get("/api/backups", headers={"Authorization": f"Bearer {future}"}).status_code
            == 200
        )
    states = {t.name: t.state for t in accounts.list_tokens(small.ctx.db)}
    assert states["old"] == "expired" and states["new"] == "active"
