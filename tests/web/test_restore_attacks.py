"""Hostile cases for the web restore's missing-roles choices, refusals and audit."""

from __future__ import annotations

import uuid
from urllib.parse import quote

import psycopg
from fastapi.testclient import TestClient
from psycopg import sql
from sqlalchemy import select

from strongroom.web.models import AuditEntry
from tests.fixtures.postgres import PgServer, unique_db_name
from tests.web.conftest import WebSetup, build_app, wait_job

ODD_PW = "p@ss:w/rd%"
ID = sql.Identifier


def _odd_url(server: PgServer, user: str, db: str) -> str:
    return (
        f"postgresql://{user}:{quote(ODD_PW, safe='')}@{server.host}:{server.port}/"
        f"{quote(db, safe='')}"
    )


def _exec(server: PgServer, db: str, *statements: sql.Composable) -> None:
    with server.connect(db) as conn:
        conn.autocommit = True
        for s in statements:
            conn.execute(s)


def _audit(web: WebSetup) -> list[tuple[str, str, str | None]]:
    with web.ctx.db.session() as session:
        rows = session.execute(select(AuditEntry).order_by(AuditEntry.id)).scalars().all()
        return [(r.action, r.result, r.detail) for r in rows]


def _no_password(text: str) -> None:
    for form in (ODD_PW, quote(ODD_PW, safe=""), quote(ODD_PW), "w/rd%"):
        assert form not in text, text


def test_web_missing_roles_choices_refusal_audit_and_no_password(
    tmp_path, pg_server: PgServer, pg_server2: PgServer
) -> None:
    tag = uuid.uuid4().hex[:6]
    user, owner = f"wodd_{tag}", f"wown_{tag}"
    source, target = unique_db_name("wsrc"), unique_db_name("wdst")
    for server in (pg_server, pg_server2):
        _exec(
            server,
            "postgres",
            sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
                ID(user), sql.Literal(ODD_PW)
            ),
        )
    _exec(pg_server, "postgres", sql.SQL("CREATE ROLE {}").format(ID(owner)))
    pg_server.create_database(source)
    try:
        _exec(
            pg_server,
            source,
            sql.SQL("CREATE TABLE items (id int)"),
            sql.SQL("INSERT INTO items SELECT generate_series(1, 40)"),
            sql.SQL("ALTER TABLE items OWNER TO {}").format(ID(owner)),
        )
        web = build_app(tmp_path, {"app": _odd_url(pg_server, user, source)})
        to = _odd_url(pg_server2, user, target)
        with TestClient(web.app) as client:
            started = client.post("/api/backups", json={"target": "app"}, headers=web.admin)
            job = wait_job(client, started.json()["job_id"], web.admin)
            assert job["status"] == "succeeded", job
            backup_id = job["result"]["backup_id"]
            texts: list[str] = [str(job)]

            # a viewer may not plan or restore, whatever it asks for
            for path in ("restore/plan", "restore"):
                r = client.post(
                    f"/api/backups/{backup_id}/{path}",
                    json={"to": to, "confirm": target, "missing_roles": "create"},
                    headers=web.viewer,
                )
                assert r.status_code == 403, r.text
                texts.append(r.text)
            # an unknown choice is a validation error, nothing planned or started
            bad = client.post(
                f"/api/backups/{backup_id}/restore",
                json={"to": to, "confirm": target, "missing_roles": "drop"},
                headers=web.admin,
            )
            assert bad.status_code == 422, bad.text
            texts.append(bad.text)

            # the plan with "create" creates nothing
            plan = client.post(
                f"/api/backups/{backup_id}/restore/plan",
                json={"to": to, "missing_roles": "create"},
                headers=web.admin,
            )
            assert plan.status_code == 200, plan.text
            assert plan.json()["refusal"] is None
            assert any(owner in line for line in plan.json()["checks"])
            texts.append(plan.text)
            assert pg_server2.query(
                "postgres", "SELECT count(*) FROM pg_roles WHERE rolname = %s", (owner,)
            ) == [(0,)]

            jobs_before = client.get("/api/jobs", headers=web.admin).text
            refused = client.post(
                f"/api/backups/{backup_id}/restore",
                json={"to": to, "confirm": target},
                headers=web.admin,
            )
            assert refused.status_code in (400, 409, 422), refused.text
            assert owner in refused.text
            texts.append(refused.text)
            assert client.get("/api/jobs", headers=web.admin).text == jobs_before
            assert not pg_server2.database_exists(target)
            assert any(a == "restore" and r.startswith("refused") for a, r, _ in _audit(web))

            created = client.post(
                f"/api/backups/{backup_id}/restore",
                json={"to": to, "confirm": target, "missing_roles": "create"},
                headers=web.admin,
            )
            job = wait_job(client, created.json()["job_id"], web.admin)
            assert job["status"] == "succeeded", job
            texts.append(str(job))
            assert pg_server2.query(
                target, "SELECT tableowner FROM pg_tables WHERE tablename = 'items'"
            ) == [(owner,)]
            # the marker is gone once the restore is done
            assert pg_server2.query(
                "postgres",
                "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = %s",
                (owner,),
            ) == [(None,)]
            # a failing restore (wrong password) keeps the password out of the job and audit
            wrong = to.replace(quote(ODD_PW, safe=""), quote(ODD_PW + "x", safe=""))
            failed = client.post(
                f"/api/backups/{backup_id}/restore/plan",
                json={"to": wrong, "missing_roles": "create"},
                headers=web.admin,
            )
            texts.append(failed.text)
            texts.append(client.get("/api/jobs", headers=web.admin).text)
            texts.append(client.get("/api/targets", headers=web.admin).text)
            texts += [f"{a} {r} {d}" for a, r, d in _audit(web)]
        for text in texts:
            _no_password(text)
    finally:
        for db in (target,):
            with pg_server2.connect() as conn:
                like = db.replace("_", r"\_") + "%"
                names = conn.execute(
                    "SELECT datname FROM pg_database WHERE datname LIKE %s", (like,)
                ).fetchall()
            for (name,) in names:
                pg_server2.drop_database(name)
        pg_server.drop_database(source)
        for server in (pg_server, pg_server2):
            with server.connect() as conn:
                conn.autocommit = True
                for role in (owner, user):
                    try:
                        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(ID(role)))
                    except psycopg.Error:
                        pass
