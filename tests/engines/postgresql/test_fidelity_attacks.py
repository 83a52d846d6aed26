"""Hostile cases for faithful PostgreSQL restores (database state, roles, errors, checksums).

Bugs found are kept as ``xfail(strict=True)`` tests naming the bug; the others protect
behaviour that held up under attack.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql

from strongroom.engines.postgresql import PostgresEngine
from strongroom.engines.postgresql.fidelity import classify_errors
from tests.fixtures.postgres import PgServer, unique_db_name
from tests.helpers import REPO_ROOT, STRONGROOM, cli_fails, cli_ok, repository_env, run_cli

ID = sql.Identifier


def _url(server: PgServer, db: str, user: str | None = None, pw: str | None = None) -> str:
    u = quote(user or server.user, safe="")
    p = quote(pw or server.password, safe="")
    return f"postgresql://{u}:{p}@{server.host}:{server.port}/{quote(db, safe='')}"


def _exec(server: PgServer, db: str, *statements: sql.Composable | str) -> None:
    with psycopg.connect(_url(server, db), autocommit=True) as conn:
        for s in statements:
            conn.execute(s if not isinstance(s, str) else s.encode())


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


class Env:
    def __init__(self, tmp_path: Path) -> None:
        self.env = repository_env(tmp_path)
        cli_ok(run_cli("init", env=self.env))


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


@pytest.fixture
def cleanup(pg_server: PgServer, pg_server2: PgServer) -> Iterator[list[tuple[str, str, str]]]:
    """Register ("db"|"role", server 1|2, name) to drop after the test."""
    items: list[tuple[str, str, str]] = []
    yield items
    servers = {"1": pg_server, "2": pg_server2}
    for kind, which, name in items:
        server = servers[which]
        if kind == "db":
            with server.connect() as conn:
                like = name.replace("_", r"\_") + "%"
                for (db,) in conn.execute(
                    "SELECT datname FROM pg_database WHERE datname LIKE %s", (like,)
                ).fetchall():
                    server.drop_database(db)
    for kind, which, name in items:
        if kind == "role":
            server = servers[which]
            with server.connect() as conn:
                for (db,) in conn.execute(
                    "SELECT datname FROM pg_database WHERE datallowconn"
                ).fetchall():
                    try:
                        with psycopg.connect(_url(server, db), autocommit=True) as c2:
                            c2.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(ID(name)))
                    except psycopg.Error:
                        pass
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(ID(name)))


def _new_db(
    server: PgServer, cleanup: list[tuple[str, str, str]], name: str, which: str = "1"
) -> str:
    server.create_database(name)
    cleanup.append(("db", which, name))
    return name


def _role(
    server: PgServer,
    cleanup: list[tuple[str, str, str]],
    name: str,
    which: str = "1",
    extra: str = "NOLOGIN",
) -> str:
    _exec(server, "postgres", sql.SQL("CREATE ROLE {} " + extra).format(ID(name)))
    cleanup.append(("role", which, name))
    return name


def _small_table(
    server: PgServer, db: str, schema: str = "public", owner: str | None = None
) -> None:
    stmts: list[sql.Composable] = []
    if schema != "public":
        stmts.append(sql.SQL("CREATE SCHEMA {}").format(ID(schema)))
    stmts.append(
        sql.SQL("CREATE TABLE {}.{} (id int PRIMARY KEY, v text)").format(ID(schema), ID('T ab"le'))
    )
    stmts.append(
        sql.SQL("INSERT INTO {}.{} SELECT g, md5(g::text) FROM generate_series(1, 200) g").format(
            ID(schema), ID('T ab"le')
        )
    )
    if owner:
        stmts.append(
            sql.SQL("ALTER TABLE {}.{} OWNER TO {}").format(ID(schema), ID('T ab"le'), ID(owner))
        )
    _exec(server, db, *stmts)


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


def _roles_named(server: PgServer, *names: str) -> list[str]:
    rows = server.query(
        "postgres", "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (list(names),)
    )
    return [r[0] for r in rows]


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


def _bulk_source(
    pg_server: PgServer, cleanup: list[tuple[str, str, str]], env: Env
) -> tuple[str, str]:
    tag = uuid.uuid4().hex[:6]
    owner = _role(pg_server, cleanup, f"bulk_owner_{tag}")
    src = _new_db(pg_server, cleanup, unique_db_name("bulk"))
    _exec(
        pg_server,
        src,
        "CREATE TABLE big (id int, v text)",
        "INSERT INTO big SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 400000) g",
        sql.SQL("ALTER TABLE big OWNER TO {}").format(ID(owner)),
    )
    cli_ok(run_cli("backup", _url(pg_server, src), "--target", "bulk", env=env.env))
    return src, owner


def _start_cli(env: Env, *args: str) -> subprocess.Popen[bytes]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    full.update(env.env)
    return subprocess.Popen(
        [*STRONGROOM, *args],
        env=full,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _wait_for_staging(server: PgServer, prefix: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = server.query(
            "postgres",
            "SELECT 1 FROM pg_stat_activity WHERE datname LIKE %s"
            " AND application_name LIKE 'pg_restore%%'",
            (prefix + "_sr_%",),
        )
        if rows:
            return
        time.sleep(0.05)
    raise AssertionError("pg_restore never started")


def test_kill_during_restore_with_create_roles_leaves_no_roles(
    pg_server: PgServer, pg_server2: PgServer, env: Env, cleanup: list[tuple[str, str, str]]
) -> None:
    _src, owner = _bulk_source(pg_server, cleanup, env)
    cleanup.append(("role", "2", owner))
    target = unique_db_name("killed")
    cleanup.append(("db", "2", target))
    proc = _start_cli(
        env, "restore", "latest", "--to", _url(pg_server2, target), "--yes", "--create-roles"
    )
    try:
        _wait_for_staging(pg_server2, target)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert not pg_server2.database_exists(target)
    # the next (successful) restore must clean up after the killed one
    new = target + "_b"
    cli_ok(
        run_cli(
            "restore",
            "latest",
            "--to",
            _url(pg_server2, new),
            "--yes",
            "--skip-missing-roles",
            env=env.env,
        )
    )
    assert _roles_named(pg_server2, owner) == []


def test_kill_during_in_place_restore_leaves_target_usable(
    pg_server: PgServer, env: Env, cleanup: list[tuple[str, str, str]]
) -> None:
    src, _owner = _bulk_source(pg_server, cleanup, env)
    _exec(pg_server, src, "DELETE FROM big WHERE id < 10")
    proc = _start_cli(
        env, "restore", "latest", "--to", _url(pg_server, src), "--yes", "--no-safety-backup"
    )
    try:
        _wait_for_staging(pg_server, src)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    rows = pg_server.query(
        "postgres", "SELECT datallowconn FROM pg_database WHERE datname = %s", (src,)
    )
    assert rows == [(True,)]
    assert pg_server.query(src, "SELECT count(*) FROM big") == [(400000 - 9,)]
    # and a new restore still works afterwards
    cli_ok(
        run_cli(
            "restore",
            "latest",
            "--to",
            _url(pg_server, src),
            "--yes",
            "--no-safety-backup",
            env=env.env,
        )
    )
    assert pg_server.query(src, "SELECT count(*) FROM big") == [(400000,)]


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


def test_two_concurrent_restores_into_one_target(
    pg_server: PgServer, env: Env, cleanup: list[tuple[str, str, str]]
) -> None:
    src, _owner = _bulk_source(pg_server, cleanup, env)
    target = src + "_both"
    cleanup.append(("db", "1", target))
    args = ("restore", "latest", "--to", _url(pg_server, target), "--yes", "--drop-old")
    procs = [_start_cli(env, *args) for _ in range(2)]
    results = [(p.wait(timeout=120), p.stderr.read().decode() if p.stderr else "") for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes[0] == 0, results
    for code, err in results:
        assert code in (0, 5), err
        assert "Traceback" not in err
        if code:
            assert len([x for x in err.splitlines() if x.startswith("error:")]) == 1, err
    rows = pg_server.query(
        "postgres",
        "SELECT datname, datallowconn FROM pg_database WHERE datname LIKE %s",
        (target + "%",),
    )
    assert rows == [(target, True)]
    assert pg_server.query(target, "SELECT count(*) FROM big") == [(400000,)]


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
