"""Hostile cases, second round: leftover-role cleanup, grantors, redaction, CLI usage errors.

Bugs found are kept as ``xfail(strict=True)`` tests naming the bug; the others protect
behaviour that held up under attack.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql

from strongroom.cli.ops_cmd import open_repository
from strongroom.engines import open_engine
from strongroom.engines.base import RestoreOptions
from strongroom.engines.postgresql import PostgresEngine
from strongroom.engines.postgresql.fidelity import ROLE_MARKER, clean_leftover_roles
from strongroom.services.restore import run_restore
from strongroom.services.settings_sources import load_settings
from tests.fixtures.postgres import PgServer, unique_db_name
from tests.helpers import cli_fails, cli_ok, repository_env, run_cli

ID = sql.Identifier
ODD_PW = "p@ss:w/rd%"


def _url(server: PgServer, db: str, user: str | None = None, pw: str | None = None) -> str:
    u = quote(user or server.user, safe="")
    p = quote(pw or server.password, safe="")
    return f"postgresql://{u}:{p}@{server.host}:{server.port}/{quote(db, safe='')}"


def _exec(server: PgServer, db: str, *statements: sql.Composable | str) -> None:
    with psycopg.connect(_url(server, db), autocommit=True) as conn:
        for s in statements:
            conn.execute(s if not isinstance(s, str) else s.encode())


def _roles(server: PgServer, *names: str) -> list[str]:
    rows = server.query(
        "postgres",
        "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s) ORDER BY 1",
        (list(names),),
    )
    return [str(r[0]) for r in rows]


def _dbs(server: PgServer, *names: str) -> list[str]:
    rows = server.query(
        "postgres",
        "SELECT datname FROM pg_database WHERE datname = ANY(%s) ORDER BY 1",
        (list(names),),
    )
    return [str(r[0]) for r in rows]


class Env:
    def __init__(self, tmp_path: Path) -> None:
        self.env = repository_env(tmp_path)
        cli_ok(run_cli("init", env=self.env))


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


@pytest.fixture
def cleanup(pg_server: PgServer, pg_server2: PgServer) -> Iterator[list[tuple[str, str, str]]]:
    """Register ("db"|"role", server 1|2, name prefix or name) to drop after the test."""
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


def _role(
    server: PgServer, cleanup: list[tuple[str, str, str]], name: str, which: str, extra: str = ""
) -> str:
    _exec(server, "postgres", sql.SQL("CREATE ROLE {} NOLOGIN " + extra).format(ID(name)))
    cleanup.append(("role", which, name))
    return name


def _mark(server: PgServer, role: str, staged: str) -> None:
    _exec(
        server,
        "postgres",
        sql.SQL("COMMENT ON ROLE {} IS {}").format(ID(role), sql.Literal(ROLE_MARKER + staged)),
    )


def _clean(server: PgServer) -> list[str]:
    with psycopg.connect(_url(server, "postgres"), autocommit=True) as conn:
        return clean_leftover_roles(conn)


def _source_with_owner(
    pg_server: PgServer, cleanup: list[tuple[str, str, str]], env: Env, tag: str
) -> tuple[str, str]:
    """A database on server 1 with a table owned by a role that server 2 lacks; backed up."""
    owner = _role(pg_server, cleanup, f"lo_owner_{tag}", "1")
    cleanup.append(("role", "2", owner))
    src = unique_db_name("losrc")
    pg_server.create_database(src)
    cleanup.append(("db", "1", src))
    _exec(
        pg_server,
        src,
        "CREATE TABLE t (id int PRIMARY KEY, v text)",
        "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 300) g",
        sql.SQL("ALTER TABLE t OWNER TO {}").format(ID(owner)),
    )
    cli_ok(run_cli("backup", _url(pg_server, src), "--target", f"lo_{tag}", env=env.env))
    return src, owner


# --- clean_leftover_roles: what it must not drop --------------------------------------


def test_leftover_role_that_owns_objects_elsewhere_is_kept_and_its_staged_db_goes(
    pg_server2: PgServer, cleanup: list[tuple[str, str, str]]
) -> None:
    tag = uuid.uuid4().hex[:8]
    role = _role(pg_server2, cleanup, f"lo_keep_{tag}", "2")
    staged = f"shop_{tag[:4]}_sr_{tag}"
    other = unique_db_name("lo_other")
    for db in (staged, other):
        pg_server2.create_database(db)
        cleanup.append(("db", "2", db))
    _mark(pg_server2, role, staged)
    _exec(pg_server2, other, sql.SQL("CREATE TABLE x (i int)"))
    _exec(pg_server2, other, sql.SQL("ALTER TABLE x OWNER TO {}").format(ID(role)))
    assert role not in _clean(pg_server2)
    assert _roles(pg_server2, role) == [role]
    assert _dbs(pg_server2, other) == [other]
    assert _dbs(pg_server2, staged) == []  # the idle staged database of a killed restore


def test_leftover_cleanup_keeps_a_busy_staged_database_and_its_roles(
    pg_server2: PgServer, cleanup: list[tuple[str, str, str]]
) -> None:
    tag = uuid.uuid4().hex[:8]
    role = _role(pg_server2, cleanup, f"lo_busy_{tag}", "2")
    staged = f"busy_sr_{tag}"
    pg_server2.create_database(staged)
    cleanup.append(("db", "2", staged))
    _mark(pg_server2, role, staged)
    with psycopg.connect(_url(pg_server2, staged)):
        assert _clean(pg_server2) == []
    assert _roles(pg_server2, role) == [role]
    assert _dbs(pg_server2, staged) == [staged]


def test_a_users_database_is_never_named_by_an_unmarked_role(
    pg_server2: PgServer, cleanup: list[tuple[str, str, str]]
) -> None:
    """A user's role with an ordinary comment (or the marker text in the middle) is no
    leftover; a database named like a staged one without a marked role stays."""
    tag = uuid.uuid4().hex[:8]
    db = f"mine_sr_{tag}"
    pg_server2.create_database(db)
    cleanup.append(("db", "2", db))
    role = _role(pg_server2, cleanup, f"lo_user_{tag}", "2")
    _exec(
        pg_server2,
        "postgres",
        sql.SQL("COMMENT ON ROLE {} IS {}").format(
            ID(role), sql.Literal("note: " + ROLE_MARKER + db)
        ),
    )
    assert _clean(pg_server2) == []
    assert _roles(pg_server2, role) == [role]
    assert _dbs(pg_server2, db) == [db]


def test_a_marked_role_that_can_log_in_is_not_dropped(
    pg_server2: PgServer, cleanup: list[tuple[str, str, str]]
) -> None:
    tag = uuid.uuid4().hex[:8]
    role = _role(pg_server2, cleanup, f"lo_login_{tag}", "2")
    _exec(pg_server2, "postgres", sql.SQL("ALTER ROLE {} LOGIN PASSWORD 'x'").format(ID(role)))
    _mark(pg_server2, role, "app")  # a forged / stale marker naming a user's database
    _clean(pg_server2)
    assert _roles(pg_server2, role) == [role]


def test_a_forged_marker_cannot_drop_a_users_database(
    pg_server2: PgServer, cleanup: list[tuple[str, str, str]]
) -> None:
    tag = uuid.uuid4().hex[:8]
    victim_owner = _role(pg_server2, cleanup, f"lo_victim_{tag}", "2")
    db = f"payroll_sr_{tag}"
    pg_server2.create_database(db)
    cleanup.append(("db", "2", db))
    _exec(
        pg_server2,
        "postgres",
        sql.SQL("ALTER DATABASE {} OWNER TO {}").format(ID(db), ID(victim_owner)),
    )
    # anyone who may comment on a role (CREATEROLE / ADMIN OPTION) can write the marker
    fake = _role(pg_server2, cleanup, f"lo_fake_{tag}", "2")
    _mark(pg_server2, fake, db)
    _clean(pg_server2)
    assert _dbs(pg_server2, db) == [db]


# --- two restores at once onto one server ---------------------------------------------


def _open_repo(env: Env, monkeypatch: pytest.MonkeyPatch) -> Any:
    for key, value in env.env.items():
        monkeypatch.setenv(key, value)
    return open_repository(load_settings(None))


def test_a_concurrent_restore_does_not_drop_a_live_restores_staged_database(
    pg_server: PgServer,
    pg_server2: PgServer,
    env: Env,
    cleanup: list[tuple[str, str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tag = uuid.uuid4().hex[:6]
    _src, owner = _source_with_owner(pg_server, cleanup, env, tag)
    target_a = unique_db_name("lo_a")
    target_b = unique_db_name("lo_b")
    cleanup += [("db", "2", target_a), ("db", "2", target_b)]
    repo = _open_repo(env, monkeypatch)
    manifest = repo.resolve("latest")
    original = PostgresEngine.table_stats
    seen: dict[str, object] = {}

    def hooked(self: PostgresEngine) -> Any:
        if "_sr_" in self.database_name() and "b" not in seen:
            # restore B starts now, on the same server, into another database
            seen["b"] = run_cli(
                "restore",
                "latest",
                "--to",
                _url(pg_server2, target_b),
                "--yes",
                "--create-roles",
                env=env.env,
            )
            seen["staged_after_b"] = _dbs(pg_server2, self.database_name())
            seen["owner_after_b"] = _roles(pg_server2, owner)
        return original(self)

    monkeypatch.setattr(PostgresEngine, "table_stats", hooked)
    try:
        report = run_restore(
            repo,
            manifest,
            open_engine(_url(pg_server2, target_a)),
            safety_backup=False,
            options=RestoreOptions(missing_roles="create"),
        )
        ok = report.ok
    except Exception as exc:
        seen["a_error"] = str(exc)
        ok = False
    assert seen["staged_after_b"], seen
    assert seen["owner_after_b"] == [owner], seen
    assert ok, seen
    assert pg_server2.query(target_a, "SELECT count(*) FROM t") == [(300,)]


def test_a_concurrent_restore_does_not_drop_roles_created_a_moment_ago(
    pg_server: PgServer,
    pg_server2: PgServer,
    env: Env,
    cleanup: list[tuple[str, str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tag = uuid.uuid4().hex[:6]
    _source_with_owner(pg_server, cleanup, env, tag)
    target_a = unique_db_name("lo_c")
    cleanup.append(("db", "2", target_a))
    repo = _open_repo(env, monkeypatch)
    manifest = repo.resolve("latest")
    original = PostgresEngine._create_database
    seen: dict[str, object] = {}

    def hooked(self: PostgresEngine, conn: Any, state: Any = None) -> None:
        # another restore's first step (its cleanup) runs right now
        seen["dropped"] = _clean(pg_server2)
        original(self, conn, state)

    monkeypatch.setattr(PostgresEngine, "_create_database", hooked)
    try:
        report = run_restore(
            repo,
            manifest,
            open_engine(_url(pg_server2, target_a)),
            safety_backup=False,
            options=RestoreOptions(missing_roles="create"),
        )
        ok = report.ok
    except Exception as exc:
        seen["a_error"] = str(exc)
        ok = False
    assert seen["dropped"] == [], seen
    assert ok, seen


def test_two_create_roles_restores_in_sequence_keep_the_first_ones_roles(
    pg_server: PgServer, pg_server2: PgServer, env: Env, cleanup: list[tuple[str, str, str]]
) -> None:
    """Roles a finished restore created are unmarked: the next restore keeps them."""
    tag = uuid.uuid4().hex[:6]
    _src, owner = _source_with_owner(pg_server, cleanup, env, tag)
    a, b = unique_db_name("lo_sa"), unique_db_name("lo_sb")
    cleanup += [("db", "2", a), ("db", "2", b)]
    cli_ok(
        run_cli(
            "restore", "latest", "--to", _url(pg_server2, a), "--yes", "--create-roles", env=env.env
        )
    )
    comment = pg_server2.query(
        "postgres",
        "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = %s",
        (owner,),
    )
    assert comment == [(None,)]
    cli_ok(
        run_cli(
            "restore", "latest", "--to", _url(pg_server2, b), "--yes", "--create-roles", env=env.env
        )
    )
    assert _roles(pg_server2, owner) == [owner]
    assert pg_server2.query(a, "SELECT tableowner FROM pg_tables WHERE tablename = 't'") == [
        (owner,)
    ]


# --- redaction: a password with odd characters never shows --------------------------


@pytest.fixture
def odd_user(pg_server: PgServer, pg_server2: PgServer, cleanup: list[tuple[str, str, str]]) -> str:
    name = f"odd_{uuid.uuid4().hex[:6]}"
    for which, server in (("1", pg_server), ("2", pg_server2)):
        _exec(
            server,
            "postgres",
            sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
                ID(name), sql.Literal(ODD_PW)
            ),
        )
        cleanup.append(("role", which, name))
    return name


def _no_password(*results: Any) -> None:
    for result in results:
        text = result.stdout.decode() + result.stderr.decode()
        for form in (ODD_PW, quote(ODD_PW, safe=""), quote(ODD_PW), "ss:w/rd", "w/rd%"):
            assert form not in text, text


def test_odd_password_never_shows_in_cli_output(
    pg_server: PgServer,
    pg_server2: PgServer,
    env: Env,
    cleanup: list[tuple[str, str, str]],
    odd_user: str,
) -> None:
    tag = uuid.uuid4().hex[:6]
    owner = _role(pg_server, cleanup, f"rd_owner_{tag}", "1")
    cleanup.append(("role", "2", owner))
    src = unique_db_name("rdsrc")
    pg_server.create_database(src)
    cleanup.append(("db", "1", src))
    _exec(
        pg_server,
        src,
        "CREATE TABLE t (id int)",
        "INSERT INTO t VALUES (1)",
        sql.SQL("ALTER TABLE t OWNER TO {}").format(ID(owner)),
    )
    src_url = _url(pg_server, src, odd_user, ODD_PW)
    tgt = unique_db_name("rdtgt")
    cleanup.append(("db", "2", tgt))
    tgt_url = _url(pg_server2, tgt, odd_user, ODD_PW)
    conninfo = (
        f"host={pg_server2.host} port={pg_server2.port} user={odd_user} "
        f"password='{ODD_PW}' dbname={tgt}_ci"
    )
    cleanup.append(("db", "2", f"{tgt}_ci"))
    e = env.env
    results = [
        run_cli("-v", "backup", src_url, "--target", "rd", env=e),
        run_cli("-v", "backup", _url(pg_server, src + "_nope", odd_user, ODD_PW), env=e),
        run_cli("-v", "restore", "latest", "--to", tgt_url, "--yes", env=e),  # refused
        run_cli("-v", "restore", "latest", "--to", tgt_url, "--yes", "--bogus", env=e),
        run_cli("-v", "restore", "latest", tgt_url, "--yes", env=e),  # extra argument
        run_cli("-v", "restore", "latest", "--to", tgt_url, "--yes", "--create-roles", env=e),
        run_cli(
            "-v",
            "--log-format",
            "json",
            "restore",
            "latest",
            "--to",
            tgt_url,
            "--yes",
            "--create-roles",
            env=e,
        ),  # in place over the first restore: safety backup
        run_cli("-v", "rollback", "--to", tgt_url, "--yes", env=e),
        run_cli(
            "-v",
            "verify",
            "latest",
            "--restore",
            "--scratch",
            _url(pg_server2, tgt + "_v", odd_user, ODD_PW),
            env=e,
        ),
        run_cli("-v", "restore", "latest", "--to", conninfo, "--yes", "--create-roles", env=e),
        run_cli(
            "-v",
            "restore",
            "latest",
            "--to",
            _url(pg_server2, tgt, odd_user, ODD_PW + "x"),
            "--yes",
            env=e,
        ),
    ]
    cleanup.append(("db", "2", tgt + "_v"))
    assert results[0].returncode == 0, results[0].stderr.decode()
    assert results[5].returncode == 0, results[5].stderr.decode()
    _no_password(*results)


def test_unencoded_odd_password_in_url_never_shows(
    pg_server: PgServer, env: Env, odd_user: str
) -> None:
    raw = f"postgresql://{odd_user}:{ODD_PW}@{pg_server.host}:{pg_server.port}/postgres"
    results = [
        run_cli("backup", raw, env=env.env),
        run_cli("restore", "latest", "--to", raw, "--yes", env=env.env),
        run_cli("restore", "latest", raw, env=env.env),
    ]
    _no_password(*results)


def test_restore_into_a_new_database_names_no_old_database(
    pg_server: PgServer, pg_server2: PgServer, env: Env, cleanup: list[tuple[str, str, str]]
) -> None:
    tag = uuid.uuid4().hex[:6]
    _source_with_owner(pg_server, cleanup, env, tag)
    tgt = unique_db_name("lo_new")
    cleanup.append(("db", "2", tgt))
    result = run_cli(
        "-v",
        "restore",
        "latest",
        "--to",
        _url(pg_server2, tgt),
        "--yes",
        "--create-roles",
        env=env.env,
    )
    cli_ok(result)
    assert "_old_" not in result.stderr.decode()


@pytest.mark.parametrize(
    "args",
    [
        ("restore", "latest", "--to"),  # missing value
        ("restore", "latest", "--yes", "--create-roles", "--to", "x", "--frobnicate"),
        ("restroe", "latest"),  # unknown command
        ("--log-format",),  # a global option without its value
        ("verify", "latest", "--restore", "--scratch"),
    ],
)
def test_cli_usage_errors_are_one_line_exit_2(env: Env, args: tuple[str, ...]) -> None:
    err = cli_fails(run_cli(*args, env=env.env), 2, r"error: ")
    assert "Usage:" not in err


def _db_acl(server: PgServer, db: str) -> list[str]:
    rows = server.query(
        "postgres",
        """SELECT coalesce(pg_get_userbyid(NULLIF(a.grantee, 0)), 'PUBLIC') || '='
                  || a.privilege_type || CASE WHEN a.is_grantable THEN '*' ELSE '' END
                  || '/' || pg_get_userbyid(a.grantor)
           FROM pg_database d, aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
           WHERE d.datname = %s ORDER BY 1""",
        (db,),
    )
    return [str(r[0]) for r in rows]


def test_a_chain_of_grantors_on_the_database_comes_back(
    pg_server: PgServer, env: Env, cleanup: list[tuple[str, str, str]]
) -> None:
    """owner -> b (grant option) -> c (grant option) -> d, with b's and c's grants made
    after d already had a grant from the owner: every grantor kept."""
    tag = uuid.uuid4().hex[:6]
    own, b, c, d = (_role(pg_server, cleanup, f"gc_{x}_{tag}", "1") for x in "obcd")
    src = unique_db_name("gcsrc")
    pg_server.create_database(src)
    cleanup.append(("db", "1", src))
    db = ID(src)
    _exec(
        pg_server,
        "postgres",
        sql.SQL("ALTER DATABASE {} OWNER TO {}").format(db, ID(own)),
        sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(db, ID(d)),
        sql.SQL("SET ROLE {}").format(ID(own)),
        sql.SQL("GRANT CREATE, TEMP ON DATABASE {} TO {} WITH GRANT OPTION").format(db, ID(b)),
        sql.SQL("SET ROLE {}").format(ID(b)),
        sql.SQL("GRANT CREATE ON DATABASE {} TO {} WITH GRANT OPTION").format(db, ID(c)),
        sql.SQL("SET ROLE {}").format(ID(c)),
        sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(db, ID(d)),
        sql.SQL("RESET ROLE"),
        sql.SQL("REVOKE TEMP ON DATABASE {} FROM PUBLIC").format(db),
    )
    before = _db_acl(pg_server, src)
    assert f"{d}=CREATE/{c}" in before
    cli_ok(run_cli("backup", _url(pg_server, src), "--target", "gc", env=env.env))
    new = src + "_r"
    cleanup.append(("db", "1", new))
    cli_ok(run_cli("restore", "latest", "--to", _url(pg_server, new), "--yes", env=env.env))
    assert _db_acl(pg_server, new) == before
