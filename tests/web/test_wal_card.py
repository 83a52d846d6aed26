"""The WAL of a target's base backups on the dashboard card and GET /api/targets, and in
/api/health (unauthenticated: status words and times only, no stream or segment names)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from fastapi.testclient import TestClient

from strongroom.engines.postgresql import timelines as tl
from strongroom.repository.keys import KeySource
from strongroom.repository.logs import LogArchive
from strongroom.repository.repository import Repository
from strongroom.storage.local import LocalStorage
from tests.helpers import make_sqlite_db
from tests.services.test_wal_status import STREAM, T0, base_backup, push_range
from tests.web.conftest import VIEWER_PW, build_app, login


def test_card_api_and_health_show_the_wal(tmp_path: Path) -> None:
    # a configured target beside: the base backups' target is judged all the same
    db = make_sqlite_db(tmp_path / "shop.db", users=10, orders=10)
    web = build_app(tmp_path, {"shop": f"sqlite://{db}"})
    repo = Repository.open(
        LocalStorage(tmp_path / "repo"), KeySource(key_file=tmp_path / "repo.key")
    )
    push_range(repo, 1, 1, 9, T0)
    base_backup(repo, 1, 3, T0 + timedelta(minutes=3, seconds=30), target="main@db:5432")
    files = {f.name: f for f in LogArchive(repo).files(STREAM)}
    repo.storage.delete(files[tl.name_of(1, 6)].key)
    with TestClient(web.app) as client:
        health = client.get("/api/health")
        assert health.status_code == 200
        body = health.json()
        assert body["status"] == "critical"
        target, shop = body["targets"]
        assert shop["target"] == "shop" and shop["wal_gap"] is None
        assert target["target"] == "main@db:5432" and target["wal_gap"] is True
        assert target["wal_last_segment_at"] == "2026-11-30T12:09:00Z"
        assert target["wal_window_start"] is None  # the only base backup has a gap
        assert any("WAL has a gap" in r for r in target["reasons"])
        assert STREAM not in health.text and "00000001000000000000000" not in health.text
        assert STREAM.removeprefix("postgresql-") not in health.text
        summary = client.get("/api/targets", headers=web.viewer).json()
        wal = next(t for t in summary if t["name"] == "main@db:5432")["wal"]
        assert wal["streams"] == [STREAM] and wal["gap"] is True
        assert wal["last_segment"] == tl.name_of(1, 9)
        assert wal["first_missing"] == tl.name_of(1, 6)
        assert wal["lag_seconds"] > 3600
        login(client, "victor", VIEWER_PW)
        page = client.get("/").text
        assert "Last WAL segment" in page and tl.name_of(1, 9) in page
        assert f"WAL gap: {tl.name_of(1, 6)} is missing" in page
        assert "no base backup has all its WAL" in page
