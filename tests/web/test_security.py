"""Issue 17, "Security", points 1-6, as HTTP tests: forged client addresses, sessions that
end on the server, size limits, validation errors without the values sent, exact ids for
destructive routes, and downloads of damaged backups (a real uvicorn on loopback)."""

from __future__ import annotations

import json
import logging
import random
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import uvicorn
from argon2 import PasswordHasher
from blake3 import blake3
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from strongroom.config import ConfigError
from strongroom.repository.layout import manifest_key
from strongroom.services.settings_sources import Sources
from strongroom.web import audit
from strongroom.web.actions import downloads
from strongroom.web.app import SERVER_OPTIONS, create_app
from strongroom.web.auth import add_user, create_token, end_sessions
from strongroom.web.middleware import MAX_BODY
from strongroom.web.models import User, WebSession
from tests.fixtures.postgres import free_port
from tests.helpers import delete_chunk_pack, make_sqlite_db
from tests.web.conftest import ADMIN_PW, WebSetup, build_app, login, wait_job

SECRET_URL = "postgresql://postgres:TopSecretPw@db.internal:5432/shop"


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """``app`` on a real uvicorn, run as ``strongroom serve`` runs it (SERVER_OPTIONS),
    on a free loopback port; uvicorn's log goes to the root logger (caplog sees it)."""
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        log_level="warning",
        lifespan="on",
        **SERVER_OPTIONS,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


def _backup(client: TestClient, web: WebSetup, target: str = "shop") -> str:
    started = client.post("/api/backups", json={"target": target}, headers=web.admin)
    assert started.status_code == 202, started.text
    job = wait_job(client, started.json()["job_id"], web.admin)
    assert job["status"] == "succeeded", job
    return str(job["result"]["backup_id"])


def _audit(web: WebSetup, action: str) -> list[audit.AuditEntry]:
    return audit.recent(web.ctx.db, action=action)


def _csrf_of_login_page(client: TestClient | httpx.Client) -> str:
    page = client.get("/login")
    return page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]


# --- 1. forged client addresses -------------------------------------------------------------
def test_forwarded_for_from_an_untrusted_peer_changes_nothing(web: WebSetup) -> None:
    """Eight wrong passwords from 127.0.0.1, each claiming another X-Forwarded-For: the
    limit still counts them as one address (429 from the sixth), and the audit log has the
    real address, not the forged ones."""
    with serving(web.app) as base, httpx.Client(base_url=base) as client:
        token = _csrf_of_login_page(client)
        codes = []
        for n in range(8):
            answer = client.post(
                "/login",
                data={"username": "alice", "password": "wrong-pw", "csrf_token": token},
                headers={"X-Forwarded-For": f"198.51.100.{n + 1}"},
            )
            codes.append(answer.status_code)
    assert codes == [401] * 5 + [429] * 3
    clients = {entry.client for entry in _audit(web, "login")}
    assert clients == {"127.0.0.1"}


def test_a_listed_proxy_forwards_the_client_address(tmp_path: Path) -> None:
    db = make_sqlite_db(tmp_path / "shop.db", users=10, orders=10)
    web = build_app(
        tmp_path, {"shop": f"sqlite://{db}"}, tail='[web]\ntrusted_proxies = ["10.0.0.1"]'
    )
    forged = {"X-Forwarded-For": "203.0.113.7, 10.0.0.1"}  # the client, then the proxy
    with TestClient(web.app, client=("10.0.0.1", 40000)) as proxied:
        login_form = {"username": "alice", "password": "wrong-pw"}
        token = _csrf_of_login_page(proxied)
        proxied.post("/login", data={**login_form, "csrf_token": token}, headers=forged)
    with TestClient(web.app, client=("10.0.0.2", 40000)) as direct:  # not a listed proxy
        token = _csrf_of_login_page(direct)
        direct.post("/login", data={**login_form, "csrf_token": token}, headers=forged)
    assert [e.client for e in _audit(web, "login")] == ["10.0.0.2", "203.0.113.7"]


def test_trusted_proxies_from_the_file_and_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "strongroom.toml"
    config.write_text(
        f'[repository]\nlocation = "{tmp_path / "repo"}"\n[web]\ntrusted_proxies = ["10.0.0.1"]\n'
    )
    assert Sources.load(str(config), {}).settings().web.trusted_proxies == ["10.0.0.1/32"]
    env = {"STRONGROOM_TRUSTED_PROXIES": "192.168.0.0/24, fd00::1"}
    proxies = Sources.load(str(config), env).settings().web.trusted_proxies
    assert proxies == ["192.168.0.0/24", "fd00::1/128"]  # the variable wins
    assert (
        Sources.load(None, {"STRONGROOM_REPO": str(tmp_path)}).settings().web.trusted_proxies == []
    )
    with pytest.raises(ConfigError, match="not an IP address or network"):
        Sources.load(str(config), {"STRONGROOM_TRUSTED_PROXIES": "*"}).settings()


# --- 2. sessions end on the server ----------------------------------------------------------
def test_a_cookie_copied_before_logout_is_worthless_after_it(web: WebSetup) -> None:
    with TestClient(web.app) as client:
        backup_id = _backup(client, web)
        csrf = login(client, "alice", ADMIN_PW)
        cookie = client.cookies["strongroom_session"]
        assert client.get("/api/backups").status_code == 200
        out = client.post("/logout", headers={"X-CSRF-Token": csrf}, follow_redirects=False)
        assert out.status_code == 303
    with TestClient(web.app, cookies={"strongroom_session": cookie}) as thief:
        assert thief.get("/api/backups").status_code == 401
        pinned = thief.put(f"/api/backups/{backup_id}/pin", headers={"X-CSRF-Token": csrf})
        assert pinned.status_code == 401
        assert thief.get("/", follow_redirects=False).headers["location"] == "/login"
    assert [e.result for e in _audit(web, "logout")] == ["ok"]
    assert [e.result for e in _audit(web, "pin")] == []
    with web.ctx.db.session() as session:
        assert list(session.scalars(select(WebSession))) == []


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _age_sessions(web: WebSetup, **fields: timedelta) -> None:
    now = datetime.now(UTC)
    with web.ctx.db.session() as session:
        for row in session.scalars(select(WebSession)):
            for name, ago in fields.items():
                setattr(row, name, _iso(now - ago))


def _alice(web: WebSetup, **changes: object) -> None:
    with web.ctx.db.session() as session:
        user = session.scalar(select(User).where(User.name == "alice"))
        assert user is not None
        for name, value in changes.items():
            setattr(user, name, value)


@pytest.mark.parametrize(
    "what",
    ["idle 31 minutes", "signed in 13 hours ago", "user disabled", "password changed"],
)
def test_sessions_end_idle_at_their_lifetime_and_with_their_user(web: WebSetup, what: str) -> None:
    with TestClient(web.app) as client:
        login(client, "alice", ADMIN_PW)
        assert client.get("/api/backups").status_code == 200
        _age_sessions(web, last_seen_at=timedelta(minutes=29))
        assert client.get("/api/backups").status_code == 200  # active enough
        if what == "idle 31 minutes":
            _age_sessions(web, last_seen_at=timedelta(minutes=31))
        elif what == "signed in 13 hours ago":  # active all along: the lifetime still ends it
            _age_sessions(web, created_at=timedelta(hours=13), last_seen_at=timedelta(0))
        elif what == "user disabled":
            _alice(web, disabled=True)
        else:
            _alice(web, password_hash=PasswordHasher().hash("a-new-password-1"))
        assert client.get("/api/backups").status_code == 401
        if what == "user disabled":
            _alice(web, disabled=False)
        assert client.get("/api/backups").status_code == 401  # the row is gone for good
    with web.ctx.db.session() as session:
        assert list(session.scalars(select(WebSession))) == []


def test_end_sessions_signs_a_user_out_everywhere(web: WebSetup) -> None:
    """For disabling a user, removing one or changing a password: every browser is out."""
    with TestClient(web.app) as laptop, TestClient(web.app) as phone:
        login(laptop, "alice", ADMIN_PW)
        login(phone, "alice", ADMIN_PW)
        with web.ctx.db.session() as session:
            alice = session.scalar(select(User).where(User.name == "alice"))
            assert alice is not None
        assert end_sessions(web.ctx.db, alice.id) == 2
        assert laptop.get("/api/backups").status_code == 401
        assert phone.get("/api/backups").status_code == 401


def test_session_lifetimes_are_configurable(tmp_path: Path) -> None:
    db = make_sqlite_db(tmp_path / "shop.db", users=10, orders=10)
    web = build_app(tmp_path, {"shop": f"sqlite://{db}"}, tail="[web]\nsession_idle_minutes = 5")
    with TestClient(web.app) as client:
        login(client, "alice", ADMIN_PW)
        _age_sessions(web, last_seen_at=timedelta(minutes=4))
        assert client.get("/api/backups").status_code == 200
        _age_sessions(web, last_seen_at=timedelta(minutes=6))
        assert client.get("/api/backups").status_code == 401


# --- 3. size limits and names ---------------------------------------------------------------
def test_request_bodies_are_limited(client: TestClient, web: WebSetup) -> None:
    json_headers = {**web.admin, "Content-Type": "application/json"}
    huge_tag = json.dumps({"target": "shop", "tags": ["x" * (1 << 20)]}).encode()
    answer = client.post("/api/backups", content=huge_tag, headers=json_headers)
    assert answer.status_code == 413 and str(MAX_BODY) in answer.json()["detail"]

    def chunked() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"target": "shop", "tags": ["'
        for _ in range(100):
            yield b"y" * 1024
        yield b'"]}'

    answer = client.post("/api/backups", content=chunked(), headers=json_headers)
    assert answer.status_code == 413
    assert client.get("/api/jobs", headers=web.admin).json() == []  # nothing was queued
    small = client.post("/api/backups", json={"target": "shop", "tags": ["ok"]}, headers=web.admin)
    assert small.status_code == 202


def test_targets_and_tags_follow_the_cli_rules(client: TestClient, web: WebSetup) -> None:
    for body, field in [
        ({"target": "shop", "tags": ["t" * 65]}, "tags"),
        ({"target": "shop", "tags": ["a,b"]}, "tags"),
        ({"target": "../shop"}, "target"),
        ({"target": "shop\x1b]0;pwned\x07"}, "target"),
        ({"target": "s" * 129}, "target"),
    ]:
        answer = client.post("/api/backups", json=body, headers=web.admin)
        assert answer.status_code == 422, (body, answer.text)
        assert answer.json()["detail"][0]["loc"][:2] == ["body", field]
    form = client.post("/ui/backup", data={"target": "shop", "tag": "a,b"}, headers=web.admin)
    assert form.status_code == 400 and "not allowed" in form.text
    assert client.get("/api/jobs", headers=web.admin).json() == []


# --- 4. validation errors never echo what was sent ------------------------------------------
@pytest.mark.parametrize(
    "body",
    [
        {"to": SECRET_URL},  # no confirm
        {"to": SECRET_URL + "?" + "x" * 2000, "confirm": "shop"},  # too long
        {"to": SECRET_URL, "confirm": "shop", "missing_roles": ["create"]},  # wrong type
        {"confirm": "shop", "too": SECRET_URL},  # a misspelt field
    ],
)
def test_validation_errors_hold_no_submitted_values(
    client: TestClient, web: WebSetup, body: dict[str, object]
) -> None:
    answer = client.post("/api/backups/latest/restore", json=body, headers=web.admin)
    assert answer.status_code == 422, answer.text
    assert "TopSecretPw" not in answer.text and "db.internal" not in answer.text
    for error in answer.json()["detail"]:
        assert set(error) == {"loc", "msg", "type"} and error["loc"][0] == "body"


def test_malformed_json_and_forms_do_not_echo_secrets(client: TestClient, web: WebSetup) -> None:
    broken = ('{"to": "' + SECRET_URL + '", "confirm": ').encode()
    answer = client.post(
        "/api/backups/latest/restore",
        content=broken,
        headers={**web.admin, "Content-Type": "application/json"},
    )
    assert answer.status_code == 422 and "TopSecretPw" not in answer.text
    form = client.post(
        "/ui/backups/latest/restore",
        data={"to": SECRET_URL + "?" + "x" * 2000, "confirm": "shop"},
        headers=web.admin,
    )
    assert form.status_code == 422 and "TopSecretPw" not in form.text
    assert "to:" in form.text  # the page names the field


# --- 5. destructive routes take exact ids ---------------------------------------------------
def test_forget_and_restore_need_the_full_id(client: TestClient, web: WebSetup) -> None:
    first = _backup(client, web)
    newest = _backup(client, web)
    for reference in ("latest", newest[:-3], newest[:-1]):  # each would resolve
        answer = client.delete(f"/api/backups/{reference}", headers=web.admin)
        assert answer.status_code == 400, (reference, answer.text)
        assert "full id" in answer.json()["detail"]
    listed = [b["backup_id"] for b in client.get("/api/backups", headers=web.admin).json()]
    assert sorted(listed) == sorted([first, newest])  # nothing was forgotten
    refusals = [e for e in _audit(web, "forget") if e.result.startswith("failed")]
    assert len(refusals) == 3 and "full id" in refusals[0].result

    prefix = client.post(
        f"/api/backups/{first[:-3]}/restore", json={"confirm": "shop"}, headers=web.admin
    )
    assert prefix.status_code == 400 and "full id" in prefix.json()["detail"]
    assert any(e.result.startswith("refused") for e in _audit(web, "restore"))
    plan = client.post(f"/api/backups/{first[:-3]}/restore/plan", json={}, headers=web.admin)
    assert plan.status_code == 200 and plan.json()["backup_id"] == first  # a dry run may
    pin = client.put(f"/api/backups/{first[:-3]}/pin", headers=web.admin)
    assert pin.status_code == 200  # not destructive: a prefix is fine

    pinned = client.delete(f"/api/backups/{first}", headers=web.admin)
    assert pinned.status_code == 409
    gone = client.delete(f"/api/backups/{newest}", headers=web.admin)
    assert gone.status_code == 200 and gone.json() == {"backup_id": newest, "forgotten": True}


# --- 6. downloads of damaged backups --------------------------------------------------------
def _big_sqlite(path: Path, megabytes: int) -> Path:
    """Random (incompressible, never deduplicated) rows: about one chunk per 640 KiB."""
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB)")
    rng = random.Random(17)
    db.executemany(
        "INSERT INTO blobs (data) VALUES (?)",
        [(rng.randbytes(4096),) for _ in range(megabytes * 256)],
    )
    db.commit()
    db.close()
    return path


def _fresh_app(web: WebSetup) -> tuple[FastAPI, dict[str, str]]:
    """A second app over the same repository (it reads the manifests from storage anew)."""
    app = create_app(web.ctx.settings, str(web.tmp / "service2.db"), env={})
    token = create_token(app.state.ctx.db, "ci", "admin")
    add_user(app.state.ctx.db, "alice", "admin", ADMIN_PW)
    return app, {"Authorization": f"Bearer {token}"}


def test_a_whole_download_carries_its_checksum(client: TestClient, web: WebSetup) -> None:
    backup_id = _backup(client, web)
    with (
        serving(web.app) as base,
        httpx.stream(
            "GET", f"{base}/api/backups/{backup_id}/download", headers=web.admin
        ) as answer,
    ):
        assert answer.status_code == 200
        data = answer.read()
    assert len(data) == int(answer.headers["content-length"])
    assert answer.headers["x-content-blake3"] == blake3(data).hexdigest()


def test_a_backup_missing_a_chunk_is_refused_before_any_byte(
    client: TestClient, web: WebSetup, monkeypatch: pytest.MonkeyPatch
) -> None:
    backup_id = _backup(client, web)
    repo = web.ctx.repository()
    manifest = repo.load_manifest(backup_id)
    held = delete_chunk_pack(repo, manifest.chunks[len(manifest.chunks) // 2].chunk_id)
    # chunks live in packs since issue 19: the first chunk of the lost pack is named
    lost = next(ref.chunk_id for ref in manifest.chunks if ref.chunk_id in held)
    for one_by_one in (64, 0):  # by HEAD per chunk, and by one listing of chunks/ and packs/
        monkeypatch.setattr(downloads, "EXISTS_ONE_BY_ONE", one_by_one)
        with serving(web.app) as base:
            answer = httpx.get(f"{base}/api/backups/{backup_id}/download", headers=web.admin)
        assert answer.status_code == 409, answer.text
        detail = answer.json()["detail"]
        assert "damaged" in detail and lost in detail and "nothing was sent" in detail
    results = [e.result for e in _audit(web, "download")]
    assert len(results) == 2 and all(r.startswith("failed:") and lost in r for r in results)


def test_a_chunk_lost_during_the_download_breaks_the_transfer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = _big_sqlite(tmp_path / "big.db", megabytes=24)
    web = build_app(tmp_path, {"big": f"sqlite://{db}"})
    with TestClient(web.app) as client:
        backup_id = _backup(client, web, "big")
    repo = web.ctx.repository()
    manifest = repo.load_manifest(backup_id)
    assert len(manifest.chunks) >= 24, "the test needs chunks well past the read-ahead"
    small_buffer = httpx.HTTPTransport(
        socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)]
    )
    received = 0
    caplog.set_level(logging.ERROR)
    with serving(web.app) as base, httpx.Client(transport=small_buffer) as http:
        with http.stream(
            "GET", f"{base}/api/backups/{backup_id}/download", headers=web.admin
        ) as answer:
            assert answer.status_code == 200
            expected = int(answer.headers["content-length"])
            body = answer.iter_raw(64 * 1024)
            received += len(next(body))
            delete_chunk_pack(repo, manifest.chunks[-1].chunk_id)  # far ahead of it
            with pytest.raises(httpx.RemoteProtocolError):
                for data in body:
                    received += len(data)
    assert 0 < received < expected
    assert _audit(web, "download")[0].result.startswith("failed: chunk")
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("download aborted" in m for m in errors), errors
    assert not any("Exception in ASGI application" in m for m in errors), errors


def test_a_wrong_stream_checksum_withholds_the_last_chunk(
    client: TestClient, web: WebSetup
) -> None:
    """The whole-dump checksum is known only after the last chunk: that chunk is held back
    until it matched, so a mismatch leaves the body short of Content-Length."""
    backup_id = _backup(client, web)
    storage = web.ctx.repository().storage
    doc = json.loads(storage.get(manifest_key(backup_id)))
    doc["stream_checksum"]["hex"] = "0" * len(doc["stream_checksum"]["hex"])
    storage.put(manifest_key(backup_id), json.dumps(doc).encode())
    app, admin = _fresh_app(web)
    received = b""
    with (
        serving(app) as base,
        httpx.stream("GET", f"{base}/api/backups/{backup_id}/download", headers=admin) as answer,
    ):
        assert answer.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):
            for data in answer.iter_raw():
                received += data
    assert len(received) < int(answer.headers["content-length"])
    outcome = audit.recent(app.state.ctx.db, action="download")[0].result
    assert outcome.startswith("failed:") and "checksum" in outcome
