"""Issue 13, input 3, attacked: DEFINERs the restoring account cannot set (``--rewrite-definers``).

Odd account names, roles, host variants, dump forms the rewrite must (or must not) touch,
older backups without recorded definers, drills, rollback, the swap's undo and kept copy,
concurrent changes and kill -9, on the real MariaDB the harness starts. Tests marked
``xfail(strict=True)`` show a bug (the reason says which); the others hold.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymysql
import pytest

from strongroom.engines.base import RestoreOptions
from strongroom.engines.mysql import MysqlEngine, definers
from strongroom.engines.mysql import dump as dump_module
from strongroom.engines.mysql import swap as swap_module
from strongroom.errors import RestoreFailed
from strongroom.repository.manifest import Manifest
from strongroom.repository.repository import Repository
from strongroom.services.backup import run_backup
from strongroom.services.repository_access import RepositoryLocation
from strongroom.services.restore import find_rollback_backup, plan_restore, run_restore
from tests.fixtures.mariadb import MariaDbServer
from tests.helpers import REPO_ROOT, STRONGROOM, cli_fails, cli_ok, repository_env, run_cli

PW = "pw-Att4ck-Definer-Zq"  # every account's password: must never be printed
REWRITE = RestoreOptions(rewrite_definers=True)


def _name(url: str) -> str:
    return url.rsplit("/", 1)[1]


def _lit(text: str) -> str:
    """``text`` as a SQL string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def _account(user: str, host: str) -> str:
    return f"{_lit(user)}@{_lit(host)}"


def _url(server: MariaDbServer, user: str, database: str) -> str:
    return f"mysql://{user}:{PW}@{server.host}:{server.port}/{database}"


def _connect(server: MariaDbServer, user: str, database: str | None) -> Any:
    return pymysql.connect(
        ssl_disabled=True,
        host=server.host,
        port=server.port,
        user=user,
        password=PW,
        database=database,
        charset="utf8mb4",
        autocommit=True,
    )


def _run_as(server: MariaDbServer, user: str, database: str, statements: list[str]) -> None:
    with _connect(server, user, database) as conn, conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)


def _query_as(server: MariaDbServer, user: str, database: str, query: str) -> list[Any]:
    with _connect(server, user, database) as conn, conn.cursor() as cur:
        cur.execute(query)
        return list(cur.fetchall())


def _definers(server: MariaDbServer, name: str) -> dict[str, str]:
    with server.connect(name) as conn, conn.cursor() as cur:
        return {f"{o.kind.lower()} {o.name}": o.definer for o in definers.capture(cur, name)}


def _dump(server: MariaDbServer, name: str) -> tuple[bytes, dict[str, Any] | None]:
    """A dump of ``name`` taken by the harness's administrator, and its engine state."""
    with MysqlEngine(server.url(name)).dump() as running:
        data = running.stream.read()
        result = running.finish()
    return data, result.state


def _no_password(*outputs: Any) -> None:
    for output in outputs:
        if isinstance(output, subprocess.CompletedProcess):
            text = output.stdout.decode("utf-8", "replace") + output.stderr.decode(
                "utf-8", "replace"
            )
        else:
            text = str(output)
        assert PW not in text, text


@dataclass
class Crew:
    """The test's accounts: ``app`` and ``other`` have ALL on the database and on the
    databases a restore creates beside it (``<name>\\_%``), neither has SET USER; ``app``
    may read ``mysql.proc`` (so it can copy the other's routines)."""

    server: MariaDbServer
    name: str
    tag: str
    app: str
    other: str
    users: list[str] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)

    def user(self, user: str, host: str = "%", *, grant: bool = True) -> str:
        account = _account(user, host)
        self.server.query(None, f"CREATE USER {account} IDENTIFIED BY {_lit(PW)}")
        self.users.append(account)
        if grant:
            self.server.query(None, f"GRANT ALL ON `{self.name}`.* TO {account}")
            self.server.query(None, f"GRANT ALL ON `{self.name}\\_%`.* TO {account}")
        return f"{user}@{host}"

    def role(self, role: str, *, grant: bool = True) -> str:
        self.server.query(None, f"CREATE ROLE {_lit(role)}")
        self.roles.append(role)
        if grant:
            self.server.query(None, f"GRANT ALL ON `{self.name}`.* TO {_lit(role)}")
            self.server.query(None, f"GRANT ALL ON `{self.name}\\_%`.* TO {_lit(role)}")
        return f"{role}@"


@pytest.fixture()
def crew(mariadb_server: MariaDbServer, mysql_db: str) -> Iterator[Crew]:
    tag = uuid.uuid4().hex[:6]
    made = Crew(mariadb_server, _name(mysql_db), tag, f"app_{tag}", f"rep_{tag}")
    try:
        made.user(made.app)
        made.user(made.other)
        mariadb_server.query(None, f"GRANT SELECT ON mysql.proc TO '{made.app}'@'%'")
        yield made
    finally:
        for account in made.users:
            mariadb_server.query(None, f"DROP USER IF EXISTS {account}")
        for role in made.roles:
            mariadb_server.query(None, f"DROP ROLE IF EXISTS {_lit(role)}")


def _tables(server: MariaDbServer, name: str) -> None:
    server.execute(
        name,
        [
            "CREATE TABLE products (id INT PRIMARY KEY, name VARCHAR(40), price INT)",
            "CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, what VARCHAR(80))",
            "INSERT INTO products VALUES (1, 'pen', 2), (2, 'lamp', 40)",
        ],
    )


def _shop(crew: Crew) -> None:
    """Tables and objects of the application account and of the other account."""
    server, name = crew.server, crew.name
    _run_as(
        server,
        crew.app,
        name,
        [
            "CREATE TABLE products (id INT PRIMARY KEY, name VARCHAR(40), price INT)",
            "CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, what VARCHAR(80))",
            "INSERT INTO products VALUES (1, 'pen', 2), (2, 'lamp', 40)",
            "CREATE VIEW cheap AS SELECT id, name FROM products WHERE price < 10",
            "CREATE TRIGGER audit_insert AFTER INSERT ON products FOR EACH ROW"
            " INSERT INTO audit (what) VALUES (NEW.name)",
        ],
    )
    _run_as(
        server,
        crew.other,
        name,
        [
            "CREATE VIEW dear AS SELECT id, name FROM products WHERE price >= 10",
            "CREATE FUNCTION n_dear() RETURNS INT READS SQL DATA"
            " RETURN (SELECT COUNT(*) FROM dear)",
            "CREATE TRIGGER audit_update AFTER UPDATE ON products FOR EACH ROW"
            " INSERT INTO audit (what) VALUES (CONCAT('upd ', NEW.name))",
            "CREATE EVENT tidy ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 00:00:00' DISABLE"
            " DO DELETE FROM audit WHERE id < 0",
        ],
    )


def _repository(tmp_path: Path) -> tuple[dict[str, str], Repository]:
    """A new repository (as ``strongroom init`` makes it) and the environment naming it."""
    env = repository_env(tmp_path)
    key_file = Path(env["STRONGROOM_KEY_FILE"])
    location = RepositoryLocation(env["STRONGROOM_REPO"], key_file=key_file)
    Repository.init(location.storage(), key_file=key_file)
    return env, location.open()


# --- odd names, roles, host and case variants: listed, then rewritten ---------------------


def test_odd_account_names_roles_and_host_variants_are_listed_then_rewritten(
    mariadb_server, mysql_db, crew, tmp_path
):
    server, name, app = mariadb_server, crew.name, crew.app
    quote = f"o'ne`il@x_{crew.tag}"  # a quote, a backtick and an @ in the user name
    spaced = f"sp ace ünï {crew.tag}"  # a space and non-ASCII letters
    long = ("L" * 80)[: 80 - len(crew.tag)] + crew.tag  # the longest user name
    upper = app.upper()  # user names are case-sensitive: another account
    definer_of = {
        "view v_quote": crew.user(quote),
        "view v_invoker": crew.user(spaced, "10.0.%"),
        "view v_role": crew.role(f"r`ole {crew.tag}"),
        "trigger t_first": crew.user(long, "h o s t"),
        "trigger t_second": crew.user(upper),
        "event e_local": crew.user(app, "localhost"),  # the restoring user, another host
    }

    def clause(key: str) -> str:
        user, _, host = definer_of[key].rpartition("@")
        return f"DEFINER={_lit(user)}" + (f"@{_lit(host)}" if host else "")

    _tables(server, name)
    server.execute(
        name,
        [
            f"CREATE {clause('view v_quote')} VIEW v_quote AS SELECT id FROM products",
            f"CREATE {clause('view v_invoker')} SQL SECURITY INVOKER VIEW v_invoker AS"
            " SELECT name FROM products",
            f"CREATE {clause('view v_role')} VIEW v_role AS SELECT price FROM products",
            f"CREATE {clause('trigger t_first')} TRIGGER t_first BEFORE INSERT ON products"
            " FOR EACH ROW SET NEW.name = CONCAT(NEW.name, '1')",
            f"CREATE {clause('trigger t_second')} TRIGGER t_second BEFORE INSERT ON products"
            " FOR EACH ROW FOLLOWS t_first SET NEW.name = CONCAT(NEW.name, '2')",
            f"CREATE {clause('event e_local')} EVENT e_local ON SCHEDULE EVERY 1 DAY"
            " STARTS '2030-01-01 00:00:00' DISABLE DO DELETE FROM audit WHERE id < 0",
        ],
    )
    # the application's own: DEFINER=CURRENT_USER and the implicit definer
    _run_as(
        server,
        app,
        name,
        [
            "CREATE DEFINER=CURRENT_USER FUNCTION f_current() RETURNS INT DETERMINISTIC RETURN 7",
            "CREATE VIEW cheap AS SELECT id FROM products WHERE price < 10",
        ],
    )
    mine = {"function f_current": f"{app}@%", "view cheap": f"{app}@%"}
    before = _definers(server, name)
    assert before == {**definer_of, **mine}

    _env, repo = _repository(tmp_path)
    manifest = run_backup(repo, MysqlEngine(server.url(name))).manifest
    state = repo.private_section(manifest).engine_state
    recorded = definers.from_state(state)
    assert recorded is not None
    assert {f"{o.kind.lower()} {o.name}": o.definer for o in recorded} == before

    # restored as the application's account under another name
    copy = f"{name}_copy"
    target = MysqlEngine(_url(server, app, copy))
    refused = plan_restore(repo, manifest, target).checks.refusal
    assert refused is not None
    for key, definer in definer_of.items():
        group = refused.split(f"{definer} (", 1)[1].split(")", 1)[0]  # "view a, trigger b"
        assert key in group.split(", "), (key, refused)
    for key in mine:
        assert key not in refused
    assert "--rewrite-definers" in refused
    plan = plan_restore(repo, manifest, target, options=REWRITE)
    assert plan.checks.refusal is None
    assert any(
        line.startswith(f"definers rewritten to the restoring account {app}@%")
        for line in plan.checks.lines
    ), plan.checks.lines
    report = run_restore(repo, manifest, target, plan=plan)
    assert report.ok and report.swapped
    assert _definers(server, copy) == dict.fromkeys(before, f"{app}@%")
    assert _definers(server, name) == before  # the source is untouched
    # SQL SECURITY INVOKER stays; the triggers keep their order (FOLLOWS); all objects work
    assert server.query(
        None,
        "SELECT SECURITY_TYPE FROM information_schema.VIEWS WHERE TABLE_SCHEMA = %s"
        " AND TABLE_NAME = 'v_invoker'",
        (copy,),
    ) == [("INVOKER",)]
    server.query(copy, "INSERT INTO products VALUES (3, 'mug', 8)")
    assert server.query(copy, "SELECT name FROM products WHERE id = 3") == [("mug12",)]
    assert server.query(copy, "SELECT COUNT(*) FROM v_role") == [(3,)]
    assert server.query(copy, "SELECT COUNT(*) FROM v_quote") == [(3,)]
    assert server.query(copy, "SELECT f_current()") == [(7,)]
    assert not [d for d in server.databases() if d.startswith(f"{copy}_sr_")]

    # the rewrite of the same dump fed one byte at a time is the same stream
    data, _ = _dump(server, name)
    needs = definers.account(target.connection).needs_rewrite
    whole = b"".join(definers.rewrite([data], needs))
    assert whole.count(b"DEFINER=CURRENT_USER") == len(definer_of)
    assert b"".join(definers.rewrite([data[i : i + 1] for i in range(len(data))], needs)) == whole


def test_the_plan_names_every_definer_account_not_only_the_first_six_objects(
    mariadb_server, mysql_db, crew
):
    """Seven triggers of one account, then one view of another: "and 2 more" hides the
    second account, the one the user would have to create."""
    server, name = mariadb_server, crew.name
    _tables(server, name)
    auditor = crew.user(f"auditor_{crew.tag}")
    for i in range(7):
        _run_as(
            server,
            crew.other,
            name,
            [
                f"CREATE TRIGGER t{i} AFTER INSERT ON products FOR EACH ROW"
                f" INSERT INTO audit (what) VALUES ('t{i}')"
            ],
        )
    _run_as(server, auditor.split("@")[0], name, ["CREATE VIEW zz AS SELECT id FROM products"])
    _, state = _dump(server, name)
    refused = MysqlEngine(_url(server, crew.app, name)).plan_checks(state, RestoreOptions())
    assert refused.refusal is not None and f"{crew.other}@%" in refused.refusal
    assert "t0, trigger t1, trigger t2, trigger t3, trigger t4, trigger t5 and 1 more" in (
        refused.refusal
    )
    assert auditor in refused.refusal, refused.refusal


# --- dump forms the rewrite must handle ----------------------------------------------------


def test_rewrite_handles_objects_created_under_ansi_quotes(mariadb_server, mysql_db, crew):
    server, name = mariadb_server, crew.name
    _tables(server, name)
    _run_as(
        server,
        crew.other,
        name,
        [
            "SET SESSION sql_mode = 'ANSI_QUOTES'",
            'CREATE TRIGGER "ansi_t" AFTER INSERT ON products FOR EACH ROW SET @x = 1',
            'CREATE PROCEDURE "ansi_p"() SELECT 1',
        ],
    )
    data, state = _dump(server, name)
    assert b'DEFINER="' in data  # the dump's own form
    copy = f"{name}_ansi"
    target = MysqlEngine(_url(server, crew.app, copy))
    plan = target.plan_checks(state, REWRITE)
    assert plan.refusal is None
    target.restore([data], state=state, options=REWRITE)
    assert _definers(server, copy) == {
        "trigger ansi_t": f"{crew.app}@%",
        "procedure ansi_p": f"{crew.app}@%",
    }


def test_rewrite_handles_an_aggregate_function(mariadb_server, mysql_db, crew):
    server, name = mariadb_server, crew.name
    _tables(server, name)
    _run_as(
        server,
        crew.other,
        name,
        [
            "CREATE AGGREGATE FUNCTION total(x INT) RETURNS INT BEGIN"
            " DECLARE s INT DEFAULT 0;"
            " DECLARE CONTINUE HANDLER FOR NOT FOUND RETURN s;"
            " LOOP FETCH GROUP NEXT ROW; SET s = s + x; END LOOP; END"
        ],
    )
    data, state = _dump(server, name)
    copy = f"{name}_agg"
    MysqlEngine(_url(server, crew.app, copy)).restore([data], state=state, options=REWRITE)
    assert _definers(server, copy) == {"function total": f"{crew.app}@%"}
    assert server.query(copy, "SELECT total(price) FROM products") == [(42,)]


def test_text_inside_a_routine_body_is_never_rewritten(mariadb_server, mysql_db, crew):
    server, name = mariadb_server, crew.name
    body = (
        "a\n/*!50013 DEFINER=`nobody`@`%` SQL SECURITY DEFINER */\n"
        "/*!50003 CREATE*/ /*!50017 DEFINER=`nobody`@`%`*/ /*!50003 TRIGGER x\n"
        "/*!50106 CREATE*/ /*!50117 DEFINER=`nobody`@`%`*/ /*!50106 EVENT y\n"
        "DELIMITER ;;\nCREATE DEFINER=`nobody`@`%` PROCEDURE z\nb"
    )
    _run_as(
        server,
        crew.app,
        name,
        [f"CREATE PROCEDURE banner()\nBEGIN\nSELECT {_lit(body)} AS t;\nEND"],
    )
    assert _query_as(server, crew.app, name, "CALL banner()") == [(body,)]
    data, state = _dump(server, name)
    copy = f"{name}_body"
    MysqlEngine(_url(server, crew.app, copy)).restore([data], state=state, options=REWRITE)
    assert _query_as(server, crew.app, copy, "CALL banner()") == [(body,)]


def test_rewrite_is_linear_in_the_length_of_a_line():
    line = b"INSERT INTO `t` VALUES (1,0x" + b"ab" * (12 * 1024 * 1024) + b");\n"
    piece = 512 * 1024
    pieces = [line[i : i + piece] for i in range(0, len(line), piece)]
    clock = time.perf_counter()
    out = b"".join(definers.rewrite(pieces, lambda definer: True))
    took = time.perf_counter() - clock
    assert out == line
    assert took < 0.25, f"{took:.2f} s for a {len(line) >> 20} MiB line"


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


# --- the swap's kept copy and its undo re-create the target's objects ---------------------


def test_the_kept_old_database_holds_the_targets_objects_after_a_rewrite(
    mariadb_server, mysql_db, crew
):
    server, name = mariadb_server, crew.name
    _shop(crew)
    before = _definers(server, name)
    data, state = _dump(server, name)
    engine = MysqlEngine(_url(server, crew.app, name))
    staged = engine.staging()
    staged.restore([data], state=state, options=REWRITE)
    old = engine.swap_in(staged, keep_old=True)
    assert old is not None
    kept = _definers(server, old)
    assert set(kept) == set(before), f"missing in {old}: {set(before) - set(kept)}"


def test_an_undone_swap_puts_back_the_targets_views_of_another_definer(
    mariadb_server, mysql_db, crew, monkeypatch
):
    server, name = mariadb_server, crew.name
    _shop(crew)
    data, state = _dump(server, name)
    _run_as(server, crew.app, name, ["DELETE FROM products WHERE id = 1"])  # tell them apart
    before = _definers(server, name)
    engine = MysqlEngine(_url(server, crew.app, name))
    lines = engine.plan_checks(state, REWRITE).lines
    assert any("if the swap has to be undone" in line and "view dear" in line for line in lines)
    staged = engine.staging()
    staged.restore([data], state=state, options=REWRITE)

    real_create = swap_module.create

    def create(cur: Any, database: str, definition: Any, *, replace: bool = False) -> None:
        if definition.kind == "EVENT" and database == name:
            # the restored event comes last in step 4: fail it once, the swap is undone
            monkeypatch.setattr(swap_module, "create", real_create)
            raise pymysql.err.OperationalError(1205, "Lock wait timeout (forced by the test)")
        real_create(cur, database, definition, replace=replace)

    monkeypatch.setattr(swap_module, "create", create)
    with pytest.raises(RestoreFailed) as info:
        engine.swap_in(staged, keep_old=False)
    staged.drop()
    _no_password(info.value)
    assert server.query(name, "SELECT id FROM products") == [(2,)]
    assert set(_definers(server, name)) == set(before), str(info.value)
    assert "the original database is unchanged" in str(info.value)


def test_a_change_to_the_target_between_plan_and_restore(mariadb_server, mysql_db, crew, tmp_path):
    """The plan saw only the application's objects; another account adds one before the
    restore starts: the restore still completes and the target is the backup's."""
    server, name, app = mariadb_server, crew.name, crew.app
    _run_as(
        server,
        app,
        name,
        [
            "CREATE TABLE products (id INT PRIMARY KEY, name VARCHAR(40))",
            "INSERT INTO products VALUES (1, 'pen')",
            "CREATE VIEW names AS SELECT name FROM products",
        ],
    )
    _env, repo = _repository(tmp_path)
    manifest = run_backup(repo, MysqlEngine(server.url(name))).manifest
    engine = MysqlEngine(_url(server, app, name))
    plan = plan_restore(repo, manifest, engine, safety_backup=False)
    assert plan.checks.refusal is None
    _run_as(server, crew.other, name, ["CREATE VIEW sneaky AS SELECT id FROM products"])
    report = run_restore(repo, manifest, engine, plan=plan, keep_old=False)
    assert report.ok and report.swapped
    assert _definers(server, name) == {"view names": f"{app}@%"}
    assert not [d for d in server.databases() if d.startswith((f"{name}_sr_", f"{name}_old_"))]


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


# --- kill -9 ------------------------------------------------------------------------------


def _wait_for_lock(server: MariaDbServer, statement: str, proc: subprocess.Popen[bytes]) -> str:
    """The statement (starting with ``statement``) that waits for a lock, once it does."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        rows = server.query(
            None,
            "SELECT INFO FROM information_schema.PROCESSLIST WHERE STATE LIKE 'Waiting for%%'"
            " AND INFO LIKE %s",
            (statement + "%",),
        )
        if rows:
            return str(rows[0][0])
        time.sleep(0.02)
    out, err = proc.communicate(timeout=30)
    raise AssertionError(f"never waited on {statement}: {out.decode()} {err.decode()}")


def _start(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    full = dict(os.environ)
    for key in ("STRONGROOM_PASSPHRASE", "DATABASE_URL"):
        full.pop(key, None)
    full.update(env)
    return subprocess.Popen(
        [*STRONGROOM, *args],
        env=full,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _target_state(server: MariaDbServer, name: str) -> tuple[Any, ...]:
    return (
        server.query(name, "SELECT * FROM products ORDER BY id"),
        _definers(server, name),
    )


def _kill_while_waiting(
    crew: Crew, tmp_path: Path, statement: str, hold: Callable[[Any], None]
) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """A restore with --rewrite-definers, killed (-9) while a statement starting with
    ``statement`` waits for a lock ``hold`` took; the target's state before and after."""
    server, name = crew.server, crew.name
    _shop(crew)
    env, repo = _repository(tmp_path)
    run_backup(repo, MysqlEngine(server.url(name)))
    _run_as(server, crew.app, name, ["DELETE FROM products WHERE id = 2"])
    before = _target_state(server, name)
    blocker = server.connect(name, autocommit=False)
    try:
        with blocker.cursor() as cur:
            hold(cur)
        proc = _start(
            env,
            "restore",
            "latest",
            "--to",
            _url(server, crew.app, name),
            "--rewrite-definers",
            "--no-safety-backup",
            "--yes",
        )
        try:
            _wait_for_lock(server, statement, proc)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=30)
    finally:
        blocker.rollback()
        with blocker.cursor() as cur:
            cur.execute("UNLOCK TABLES")
        blocker.close()
    # what the killed client's connection had sent runs once the lock is free
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and server.query(
        None,
        "SELECT 1 FROM information_schema.PROCESSLIST WHERE USER = %s AND COMMAND <> 'Sleep'",
        (crew.app,),
    ):
        time.sleep(0.05)
    return before, _target_state(server, name)


def test_kill_9_while_the_staged_database_is_created_leaves_the_target_intact(
    mariadb_server, mysql_db, crew, tmp_path
):
    def hold(cur: Any) -> None:
        cur.execute("FLUSH TABLES WITH READ LOCK")

    before, after = _kill_while_waiting(crew, tmp_path, "CREATE DATABASE", hold)
    assert after == before


def test_kill_9_while_the_swap_waits_for_a_lock_leaves_the_target_intact(
    mariadb_server, mysql_db, crew, tmp_path
):
    def hold(cur: Any) -> None:
        cur.execute("START TRANSACTION")
        cur.execute("SELECT * FROM products")
        cur.fetchall()

    before, _ = _kill_while_waiting(crew, tmp_path, "DROP TRIGGER", hold)
    # the queued DROP TRIGGER of the dead client ran once the lock was free: the next
    # command settles the interrupted swap from its journal (issue 14)
    env, _repo = _repository(tmp_path / "next")
    out = run_cli("recover", "--to", _url(crew.server, crew.app, crew.name), env=env)
    assert out.returncode == 0, out.stderr.decode() + out.stdout.decode()
    rows, definers_now = _target_state(crew.server, crew.name)
    assert rows == before[0]
    # every object is back; the undo re-created the other account's trigger with the
    # restoring account as definer, as the plan of a --rewrite-definers restore said
    assert definers_now == {
        k: (f"{crew.app}@%" if k == "trigger audit_update" else v) for k, v in before[1].items()
    }
    assert not [d for d in crew.server.databases() if d.startswith(f"{crew.name}_")]
