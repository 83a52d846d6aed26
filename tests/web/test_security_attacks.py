"""Issue 17's security items 1-6, attacked as a hostile user and a newcomer would: forged
and malformed forwarded addresses, login limits dodged by spelling, session fixation and
cookie flags, a sign-out racing a request, tokens, bodies that lie about their size or
carry a NUL, 422 bodies, ids that are almost exact, downloads (ranges, HEAD, flipped bytes,
two at once, forgotten meanwhile) and a service database made by the previous version."""

from __future__ import annotations

import base64
import gzip
import json
import logging
import socket
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from alembic import command
from alembic.config import Config
from blake3 import blake3
from fastapi.testclient import TestClient
from itsdangerous import TimestampSigner
from sqlalchemy import delete, select, update

from strongroom.config import parse_settings
from strongroom.repository.repository import Repository
from strongroom.storage.factory import open_storage
from strongroom.web import audit, auth
from strongroom.web.app import create_app
from strongroom.web.auth import add_user, create_token
from strongroom.web.db import MIGRATIONS, ServiceDatabase
from strongroom.web.models import ApiToken, WebSession
from strongroom.web.ratelimit import LoginLimiter
from tests.fixtures.postgres import unique_db_name
from tests.helpers import flip_chunk_byte, make_sqlite_db
from tests.web.conftest import ADMIN_PW, WebSetup, build_app, login, wait_job, write_config
from tests.web.test_security import (
    SECRET_URL,
    _age_sessions,
    _audit,
    _backup,
    _big_sqlite,
    _csrf_of_login_page,
    serving,
)

COOKIE = "strongroom_session"
PROXY = '[web]\ntrusted_proxies = ["10.0.0.1", "fd00::1"]'


def _proxied(tmp_path: Path, **kw: object) -> WebSetup:
    db = make_sqlite_db(tmp_path / "shop.db", users=10, orders=10)
    return build_app(tmp_path, {"shop": f"sqlite://{db}"}, tail=PROXY, **kw)


def _wrong_login(client: TestClient, name: str, headers: dict[str, str] | None = None) -> int:
    token = _csrf_of_login_page(client)
    answer = client.post(
        "/login",
        data={"username": name, "password": "wrong-pw", "csrf_token": token},
        headers=headers or {},
    )
    return answer.status_code


# --- 1. forwarded addresses -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("peer", "forwarded", "seen"),
    [
        ("127.0.0.1", "203.0.113.7", "127.0.0.1"),  # not a listed proxy: ignored
        ("10.0.0.9", "203.0.113.7, 10.0.0.1", "10.0.0.9"),  # not listed, whatever it says
        ("10.0.0.1", "198.51.100.1, 203.0.113.7", "203.0.113.7"),  # the hop the proxy saw
        ("10.0.0.1", "203.0.113.7, 10.0.0.1", "203.0.113.7"),  # listed hops are skipped
        ("10.0.0.1", "2001:db8::7", "2001:db8::7"),
        ("10.0.0.1", "[2001:db8::7]:443", "2001:db8::7"),
        ("fd00::1", "203.0.113.7", "203.0.113.7"),  # an IPv6 proxy
        ("10.0.0.1", "garbage", "10.0.0.1"),  # not an address: the proxy's own
        ("10.0.0.1", "x" * 300, "10.0.0.1"),
        ("10.0.0.1", "ev\x1bil", "10.0.0.1"),
    ],
)
def test_forwarded_for_is_an_address_from_a_listed_proxy_or_ignored(
    tmp_path: Path, peer: str, forwarded: str, seen: str
) -> None:
    web = _proxied(tmp_path)
    with TestClient(web.app, client=(peer, 40000)) as client:
        assert _wrong_login(client, "alice", {"X-Forwarded-For": forwarded}) == 401
    assert [e.client for e in _audit(web, "login")] == [seen]


def test_a_spoofed_chain_through_the_proxy_still_hits_the_limit(tmp_path: Path) -> None:
    """Behind the proxy (which appends the address it saw), a client making up the left
    part of X-Forwarded-For on each try is still one address to the limiter."""
    web = _proxied(tmp_path)
    with TestClient(web.app, client=("10.0.0.1", 40000)) as client:
        codes = [
            _wrong_login(client, "alice", {"X-Forwarded-For": f"198.51.100.{n}, 203.0.113.7"})
            for n in range(8)
        ]
    assert codes == [401] * 5 + [429] * 3


# --- login limits -----------------------------------------------------------------------------
def test_spelling_a_name_another_way_does_not_reset_the_limit(web: WebSetup) -> None:
    names = [
        "alice",
        "ALICE",
        " alice",
        "Alice ",
        "\talice",
        "\uff41\uff4c\uff49\uff43\uff45",  # full-width letters
        "alice\u200b",
        "ali\u00adce",
    ]
    with TestClient(web.app) as client:
        codes = [_wrong_login(client, name) for name in names]
    assert codes == [401] * 5 + [429] * 3


def test_one_address_guessing_many_names_is_limited_too(web: WebSetup) -> None:
    with TestClient(web.app) as client:
        codes = [_wrong_login(client, f"user{n}") for n in range(22)]
    assert codes == [401] * 20 + [429] * 2
    with TestClient(web.app, client=("192.0.2.5", 1000)) as elsewhere:  # another address
        login(elsewhere, "alice", ADMIN_PW)


def test_the_limiter_forgets_names_whose_failures_aged_out() -> None:
    now = [0.0]
    limiter = LoginLimiter(clock=lambda: now[0])
    for n in range(50):
        limiter.failed(f"user{n}", "192.0.2.1")
        now[0] += 10.0
    now[0] += 1000.0
    assert not limiter.blocked("user1", "192.0.2.1")
    assert len(limiter._failures) < 50


# --- 2. sessions --------------------------------------------------------------------------------
def test_a_planted_session_cookie_is_worthless_after_the_victim_signs_in(web: WebSetup) -> None:
    """Session fixation: the attacker signs in (as a viewer) and plants that cookie in the
    victim's browser; the victim's sign-in gets a new session id and ends the planted one."""
    with TestClient(web.app) as attacker:
        login(attacker, "victor", "viewer-pass-123")
        planted = attacker.cookies[COOKIE]
    with TestClient(web.app, cookies={COOKIE: planted}) as victim:
        assert victim.get("/api/backups").status_code == 200
        victim.cookies.clear()  # the browser's cookie: as planted, then as the server sets it
        victim.cookies.set(COOKIE, planted, domain="testserver.local")
        login(victim, "alice", ADMIN_PW)
        assert victim.cookies[COOKIE] != planted
    with TestClient(web.app, cookies={COOKIE: planted}) as attacker:
        assert attacker.get("/api/backups").status_code == 401
    with web.ctx.db.session() as session:
        assert len(list(session.scalars(select(WebSession)))) == 1  # the victim's only


def test_a_cookie_from_before_sign_in_holds_no_session(web: WebSetup) -> None:
    with TestClient(web.app) as client:
        client.get("/login")
        anonymous = client.cookies[COOKIE]
        login(client, "alice", ADMIN_PW)
    payload = json.loads(base64.b64decode(anonymous.split(".", 1)[0]))
    assert set(payload) == {"csrf"}
    with TestClient(web.app, cookies={COOKIE: anonymous}) as replay:
        assert replay.get("/api/backups").status_code == 401


def _session_cookie(answer: httpx.Response) -> str:
    cookies = [v for k, v in answer.headers.multi_items() if k == "set-cookie"]
    assert len(cookies) == 1 and cookies[0].startswith(COOKIE + "="), cookies
    return cookies[0].lower()


@pytest.mark.parametrize("how", ["http", "https", "https proxy", "http proxy"])
def test_session_cookie_flags(tmp_path: Path, how: str) -> None:
    web = _proxied(tmp_path)  # without --secure-cookies
    base = "https://testserver" if how == "https" else "http://testserver"
    peer = "10.0.0.1" if "proxy" in how else "127.0.0.1"
    proto = {"X-Forwarded-Proto": how.split()[0]} if "proxy" in how else {}
    with TestClient(web.app, base_url=base, client=(peer, 4000)) as client:
        token = _csrf_of_login_page(client)
        answer = client.post(
            "/login",
            data={"username": "alice", "password": ADMIN_PW, "csrf_token": token},
            headers=proto,
            follow_redirects=False,
        )
    assert answer.status_code == 303
    flags = _session_cookie(answer).split("; ")
    assert "httponly" in flags and "samesite=lax" in flags
    assert ("secure" in flags) == how.startswith("https"), flags


def test_x_forwarded_proto_from_anyone_else_is_ignored(web: WebSetup) -> None:
    with TestClient(web.app) as client:  # no trusted proxies: a forged https changes nothing
        token = _csrf_of_login_page(client)
        answer = client.post(
            "/login",
            data={"username": "alice", "password": ADMIN_PW, "csrf_token": token},
            headers={"X-Forwarded-Proto": "https"},
            follow_redirects=False,
        )
    assert "secure" not in _session_cookie(answer).split("; ")


def test_a_sign_out_racing_a_request_is_a_401_not_a_500(
    web: WebSetup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The request read the session row; the sign-out deletes it before the request writes
    its last_seen_at (due every 30 s)."""
    real = auth._expired

    def racing(ctx: object, row: WebSession, now: object) -> bool:
        with web.ctx.db.session() as session:
            session.execute(delete(WebSession))
        return real(ctx, row, now)  # type: ignore[arg-type]

    with TestClient(web.app, raise_server_exceptions=False) as client:
        login(client, "alice", ADMIN_PW)
        _age_sessions(web, last_seen_at=timedelta(minutes=1))
        monkeypatch.setattr(auth, "_expired", racing)
        assert client.get("/api/backups").status_code == 401
        monkeypatch.setattr(auth, "_expired", real)
        assert client.get("/api/backups").status_code == 401


def test_a_token_revoked_while_a_request_uses_it_is_a_401_not_a_500(
    web: WebSetup, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = auth.utc_now_iso

    def revoking() -> str:
        with web.ctx.db.session() as session:
            session.execute(delete(ApiToken).where(ApiToken.name == "ci"))
        return real()

    with TestClient(web.app, raise_server_exceptions=False) as client:
        monkeypatch.setattr(auth, "utc_now_iso", revoking)
        assert client.get("/api/backups", headers=web.admin).status_code == 401
        monkeypatch.setattr(auth, "utc_now_iso", real)
        assert client.get("/api/backups", headers=web.admin).status_code == 401


def test_tokens_are_not_sessions_and_do_not_unlock_one(web: WebSetup) -> None:
    with TestClient(web.app) as client:
        assert client.get("/api/backups", headers=web.admin).status_code == 200
        assert COOKIE not in client.cookies  # a script gets no session
        pinned = client.put("/api/backups/nothing-yet/pin", headers=web.admin)
        assert pinned.status_code in (400, 404)  # no CSRF asked of a bearer token
        login(client, "alice", ADMIN_PW)
        for bad in ("Bearer sr_not-a-token", "Bearer garbage", "Bearer " + "x" * 5000):
            # a signed-in browser sending a wrong token: no fallback to the cookie (which
            # would skip the CSRF check)
            answer = client.post(
                "/api/backups", json={"target": "shop"}, headers={"Authorization": bad}
            )
            assert answer.status_code == 401, bad
        with web.ctx.db.session() as session:
            session.execute(update(ApiToken).values(revoked=True))
        assert client.get("/api/backups", headers=web.admin).status_code == 401
        assert client.get("/api/jobs").status_code == 200  # the session is unaffected
    assert [e for e in _audit(web, "backup")] == []


# --- 3. body limits -----------------------------------------------------------------------------
def _raw(base: str, request: bytes) -> bytes:
    host, port = base.rsplit("/", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_chunked_lying_and_compressed_bodies(web: WebSetup) -> None:
    body = b'{"target": "shop", "tags": ["' + b"x" * 100_000 + b'"]}'
    chunked = b"".join(
        b"%x\r\n%s\r\n" % (len(body[i : i + 4096]), body[i : i + 4096])
        for i in range(0, len(body), 4096)
    )
    head = (
        b"POST /api/backups HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nAuthorization: Bearer " + web.admin_token.encode()
    )
    with serving(web.app) as base:
        answer = _raw(
            base, head + b"\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked + b"0\r\n\r\n"
        )
        assert answer.startswith(b"HTTP/1.1 413")
        both = b"\r\nContent-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n"
        assert _raw(base, head + both + chunked + b"0\r\n\r\n").split(b" ")[1] in (b"400", b"413")
        lying = _raw(base, head + b"\r\nContent-Length: 20\r\n\r\n" + body)  # the rest: ignored
        assert lying.startswith(b"HTTP/1.1 422") and b"xxxx" not in lying
        huge = _raw(base, head + b"\r\nContent-Length: 99999999999999999999\r\n\r\n")
        assert huge.split(b" ")[1] in (b"400", b"413")
        bomb = gzip.compress(b'{"target": "shop", "tags": ["' + b"x" * 5_000_000 + b'"]}')
        assert len(bomb) < 65536  # fits the limit; it is not inflated
        zipped = httpx.post(
            f"{base}/api/backups",
            content=bomb,
            headers={**web.admin, "Content-Type": "application/json", "Content-Encoding": "gzip"},
        )
        assert zipped.status_code in (400, 415, 422) and len(zipped.content) < 1000
        upload = {"f": ("a.bin", b"z" * 100_000)}
        for path in ("/login", "/ui/backup", "/ui/backups/latest/restore"):
            multipart = httpx.post(f"{base}{path}", files=upload, headers=web.admin)
            assert multipart.status_code == 413, path
        jobs = httpx.get(f"{base}/api/jobs", headers=web.admin).json()
    assert jobs == []


@pytest.mark.parametrize(
    ("method", "path", "kind", "body"),
    [
        ("GET", "/api/jobs/x%00", None, None),
        ("GET", "/api/backups?target=a%00b", None, None),
        ("POST", "/login", "application/x-www-form-urlencoded", b"username=ali%00ce&password=x"),
        ("POST", "/ui/retention/run", "application/x-www-form-urlencoded", b"target=a%00b"),
        ("POST", "/api/backups", "application/json", b'{"target": "sh\\u0000op"}'),
        ("POST", "/ui/backup", "multipart/form-data; boundary=b", b"--b\r\n\x00\r\n--b--\r\n"),
    ],
)
def test_a_nul_anywhere_is_a_400(
    client: TestClient, web: WebSetup, method: str, path: str, kind: str | None, body: bytes
) -> None:
    """PostgreSQL, as the service database, refuses NUL in text: every value reaching a
    query was a 500 (see the PostgreSQL test below); it is refused at the door."""
    headers = {**web.admin, **({"Content-Type": kind} if kind else {})}
    answer = client.request(method, path, content=body, headers=headers)
    assert answer.status_code == 400 and "NUL" in answer.json()["detail"]


def test_a_json_text_may_hold_percent_zero_zero(client: TestClient, web: WebSetup) -> None:
    answer = client.post(
        "/api/backups", json={"target": "shop", "tags": ["100%00"]}, headers=web.admin
    )
    assert answer.status_code == 202


def test_nul_in_names_ids_and_addresses_with_a_postgres_service_database(
    tmp_path: Path, pg_server: object
) -> None:
    name = unique_db_name("service")
    url = pg_server.create_database(name)  # type: ignore[attr-defined]
    try:
        web = _proxied(tmp_path, service_db=url)
        app = web.app
        with TestClient(app, raise_server_exceptions=False) as client:
            assert _wrong_login(client, "ali\x00ce") == 400
            assert client.delete("/api/backups/x%00", headers=web.admin).status_code == 400
            assert client.get("/backups?target=a%00b", headers=web.admin).status_code == 400
            assert client.get("/api/jobs/x%00", headers=web.admin).status_code == 400
        with TestClient(app, client=("10.0.0.1", 4000), raise_server_exceptions=False) as proxied:
            assert _wrong_login(proxied, "alice", {"X-Forwarded-For": "\x00evil"}) == 401
        # the audit log escapes what reaches it by other ways
        audit.record(web.ctx.db, "a\x00b", "login", "failed \x00", subject="s\x00", client="c\x00")
        entry = audit.recent(web.ctx.db, action="login")[0]
        assert (entry.user, entry.subject, entry.client) == ("a\\x00b", "s\\x00", "c\\x00")
        web.ctx.db.dispose()
    finally:
        pg_server.drop_database(name)  # type: ignore[attr-defined]


# --- 4. 422 bodies --------------------------------------------------------------------------------
def test_no_422_of_any_api_route_echoes_a_secret(client: TestClient, web: WebSetup) -> None:
    """Every route with a body, sent the secret as a value of each field (wrong type, too
    long, a list), as a misspelt field's name, and as the whole body."""
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    tried = 0
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            url = path.replace("{backup_id}", "latest").replace("{job_id}", "x")
            url = url.replace("{name}", "shop").replace("{target}", "shop")
            params = {
                p["name"]: SECRET_URL + "x" * 3000
                for p in operation.get("parameters", [])
                if p["in"] == "query"
            }
            bodies: list[object] = [None]
            if "requestBody" in operation:
                schema = operation["requestBody"]["content"]["application/json"]["schema"]
                ref = schema.get("$ref") or schema["anyOf"][0]["$ref"]
                fields = schemas[ref.rsplit("/", 1)[1]].get("properties", {})
                bodies = [
                    {k: {"k": SECRET_URL} for k in fields},
                    {k: SECRET_URL + "?" + "x" * 5000 for k in fields},
                    {k: [SECRET_URL] for k in fields},
                    {SECRET_URL: SECRET_URL},
                    SECRET_URL,
                    [SECRET_URL],
                ]
            for body in bodies:
                answer = client.request(
                    method.upper(), url, params=params, json=body, headers=web.admin
                )
                tried += 1
                assert answer.status_code < 500, (method, url, body)
                assert "TopSecretPw" not in answer.text, (method, url, answer.text)
    assert tried > 30


def test_no_ui_form_error_echoes_a_secret(client: TestClient, web: WebSetup) -> None:
    fields = {
        "to": SECRET_URL,
        "confirm": SECRET_URL * 20,
        "target": SECRET_URL + "x" * 300,
        "tag": SECRET_URL + "x" * 300,
        "scratch": SECRET_URL + "x" * 3000,
        "username": SECRET_URL + "x" * 200,
        "password": SECRET_URL + "x" * 2000,
        "missing_roles": SECRET_URL,
        "safety_backup": SECRET_URL,
    }
    for path in (
        "/login",
        "/ui/backup",
        "/ui/backups/latest/restore/plan",
        "/ui/backups/latest/restore",
        "/ui/backups/latest/pin",
        "/ui/backups/latest/forget",
        "/ui/retention/run",
    ):
        for form in (fields, {"to": [SECRET_URL, SECRET_URL], "confirm": "x"}, {SECRET_URL: "1"}):
            answer = client.post(path, data=form, headers=web.admin)
            assert answer.status_code < 500 and "TopSecretPw" not in answer.text, path


# --- 5. exact ids ---------------------------------------------------------------------------------
def test_almost_exact_ids_are_refused(client: TestClient, web: WebSetup) -> None:
    backup_id = _backup(client, web)
    for reference in (
        backup_id + "%0A",  # `$` in the id pattern matched before a final line break
        backup_id + "%20",
        backup_id.upper(),
        backup_id[:-1] + "%2A",
        "%20latest",
    ):
        gone = client.delete(f"/api/backups/{reference}", headers=web.admin)
        assert gone.status_code == 400 and "full id" in gone.json()["detail"], reference
        ui = client.post(f"/ui/backups/{reference}/forget", headers=web.admin)
        assert ui.status_code == 400, reference
    restore = client.post(
        f"/api/backups/{backup_id}%0A/restore", json={"confirm": "shop"}, headers=web.admin
    )
    assert restore.status_code == 400 and "full id" in restore.json()["detail"]
    for slash in (f"..%2F{backup_id}", f"{backup_id[:8]}%2F{backup_id[9:]}"):
        assert client.delete(f"/api/backups/{slash}", headers=web.admin).status_code == 404
    assert [b["backup_id"] for b in client.get("/api/backups", headers=web.admin).json()] == [
        backup_id
    ]
    for spaced in ("latest", "%20latest", "latest%20"):  # latest is kept for restore
        plan = client.post(f"/api/backups/{spaced}/restore/plan", json={}, headers=web.admin)
        assert plan.status_code == 200 and plan.json()["backup_id"] == backup_id


# --- 6. downloads ---------------------------------------------------------------------------------
@pytest.fixture
def big(tmp_path: Path) -> Iterator[tuple[WebSetup, str]]:
    db = _big_sqlite(tmp_path / "big.db", megabytes=6)
    web = build_app(tmp_path, {"big": f"sqlite://{db}"})
    with TestClient(web.app) as client:
        yield web, _backup(client, web, "big")


def test_range_and_head_requests(big: tuple[WebSetup, str]) -> None:
    web, backup_id = big
    with TestClient(web.app) as client:
        url = f"/api/backups/{backup_id}/download"
        whole = client.get(url, headers={**web.admin, "Range": "bytes=0-9"})
        assert whole.status_code == 200 and "content-range" not in whole.headers
        assert len(whole.content) == int(whole.headers["content-length"]) > 10
        assert blake3(whole.content).hexdigest() == whole.headers["x-content-blake3"]
        head = client.head(url, headers=web.admin)
        assert head.status_code == 405
    assert [e.result for e in _audit(web, "download")] == ["ok"]


def test_a_chunk_with_flipped_bytes_breaks_the_transfer(
    big: tuple[WebSetup, str], caplog: pytest.LogCaptureFixture
) -> None:
    web, backup_id = big
    repo = web.ctx.repository()
    manifest = repo.load_manifest(backup_id)
    # there, not missing: only reading it tells (its blob in its pack, issue 19)
    flip_chunk_byte(repo, manifest.chunks[len(manifest.chunks) // 2].chunk_id, at=1000)
    caplog.set_level(logging.ERROR)
    received = 0
    with serving(web.app) as base:
        with httpx.stream(
            "GET", f"{base}/api/backups/{backup_id}/download", headers=web.admin
        ) as answer:
            assert answer.status_code == 200
            with pytest.raises(httpx.RemoteProtocolError):
                for data in answer.iter_raw():
                    received += len(data)
    assert 0 < received < int(answer.headers["content-length"])
    outcome = _audit(web, "download")[0].result
    assert outcome.startswith("failed:") and "damaged" in outcome
    errors = [r.getMessage() for r in caplog.records]
    assert not any("Exception in ASGI application" in m for m in errors), errors


def test_two_downloads_at_once_and_one_forgotten_while_it_streams(
    big: tuple[WebSetup, str],
) -> None:
    web, backup_id = big
    results: dict[int, tuple[int, bool]] = {}

    def download(n: int, base: str) -> None:
        with httpx.stream(
            "GET", f"{base}/api/backups/{backup_id}/download", headers=web.admin
        ) as answer:
            data = answer.read()
            results[n] = (
                answer.status_code,
                blake3(data).hexdigest() == answer.headers["x-content-blake3"],
            )

    with serving(web.app) as base:
        threads = [threading.Thread(target=download, args=(n, base)) for n in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert results == {0: (200, True), 1: (200, True)}
        with httpx.stream(
            "GET", f"{base}/api/backups/{backup_id}/download", headers=web.admin
        ) as answer:
            parts = answer.iter_raw(65536)
            received = len(next(parts))
            forgotten = httpx.delete(f"{base}/api/backups/{backup_id}", headers=web.admin)
            assert forgotten.status_code == 200
            received += sum(len(p) for p in parts)  # its chunks stay until a prune
        assert received == int(answer.headers["content-length"])
        again = httpx.get(f"{base}/api/backups/{backup_id}/download", headers=web.admin)
        assert again.status_code == 404
    assert [e.result for e in _audit(web, "download")][:1] == ["ok"]


# --- the migration from the previous version --------------------------------------------------
def test_a_service_database_of_the_previous_version_is_upgraded(tmp_path: Path) -> None:
    """A database at revision 0001 (the previous version's head; its migration is unchanged)
    with a user, a token and a signed-in browser: the new app migrates it, the old cookie
    (it held the user id) signs no one in, the token and the password still work."""
    url = str(tmp_path / "service.db")
    old = ServiceDatabase(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with old.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
    add_user(old, "alice", "admin", ADMIN_PW)
    token = create_token(old, "ci", "admin")
    signer = TimestampSigner(old.secret("session_secret"))
    cookie = signer.sign(base64.b64encode(json.dumps({"uid": 1, "csrf": "c"}).encode())).decode()
    old.dispose()

    db = make_sqlite_db(tmp_path / "shop.db", users=10, orders=10)
    settings = parse_settings(write_config(tmp_path, {"shop": f"sqlite://{db}"}))
    Repository.init(open_storage(str(tmp_path / "repo")), key_file=tmp_path / "repo.key")
    app = create_app(settings, url, env={})
    with TestClient(app, cookies={COOKIE: cookie}) as browser:
        assert browser.get("/api/backups").status_code == 401
        pin = browser.put("/api/backups/latest/pin", headers={"X-CSRF-Token": "c"})
        assert pin.status_code == 401
    with TestClient(app) as client:
        assert (
            client.get("/api/backups", headers={"Authorization": f"Bearer {token}"}).status_code
            == 200
        )
        login(client, "alice", ADMIN_PW)
        assert client.get("/api/backups").status_code == 200
        started = client.post(
            "/api/backups", json={"target": "shop"}, headers={"Authorization": f"Bearer {token}"}
        )
        assert (
            wait_job(client, started.json()["job_id"], {"Authorization": f"Bearer {token}"})[
                "status"
            ]
            == "succeeded"
        )
    create_app(settings, url, env={})  # opening it again changes nothing
    newest = max(
        path.name.split("_", 1)[0] for path in (MIGRATIONS / "versions").glob("[0-9]*_*.py")
    )
    with ServiceDatabase(url).engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == (
            newest
        )
