"""Issue 13, input 2: all or nothing, proven by failing each step of the swap in turn.

Every statement of the swap that changes the server (CREATE, DROP, RENAME, ALTER) is made
to fail once, in turn, on a real server, through a small fake around the real connection
(the server answers everything else). After each attempt either the swap failed and the
target is exactly as it was (rows, checksums, every definition, definers, foreign keys),
and the message says so; or the failure came after the restore was complete (cleaning up
the staged or replaced database) and the target is exactly the restored one.
"""

from __future__ import annotations

from typing import Any

import pymysql

from strongroom.engines.mysql import MysqlEngine
from strongroom.engines.mysql.connection import MysqlConnection
from strongroom.errors import RestoreFailed
from tests.engines.mysql.test_swap_fidelity import (
    _change_live,
    _definitions,
    _shop,
)
from tests.engines.mysql.test_swap_fidelity import app_user as app_user  # a fixture
from tests.fixtures.mariadb import MariaDbServer

_CHANGES = (b"CREATE", b"DROP", b"RENAME", b"ALTER")
FORCED = "Lock wait timeout exceeded (forced by the test)"


class _Faults:
    """Counts the changing statements while ``armed``; the ``fail_at``-th one fails."""

    def __init__(self) -> None:
        self.armed = False
        self.fail_at = 0
        self.count = 0
        self.statements: list[str] = []

    def check(self, query: Any) -> None:
        if not self.armed:
            return
        text = query if isinstance(query, bytes) else str(query).encode()
        if not text.lstrip().upper().startswith(_CHANGES):
            return
        self.count += 1
        self.statements.append(text[:80].decode("utf-8", "replace"))
        if self.count == self.fail_at:
            raise pymysql.err.OperationalError(1205, FORCED)


class _Cursor:
    def __init__(self, cur: Any, faults: _Faults) -> None:
        self._cur = cur
        self._faults = faults

    def execute(self, query: Any, args: Any = None) -> Any:
        self._faults.check(query)
        return self._cur.execute(query, args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cur, name)

    def __iter__(self) -> Any:
        return iter(self._cur)

    def __enter__(self) -> _Cursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self._cur.close()


class _Connection:
    def __init__(self, conn: Any, faults: _Faults) -> None:
        self._conn = conn
        self._faults = faults

    def cursor(self, *args: Any) -> _Cursor:
        return _Cursor(self._conn.cursor(*args), self._faults)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def __enter__(self) -> _Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self._conn.close()


def _state(server: MariaDbServer, name: str) -> dict[str, Any]:
    """Everything a user sees of the database: tables, every row, every definition (with
    definers), foreign keys, the character set and collation."""
    tables = server.query(
        None,
        "SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s"
        " ORDER BY TABLE_NAME",
        (name,),
    )
    return {
        "schema": server.query(
            None,
            "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME"
            " FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s",
            (name,),
        ),
        "tables": tables,
        "rows": {t: server.query(name, f"SELECT * FROM `{t}` ORDER BY 1") for t, _ in tables},
        "definitions": _definitions(server, name),
        "foreign keys": server.query(
            None,
            "SELECT CONSTRAINT_NAME, TABLE_NAME, REFERENCED_TABLE_SCHEMA, REFERENCED_TABLE_NAME"
            " FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = %s"
            " AND REFERENCED_TABLE_NAME IS NOT NULL ORDER BY 1",
            (name,),
        ),
    }


def _build(server: MariaDbServer, name: str, user: str) -> None:
    """A fresh target shaped like the application's (latin1, foreign keys, objects made by
    the application's own account)."""
    server.drop_database(name)
    server.query(None, f"CREATE DATABASE `{name}` CHARACTER SET latin1")
    server.execute(
        name,
        [
            "CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(20))",
            "CREATE TABLE orders (id INT PRIMARY KEY, customer INT, total INT,"
            " FOREIGN KEY (customer) REFERENCES customers (id) ON DELETE CASCADE)",
            "INSERT INTO customers VALUES (1, 'ana'), (2, 'bo')",
            "INSERT INTO orders VALUES (1, 1, 10), (2, 2, 20), (3, 2, 30)",
        ],
    )
    _shop(server, user, name)


def _scenario(
    server: MariaDbServer, url: str, user: str, dump: list[bytes]
) -> tuple[MysqlEngine, MysqlEngine]:
    """The target built afresh, its staged copy from a backup of it (``dump``, taken on
    the first call), and the target changed since (so undo and success are told apart)."""
    name = url.rsplit("/", 1)[1]
    _build(server, name, user)
    engine = MysqlEngine(url)
    if not dump:
        with engine.dump() as running:
            dump.append(running.stream.read())
            running.finish()
    staged = engine.staging()
    staged.restore(dump)
    _change_live(server, user, name)
    return engine, staged


def test_a_failure_at_any_step_leaves_the_target_as_it_was_or_fully_restored(
    mariadb_server, mysql_db, app_user, monkeypatch
):
    name = mysql_db.rsplit("/", 1)[1]
    faults = _Faults()
    real_connect = MysqlConnection.connect

    def connect(self: MysqlConnection, database: str | None = None) -> Any:
        return _Connection(real_connect(self, database), faults)

    monkeypatch.setattr(MysqlConnection, "connect", connect)
    dump: list[bytes] = []

    # the swap without a failure: what "fully restored" looks like, and how many steps
    engine, staged = _scenario(mariadb_server, mysql_db, app_user, dump)
    faults.armed, faults.fail_at = True, 0
    assert engine.swap_in(staged, keep_old=False) is None
    faults.armed = False
    restored = _state(mariadb_server, name)
    steps = faults.count
    assert steps >= 20, faults.statements  # triggers, views, routines, events, RENAME…

    outcomes: dict[str, int] = {"undone": 0, "restored": 0}
    problems: list[str] = []
    for fail_at in range(1, steps + 1):
        engine, staged = _scenario(mariadb_server, mysql_db, app_user, dump)
        before = _state(mariadb_server, name)
        faults.armed, faults.fail_at, faults.count, faults.statements = True, fail_at, 0, []
        try:
            kept = engine.swap_in(staged, keep_old=False)
        except RestoreFailed as exc:
            faults.armed = False
            step = f"{fail_at}: {faults.statements[fail_at - 1]}"
            if FORCED not in str(exc) or "the original database is unchanged" not in str(exc):
                problems.append(f"{step}: message {exc}")
            if _state(mariadb_server, name) != before:
                problems.append(f"{step}: the target changed")
            left = [d for d in mariadb_server.databases() if d.startswith(f"{name}_old_")]
            if left:
                problems.append(f"{step}: left behind {left}")
            outcomes["undone"] += 1
        else:
            faults.armed = False
            step = f"{fail_at}: {faults.statements[fail_at - 1]}"
            # only cleaning up after the restore may fail without failing it
            if not step.split(": ", 1)[1].startswith("DROP DATABASE"):
                problems.append(f"{step}: the swap succeeded although this step failed")
            if _state(mariadb_server, name) != restored:
                problems.append(f"{step}: succeeded but the target is not the restored one")
            if kept is not None:
                mariadb_server.drop_database(kept)
            outcomes["restored"] += 1
        for leftover in mariadb_server.databases():
            if leftover.startswith((f"{name}_old_", f"{name}_sr_")):
                mariadb_server.drop_database(leftover)
    assert not problems, "\n".join(problems)
    assert outcomes["undone"] >= steps - 3, outcomes
