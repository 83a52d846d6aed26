"""A PostgreSQL target through the API, and PostgreSQL as the service database."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient
from sqlalchemy import inspect

from strongroom.web.db import ServiceDatabase
from tests.fixtures.postgres import unique_db_name
from tests.helpers import make_sqlite_db
from tests.web.conftest import ADMIN_PW, build_app, login, wait_job


def test_postgres_backup_plan_restore_and_download(tmp_path, pg_server, pg_db):
    pg_server.psql(
        pg_db.rsplit("/", 1)[1],
        "CREATE TABLE items (id serial PRIMARY KEY, name text);"
        "INSERT INTO items (name) SELECT 'item ' || g FROM generate_series(1, 500) g;",
    )
    web = build_app(tmp_path, {"app": pg_db})
    with TestClient(web.app) as client:
        started = client.post("/api/backups", json={"target": "app"}, headers=web.admin)
        job = wait_job(client, started.json()["job_id"], web.admin)
        assert job["status"] == "succeeded", job
        backup_id = job["result"]["backup_id"]
        assert pg_server.password not in client.get("/api/targets", headers=web.admin).text

        scratch_name = unique_db_name("scratch")
        scratch = pg_server.url(scratch_name)
        try:
            plan = client.post(
                f"/api/backups/{backup_id}/restore/plan", json={"to": scratch}, headers=web.admin
            ).json()
            assert plan["database_name"] == scratch_name and plan["exists"] is False
            assert pg_server.password not in plan["destination"]
            restored = client.post(
                f"/api/backups/{backup_id}/restore",
                json={"to": scratch, "confirm": scratch_name},
                headers=web.admin,
            )
            job = wait_job(client, restored.json()["job_id"], web.admin)
            assert job["status"] == "succeeded", job
            assert pg_server.query(scratch_name, "SELECT count(*) FROM items") == [(500,)]
        finally:
            pg_server.drop_database(scratch_name)

        with client.stream("GET", f"/api/backups/{backup_id}/download", headers=web.admin) as r:
            assert r.headers["content-disposition"].endswith(f'app-{backup_id}.dump"')
            assert b"".join(r.iter_bytes()).startswith(b"PGDMP")
        drill = client.post(f"/api/backups/{backup_id}/verify-restore", headers=web.admin)
        assert wait_job(client, drill.json()["job_id"], web.admin)["status"] == "succeeded"


def test_restore_onto_a_server_without_the_roles_asks_then_skips(tmp_path, pg_server, pg_server2):
    """The plan names the missing role and the restore refuses (nothing created) until the
    request says what to do; skip then restores without the role's grants."""
    role = unique_db_name("reporting")
    source = unique_db_name("src")
    pg_server.create_database(source)
    target = unique_db_name("dst")
    try:
        pg_server.psql(
            source,
            f"CREATE ROLE {role} NOLOGIN; CREATE TABLE items (id int);"
            f" INSERT INTO items SELECT generate_series(1, 50); GRANT SELECT ON items TO {role};",
        )
        web = build_app(tmp_path, {"app": pg_server.url(source)})
        with TestClient(web.app) as client:
            started = client.post("/api/backups", json={"target": "app"}, headers=web.admin)
            backup_id = wait_job(client, started.json()["job_id"], web.admin)["result"]["backup_id"]
            body = {"to": pg_server2.url(target)}
            plan = client.post(
                f"/api/backups/{backup_id}/restore/plan", json=body, headers=web.admin
            ).json()
            assert role in plan["refusal"] and "--create-roles" in plan["refusal"]
            refused = client.post(
                f"/api/backups/{backup_id}/restore",
                json=body | {"confirm": target},
                headers=web.admin,
            )
            assert refused.status_code in (400, 409, 422), refused.text
            assert role in refused.text and not pg_server2.database_exists(target)
            skipped = client.post(
                f"/api/backups/{backup_id}/restore",
                json=body | {"confirm": target, "missing_roles": "skip"},
                headers=web.admin,
            )
            job = wait_job(client, skipped.json()["job_id"], web.admin)
            assert job["status"] == "succeeded", job
            assert pg_server2.query(target, "SELECT count(*) FROM items") == [(50,)]
            assert pg_server2.query(
                "postgres", "SELECT count(*) FROM pg_roles WHERE rolname = %s", (role,)
            ) == [(0,)]
    finally:
        pg_server2.drop_database(target)
        pg_server.drop_database(source)
        pg_server.psql("postgres", f"DROP ROLE IF EXISTS {role}")


def test_postgres_service_database(tmp_path, pg_server):
    name = unique_db_name("service")
    url = pg_server.create_database(name)
    try:
        db = make_sqlite_db(tmp_path / "shop.db", users=20, orders=20)
        web = build_app(tmp_path, {"shop": f"sqlite://{db}"}, service_db=url)
        assert web.ctx.db.engine.dialect.name == "postgresql"
        with TestClient(web.app) as client:
            login(client, "alice", ADMIN_PW)
            started = client.post("/api/backups", json={"target": "shop"}, headers=web.admin)
            assert wait_job(client, started.json()["job_id"], web.admin)["status"] == "succeeded"
            assert len(client.get("/api/backups", headers=web.viewer).json()) == 1
        web.ctx.db.dispose()
    finally:
        pg_server.drop_database(name)


def poll_job(client, job_id, headers, timeout=60.0):
    """Poll a job without pausing: a job read as finished is acted on at once."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}", headers=headers).json()
        if job["status"] in ("succeeded", "failed"):
            return job
    raise AssertionError(f"job {job_id} did not finish")


def test_migrations_match_the_models(tmp_path):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from strongroom.web.models import Base

    db = ServiceDatabase(str(tmp_path / "s.db"))
    db.upgrade()
    db.upgrade()  # idempotent
    with db.engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
        assert "backup_index" in inspect(connection).get_table_names()


def test_succeeded_backup_jobs_are_listed_at_once_with_a_postgres_service_database(
    tmp_path, pg_server
):
    """Ten "back up now" jobs back to back; each polled until it succeeded, then its
    backup (also the job's top-level backup_id) is in GET /api/backups at once. The
    index used to be synced after the job was marked succeeded (this test's flake)."""
    name = unique_db_name("service")
    url = pg_server.create_database(name)
    try:
        db = make_sqlite_db(tmp_path / "shop.db", users=20, orders=20)
        web = build_app(tmp_path, {"shop": f"sqlite://{db}"}, service_db=url)
        seen = []
        with TestClient(web.app) as client:
            for _ in range(10):
                started = client.post("/api/backups", json={"target": "shop"}, headers=web.admin)
                job = poll_job(client, started.json()["job_id"], web.admin)
                assert job["status"] == "succeeded", job
                assert job["backup_id"] == job["result"]["backup_id"]
                seen.append(job["backup_id"])
                listed = client.get("/api/backups", headers=web.viewer).json()
                assert seen[-1] in {b["backup_id"] for b in listed}, f"job {len(seen)}"
            listed = client.get("/api/backups", headers=web.viewer).json()
            assert {b["backup_id"] for b in listed} == set(seen)
        web.ctx.db.dispose()
    finally:
        pg_server.drop_database(name)
