"""Issue 13, input 3, attacked: DEFINERs the restoring account cannot set (``--rewrite-definers``).

Odd account names, roles, host variants and the dump forms the rewrite must (or must not)
touch, on the real MariaDB the harness starts. What the restoring account may do is in
test_definers_account_attacks.py, the swap in test_definers_swap_attacks.py. Tests marked
``xfail(strict=True)`` show a bug (the reason says which); the others hold."""

from __future__ import annotations

import time
from typing import Any

from strongroom.engines.base import RestoreOptions
from strongroom.engines.mysql import MysqlEngine, definers
from strongroom.services.backup import run_backup
from strongroom.services.restore import plan_restore, run_restore
from tests.engines.mysql.definers_helpers import (
    REWRITE,
    _connect,
    _definers,
    _dump,
    _lit,
    _repository,
    _run_as,
    _tables,
    _url,
    crew,
)
from tests.fixtures.mariadb import MariaDbServer

__all__ = ["crew"]  # fixtures


def _query_as(server: MariaDbServer, user: str, database: str, query: str) -> list[Any]:
    with _connect(server, user, database) as conn, conn.cursor() as cur:
        cur.execute(query)
        return list(cur.fetchall())


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
