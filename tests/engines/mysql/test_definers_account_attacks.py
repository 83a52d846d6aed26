"""Issue 13, input 3, attacked: what the restoring account may do with DEFINERs it cannot set
(``--rewrite-definers``): SET USER through roles, older backups without recorded definers,
drills, rollback and the web API as an account without SET USER, on the real MariaDB the
harness starts. Tests marked ``xfail(strict=True)`` show a bug (the reason says which); the
others hold."""

from __future__ import annotations

import dataclasses
from typing import Any

import pymysql
import pytest

from strongroom.engines.base import RestoreOptions
from strongroom.engines.mysql import MysqlEngine
from strongroom.engines.mysql import dump as dump_module
from strongroom.repository.manifest import Manifest
from strongroom.repository.repository import Repository
from strongroom.services.backup import run_backup
from strongroom.services.restore import find_rollback_backup, plan_restore, run_restore
from tests.engines.mysql.definers_helpers import (
    REWRITE,
    _definers,
    _dump,
    _lit,
    _no_password,
    _repository,
    _run_as,
    _shop,
    _tables,
    _url,
    crew,
)
from tests.fixtures.mariadb import MariaDbServer
from tests.helpers import cli_fails, cli_ok, run_cli

__all__ = ["crew"]  # fixtures

# --- what the restoring account may do: roles ------------------------------------------------


def test_set_user_through_a_default_role_counts(mariadb_server, mysql_db, crew):
    server, name = mariadb_server, crew.name
    _shop(crew)
    data, state = _dump(server, name)
    role = crew.role(f"definer_admin_{crew.tag}", grant=False)[:-1]
    server.query(None, f"GRANT SET USER ON *.* TO {_lit(role)}")
    server.query(None, f"GRANT {_lit(role)} TO '{crew.app}'@'%'")
    server.query(None, f"SET DEFAULT ROLE {_lit(role)} FOR '{crew.app}'@'%'")
    copy = f"{name}_role"
    target = MysqlEngine(_url(server, crew.app, copy))
    # the server lets the account keep every definer …
    target.restore([data], state=state, options=RestoreOptions())
    assert _definers(server, copy) == _definers(server, name)
    server.drop_database(copy)
    # … so the plan should not refuse, nor --rewrite-definers take the other's objects
    assert target.plan_checks(state, RestoreOptions()).refusal is None


def test_a_definer_that_is_the_accounts_own_role_is_kept(mariadb_server, mysql_db, crew):
    server, name = mariadb_server, crew.name
    _tables(server, name)
    role = crew.role(f"shop_role_{crew.tag}")[:-1]
    server.query(None, f"GRANT {_lit(role)} TO '{crew.app}'@'%'")
    server.query(None, f"SET DEFAULT ROLE {_lit(role)} FOR '{crew.app}'@'%'")
    _run_as(
        server, crew.app, name, [f"CREATE DEFINER={_lit(role)} VIEW rv AS SELECT id FROM products"]
    )
    assert _definers(server, name) == {"view rv": f"{role}@"}
    data, state = _dump(server, name)
    copy = f"{name}_ownrole"
    target = MysqlEngine(_url(server, crew.app, copy))
    target.restore([data], state=state, options=RestoreOptions())  # the server accepts it
    assert _definers(server, copy) == {"view rv": f"{role}@"}
    server.drop_database(copy)
    assert target.plan_checks(state, RestoreOptions()).refusal is None


def test_a_definer_the_account_cannot_check_is_not_reported_as_kept(mariadb_server, mysql_db, crew):
    server, name = mariadb_server, crew.name
    _tables(server, name)
    ghost = crew.user(f"ghost_{crew.tag}")
    _run_as(server, ghost.split("@")[0], name, ["CREATE VIEW haunted AS SELECT id FROM products"])
    admin = crew.user(f"admin_{crew.tag}")  # SET USER, but no access to mysql.*
    server.query(None, f"GRANT SET USER ON *.* TO '{admin.split('@')[0]}'@'%'")
    data, state = _dump(server, name)
    server.query(None, f"DROP USER '{ghost.split('@')[0]}'@'%'")  # a server without it
    copy = f"{name}_ghost"
    target = MysqlEngine(_url(server, admin.split("@")[0], copy))
    checks = target.plan_checks(state, RestoreOptions())
    target.restore([data], state=state, options=RestoreOptions())
    with pytest.raises(pymysql.err.OperationalError, match=r"1449|does not exist"):
        server.query(copy, "SELECT * FROM haunted")
    assert checks.refusal is not None or not any("definers kept" in x for x in checks.lines), (
        checks.lines
    )


# --- a backup taken before definers were recorded -----------------------------------------


def _old_backup(server: MariaDbServer, name: str, repo: Repository, monkeypatch) -> Manifest:
    """A backup whose engine state holds no definers (as an older version wrote it)."""
    real_finish = dump_module.MysqlRunningDump.finish

    def finish(self: Any) -> Any:
        return dataclasses.replace(real_finish(self), state=None)

    with monkeypatch.context() as patch:
        patch.setattr(dump_module.MysqlRunningDump, "finish", finish)
        manifest = run_backup(repo, MysqlEngine(server.url(name))).manifest
    assert repo.private_section(manifest).engine_state is None
    return manifest


def test_an_older_backup_restored_without_set_user_says_what_to_do(
    mariadb_server, mysql_db, crew, tmp_path, monkeypatch
):
    server, name = mariadb_server, crew.name
    _shop(crew)
    env, repo = _repository(tmp_path)
    _old_backup(server, name, repo, monkeypatch)
    copy = f"{name}_older"
    result = run_cli(
        "restore",
        "latest",
        "--target",
        name,
        "--to",
        _url(server, crew.app, copy),
        "--yes",
        env=env,
    )
    err = cli_fails(result, 5, r"ERROR 1227 .*SET USER.*--rewrite-definers")
    assert "nothing was created" in err
    _no_password(result)
    assert not [d for d in server.databases() if d.startswith(copy)]


def test_an_older_backup_restored_with_rewrite_says_so(
    mariadb_server, mysql_db, crew, tmp_path, monkeypatch
):
    server, name = mariadb_server, crew.name
    _shop(crew)
    env, repo = _repository(tmp_path)
    _old_backup(server, name, repo, monkeypatch)
    copy = f"{name}_older"
    result = run_cli(
        "restore",
        "latest",
        "--target",
        name,
        "--to",
        _url(server, crew.app, copy),
        "--rewrite-definers",
        "--yes",
        env=env,
    )
    out = cli_ok(result)
    _no_password(result)
    assert _definers(server, copy)["view dear"] == f"{crew.app}@%"  # it was rewritten
    assert "definer" in (out + result.stderr.decode()).lower(), out


# --- drills and rollback as an account without SET USER ----------------------------------


def test_a_drill_and_a_rollback_as_an_account_without_set_user(
    mariadb_server, mysql_db, crew, tmp_path
):
    server, name, app = mariadb_server, crew.name, crew.app
    _shop(crew)
    env, repo = _repository(tmp_path)
    manifest = run_backup(repo, MysqlEngine(server.url(name))).manifest
    before = _definers(server, name)

    # a drill into a scratch database of the application's account rewrites by itself
    scratch = f"{name}_drill"
    drill = run_cli(
        "verify", "latest", "--restore", "--scratch", _url(server, app, scratch), env=env
    )
    cli_ok(drill)
    assert not server.database_exists(scratch)

    # restore with --rewrite-definers, then roll back: refused without the option (the
    # safety backup holds the other account's objects), done with it
    _run_as(server, app, name, ["DELETE FROM products WHERE id = 2"])
    target = MysqlEngine(_url(server, app, name))
    report = run_restore(repo, manifest, target, keep_old=False, options=REWRITE)
    assert report.ok and report.swapped and report.safety_backup_id
    assert server.query(name, "SELECT COUNT(*) FROM products") == [(2,)]
    assert _definers(server, name)["view dear"] == f"{app}@%"
    safety = find_rollback_backup(repo, target)
    assert safety.backup_id == report.safety_backup_id
    refused = plan_restore(repo, safety, target).checks.refusal
    assert refused is not None and "cannot create objects with another account" in refused
    assert f"{crew.other}@% (" in refused and "view dear" in refused
    assert "--rewrite-definers" in refused
    plan = plan_restore(repo, safety, target, options=REWRITE)
    assert any("definers rewritten to the restoring account" in x for x in plan.checks.lines)
    assert run_restore(repo, safety, target, plan=plan, keep_old=False).swapped
    assert server.query(name, "SELECT id FROM products") == [(1,)]
    assert set(_definers(server, name)) == set(before)
    _no_password(drill, refused)


def test_the_web_api_refuses_then_rewrites_and_never_shows_the_password(
    mariadb_server, mysql_db, crew, tmp_path
):
    from fastapi.testclient import TestClient

    from tests.web.conftest import build_app, wait_job

    server, name, app = mariadb_server, crew.name, crew.app
    _shop(crew)
    web = build_app(tmp_path, {"shop": server.url(name)})
    copy = f"{name}_web"
    body = {"to": _url(server, app, copy), "safety_backup": False}
    with TestClient(web.app) as client:
        started = client.post("/api/backups", json={"target": "shop"}, headers=web.admin)
        backup_id = wait_job(client, started.json()["job_id"], web.admin)["result"]["backup_id"]
        plan = client.post(f"/api/backups/{backup_id}/restore/plan", json=body, headers=web.admin)
        assert f"{crew.other}@% (event tidy, function n_dear" in plan.json()["refusal"], plan.text
        refused = client.post(
            f"/api/backups/{backup_id}/restore", json=body | {"confirm": copy}, headers=web.admin
        )
        assert refused.status_code in (400, 409, 422), refused.text
        assert not server.database_exists(copy)
        rewrite = body | {"rewrite_definers": True}
        plan = client.post(
            f"/api/backups/{backup_id}/restore/plan", json=rewrite, headers=web.admin
        )
        assert plan.json()["refusal"] is None, plan.text
        assert "definers rewritten to the restoring account" in plan.text
        started = client.post(
            f"/api/backups/{backup_id}/restore", json=rewrite | {"confirm": copy}, headers=web.admin
        )
        job = wait_job(client, started.json()["job_id"], web.admin)
        assert job["status"] == "succeeded", job
        _no_password(plan.text, refused.text, started.text, job)
    assert _definers(server, copy)["view dear"] == f"{app}@%"
