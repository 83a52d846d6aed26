"""Hostile and confused-newcomer cases against the dashboard's test notifications (issue 17):
CSRF, viewers and bogus indexes, concurrent sends, channel URLs with odd passwords or that are
not URLs. A case marked xfail(strict) is a bug found."""

from __future__ import annotations

import threading
from pathlib import Path
from urllib.parse import quote

from fastapi.testclient import TestClient

from strongroom.config import parse_settings
from strongroom.repository.repository import Repository
from strongroom.storage.factory import open_storage
from strongroom.web import audit
from strongroom.web.app import create_app
from strongroom.web.auth import add_user, create_token
from tests.helpers import make_sqlite_db
from tests.notify.conftest import Receiver, receiver
from tests.web.conftest import ADMIN_PW, VIEWER_PW, WebSetup, login, write_config

__all__ = ["receiver"]  # fixtures


# --- test notifications -----------------------------------------------------------------------
def _notifying(tmp_path: Path, url: str, extra_env: dict[str, str] | None = None) -> WebSetup:
    db = make_sqlite_db(tmp_path / "shop.db", users=5, orders=5)
    tail = (
        '[[notifications.channels]]\ntype = "webhook"\nname = "<b>hook</b>"\n'
        'url_env = "HOOK_URL"\nsecret_env = "HOOK_SECRET"\n'
    )
    Repository.init(open_storage(str(tmp_path / "repo")), key_file=tmp_path / "repo.key")
    settings = parse_settings(write_config(tmp_path, {"shop": f"sqlite://{db}"}, tail=tail))
    env = {"HOOK_URL": url, "HOOK_SECRET": "s3cr3t-hmac-🔑-value", **(extra_env or {})}
    app = create_app(settings, str(tmp_path / "service.db"), env=env)
    add_user(app.state.ctx.db, "alice", "admin", ADMIN_PW)
    add_user(app.state.ctx.db, "victor", "viewer", VIEWER_PW)
    return WebSetup(
        tmp_path,
        db,
        app,
        create_token(app.state.ctx.db, "ci", "admin"),
        create_token(app.state.ctx.db, "dash", "viewer"),
    )


def test_test_notification_refuses_no_csrf_viewers_and_bogus_indexes(
    tmp_path: Path, receiver: Receiver
) -> None:
    web = _notifying(tmp_path, f"{receiver.url}/hook/abcdefgh12345678")
    with TestClient(web.app, raise_server_exceptions=False) as client:
        csrf = login(client, "alice", ADMIN_PW)
        assert client.post("/ui/notifications/0/test").status_code == 403
        assert (
            client.post("/ui/notifications/0/test", headers={"X-CSRF-Token": "nope"}).status_code
            == 403
        )
        assert len(receiver.requests) == 0
        for index, expected in (
            ("1", 404),
            ("999", 404),
            ("1000", 422),
            ("-1", 422),
            ("abc", 422),
            ("99999999999999999999999999999", 422),
            ("0x0", 422),
            ("%00", 400),
        ):
            answer = client.post(f"/ui/notifications/{index}/test", headers={"X-CSRF-Token": csrf})
            assert answer.status_code == expected, (index, answer.status_code)
        assert client.get("/ui/notifications/0/test").status_code in (404, 405)
        client.cookies.clear()
        viewer_csrf = login(client, "victor", VIEWER_PW)
        answer = client.post("/ui/notifications/0/test", headers={"X-CSRF-Token": viewer_csrf})
        assert answer.status_code == 403
        assert client.post("/ui/notifications/0/test", headers=web.viewer).status_code == 403
        assert "Send a test notification" not in client.get("/jobs").text
        assert len(receiver.requests) == 0
        client.cookies.clear()
        anonymous = client.post("/ui/notifications/0/test", follow_redirects=False)
        assert anonymous.status_code in (401, 303)
        assert len(receiver.requests) == 0
        ok = client.post("/ui/notifications/0/test", headers=web.admin)  # token: no CSRF needed
        assert ok.status_code == 200 and 'data-ok="yes"' in ok.text
        assert len(receiver.requests) == 1
    entries = audit.recent(web.ctx.db, 50, action="notify-test")
    delivered = [e for e in entries if e.result.startswith("ok")]
    assert len(delivered) == 1 and delivered[0].user == "token:ci"
    assert all(
        "denied" in e.result or "forbidden" in e.result.lower()
        for e in entries
        if e not in delivered
    ), [(e.user, e.result) for e in entries]


def test_concurrent_test_notifications_are_each_delivered_and_audited(
    tmp_path: Path, receiver: Receiver
) -> None:
    web = _notifying(tmp_path, f"{receiver.url}/hook/abcdefgh12345678")
    answers: list[int] = []
    with TestClient(web.app) as client:

        def send() -> None:
            answers.append(client.post("/ui/notifications/0/test", headers=web.admin).status_code)

        threads = [threading.Thread(target=send) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert answers == [200] * 12
    assert len(receiver.requests) == 12
    assert len(audit.recent(web.ctx.db, 50, action="notify-test")) == 12


ODD_PW = "p@ss:w/o#rd?&=%zz"


def test_a_failing_channel_with_an_odd_url_leaks_no_secret(
    tmp_path: Path, receiver: Receiver
) -> None:
    secret_path = "Sekr3tPathTok3n-77"
    url = f"{receiver.url}/hook/{secret_path}?token=QueryTok3nValue9&x=1"
    receiver.fail_first = 99
    receiver.fail_status = 500
    receiver.fail_body = (
        f"echo: {url} {secret_path} QueryTok3nValue9 s3cr3t-hmac-🔑-value <script>x</script>"
    ).encode()
    web = _notifying(tmp_path, url)
    with TestClient(web.app) as client:
        answer = client.post("/ui/notifications/0/test", headers=web.admin)
        assert answer.status_code == 200 and 'data-ok="no"' in answer.text
        assert "<script>x" not in answer.text
        shown = answer.text + client.get("/jobs", headers=web.viewer).text
        shown += client.get("/audit", headers=web.admin).text
        shown += "".join(repr(e.__dict__) for e in audit.recent(web.ctx.db, 50))
        for secret in (secret_path, "QueryTok3nValue9", "s3cr3t-hmac-🔑-value"):
            assert secret not in shown, secret
        assert "&lt;b&gt;hook&lt;/b&gt;" in client.get("/jobs", headers=web.viewer).text


def test_a_channel_url_with_a_password_full_of_odd_characters_is_not_shown(
    tmp_path: Path,
) -> None:
    url = f"https://user:{quote(ODD_PW, safe='')}@127.0.0.1:9/hook"
    web = _notifying(tmp_path, url)
    with TestClient(web.app) as client:
        answer = client.post("/ui/notifications/0/test", headers=web.admin)
        assert answer.status_code == 200 and 'data-ok="no"' in answer.text
        shown = answer.text + client.get("/jobs", headers=web.viewer).text
        shown += "".join(repr(e.__dict__) for e in audit.recent(web.ctx.db, 50))
        assert quote(ODD_PW, safe="") not in shown and ODD_PW not in shown
        assert "127.0.0.1" in client.get("/jobs", headers=web.viewer).text


def test_a_channel_url_that_is_not_a_url_does_not_break_the_jobs_page(tmp_path: Path) -> None:
    web = _notifying(tmp_path, "https://[::1:bad/hook?x=%%%")
    with TestClient(web.app, raise_server_exceptions=False) as client:
        page = client.get("/jobs", headers=web.viewer)
        assert page.status_code == 200
        assert "%%%" not in page.text
        answer = client.post("/ui/notifications/0/test", headers=web.admin)
        assert answer.status_code == 200 and 'data-ok="no"' in answer.text
