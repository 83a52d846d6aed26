"""Where a restore drill restores: one rule for the CLI, the web and the scheduler."""

from __future__ import annotations

import pytest

from strongroom.engines.mysql import MysqlEngine
from strongroom.engines.postgresql import PostgresEngine
from strongroom.engines.sqlite import SqliteEngine
from strongroom.errors import UsageError
from strongroom.repository.manifest import Manifest
from strongroom.services.drill import scratch_for
from strongroom.tempfiles import private_dir


def _manifest(engine: str) -> Manifest:
    return Manifest(
        backup_id="20261130T000000Z-00000000",
        target="shop",
        engine=engine,
        engine_version="",
        tool_version="",
        dump_format="",
        started_at="2026-11-30T00:00:00Z",
        finished_at="2026-11-30T00:00:01Z",
        duration_seconds=1.0,
        tags=(),
        status="complete",
        created_by="test",
        raw_size=0,
        stored_new_bytes=0,
        new_chunk_count=0,
        stream_checksum="",
        chunks=(),
        private_sealed={},
    )


PG = "postgresql://u:pw@127.0.0.1:5999/shop"
MY = "mysql://u:pw@127.0.0.1:3999/shop"


def test_a_given_scratch_url_wins() -> None:
    engine = scratch_for(_manifest("postgresql"), scratch_url=f"{PG}_x", server_url=MY)
    assert isinstance(engine, PostgresEngine) and engine.database_name() == "shop_x"


@pytest.mark.parametrize(
    ("kind", "url", "cls"), [("postgresql", PG, PostgresEngine), ("mysql", MY, MysqlEngine)]
)
def test_beside_the_targets_database_on_its_own_server(kind: str, url: str, cls: type) -> None:
    engine = scratch_for(_manifest(kind), scratch_url=None, server_url=url, prefix="sr_drill")
    assert isinstance(engine, cls)
    assert engine.database_name().startswith("sr_drill_") and engine.host_port().endswith("99")


def test_sqlite_always_goes_to_a_temp_file(tmp_path) -> None:
    """Whatever DATABASE_URL says (another SQLite file in a folder that may not be
    writable, or a URL of no engine at all), a SQLite drill restores into a temp file."""
    for server_url in (None, f"sqlite://{tmp_path}/app.db", "redis://127.0.0.1/0"):
        scratch = scratch_for(_manifest("sqlite"), scratch_url=None, server_url=server_url)
        assert isinstance(scratch, SqliteEngine)
        assert scratch.database_name().startswith("strongroom_verify_")
        assert scratch.path.parent == private_dir()  # swept if the process is killed


def test_no_server_of_the_backups_engine_is_a_clear_usage_error() -> None:
    with pytest.raises(UsageError, match="scratch database URL for a mysql restore drill"):
        scratch_for(_manifest("mysql"), scratch_url=None, server_url=PG)
    with pytest.raises(UsageError, match="scratch database URL for a mysql"):
        scratch_for(_manifest("mysql"), scratch_url=None, server_url="redis://127.0.0.1/0")
    with pytest.raises(UsageError, match="postgresql"):
        scratch_for(_manifest("postgresql"), scratch_url="  ", server_url=None)
