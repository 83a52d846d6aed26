"""Hostile cases for faithful PostgreSQL restores (database state, grants, options, checksums).
Roles a restore cannot create are in ``test_fidelity_roles_attacks.py``, killed and concurrent
restores in ``test_fidelity_interrupt_attacks.py``.

Bugs found are kept as ``xfail(strict=True)`` tests naming the bug; the others protect
behaviour that held up under attack."""

from __future__ import annotations

import uuid

import pytest
from psycopg import sql

from strongroom.engines.postgresql import PostgresEngine
from tests.engines.postgresql.fidelity_attack_helpers import (
    ID,
    Env,
    _exec,
    _new_db,
    _role,
    _small_table,
    _url,
    cleanup,
    env,
)
from tests.fixtures.postgres import PgServer, unique_db_name
from tests.helpers import cli_fails, cli_ok, run_cli

__all__ = ["cleanup", "env"]  # fixtures


def _db_state(server: PgServer, db: str) -> dict[str, object]:
    with server.connect() as conn:
        row = conn.execute(
            """SELECT pg_get_userbyid(d.datdba), d.datconnlimit,
                      shobj_description(d.oid, 'pg_database'), d.datallowconn,
                      ARRAY(SELECT coalesce(pg_get_userbyid(NULLIF(a.grantee, 0)), 'PUBLIC')
                                   || '=' || a.privilege_type || CASE WHEN a.is_grantable
                                   THEN '*' ELSE '' END || '/' || pg_get_userbyid(a.grantor)
                            FROM aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
                            ORDER BY 1)
               FROM pg_database d WHERE d.datname = %s""",
            (db,),
        ).fetchone()
        assert row is not None, f"no database {db}"
        settings = conn.execute(
            """SELECT coalesce(r.rolname, ''), s.setconfig FROM pg_db_role_setting s
               JOIN pg_database d ON d.oid = s.setdatabase LEFT JOIN pg_roles r
               ON r.oid = s.setrole WHERE d.datname = %s ORDER BY 1""",
            (db,),
        ).fetchall()
    keys = ("owner", "connlimit", "comment", "allowconn", "acl")
    out: dict[str, object] = dict(zip(keys, row, strict=True))
    out["settings"] = {r: sorted(c) for r, c in settings}
    return out


def test_odd_names_settings_and_comment_survive_a_restore(
    pg_server: PgServer, env: Env, cleanup: list[tuple[str, str, str]]
) -> None:
    tag = uuid.uuid4().hex[:6]
    odd_role = _role(pg_server, cleanup, f'Od"d rö le {tag}')
    kw_role = _role(pg_server, cleanup, f"user {tag}")
    src = _new_db(pg_server, cleanup, f'My "Odd" DB ü {tag}')
    _small_table(pg_server, src, schema="My Schema", owner=odd_role)
    db = ID(src)
    _exec(
        pg_server,
        "postgres",
        sql.SQL('ALTER DATABASE {} SET search_path = "My Schema", public').format(db),
        sql.SQL("ALTER DATABASE {} SET app.tenant = {}").format(db, sql.Literal('it\'s, a "x"')),
        sql.SQL("ALTER DATABASE {} SET work_mem = '8MB'").format(db),
        sql.SQL("ALTER ROLE {} IN DATABASE {} SET app.who = {}").format(
            ID(odd_role), db, sql.Literal("o'k")
        ),
        sql.SQL("ALTER ROLE {} IN DATABASE {} SET search_path = {}, public").format(
            ID(kw_role), db, ID("My Schema")
        ),
        sql.SQL("COMMENT ON DATABASE {} IS {}").format(db, sql.Literal('it\'s\n"quoted"\n;--')),
        sql.SQL("ALTER DATABASE {} CONNECTION LIMIT 7").format(db),
        sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(db),
        sql.SQL("GRANT CONNECT ON DATABASE {} TO {} WITH GRANT OPTION").format(db, ID(odd_role)),
        sql.SQL("GRANT TEMPORARY ON DATABASE {} TO {}").format(db, ID(kw_role)),
    )
    cli_ok(run_cli("backup", _url(pg_server, src), "--target", "odd", env=env.env))
    new = src + " copy"
    cleanup.append(("db", "1", new))
    out = cli_ok(run_cli("restore", "latest", "--to", _url(pg_server, new), "--yes", env=env.env))
    assert "restore complete and verified" in out
    assert _db_state(pg_server, new) == _db_state(pg_server, src)


@pytest.mark.parametrize(
    "setting",
    [
        pytest.param(
            "default_transaction_read_only = on, lock_timeout = '1ms',"
            " idle_in_transaction_session_timeout = '1ms',"
            " default_transaction_isolation = 'serializable'",
            id="read-only-and-timeouts",
        ),
        pytest.param(
            "statement_timeout = '1ms'",
            id="statement-timeout",
        ),
        pytest.param(
            "search_path = ''",
            id="empty-search-path",
        ),
    ],
)
def test_database_settings_that_could_break_our_own_steps(
    pg_server: PgServer, env: Env, cleanup: list[tuple[str, str, str]], setting: str
) -> None:
    src = _new_db(pg_server, cleanup, unique_db_name("hostile"))
    _small_table(pg_server, src, schema="S p")
    for one in setting.split(", "):
        _exec(pg_server, "postgres", sql.SQL("ALTER DATABASE {} SET " + one).format(ID(src)))
    cli_ok(run_cli("backup", _url(pg_server, src), "--target", "h", env=env.env))
    want = _db_state(pg_server, src)
    new = src + "_copy"
    cleanup.append(("db", "1", new))
    cli_ok(run_cli("restore", "latest", "--to", _url(pg_server, new), "--yes", env=env.env))
    assert _db_state(pg_server, new) == want
    # in place, with a safety backup of the (hostile) live database, then a rollback
    out = cli_ok(run_cli("restore", "latest", "--to", _url(pg_server, src), "--yes", env=env.env))
    assert "restore complete and verified" in out
    assert _db_state(pg_server, src) == want
    cli_ok(run_cli("rollback", "--to", _url(pg_server, src), "--yes", env=env.env))
    assert _db_state(pg_server, src) == want
    scratch = src + "_drill"
    cli_ok(
        run_cli("verify", "latest", "--restore", "--scratch", _url(pg_server, scratch), env=env.env)
    )


def test_database_grant_by_a_non_owner_keeps_its_grantor(
    pg_server: PgServer, env: Env, cleanup: list[tuple[str, str, str]]
) -> None:
    tag = uuid.uuid4().hex[:6]
    a = _role(pg_server, cleanup, f"granter_{tag}")
    b = _role(pg_server, cleanup, f"grantee_{tag}")
    src = _new_db(pg_server, cleanup, unique_db_name("grantor"))
    _small_table(pg_server, src)
    db = ID(src)
    _exec(
        pg_server,
        "postgres",
        sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(db),
        sql.SQL("GRANT CONNECT ON DATABASE {} TO {} WITH GRANT OPTION").format(db, ID(a)),
        sql.SQL("SET ROLE {}").format(ID(a)),
        sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(db, ID(b)),
    )
    cli_ok(run_cli("backup", _url(pg_server, src), "--target", "g", env=env.env))
    new = src + "_copy"
    cleanup.append(("db", "1", new))
    cli_ok(run_cli("restore", "latest", "--to", _url(pg_server, new), "--yes", env=env.env))
    assert _db_state(pg_server, new)["acl"] == _db_state(pg_server, src)["acl"]


def test_grant_by_a_non_owner_restored_by_the_owner_who_cannot_act_as_the_grantor(
    pg_server: PgServer, env: Env, cleanup: list[tuple[str, str, str]]
) -> None:
    """The non-superuser owner cannot SET ROLE to the grantor: the grant comes back, made
    by the owner, and the restore does not fail for it."""
    tag = uuid.uuid4().hex[:6]
    owner = _role(pg_server, cleanup, f"own_{tag}", extra="LOGIN CREATEDB PASSWORD 'pw'")
    a = _role(pg_server, cleanup, f"granter_{tag}")
    b = _role(pg_server, cleanup, f"grantee_{tag}")
    src = _new_db(pg_server, cleanup, unique_db_name("grantor"))
    _small_table(pg_server, src, owner=owner)
    db = ID(src)
    _exec(
        pg_server,
        "postgres",
        sql.SQL("ALTER DATABASE {} OWNER TO {}").format(db, ID(owner)),
        sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(db),
        sql.SQL("GRANT CONNECT ON DATABASE {} TO {} WITH GRANT OPTION").format(db, ID(a)),
        sql.SQL("SET ROLE {}").format(ID(a)),
        sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(db, ID(b)),
    )
    cli_ok(run_cli("backup", _url(pg_server, src), "--target", "g", env=env.env))
    new = src + "_copy"
    cleanup.append(("db", "1", new))
    out = cli_ok(
        run_cli(
            "restore", "latest", "--to", _url(pg_server, new, owner, "pw"), "--yes", env=env.env
        )
    )
    assert "restore complete and verified" in out
    acl = _db_state(pg_server, new)["acl"]
    assert f"{b}=CONNECT/{owner}" in acl, acl
    assert not any(item.startswith("=") for item in acl), acl  # PUBLIC stays revoked


def test_cli_bad_option_combinations_are_one_usage_error(env: Env, pg_server: PgServer) -> None:
    url = _url(pg_server, unique_db_name("never"))
    cli_fails(
        run_cli(
            "restore",
            "latest",
            "--to",
            url,
            "--yes",
            "--create-roles",
            "--skip-missing-roles",
            env=env.env,
        ),
        2,
        r"choose one of --create-roles and --skip-missing-roles",
    )


def test_unknown_restore_option_is_one_error_line(env: Env, pg_server: PgServer) -> None:
    url = _url(pg_server, unique_db_name("never"))
    cli_fails(run_cli("restore", "latest", "--to", url, "--bogus", env=env.env), 2, r"bogus")


def test_a_changed_value_in_a_restored_copy_is_a_checksum_mismatch(
    pg_server: PgServer, env: Env, cleanup: list[tuple[str, str, str]]
) -> None:
    tag = uuid.uuid4().hex[:6]
    other = _role(pg_server, cleanup, f"rls_owner_{tag}")
    src = _new_db(pg_server, cleanup, unique_db_name("mm"))
    _exec(
        pg_server,
        src,
        "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')",
        "CREATE TABLE t (id int PRIMARY KEY, m mood, r regclass, x xml, v text)",
        "INSERT INTO t SELECT g, (ARRAY['sad','ok','happy'])[1 + g % 3]::mood, 't'::regclass,"
        " '<a b=\"1\"/>'::xml, md5(g::text) FROM generate_series(1, 300) g",
        sql.SQL("ALTER TABLE t OWNER TO {}").format(ID(other)),
        "ALTER TABLE t ENABLE ROW LEVEL SECURITY",
        "ALTER TABLE t FORCE ROW LEVEL SECURITY",
    )
    cli_ok(run_cli("backup", _url(pg_server, src), "--target", "mm", env=env.env))
    new = src + "_copy"
    cleanup.append(("db", "1", new))
    cli_ok(run_cli("restore", "latest", "--to", _url(pg_server, new), "--yes", env=env.env))
    a = {s.name: s for s in PostgresEngine(_url(pg_server, src)).table_stats()}
    b = {s.name: s for s in PostgresEngine(_url(pg_server, new)).table_stats()}
    assert a == b
    for change in (
        "UPDATE t SET m = 'ok' WHERE id = 3",
        "UPDATE t SET x = '<a b=\"2\"/>' WHERE id = 5",
    ):
        _exec(pg_server, new, change)
        c = {s.name: s for s in PostgresEngine(_url(pg_server, new)).table_stats()}
        assert c.keys() == a.keys()
        assert [c[k].rows for k in c] == [a[k].rows for k in a]
        assert c != a, change


def test_database_role_setting_and_connection_limit_one(
    pg_server: PgServer, env: Env, cleanup: list[tuple[str, str, str]]
) -> None:
    tag = uuid.uuid4().hex[:6]
    r = _role(pg_server, cleanup, f"select {tag}")
    src = _new_db(pg_server, cleanup, unique_db_name("roleset"))
    _small_table(pg_server, src, owner=r)
    _exec(
        pg_server,
        "postgres",
        sql.SQL("ALTER ROLE {} IN DATABASE {} SET role = {}").format(
            ID(r), ID(src), sql.Literal(r)
        ),
        sql.SQL("ALTER DATABASE {} CONNECTION LIMIT 1").format(ID(src)),
        sql.SQL("ALTER DATABASE {} OWNER TO {}").format(ID(src), ID(r)),
    )
    cli_ok(run_cli("backup", _url(pg_server, src), "--target", "rs", env=env.env))
    want = _db_state(pg_server, src)
    cli_ok(run_cli("restore", "latest", "--to", _url(pg_server, src), "--yes", env=env.env))
    assert _db_state(pg_server, src) == want
    cli_ok(
        run_cli(
            "verify",
            "latest",
            "--restore",
            "--scratch",
            _url(pg_server, src + "_drill"),
            env=env.env,
        )
    )
