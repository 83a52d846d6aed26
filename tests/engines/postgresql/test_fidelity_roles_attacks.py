"""Hostile cases for faithful PostgreSQL restores: roles the restore cannot create
(``--skip-missing-roles`` never widens privileges, as superuser or without CREATEROLE) and the
classification of pg_restore's errors about them.

Bugs found are kept as ``xfail(strict=True)`` tests naming the bug; the others protect
behaviour that held up under attack."""

from __future__ import annotations

import uuid

import psycopg
from psycopg import sql

from strongroom.engines.postgresql.fidelity import classify_errors
from tests.engines.postgresql.fidelity_attack_helpers import (
    ID,
    Env,
    _exec,
    _new_db,
    _role,
    _roles_named,
    _small_table,
    _url,
    cleanup,
    env,
)
from tests.fixtures.postgres import PgServer, unique_db_name
from tests.helpers import cli_fails, cli_ok, run_cli

__all__ = ["cleanup", "env"]  # fixtures


def _acl_source(
    pg_server: PgServer, cleanup: list[tuple[str, str, str]], env: Env
) -> tuple[str, str, str]:
    """A database whose ACLs name roles missing on pg_server2; backed up. (db, owner, miss)"""
    tag = uuid.uuid4().hex[:6]
    owner = _role(pg_server, cleanup, f"Own er_{tag}")
    miss = _role(pg_server, cleanup, f'mi"ss_{tag}')
    src = _new_db(pg_server, cleanup, unique_db_name("acl"))
    _small_table(pg_server, src, owner=owner)
    t = sql.SQL('public."T ab""le"')
    _exec(
        pg_server,
        src,
        "CREATE FUNCTION public.secret() RETURNS int LANGUAGE sql AS 'SELECT 42'",
        sql.SQL("ALTER FUNCTION public.secret() OWNER TO {}").format(ID(owner)),
        "REVOKE ALL ON FUNCTION public.secret() FROM PUBLIC",
        sql.SQL("GRANT EXECUTE ON FUNCTION public.secret() TO {}").format(ID(miss)),
        sql.SQL("GRANT SELECT (v) ON {} TO {}").format(t, ID(miss)),
        sql.SQL("GRANT SELECT ON {} TO {} WITH GRANT OPTION").format(t, ID(miss)),
        sql.SQL(
            "ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA public GRANT SELECT ON TABLES TO {}"
        ).format(ID(miss), ID(owner)),
        sql.SQL(
            "ALTER DEFAULT PRIVILEGES FOR ROLE {} REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC"
        ).format(ID(owner)),
        sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(t),
        sql.SQL("ALTER TABLE {} FORCE ROW LEVEL SECURITY").format(t),
        sql.SQL("CREATE POLICY p ON {} TO {} USING (id > 100)").format(t, ID(miss)),
    )
    cli_ok(run_cli("backup", _url(pg_server, src), "--target", "acl", env=env.env))
    return src, owner, miss


def _public_can_execute(server: PgServer, db: str) -> bool:
    with psycopg.connect(_url(server, db), autocommit=True) as conn:
        row = conn.execute(
            "SELECT has_function_privilege('public', 'public.secret()', 'EXECUTE')"
            " FROM (SELECT 1) x WHERE EXISTS (SELECT 1 FROM pg_proc WHERE proname='secret')"
        ).fetchone()
    return bool(row and row[0])


def test_skip_missing_roles_as_superuser_never_widens(
    pg_server: PgServer, pg_server2: PgServer, env: Env, cleanup: list[tuple[str, str, str]]
) -> None:
    _src, owner, miss = _acl_source(pg_server, cleanup, env)
    target = unique_db_name("acl2")
    cleanup.append(("db", "2", target))
    out = cli_ok(
        run_cli(
            "restore",
            "latest",
            "--to",
            _url(pg_server2, target),
            "--yes",
            "--skip-missing-roles",
            env=env.env,
        )
    )
    assert "restore complete and verified" in out
    assert not _public_can_execute(pg_server2, target)
    assert _roles_named(pg_server2, owner, miss) == []
    with psycopg.connect(_url(pg_server2, target), autocommit=True) as conn:
        forced = conn.execute(
            "SELECT relforcerowsecurity FROM pg_class WHERE relname = 'T ab\"le'"
        ).fetchone()
    assert forced == (True,)


def test_skip_missing_roles_without_createrole_never_widens(
    pg_server: PgServer, pg_server2: PgServer, env: Env, cleanup: list[tuple[str, str, str]]
) -> None:
    _src, owner, miss = _acl_source(pg_server, cleanup, env)
    restorer = _role(
        pg_server2,
        cleanup,
        f"restorer_{uuid.uuid4().hex[:6]}",
        "2",
        "LOGIN CREATEDB PASSWORD 'r-pw'",
    )
    target = unique_db_name("acl3")
    cleanup.append(("db", "2", target))
    result = run_cli(
        "restore",
        "latest",
        "--to",
        _url(pg_server2, target, restorer, "r-pw"),
        "--yes",
        "--skip-missing-roles",
        env=env.env,
    )
    if result.returncode == 0:
        assert not _public_can_execute(pg_server2, target)
    else:
        cli_fails(result, 5, r"would be lost|pg_restore failed")
        assert not pg_server2.database_exists(target)
    assert _roles_named(pg_server2, owner, miss) == []


def _pg_restore_stderr(role_in_msg: str, *command: str) -> str:
    lines = [
        'pg_restore: creating ACL "SCHEMA a"',
        "pg_restore: from TOC entry 3350; 0 0 ACL SCHEMA a owner",
        f'pg_restore: error: could not execute query: ERROR:  role "{role_in_msg}" does not exist',
        "Command was: " + command[0],
        *command[1:],
        "",
        "pg_restore: warning: errors ignored on restore: 1",
    ]
    return "\n".join(lines)


def test_classify_a_lone_grant_to_a_skipped_role_is_accepted() -> None:
    stderr = _pg_restore_stderr('Mi"ss', 'GRANT SELECT ON TABLE public.t TO "Mi""ss";')
    result = classify_errors(
        stderr,
        skip_roles=frozenset({'Mi"ss'}),
        preexisting_extensions=frozenset(),
        skipped_superuser_objects=frozenset(),
    )
    assert result.fatal == () and len(result.accepted) == 1


def test_classify_a_revoke_from_public_beside_a_skipped_grant_is_fatal() -> None:
    stderr = _pg_restore_stderr(
        "miss",
        "REVOKE ALL ON FUNCTION public.f() FROM PUBLIC;",
        "GRANT ALL ON FUNCTION public.f() TO miss;",
    )
    result = classify_errors(
        stderr,
        skip_roles=frozenset({"miss"}),
        preexisting_extensions=frozenset(),
        skipped_superuser_objects=frozenset(),
    )
    assert len(result.fatal) == 1 and "would be lost" in result.fatal[0]


def test_classify_a_role_named_like_a_statement_tail_cannot_hide_a_revoke() -> None:
    stderr = _pg_restore_stderr(
        "a FROM PUBLIC",
        "REVOKE ALL ON SCHEMA a FROM PUBLIC;",
        'GRANT USAGE ON SCHEMA a TO "a FROM PUBLIC";',
    )
    result = classify_errors(
        stderr,
        skip_roles=frozenset({"a FROM PUBLIC"}),
        preexisting_extensions=frozenset(),
        skipped_superuser_objects=frozenset(),
    )
    assert len(result.fatal) == 1
