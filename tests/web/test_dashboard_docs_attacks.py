"""Hostile and confused-newcomer cases against the dashboard's /docs, the favicon, and
schemathesis against the routes of the dashboard commit (issue 17). A case marked
xfail(strict) is a bug found."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from tests.web.conftest import ADMIN_PW, WebSetup, login, wait_job
from tests.web.dashboard_helpers import GOOD_RUN, _record


# --- /docs ------------------------------------------------------------------------------------
def test_docs_is_public_and_carries_a_csrf_token_only_for_a_session(
    client: TestClient, web: WebSetup
) -> None:
    anonymous = client.get("/docs")
    assert anonymous.status_code == 200 and "data-csrf" not in anonymous.text
    assert anonymous.headers.get("cache-control") == "no-store"
    assert anonymous.headers.get("x-frame-options") == "DENY"
    with_token = client.get("/docs", headers=web.admin)
    assert "data-csrf" not in with_token.text
    csrf = login(client, "alice", ADMIN_PW)
    signed_in = client.get("/docs")
    assert f'data-csrf="{csrf}"' in signed_in.text
    # "Try it out" of a destructive route without the token is refused
    client.cookies
    answer = client.post("/api/backups", json={"target": "shop"})
    assert answer.status_code == 403
    answer = client.post(
        "/api/backups", json={"target": "shop"}, headers={"Origin": "https://evil.example"}
    )
    assert answer.status_code == 403


def test_the_docs_page_answers_only_get(client: TestClient) -> None:
    assert client.post("/docs").status_code == 405
    for url in ("/api", "/api/", "/api/docs"):
        answer = client.get(url, follow_redirects=False)
        assert answer.status_code == 307 and answer.headers["location"] == "/docs"


def test_favicon_is_public_and_an_icon(client: TestClient) -> None:
    answer = client.get("/favicon.ico")
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/x-icon"
    assert answer.content[:4] == b"\x00\x00\x01\x00"


# --- schemathesis against the new routes ------------------------------------------------------
def test_schemathesis_finds_no_5xx_in_the_new_routes(web: WebSetup) -> None:
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import not_a_server_error

    with TestClient(web.app) as client:
        started = client.post("/api/backups", json={"target": "shop"}, headers=web.admin)
        assert wait_job(client, started.json()["job_id"], web.admin)["status"] == "succeeded"
    _record(web, json.dumps(GOOD_RUN).encode(), "good")
    schema = schemathesis.openapi.from_asgi("/openapi.json", web.app)
    operations = [
        op.ok()
        for op in schema.get_all_operations()
        if "/history" in op.ok().path or "/log" in op.ok().path
    ]
    assert len(operations) == 2
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=60,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=web.viewer, checks=[not_a_server_error])

        check()
