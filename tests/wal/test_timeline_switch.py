"""A real timeline switch in the archive: a recovered copy of the cluster is promoted (to
timeline 2) with archiving into the same stream turned on, as a failover would do. Recovery
from the base backup then follows ``00000002.history`` to timeline 2 by default
(``--to-timeline latest``), stays on timeline 1 with ``--to-timeline 1``, and refuses a
timeline the archive does not hold (exit 3, naming 1 and 2)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from strongroom_servers.postgres import PgServer, free_port
from tests.wal.support import WalPlace, archived_up_to, make_place, start_archiving, stop_copy, tail
from tests.wal.test_pitr_targets import _recover


def _as_user(place: WalPlace) -> dict[str, Any]:
    if place.user is None:
        return {}
    return {"user": place.user.pw_uid, "group": place.user.pw_gid, "extra_groups": []}


def _promoted_copy(place: WalPlace, server: PgServer) -> tuple[Path, int]:
    """Lay the newest base backup down, turn archiving into the original's stream on,
    start it and wait for promotion (timeline 2); the copy's data directory and port."""
    datadir = place.root / "failover"
    laid = place.run(
        "restore", "latest", "--config", str(place.config), "--to-datadir", str(datadir)
    )
    assert laid.returncode == 0, laid.stderr
    with (datadir / "postgresql.auto.conf").open("a") as conf:
        command = place.archive_command().replace("'", "''")
        conf.write(f"archive_mode = 'on'\narchive_command = '{command}'\n")
    port = free_port()
    # restore_command runs this interpreter with -m: the server needs the launcher's path
    python_path = place.launcher.read_text().split("PYTHONPATH='", 1)[1].split("'", 1)[0]
    started = subprocess.run(
        [
            *(str(server.bin_dir / "pg_ctl"), "-D", str(datadir), "-l", str(datadir / "log")),
            *("-o", f"-p {port} -k {datadir}", "-w", "-t", "120", "start"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=180,
        env={**place.env(), "PYTHONPATH": python_path},
        **_as_user(place),
    )
    assert started.returncode == 0, started.stderr + tail(datadir / "log")
    return datadir, port


@pytest.fixture(scope="module")
def switched() -> Iterator[tuple[WalPlace, PgServer]]:
    """Markers 0-9 on timeline 1 (a base backup after 4), then 100-104 on the promoted
    copy's timeline 2, everything archived; the copy is stopped again."""
    place = make_place()
    server = start_archiving(
        place,
        {
            "archive_mode": "on",
            "wal_level": "replica",
            "archive_timeout": "60",
        },
    )
    try:
        server.query("postgres", "CREATE TABLE marker (id int PRIMARY KEY)")
        server.query("postgres", "INSERT INTO marker SELECT generate_series(0, 4)")
        backup = place.run("backup", "--physical", "--config", str(place.config), server.url())
        assert backup.returncode == 0, backup.stderr
        server.query("postgres", "INSERT INTO marker SELECT generate_series(5, 9)")
        archived_up_to(server)
        datadir, port = _promoted_copy(place, server)
        try:
            url = f"host=127.0.0.1 port={port} dbname=postgres user={server.user}"
            with psycopg.connect(url, password=server.password, autocommit=True) as conn:
                deadline = time.monotonic() + 120
                while conn.execute("SELECT pg_is_in_recovery()").fetchone() != (False,):
                    assert time.monotonic() < deadline, tail(datadir / "log")
                    time.sleep(0.1)
                conn.execute("INSERT INTO marker SELECT generate_series(100, 104)")
                row = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
                assert row is not None and str(row[0]).startswith("00000002")
                while True:
                    got = conn.execute("SELECT last_archived_wal FROM pg_stat_archiver").fetchone()
                    if got is not None and got[0] is not None and got[0] >= row[0]:
                        break
                    assert time.monotonic() < deadline, tail(datadir / "log")
                    time.sleep(0.1)
        finally:
            stop_copy(place, server, datadir)
        yield place, server
    finally:
        server.stop()
        place.remove()


def test_latest_follows_the_history_file_to_timeline_2(
    switched: tuple[WalPlace, PgServer],
) -> None:
    place, server = switched
    assert list((place.repo / "logs").glob("postgresql-*/history/00000002.history-*"))
    ids, output = _recover(place, server, "latest", "latest")
    assert ids == set(range(10)) | set(range(100, 105)), output
    assert "(timeline 1 -> 2): all archived" in output


def test_timeline_1_stays_on_the_original_history(switched: tuple[WalPlace, PgServer]) -> None:
    place, server = switched
    ids, output = _recover(place, server, "tl1", "latest", "--to-timeline", "1")
    assert ids == set(range(10)), output
    assert "(timeline 1): all archived" in output


def test_a_timeline_the_archive_lacks_names_those_there(
    switched: tuple[WalPlace, PgServer],
) -> None:
    place, _server = switched
    datadir = place.root / "tl9"
    result = place.run(
        "restore",
        "latest",
        "--config",
        str(place.config),
        "--to-datadir",
        str(datadir),
        "--to-timeline",
        "9",
    )
    assert result.returncode == 3, result.stderr
    assert "timeline 9 is not in the archive (timelines there: 1, 2)" in result.stderr
    assert result.stderr.count("error:") == 1 and not datadir.exists()


def test_a_base_backup_after_the_branch_does_not_follow_it(
    switched: tuple[WalPlace, PgServer],
) -> None:
    """Last here (it adds the newest base backup): the original kept timeline 1 after the
    copy branched; a base backup of it taken now cannot reach timeline 2 (it branched
    before the backup began): latest is refused in one line, as PostgreSQL would refuse
    it, and --to-timeline current recovers timeline 1."""
    place, server = switched
    server.query("postgres", "INSERT INTO marker SELECT generate_series(10, 14)")
    backup = place.run("backup", "--physical", "--config", str(place.config), server.url())
    assert backup.returncode == 0, backup.stderr
    server.query("postgres", "INSERT INTO marker SELECT generate_series(15, 19)")
    archived_up_to(server)
    datadir = place.root / "after-branch"
    refused = place.run(
        "restore", "latest", "--config", str(place.config), "--to-datadir", str(datadir)
    )
    assert refused.returncode == 3, refused.stderr
    assert "does not descend from the base backup's timeline 1" in refused.stderr
    assert "(timelines there: 1, 2)" in refused.stderr and not datadir.exists()
    ids, output = _recover(place, server, "current", "latest", "--to-timeline", "current")
    assert ids == set(range(20)), output
    assert backup.stdout.split()[1] in output
