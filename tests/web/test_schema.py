"""schemathesis against the OpenAPI schema: no request the schema allows causes a 5xx."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from tests.helpers import make_sqlite_db
from tests.web.conftest import WebSetup, build_app, wait_job


@pytest.fixture(scope="module")
def fuzz_web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebSetup]:
    tmp = tmp_path_factory.mktemp("fuzz")
    db = make_sqlite_db(tmp / "shop.db", users=50, orders=50)
    web = build_app(tmp, {"shop": f"sqlite://{db}"})
    here = Path.cwd()
    os.chdir(tmp)  # a generated relative SQLite path lands here, not in the work tree
    try:
        with TestClient(web.app) as client:
            started = client.post("/api/backups", json={"target": "shop"}, headers=web.admin)
            assert wait_job(client, started.json()["job_id"], web.admin)["status"] == "succeeded"
        yield web
    finally:
        os.chdir(here)


def _operations(web: WebSetup) -> list[schemathesis.schemas.APIOperation]:
    schema = schemathesis.openapi.from_asgi("/openapi.json", web.app)
    return [result.ok() for result in schema.get_all_operations()]


def test_no_server_errors(fuzz_web: WebSetup) -> None:
    """Every operation, with positive examples the schema allows, as an admin."""
    operations = _operations(fuzz_web)
    assert len(operations) >= 15
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=20,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=fuzz_web.admin, checks=[not_a_server_error])

        check()
