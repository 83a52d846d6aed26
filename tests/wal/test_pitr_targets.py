"""Recovery to a transaction id and to a named restore point (issue 18, point 3) on a real
cluster archiving with ``strongroom wal-push``: each recovers exactly the markers
committed up to it; ``--to-restore-point`` chooses the base backup before the point (not
the newest); bad target values exit 2 in one line before anything is written."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from strongroom_servers import ServerUnavailable
from strongroom_servers.postgres import PgServer, free_port, start_server
from tests.wal.support import WalPlace, archived_up_to, make_place, stop_copy


@pytest.fixture(scope="module")
def history() -> Iterator[tuple[WalPlace, PgServer, dict[str, object]]]:
    """Two base backups; markers 0-9 committed one per transaction between and after
    them (xmin of each kept), restore point ``before-migration`` after marker 5."""
    place = make_place()
    try:
        server = start_server(
            {
                "archive_mode": "on",
                "archive_command": place.archive_command(),
                "wal_level": "replica",
                "archive_timeout": "60",
            }
        )
    except ServerUnavailable as exc:
        place.remove()
        pytest.fail(str(exc), pytrace=False)
    try:
        config = ("--config", str(place.config))
        server.query("postgres", "CREATE TABLE marker (id int PRIMARY KEY)")
        first = place.run("backup", "--physical", *config, server.url())
        assert first.returncode == 0, first.stderr
        xids: dict[int, int] = {}
        with server.connect() as conn:
            for i in range(10):
                row = conn.execute(
                    "INSERT INTO marker VALUES (%s) RETURNING xmin::text", (i,)
                ).fetchone()
                assert row is not None
                xids[i] = int(row[0])
                if i == 5:
                    made = place.run(
                        "restore-point", "before-migration", "--to", server.url(), *config
                    )
                    assert made.returncode == 0, made.stderr
                if i == 7:
                    second = place.run("backup", "--physical", *config, server.url())
                    assert second.returncode == 0, second.stderr
        archived_up_to(server)
        facts: dict[str, object] = {
            "xids": xids,
            "first": first.stdout.split()[1],
            "second": second.stdout.split()[1],
            "made": made.stdout,
        }
        yield place, server, facts
    finally:
        server.stop()
        place.remove()


def _recover(place: WalPlace, server: PgServer, name: str, *args: str) -> tuple[set[int], str]:
    datadir = place.root / name
    port = free_port()
    result = place.run(
        "restore",
        "--config",
        str(place.config),
        "--to-datadir",
        str(datadir),
        "--start",
        "--port",
        str(port),
        *args,
        timeout=300,
    )
    try:
        assert result.returncode == 0, result.stderr + result.stdout
        url = f"host=127.0.0.1 port={port} dbname=postgres user={server.user}"
        with psycopg.connect(url, password=server.password, autocommit=True) as conn:
            ids = {int(r[0]) for r in conn.execute("SELECT id FROM marker").fetchall()}
        return ids, result.stdout
    finally:
        stop_copy(place, server, datadir)


def test_restore_to_an_xid_recovers_up_to_its_commit(
    history: tuple[WalPlace, PgServer, dict[str, object]],
) -> None:
    place, server, facts = history
    xids = facts["xids"]
    assert isinstance(xids, dict)
    ids, output = _recover(place, server, "xid3", "--to-xid", str(xids[3]))
    assert ids == {0, 1, 2, 3}, output
    assert f"transaction {xids[3]}" in output
    assert str(facts["first"]) in output  # marker 3 committed before the second backup
    ids, output = _recover(place, server, "xid8", "--to-xid", str(xids[8]))
    assert ids == set(range(9)), output
    assert str(facts["second"]) in output  # after it: the newer base backup serves


def test_restore_to_a_named_restore_point(
    history: tuple[WalPlace, PgServer, dict[str, object]],
) -> None:
    place, server, facts = history
    assert "restore point before-migration at LSN" in str(facts["made"])
    listed = place.run("restore-point", "--list", "--json", "--config", str(place.config))
    assert listed.returncode == 0, listed.stderr
    points = json.loads(listed.stdout)
    assert [p["name"] for p in points] == ["before-migration"]
    assert points[0]["timeline"] == 1 and points[0]["stream"].startswith("postgresql-")
    assert "/" in points[0]["lsn"]
    ids, output = _recover(place, server, "point", "--to-restore-point", "before-migration")
    assert ids == set(range(6)), output
    # the base backup that ended before the point, not the newest one
    assert str(facts["first"]) in output and str(facts["second"]) not in output
    assert "restore point before-migration" in output
    # the same name again in the same stream is refused before the server is asked
    again = place.run(
        "restore-point", "before-migration", "--to", server.url(), "--config", str(place.config)
    )
    assert again.returncode == 2 and "exists already" in again.stderr, again.stderr
    assert again.stderr.count("error:") == 1


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (("--to-xid", "abc"), 2, "not a transaction id"),
        (("--to-xid", "1"), 2, "not a transaction id"),
        (("--to-timeline", "sideways"), 2, "not latest, current or a timeline"),
        (("--to-timeline", "0"), 2, "not latest, current or a timeline"),
        (("--to-restore-point", "../x"), 2, "not a restore point name"),
        (("--to-xid", "900", "--to-lsn", "0/1"), 2, "choose one of"),
        (("--to-restore-point", "never-made"), 3, "no restore point named 'never-made'"),
    ],
)
def test_bad_targets_exit_in_one_line_before_writing(
    history: tuple[WalPlace, PgServer, dict[str, object]],
    args: tuple[str, ...],
    code: int,
    words: str,
) -> None:
    place, _server, _facts = history
    datadir: Path = place.root / "never"
    result = place.run(
        "restore", "--config", str(place.config), "--to-datadir", str(datadir), *args
    )
    assert result.returncode == code, result.stderr
    assert words in result.stderr and result.stderr.count("error:") == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert not datadir.exists()


def test_a_target_never_reached_is_never_success(
    history: tuple[WalPlace, PgServer, dict[str, object]],
) -> None:
    """An xid that never committed: PostgreSQL replays all the archived WAL without
    meeting it; restore says so in one line (RecoveryEndedEarly, exit 5)."""
    place, server, _facts = history
    datadir = place.root / "never-reached"
    result = place.run(
        "restore",
        "--config",
        str(place.config),
        "--to-datadir",
        str(datadir),
        "--to-xid",
        "3999999999",
        "--start",
        "--port",
        str(free_port()),
        timeout=300,
    )
    stop_copy(place, server, datadir)
    assert result.returncode == 5, result.stderr + result.stdout
    assert "recovery ended before the target was reached" in result.stderr, result.stderr
    assert result.stderr.count("error:") == 1 and "recovered to" not in result.stdout


def test_a_named_base_backup_that_ended_after_the_target_is_refused(
    history: tuple[WalPlace, PgServer, dict[str, object]],
) -> None:
    place, _server, facts = history
    datadir = place.root / "too-new"
    result = place.run(
        "restore",
        str(facts["second"]),
        "--config",
        str(place.config),
        "--to-datadir",
        str(datadir),
        "--to-restore-point",
        "before-migration",
    )
    assert result.returncode == 3, result.stderr
    assert "ended after the target" in result.stderr and result.stderr.count("error:") == 1
    assert not datadir.exists()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ((), "give the restore point's NAME"),
        (("p1",), "say which cluster"),
        (("p1", "--to", "URL", "--target", "x"), "say which cluster"),
        (("p1", "--target", "nowhere"), "no target named 'nowhere'"),
        (("../p1", "--to", "URL"), "not a restore point name"),
        (("--list", "p1"), "--list goes without"),
    ],
)
def test_restore_point_usage_errors_exit_2(
    history: tuple[WalPlace, PgServer, dict[str, object]], args: tuple[str, ...], words: str
) -> None:
    place, server, _facts = history
    args = tuple(server.url() if a == "URL" else a for a in args)
    result = place.run("restore-point", *args, "--config", str(place.config))
    assert result.returncode == 2, result.stderr
    assert words in result.stderr and result.stderr.count("error:") == 1, result.stderr
