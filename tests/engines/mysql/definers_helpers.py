"""The accounts, connections and small helpers the DEFINER attack modules
(tests/engines/mysql/test_definers*_attacks.py, test_swap_crash.py) share, on the real MariaDB
the harness starts."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymysql
import pytest

from strongroom.engines.base import RestoreOptions
from strongroom.engines.mysql import MysqlEngine, definers
from strongroom.repository.repository import Repository
from strongroom.services.repository_access import RepositoryLocation
from tests.fixtures.mariadb import MariaDbServer
from tests.helpers import REPO_ROOT, STRONGROOM, repository_env

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
