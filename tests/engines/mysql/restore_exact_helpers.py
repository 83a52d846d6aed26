"""The application database, its fixtures and the small helpers the MySQL/MariaDB exact-restore
modules (tests/engines/mysql/test_restore_exact*.py) share, on the real MariaDB the harness
starts."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from strongroom.engines.mysql import MysqlEngine
from tests.fixtures.mariadb import MariaDbServer
from tests.fixtures.mysql_app import (
    AppAccount,
    build_app_database,
    create_app_account,
    drop_app_account,
)
from tests.helpers import cli_ok, run_cli


def _name(url: str) -> str:
    return url.rsplit("/", 1)[1]


@dataclass
class App:
    server: MariaDbServer
    name: str
    url: str
    account: AppAccount


@contextmanager
def _app(server: MariaDbServer, url: str, *, staging: bool) -> Iterator[App]:
    name = _name(url)
    account = create_app_account(server, [name], staging=staging)
    try:
        build_app_database(account, name)
        yield App(server, name, url, account)
    finally:
        drop_app_account(server, account)


@pytest.fixture()
def app(mariadb_server: MariaDbServer, mysql_db: str) -> Iterator[App]:
    """The app database; its account may also use the databases named ``<db>_…``."""
    with _app(mariadb_server, mysql_db, staging=True) as made:
        yield made


@pytest.fixture()
def env(tmp_path: Any) -> dict[str, str]:
    env = {
        "STRONGROOM_REPO": str(tmp_path / "repo"),
        "STRONGROOM_KEY_FILE": str(tmp_path / "repo.key"),
    }
    cli_ok(run_cli("init", env=env))
    return env


@pytest.fixture()
def scheduler(mariadb_server: MariaDbServer) -> Iterator[None]:
    """The event scheduler as it was before the test, whatever the test did to it."""
    (was,) = mariadb_server.query(None, "SELECT @@GLOBAL.event_scheduler")[0]
    try:
        yield
    finally:
        mariadb_server.query(None, f"SET GLOBAL event_scheduler = {was}")


def _tick_rows(server: MariaDbServer, database: str) -> list[str]:
    rows = server.query(database, "SELECT what FROM audit WHERE what LIKE 'tick from %'")
    return sorted({str(r[0]) for r in rows})


@dataclass(frozen=True)
class Dump:
    data: bytes
    state: dict[str, Any] | None  # the engine state the manifest records


def _dump(url: str) -> Dump:
    with MysqlEngine(url).dump() as running:
        data = running.stream.read()
        result = running.finish()
    return Dump(data, result.state)


def _stage(url: str, dump: Dump) -> tuple[MysqlEngine, MysqlEngine]:
    """What a restore does before its swap: a staged database beside ``url``, loaded."""
    engine = MysqlEngine(url)
    staged = engine.staging()
    staged.restore([dump.data], state=dump.state)
    return engine, staged
