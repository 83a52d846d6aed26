"""Times in the UI: one zone everywhere, the configured one (``timezone`` in the settings),
named on every page, each time with the zone's abbreviation at that moment, so the two
sides of a daylight-saving change read unambiguously."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient

from strongroom.config import parse_settings
from strongroom.repository.repository import Repository
from strongroom.storage.factory import open_storage
from strongroom.web.app import create_app
from strongroom.web.auth import add_user, create_token
from strongroom.web.ui.render import short_time
from tests.helpers import make_sqlite_db
from tests.web.conftest import ADMIN_PW, CRON_SECRET, login, wait_job, write_config

BERLIN = ZoneInfo("Europe/Berlin")
# 2026's spring change: 01:00 UTC on 29 March (02:00 CET -> 03:00 CEST); autumn's: 01:00
# UTC on 25 October (03:00 CEST -> 02:00 CET), so 02:30 local happens twice that night.
SPRING_BEFORE, SPRING_AFTER = "2026-03-29T00:30:00Z", "2026-03-29T01:30:00Z"
AUTUMN_BEFORE, AUTUMN_AFTER = "2026-10-25T00:30:00Z", "2026-10-25T01:30:00Z"
A_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d (?:[A-Z]{2,5}|UTC[+-]\d\d(?::?\d\d)?)\b")


@pytest.mark.parametrize(
    ("moment", "shown"),
    [
        (SPRING_BEFORE, "2026-03-29 01:30 CET"),
        (SPRING_AFTER, "2026-03-29 03:30 CEST"),
        (AUTUMN_BEFORE, "2026-10-25 02:30 CEST"),
        (AUTUMN_AFTER, "2026-10-25 02:30 CET"),  # the same clock time, told apart
        ("2026-11-30T02:00:00+01:00", "2026-11-30 02:00 CET"),  # an offset is converted
        ("2026-11-30T05:55:00.123Z", "2026-11-30 06:55 CET"),
        ("2026-11-30T05:55:00", "2026-11-30 06:55 CET"),  # no offset: UTC, as stored
        (datetime(2026, 7, 1, 12, 0, tzinfo=UTC), "2026-07-01 14:00 CEST"),
    ],
)
def test_times_in_the_configured_zone(moment, shown) -> None:
    assert short_time(moment, BERLIN) == shown


def test_times_in_utc_and_odd_input() -> None:
    # what used to read "02:00 UTC+01:00" beside "05:55 UTC": one zone now
    assert short_time("2026-11-30T02:00:00+01:00") == "2026-11-30 01:00 UTC"
    assert short_time("2026-11-30T05:55:00Z") == "2026-11-30 05:55 UTC"
    assert short_time("2026-07-01T12:00:00Z", ZoneInfo("America/Sao_Paulo")) == (
        "2026-07-01 09:00 UTC-03"  # a zone without letters: its offset, said as such
    )
    assert short_time(None) == "-" and short_time("") == "-"
    assert short_time("not a time") == "not a time"


def _berlin_app(tmp: Path):
    """The app over a config whose ``timezone`` is Europe/Berlin, a SQLite target with a
    daily 02:00 schedule, and tokens that expire on both sides of both 2026 changes."""
    db = make_sqlite_db(tmp / "shop.db", users=50, orders=100)
    Repository.init(open_storage(str(tmp / "repo")), key_file=tmp / "repo.key")
    text = write_config(
        tmp, {"shop": f"sqlite://{db}"}, 'schedule = { daily = "0 2 * * *" }'
    ).replace('timezone = "UTC"', 'timezone = "Europe/Berlin"')
    assert 'timezone = "Europe/Berlin"' in text
    app = create_app(
        parse_settings(text), str(tmp / "service.db"), env={"CRON_SECRET": CRON_SECRET}
    )
    ctx = app.state.ctx
    add_user(ctx.db, "alice", "admin", ADMIN_PW)
    admin_token = create_token(ctx.db, "ci", "admin")
    for name, moment in [
        ("spring-before", SPRING_BEFORE),
        ("spring-after", SPRING_AFTER),
        ("autumn-before", AUTUMN_BEFORE),
        ("autumn-after", AUTUMN_AFTER),
    ]:
        create_token(ctx.db, name, "viewer", datetime.fromisoformat(moment))
    return app, {"Authorization": f"Bearer {admin_token}"}


def test_pages_show_times_in_the_configured_zone_and_say_which(tmp_path) -> None:
    app, admin = _berlin_app(tmp_path)
    with TestClient(app) as client:
        job = client.post("/api/backups", json={"target": "shop"}, headers=admin).json()
        assert wait_job(client, job["job_id"], admin)["status"] == "succeeded"
        login(client, "alice", ADMIN_PW)

        tokens = client.get("/admin").text
        for shown in (
            "2026-03-29 01:30 CET",
            "2026-03-29 03:30 CEST",
            "2026-10-25 02:30 CEST",
            "2026-10-25 02:30 CET",
        ):
            assert f">{shown}<" in tokens, shown

        for path in ("/", "/backups", "/audit", "/admin", "/retention"):
            page = client.get(path)
            assert page.status_code == 200, path
            assert "Times in Europe/Berlin" in page.text, path
            times = A_TIME.findall(page.text)
            assert times, path
            zones = {t.rsplit(" ", 1)[1] for t in times}
            assert zones <= {"CET", "CEST"}, (path, zones)  # never UTC, never UTC+01:00
            assert "UTC+" not in page.text, path

        # the next scheduled run is 02:00 in Berlin, shown as such (it used to read
        # "02:00 UTC+01:00" beside times in UTC)
        dashboard = client.get("/").text
        assert re.search(r"\d{4}-\d\d-\d\d 02:00 CES?T", dashboard), dashboard

        backup_id = client.get("/api/backups", headers=admin).json()[0]["backup_id"]
        finished = client.get(f"/api/backups/{backup_id}", headers=admin).json()["finished_at"]
        local = datetime.fromisoformat(finished.replace("Z", "+00:00")).astimezone(BERLIN)
        page = client.get(f"/backups/{backup_id}").text
        started_row = page.split("<dt>Started</dt>", 1)[1][:120]
        assert local.strftime("%Y-%m-%d") in started_row and local.tzname() in started_row
        listing = client.get("/backups").text
        assert f"{local:%Y-%m-%d %H:%M} {local.tzname()}" in listing


def test_the_default_zone_is_utc_and_is_named(client) -> None:
    login(client, "alice", ADMIN_PW)
    page = client.get("/admin").text
    assert "Times in UTC" in page
    assert {t.rsplit(" ", 1)[1] for t in A_TIME.findall(page)} == {"UTC"}
