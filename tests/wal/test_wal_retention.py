"""WAL status and retention on a real cluster archiving with ``strongroom wal-push``: two
base backups, the older forgotten, prune deletes exactly the WAL before the kept base
backup's start segment, ``restore --to-time`` from the kept one still recovers, and
``list``/``health``/``check`` show the window (services/wal_status.py, wal_retention.py).

Timeline switches are covered without a server in tests/services/test_wal_status.py."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest

from strongroom.engines.postgresql import timelines as tl
from strongroom.repository.keys import KeySource
from strongroom.repository.repository import Repository
from strongroom.services.pitr import physical_facts
from strongroom.storage.local import LocalStorage
from strongroom_servers.postgres import PgServer, free_port
from tests.wal.support import WalPlace, archived_up_to, make_place, start_archiving, stop_copy


@pytest.fixture(scope="module")
def archiving() -> Iterator[tuple[WalPlace, PgServer]]:
    place = make_place()
    server = start_archiving(
        place,
        {
            "archive_mode": "on",
            "wal_level": "replica",
            "track_commit_timestamp": "on",
        },
    )
    try:
        yield place, server
    finally:
        server.stop()
        place.remove()


def _archived(place: WalPlace) -> set[str]:
    names = set()
    for path in (place.repo / "logs").glob("postgresql-*/*/*"):
        names.add(path.name.rpartition("-")[0])
    return names


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout


def test_prune_keeps_the_wal_of_the_kept_base_backup(
    archiving: tuple[WalPlace, PgServer],
) -> None:
    place, server = archiving
    config = ("--config", str(place.config))
    server.query("postgres", "CREATE TABLE marker (id int PRIMARY KEY, at timestamptz)")
    for _ in range(3):
        server.query(
            "postgres", "INSERT INTO marker SELECT coalesce(max(id), 0) + 1, now() FROM marker"
        )
        archived_up_to(server)
    _ok(place.run("backup", "--physical", "--target", "pitr", *config, server.url()))
    for _ in range(3):
        server.query(
            "postgres", "INSERT INTO marker SELECT coalesce(max(id), 0) + 1, now() FROM marker"
        )
        archived_up_to(server)
    _ok(place.run("backup", "--physical", "--target", "pitr", *config, server.url()))
    repo = Repository.open(LocalStorage(place.repo), KeySource(key_file=place.key))
    older, kept = (m.backup_id for m in repo.list_backups("pitr"))
    # markers after the second base backup, each in its own commit, then archived
    for _ in range(3):
        server.query(
            "postgres",
            "INSERT INTO marker SELECT coalesce(max(id), 0) + 1, clock_timestamp() FROM marker",
        )
    moment = server.query("postgres", "SELECT max(pg_xact_commit_timestamp(xmin)) FROM marker")[0][
        0
    ]
    server.query("postgres", "INSERT INTO marker VALUES (1000, clock_timestamp())")
    last = archived_up_to(server)
    out = " ".join(_ok(place.run("list", *config)).split())
    assert "WAL of pitr (postgresql-" in out and f"last segment {last}" in out
    assert "; GAP" not in out and "recoverable " in out
    check = _ok(place.run("check", *config))
    assert "WAL: 1 stream" in check and "no problems found" in check
    health = place.run("health", *config)
    assert health.returncode in (0, 1), health.stderr  # no restore drill yet: a warning
    assert "WAL: recoverable 20" in health.stdout and "no gap" in health.stdout
    # the start segment of the base backup that stays: nothing of it or after it may go
    facts = physical_facts(repo, repo.load_manifest(kept))
    start = tl.segment_name(int(facts["timeline"]), tl.parse_lsn(str(facts["start_lsn"])))
    before = _archived(place)
    expected = {name for name in before if not name.endswith(".history") and name[:24] < start}
    assert len(expected) >= 3
    _ok(place.run("forget", "--target", "pitr", "--keep-last", "1", *config))
    dry = " ".join(_ok(place.run("prune", "--dry-run", *config)).split())
    assert f"would delete {len(expected)} files no retained base backup needs" in dry
    assert _archived(place) == before
    clock = time.monotonic()
    done = " ".join(_ok(place.run("prune", *config)).split())
    print(f"\nprune of {len(expected)} WAL files: {time.monotonic() - clock:.2f} s (command)")
    assert f"deleted {len(expected)} files" in done
    assert before - _archived(place) == expected
    assert "no problems found" in _ok(place.run("check", *config))
    fresh = Repository.open(LocalStorage(place.repo), KeySource(key_file=place.key))
    assert older not in fresh.backup_ids() and kept in fresh.backup_ids()
    # the kept base backup still recovers to a time: every marker up to that moment
    datadir = place.root / "restored"
    port = free_port()
    result = place.run(
        "restore", *config, "--target", "pitr", "--to-datadir", str(datadir),
        "--to-time", moment.isoformat(), "--start", "--port", str(port), timeout=300,
    )  # fmt: skip
    try:
        _ok(result)
        url = f"host=127.0.0.1 port={port} dbname=postgres user={server.user}"
        with psycopg.connect(url, password=server.password, autocommit=True) as conn:
            ids = {int(r[0]) for r in conn.execute("SELECT id FROM marker").fetchall()}
    finally:
        stop_copy(place, server, datadir)
    assert ids == set(range(1, 10)), sorted(ids)
    assert datetime.now(UTC) > moment
