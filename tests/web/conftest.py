"""A web app over a temp local repository with a SQLite target, users and tokens."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from fastapi.testclient import TestClient

from strongroom.config import parse_settings
from strongroom.repository.repository import Repository
from strongroom.storage.factory import open_storage
from strongroom.web import credentials
from strongroom.web.app import create_app
from strongroom.web.auth import add_user, create_token
from strongroom.web.context import WebContext
from strongroom.web.db import ServiceDatabase
from tests.helpers import make_sqlite_db

ADMIN_PW = "admin-pass-123"
VIEWER_PW = "viewer-pass-123"
CRON_SECRET = "cron-s3cret-value"


@dataclass
class WebSetup:
    tmp: Path
    db_path: Path
    app: FastAPI
    admin_token: str
    viewer_token: str

    @property
    def ctx(self) -> WebContext:
        ctx: WebContext = self.app.state.ctx
        return ctx

    def headers(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    @property
    def admin(self) -> dict[str, str]:
        return self.headers(self.admin_token)

    @property
    def viewer(self) -> dict[str, str]:
        return self.headers(self.viewer_token)


def write_config(tmp: Path, targets: dict[str, str], extra: str = "", tail: str = "") -> str:
    lines = [
        'timezone = "UTC"',
        "[repository]",
        f'location = "{tmp / "repo"}"',
        f'key_file = "{tmp / "repo.key"}"',
    ]
    for name, url in targets.items():
        lines += [f"[targets.{name}]", f'url = "{url}"', extra]
    return "\n".join([*lines, tail]) + "\n"


class _FixtureHashes(PasswordHasher):
    """The product's argon2id hasher, except that the hashes of :data:`ADMIN_PW` and
    :data:`VIEWER_PW` are made once per test process and handed out again (each ~0.2 s of
    CPU: two per app, 137 tests use one). They are real hashes of those passwords with
    the product's parameters; only their salt is shared between tests (each test has its
    own service database)."""

    made: dict[str, str] = {}

    def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
        if salt is None and password in (ADMIN_PW, VIEWER_PW):
            assert isinstance(password, str)
            if password not in self.made:
                self.made[password] = super().hash(password)
            return self.made[password]
        return super().hash(password, salt=salt)


def fixture_users(db: ServiceDatabase) -> None:
    """alice (admin) and victor (viewer) through ``add_user``, with :class:`_FixtureHashes`."""
    real = credentials._hasher
    credentials._hasher = _FixtureHashes()
    try:
        add_user(db, "alice", "admin", ADMIN_PW)
        add_user(db, "victor", "viewer", VIEWER_PW)
    finally:
        credentials._hasher = real


def build_app(tmp: Path, targets: dict[str, str], service_db: str | None = None, **kw) -> WebSetup:
    Repository.init(open_storage(str(tmp / "repo")), key_file=tmp / "repo.key")
    settings = parse_settings(write_config(tmp, targets, kw.pop("extra", ""), kw.pop("tail", "")))
    app = create_app(
        settings,
        service_db or str(tmp / "service.db"),
        env={"CRON_SECRET": CRON_SECRET},
        **kw,
    )
    ctx: WebContext = app.state.ctx
    fixture_users(ctx.db)
    admin_token = create_token(ctx.db, "ci", "admin")
    viewer_token = create_token(ctx.db, "dash", "viewer")
    return WebSetup(tmp, tmp / "shop.db", app, admin_token, viewer_token)


@pytest.fixture
def web(tmp_path: Path) -> WebSetup:
    db = make_sqlite_db(tmp_path / "shop.db", users=300, orders=900)
    return build_app(tmp_path, {"shop": f"sqlite://{db}"})


@pytest.fixture
def client(web: WebSetup) -> Iterator[TestClient]:
    with TestClient(web.app) as test_client:
        yield test_client


def wait_job(client: TestClient, job_id: str, headers: dict[str, str], timeout: float = 60) -> dict:
    """Poll GET /api/jobs/{id} until it is finished; return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}", headers=headers).json()
        if job["status"] in ("succeeded", "failed"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")


def login(client: TestClient, name: str, password: str) -> str:
    """Sign in through the form; return the session's CSRF token."""
    page = client.get("/login")
    token = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    response = client.post(
        "/login",
        data={"username": name, "password": password, "csrf_token": token},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    home = client.get("/")
    return home.text.split('"X-CSRF-Token": "', 1)[1].split('"', 1)[0]
