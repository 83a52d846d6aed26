"""Sign-in, sessions, CSRF, rate limiting, token storage, and the CLI commands."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import select

from strongroom.web.auth import hash_token
from strongroom.web.models import ApiToken, User
from tests.helpers import make_sqlite_db, run_cli
from tests.web.conftest import ADMIN_PW, build_app, login, wait_job


def test_login_sets_a_safe_cookie_and_pages_need_it(client, web):
    assert client.get("/", follow_redirects=False).headers["location"] == "/login"
    page = client.get("/login")
    token = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    response = client.post(
        "/login",
        data={"username": "alice", "password": ADMIN_PW, "csrf_token": token},
        follow_redirects=False,
    )
    assert response.status_code == 303
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "secure" not in cookie
    assert "Targets" in client.get("/").text
    assert response.headers["x-frame-options"] == "DENY"


def test_secure_cookie_over_https(tmp_path):
    db = make_sqlite_db(tmp_path / "shop.db", users=10, orders=10)
    web = build_app(tmp_path, {"shop": f"sqlite://{db}"}, secure_cookies=True)
    with TestClient(web.app, base_url="https://testserver") as client:
        login(client, "alice", ADMIN_PW)
        assert any(c.secure for c in client.cookies.jar)


def test_login_without_csrf_token_is_refused(client):
    client.get("/login")
    response = client.post("/login", data={"username": "alice", "password": ADMIN_PW})
    assert response.status_code == 403


def test_forms_need_the_csrf_token(client, web):
    csrf = login(client, "alice", ADMIN_PW)
    no_token = client.post("/ui/backup", data={"target": "shop"})
    assert no_token.status_code == 403
    api_no_token = client.post("/api/backups", json={"target": "shop"})
    assert api_no_token.status_code == 403
    ok = client.post("/ui/backup", data={"target": "shop"}, headers={"X-CSRF-Token": csrf})
    assert ok.status_code == 200 and 'data-status="' in ok.text
    job_id = ok.text.split('data-job="', 1)[1].split('"', 1)[0]
    assert wait_job(client, job_id, {})["status"] == "succeeded"  # the session works for /api


def test_login_rate_limit(client, web):
    page = client.get("/login")
    token = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    codes = []
    for _ in range(6):
        response = client.post(
            "/login", data={"username": "alice", "password": "wrong-pw", "csrf_token": token}
        )
        codes.append(response.status_code)
    assert codes == [401] * 5 + [429]
    good = client.post(
        "/login", data={"username": "alice", "password": ADMIN_PW, "csrf_token": token}
    )
    assert good.status_code == 429  # still blocked, even with the right password
    from strongroom.web import audit

    results = [e.result for e in audit.recent(web.ctx.db, action="login")]
    assert (
        results[0] == "refused: too many failures" and "failed: wrong name or password" in results
    )


def test_passwords_and_tokens_are_stored_hashed(web):
    with web.ctx.db.session() as session:
        user = session.scalar(select(User).where(User.name == "alice"))
        assert user is not None and user.password_hash.startswith("$argon2id$")
        tokens = list(session.scalars(select(ApiToken)))
    assert {t.token_hash for t in tokens} == {
        hash_token(web.admin_token),
        hash_token(web.viewer_token),
    }
    assert all(web.admin_token not in t.token_hash for t in tokens)


def test_cli_user_token_and_reindex(tmp_path, web):
    service_db = str(tmp_path / "service.db")
    config = tmp_path / "strongroom.toml"
    from tests.web.conftest import write_config

    config.write_text(write_config(tmp_path, {"shop": f"sqlite://{web.db_path}"}))
    env = {"STRONGROOM_SERVICE_DB": service_db, "STRONGROOM_USER_PASSWORD": "another-pw-1"}
    added = run_cli("user", "add", "carol", "--role", "admin", env=env)
    assert added.returncode == 0, added.stderr
    again = run_cli("user", "add", "carol", "--role", "admin", env=env)
    assert again.returncode == 2 and b"exists already" in again.stderr
    token = run_cli("token", "create", "backup-bot", "--role", "admin", env=env)
    assert token.returncode == 0 and token.stdout.decode().startswith("sr_")
    with TestClient(web.app) as client:
        headers = {"Authorization": f"Bearer {token.stdout.decode().strip()}"}
        started = client.post("/api/backups", json={"target": "shop"}, headers=headers)
        assert wait_job(client, started.json()["job_id"], headers)["status"] == "succeeded"
    reindexed = run_cli("reindex", "--config", str(config), env=env)
    assert reindexed.returncode == 0 and b"indexed 1 backups" in reindexed.stdout
