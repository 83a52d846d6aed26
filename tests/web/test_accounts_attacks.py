"""Issue 17, "Credentials and accounts", attacked: a viewer at every /admin action, requests
without CSRF, odd and look-alike names, HTML in names, expiry values, reused token names,
the expiry boundary, disabled users, removing or demoting yourself, and the CLI against a
service database that is missing or is not a database. Nothing is ever in an output that
is a password, a hash or a token."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from strongroom.errors import UsageError
from strongroom.web import accounts, audit
from strongroom.web.auth import create_token
from strongroom.web.models import ApiToken, User
from tests.helpers import cli_fails, cli_ok, run_cli
from tests.web.conftest import ADMIN_PW, VIEWER_PW, WebSetup, build_app, login

PW = "attack-pass-123"
CLI = accounts.Actor("cli:test", "local")
ACTIONS = {
    "/admin/users/add": {"name": "mallory", "password": PW, "password_again": PW},
    "/admin/users/disable": {"name": "alice"},
    "/admin/users/enable": {"name": "victor"},
    "/admin/users/remove": {"name": "alice"},
    "/admin/users/password": {"name": "alice", "password": PW, "password_again": PW},
    "/admin/users/role": {"name": "victor", "role": "admin"},
    "/admin/tokens/create": {"name": "evil", "role": "admin"},
    "/admin/tokens/revoke": {"name": "ci"},
}


@pytest.fixture
def web(tmp_path: Path) -> WebSetup:
    return build_app(tmp_path, {})


@pytest.fixture
def admin(web: WebSetup) -> Iterator[tuple[TestClient, str]]:
    with TestClient(web.app) as browser:
        yield browser, login(browser, "alice", ADMIN_PW)


def _state(web: WebSetup) -> tuple[object, ...]:
    db = web.ctx.db
    with db.session() as session:
        hashes = tuple(session.scalars(select(User.password_hash).order_by(User.name)))
    tokens = tuple((t.name, t.role, t.expires_at, t.revoked) for t in accounts.list_tokens(db))
    return (tuple(accounts.list_users(db)), tokens, hashes)


def test_a_viewer_can_do_nothing_on_the_admin_page(web: WebSetup) -> None:
    before = _state(web)
    with TestClient(web.app) as browser:
        csrf = login(browser, "victor", VIEWER_PW)
        for path, data in ACTIONS.items():
            assert browser.post(path, data={"csrf_token": csrf, **data}).status_code == 403
            assert browser.post(path, data=data).status_code == 403  # and without CSRF
            # a viewer's token, too
            assert browser.post(path, data=data, headers=web.viewer).status_code == 403
    assert _state(web) == before
    denied = {e.subject for e in audit.recent(web.ctx.db, action="admin") if e.user == "victor"}
    assert denied == set(ACTIONS)


def test_an_admin_without_the_csrf_token_changes_nothing(
    web: WebSetup, admin: tuple[TestClient, str]
) -> None:
    browser, _ = admin
    before = _state(web)
    for path, data in ACTIONS.items():
        assert browser.post(path, data=data).status_code == 403
        assert browser.post(path, data={"csrf_token": "forged", **data}).status_code == 403
    assert _state(web) == before


@pytest.mark.parametrize(
    "name",
    ["", " ", "al ice", "a\x00b", "a\nb", "x" * 101, "x" * 10_000, "\u202eadmin", "a\u200bb"],
)
def test_odd_user_names_are_refused(web: WebSetup, name: str) -> None:
    with pytest.raises(UsageError):
        accounts.add(web.ctx.db, CLI, name, "viewer", PW)
    with pytest.raises(UsageError):
        accounts.new_token(web.ctx.db, CLI, name, "viewer")


@pytest.mark.parametrize("name", ["ci ", " ci", "c i", "ci\t"])
def test_a_token_name_cannot_look_like_another(web: WebSetup, name: str) -> None:
    """ "ci " and "ci" read the same in a listing: revoke one, the other stays valid."""
    with pytest.raises(UsageError, match="token name"):
        accounts.new_token(web.ctx.db, CLI, name, "admin")


@pytest.mark.parametrize(
    "name",
    ["\u0430lice", "\uff21\uff2c\uff29\uff23\uff25", "Alice", "\u0430\u04cf\u0456\u0441\u0435"],
)
def test_a_user_name_cannot_look_like_an_existing_one(web: WebSetup, name: str) -> None:
    """Cyrillic letters, full-width or upper case: a second "alice" in the audit log."""
    with pytest.raises(UsageError, match="alice"):
        accounts.add(web.ctx.db, CLI, name, "admin", PW)
    assert [u.name for u in accounts.list_users(web.ctx.db)] == ["alice", "victor"]


def test_html_in_names_is_escaped_in_the_page(web: WebSetup, admin: tuple[TestClient, str]) -> None:
    browser, csrf = admin
    evil = '<script>alert(1)</script>"><img/src=x>'
    added = browser.post(
        "/admin/users/add",
        data={"csrf_token": csrf, "name": evil, "password": PW, "password_again": PW},
    )
    assert added.status_code == 200, added.text
    made = browser.post("/admin/tokens/create", data={"csrf_token": csrf, "name": evil})
    assert made.status_code == 200
    for page in (added, made, browser.get("/admin"), browser.get("/audit")):
        assert "<script>alert" not in page.text and "<img/src=x>" not in page.text
        assert "&lt;script&gt;" in page.text


@pytest.mark.parametrize(
    "expires",
    ["0", "0d", "-1d", "1000y", "1.5d", "٣d", "d", "30", "99999999d", "30d;", "99999w", "3661d"],
)
def test_bad_expiries_are_one_error_line(tmp_path: Path, expires: str) -> None:
    with pytest.raises(UsageError, match="expiry"):
        accounts.parse_expiry(expires)


def test_bad_expiry_from_the_page_is_a_400(web: WebSetup, admin: tuple[TestClient, str]) -> None:
    browser, csrf = admin
    for expires in ("-1d", "1000y", "garbage"):
        answer = browser.post(
            "/admin/tokens/create", data={"csrf_token": csrf, "name": "t", "expires": expires}
        )
        assert answer.status_code == 400 and "sr_" not in answer.text
    assert "t" not in [t.name for t in accounts.list_tokens(web.ctx.db)]
    refused = [e.result for e in audit.recent(web.ctx.db, action="token-create")]
    assert len(refused) == 3 and all(r.startswith("refused") for r in refused)


def test_a_reused_token_name_revokes_only_the_new_token(web: WebSetup) -> None:
    db = web.ctx.db
    with pytest.raises(UsageError, match="exists already"):
        accounts.new_token(db, CLI, "ci", "viewer")
    old = web.admin_token
    accounts.revoke(db, CLI, "ci")
    new = accounts.new_token(db, CLI, "ci", "viewer")
    with TestClient(web.app) as client:
        assert client.get("/api/targets", headers=web.headers(old)).status_code == 401
        assert client.get("/api/targets", headers=web.headers(new)).status_code == 200
        accounts.revoke(db, CLI, "ci")
        assert client.get("/api/targets", headers=web.headers(new)).status_code == 401
        assert client.get("/api/targets", headers=web.headers(old)).status_code == 401
    with pytest.raises(accounts.UnknownAccount):
        accounts.revoke(db, CLI, "ci")


def test_a_token_expires_at_its_moment(web: WebSetup) -> None:
    db = web.ctx.db
    soon = datetime.now(UTC) + timedelta(seconds=30)
    token = create_token(db, "soon", "viewer", soon)
    with TestClient(web.app) as client:
        assert client.get("/api/targets", headers=web.headers(token)).status_code == 200
        now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        with db.session() as session:
            session.execute(update(ApiToken).where(ApiToken.name == "soon").values(expires_at=now))
        assert client.get("/api/targets", headers=web.headers(token)).status_code == 401
    assert {t.name: t.state for t in accounts.list_tokens(db)}["soon"] == "expired"


def test_a_disabled_user_is_out_at_once_and_cannot_sign_in(web: WebSetup) -> None:
    db = web.ctx.db
    accounts.add(db, CLI, "bob", "admin", PW)
    with TestClient(web.app) as browser:
        csrf = login(browser, "bob", PW)
        accounts.set_disabled(db, CLI, "bob", True)
        assert browser.get("/api/targets").status_code == 401
        answer = browser.post("/admin/users/role", data={"csrf_token": csrf, "name": "victor"})
        assert answer.status_code in (401, 403) or "/login" in str(answer.url)
        page = browser.get("/login")
        csrf = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        signin = browser.post(
            "/login",
            data={"username": "bob", "password": PW, "csrf_token": csrf},
            follow_redirects=False,
        )
        assert signin.status_code != 303
    assert {u.name: u.role for u in accounts.list_users(db)}["victor"] == "viewer"


def test_removing_or_demoting_yourself(web: WebSetup, admin: tuple[TestClient, str]) -> None:
    browser, csrf = admin
    # the last admin: neither through the page nor through the CLI's code
    for path, extra in (
        ("/admin/users/remove", {}),
        ("/admin/users/disable", {}),
        ("/admin/users/role", {"role": "viewer"}),
    ):
        answer = browser.post(path, data={"csrf_token": csrf, "name": "alice", **extra})
        assert answer.status_code == 409, answer.text
    with pytest.raises(accounts.LastAdmin):
        accounts.set_role(web.ctx.db, CLI, "alice", "viewer")
    # with a second admin, alice may remove herself, and her session ends with it
    accounts.add(web.ctx.db, CLI, "bob", "admin", PW)
    gone = browser.post("/admin/users/remove", data={"csrf_token": csrf, "name": "alice"})
    assert gone.status_code == 200
    assert browser.get("/api/targets").status_code == 401
    assert browser.get("/admin", follow_redirects=False).status_code in (302, 303, 401)


def test_missing_user_and_empty_password_on_the_cli(tmp_path: Path) -> None:
    env = {"STRONGROOM_SERVICE_DB": str(tmp_path / "service.db")}
    cli_ok(run_cli("user", "add", "alice", "--role", "admin", "--password-stdin", env=env,
                   stdin=f"{PW}\n".encode()))  # fmt: skip
    passwd = ("user", "passwd", "ghost", "--password-stdin")
    cli_fails(run_cli(*passwd, env=env, stdin=f"{PW}\n".encode()), 2, r"no user 'ghost'")
    for stdin in (b"", b"\n", b"\r\n"):
        cli_fails(run_cli(*passwd[:2], "alice", passwd[3], env=env, stdin=stdin), 2, "stdin")
    cli_fails(run_cli("user", "role", "alice", "viewer", env=env), 2, "last active admin")
    made = run_cli("token", "create", "ci", "--expires", "1000y", env=env)
    cli_fails(made, 2, r"expiry")
    token = cli_ok(run_cli("token", "create", "ci", "--role", "admin", env=env)).strip()
    outputs = [
        run_cli("user", "list", env=env),
        run_cli("token", "list", env=env),
        run_cli("token", "revoke", "ci", env=env),
    ]
    for out in outputs:
        text = (out.stdout + out.stderr).decode()
        assert token not in text and "sr_" not in text and "argon2" not in text and PW not in text


def test_the_cli_against_a_missing_or_broken_service_database(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "service.db"
    for args in (("user", "list"), ("token", "list"), ("user", "disable", "bob")):
        cli_fails(run_cli(*args, "--service-db", str(missing), env={}), 2, r"no service database")
    assert not missing.parent.exists()  # a typo creates nothing
    garbage = tmp_path / "garbage.db"
    garbage.write_text("not a database\n" * 100)
    cli_fails(run_cli("user", "list", "--service-db", str(garbage)), 5, r"service database")
    cli_fails(run_cli("user", "list", "--service-db", str(tmp_path)), 5, r"service database")
    unreachable = "postgresql://strongroom:S3cretPw@127.0.0.1:1/nothing"
    err = cli_fails(run_cli("token", "list", "--service-db", unreachable), 5, "service database")
    assert "S3cretPw" not in err
