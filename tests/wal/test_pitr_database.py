"""Point-in-time restore of one database into the live server (issue 18, point 4), on a
real cluster that archives its WAL with ``strongroom wal-push``: ``shop`` (a quoted
CamelCase table, an enum column, objects owned by a non-superuser role) and ``other``;
rows committed with their timestamps, a base backup, more rows, then a bad migration after
the moment T. The walk-through of docs/operations.md ("Recover one database from a bad
migration") is run as written, with this test's paths, URL and moment put in."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from strongroom.cli.options import location
from strongroom.errors import BackupNotFound
from strongroom.services.restore_choice import is_pitr_dump, latest_of
from strongroom_servers.postgres import PgServer
from tests.docs.test_examples import parse_command_line, strongroom_lines
from tests.helpers import REPO_ROOT
from tests.wal.support import WalPlace, archived_up_to, make_place, start_archiving

DOC_CONFIG = "/etc/strongroom/wal.toml"
DOC_TIME = "2026-11-30 14:03:11+01"
DOC_URL = "postgresql://postgres@localhost/shop"


@dataclass
class Scene:
    place: WalPlace
    server: PgServer
    moment: datetime  # T: the commit time of the last good row
    good: list[int]  # the ids of "Orders" committed at or before T
    after: list[int]  # the ids of "Orders" now (after the bad migration)
    other: list[tuple[Any, ...]]  # the rows of other.t now


def _commit_row(conn: psycopg.Connection[Any], i: int) -> datetime:
    conn.execute(
        'INSERT INTO "Orders" VALUES (%s, %s, %s)', (i, "paid" if i % 2 else "new", f"n{i}")
    )
    row = conn.execute(
        'SELECT pg_xact_commit_timestamp(xmin) FROM "Orders" WHERE id = %s', (i,)
    ).fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def scene() -> Iterator[Scene]:
    place = make_place()
    server = start_archiving(
        place,
        {
            "archive_mode": "on",
            "wal_level": "replica",
            "archive_timeout": "60",
            "track_commit_timestamp": "on",
        },
    )
    try:
        server.query("postgres", "CREATE ROLE app NOLOGIN")
        server.query("postgres", "CREATE DATABASE shop OWNER app")
        server.create_database("other")
        server.psql(
            "shop",
            "CREATE TYPE status AS ENUM ('new', 'paid');"
            'CREATE TABLE "Orders" (id int PRIMARY KEY, state status NOT NULL, note text);'
            'ALTER TYPE status OWNER TO app; ALTER TABLE "Orders" OWNER TO app;',
        )
        server.psql("other", "CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2);")
        with server.connect("shop") as conn:
            for i in range(1, 4):
                _commit_row(conn, i)
            backup = place.run("backup", "--physical", "--config", str(place.config), server.url())
            assert backup.returncode == 0, backup.stderr
            moment = datetime.min
            for i in range(4, 8):
                moment = _commit_row(conn, i)
            # the bad migration, after T; then life goes on (other too)
            conn.execute('ALTER TABLE "Orders" DROP COLUMN note')
            conn.execute('DELETE FROM "Orders" WHERE id > 2')
            conn.execute("INSERT INTO \"Orders\" VALUES (20, 'new')")
        server.query("other", "INSERT INTO t VALUES (3)")
        archived_up_to(server)
        after = [r[0] for r in server.query("shop", 'SELECT id FROM "Orders" ORDER BY id')]
        other = server.query("other", "SELECT id FROM t ORDER BY id")
        yield Scene(place, server, moment, list(range(1, 8)), after, other)
    finally:
        server.stop()
        place.remove()


def _walkthrough(scene: Scene, *, os_user: bool = False) -> list[list[str]]:
    """docs/operations.md's commands of the section, as argument lists for this scene."""
    text = (REPO_ROOT / "docs" / "operations.md").read_text()
    section = text.split("## Recover one database from a bad migration, into the live server")[1]
    section = section.split("\n## ")[0]
    commands = []
    for line in strongroom_lines(section):
        parse_command_line(line)  # the real parser accepts it as written
        line = line.replace(DOC_CONFIG, str(scene.place.config))
        line = line.replace(DOC_TIME, scene.moment.isoformat())
        line = line.replace(DOC_URL, scene.server.url("shop"))
        commands.append(shlex.split(line)[1:])
    assert len(commands) == 4, commands
    return commands


def _ids(server: PgServer, table: str = '"Orders"') -> list[int]:
    return [r[0] for r in server.query("shop", f"SELECT id FROM {table} ORDER BY id")]


def _columns(server: PgServer, schema: str = "public") -> list[str]:
    rows = server.query(
        "shop",
        "SELECT column_name FROM information_schema.columns WHERE table_schema = %s"
        " AND table_name = 'Orders' ORDER BY ordinal_position",
        (schema,),
    )
    return [r[0] for r in rows]


def _no_throwaway_left(output: str) -> None:
    found = re.search(r"throwaway cluster in (\S+)", output)
    assert found, output
    assert not Path(found[1]).exists(), f"{found[1]} was left behind"


def test_walkthrough_restores_shop_as_of_t_and_rollback_goes_back(scene: Scene) -> None:
    place, server = scene.place, scene.server
    dry, restore, rollback, _table = _walkthrough(scene)
    planned = place.run(*dry)
    assert planned.returncode == 0, planned.stderr + planned.stdout
    assert "point-in-time restore plan" in planned.stdout and "dry run" in planned.stdout
    assert _ids(server) == scene.after  # nothing changed
    with server.connect("shop") as session:  # a session open on shop during the restore
        session.execute("SELECT 1")
        clock = time.monotonic()
        result = place.run(*restore)
        seconds = time.monotonic() - clock
    assert result.returncode == 0, result.stderr + result.stdout
    out = result.stdout
    print(f"\n{out}\npoint-in-time restore of shop: {seconds:.1f} s wall")
    assert "restore complete and verified" in out
    assert re.search(r"safety backup \S+ of target shop taken", out), out
    _no_throwaway_left(out)
    # exactly the rows as of T, the dropped column back; owner and enum intact
    assert _ids(server) == scene.good
    assert _columns(server) == ["id", "state", "note"]
    assert server.query("shop", 'SELECT note FROM "Orders" WHERE id = 7') == [("n7",)]
    owners = server.query(
        "shop",
        "SELECT (SELECT tableowner FROM pg_tables WHERE tablename = 'Orders'),"
        " (SELECT pg_get_userbyid(typowner) FROM pg_type WHERE typname = 'status'),"
        " (SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'shop'),"
        " (SELECT udt_name FROM information_schema.columns WHERE table_name = 'Orders'"
        "   AND column_name = 'state')",
    )
    assert owners == [("app", "app", "app", "status")]
    assert server.query("other", "SELECT id FROM t ORDER BY id") == scene.other
    # the dump is in the repository, tagged; latest for an ordinary restore passes it over
    dumped = re.search(r"dumped .* as backup (\S+)", out)
    assert dumped, out
    manifest = json.loads((place.repo / "backups" / f"{dumped[1]}.json").read_text())
    assert manifest["tags"][0] == "pitr" and manifest["tags"][1].startswith("pitr-base:")
    # latest, for an ordinary restore of target shop, passes the pitr dump (and the
    # safety backup) over: there is no ordinary backup of shop
    repository = location(str(place.repo), place.key, None).open()
    with pytest.raises(BackupNotFound, match="there is no backup of target 'shop'"):
        latest_of(repository, "shop")
    assert is_pitr_dump(repository.resolve(dumped[1]))
    # rollback: back to the state just before the restore (after the migration)
    back = place.run(*rollback)
    assert back.returncode == 0, back.stderr + back.stdout
    assert _ids(server) == scene.after
    assert _columns(server) == ["id", "state"]


def test_one_table_into_a_side_schema_as_root_with_os_user(scene: Scene) -> None:
    place, server = scene.place, scene.server
    if place.user is None:
        pytest.skip("runs as root with --os-user (the tests run as root in CI)")
    *_, table = _walkthrough(scene)
    live = _ids(server)
    result = subprocess.run(
        [str(place.launcher), *table, "--os-user", place.user.pw_name],
        env=place.env(),
        cwd=place.root,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert f"as {place.user.pw_name}" in result.stdout
    _no_throwaway_left(result.stdout)
    assert _ids(server, 'before_migration."Orders"') == scene.good
    assert _columns(server, "before_migration") == ["id", "state", "note"]
    assert _ids(server) == live  # the live table untouched
    # as root without --os-user: the owner of the server's data directory (dry run)
    detected = subprocess.run(
        [str(place.launcher), *table, "--dry-run"],
        env=place.env(),
        cwd=place.root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert detected.returncode == 0, detected.stderr
    assert f"OS user {place.user.pw_name} (the server's data directory" in detected.stdout
    refused = subprocess.run(
        [str(place.launcher), *table, "--os-user", "root"],
        env=place.env(),
        cwd=place.root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.count("error:") == 1 and "does not run as root" in refused.stderr


def test_latest_puts_the_newest_archived_state_beside_the_live_table(scene: Scene) -> None:
    place, server = scene.place, scene.server
    live = _ids(server)
    result = place.run(
        *("restore", "latest", "--config", str(place.config), "--database", "shop"),
        *("--table", 'public."Orders"', "--into-schema", "at_latest", "--to", server.url("shop")),
    )
    assert result.returncode == 0, result.stderr + result.stdout
    _no_throwaway_left(result.stdout)
    assert _ids(server, 'at_latest."Orders"') == scene.after  # the migration is archived too
    assert _columns(server, "at_latest") == ["id", "state"]
    assert _ids(server) == live


def test_bad_inputs_are_one_error_line(scene: Scene) -> None:
    place, server = scene.place, scene.server
    base = ["restore", "--config", str(place.config), "--to", server.url("shop"), "--yes"]
    cases = [
        (
            [*base, "--to-time", scene.moment.isoformat(), "--database", "nosuch"],
            2,
            "holds no database 'nosuch'; it holds ",
        ),
        (
            [*base, "--to-time", "2001-01-01 00:00:00+00", "--database", "shop"],
            3,
            "before the oldest base backup's end",
        ),
        (
            [
                "restore",
                "--config",
                str(place.config),
                "--to-datadir",
                str(place.root / "x"),
                "--to-time",
                scene.moment.isoformat(),
                "--database",
                "shop",
            ],
            2,
            "--database goes without --to-datadir",
        ),
    ]
    past = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    cases.append(  # past the newest archived commit: found by recovery, the cluster removed
        ([*base, "--to-time", past, "--database", "shop"], 5, "past the end of the archived WAL")
    )
    for args, code, words in cases:
        result = place.run(*args)
        if words.startswith("holds no database"):
            assert "other" in result.stderr and "shop" in result.stderr, result.stderr
        assert result.returncode == code, (args, result.stderr)
        assert words in result.stderr, result.stderr
        assert result.stderr.count("error:") == 1, result.stderr
        assert "Traceback" not in result.stderr
        if code == 5:
            _no_throwaway_left(result.stdout)
            assert "server.log" not in result.stderr  # removed with the folder
    assert _ids(server) == scene.after


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["term", "kill"])
def test_a_signal_during_recovery_leaves_no_throwaway_cluster(
    scene: Scene, signum: signal.Signals
) -> None:
    """Recovery is held at a known point: once the throwaway cluster's folder exists, the
    key file becomes a FIFO, so the recovering server's ``wal-fetch`` waits on it (the
    test sees it open the FIFO); then SIGTERM (cleaned up at once) or SIGKILL (the next
    start sweeps the folder and stops the server left in it)."""
    place, server = scene.place, scene.server
    before = _ids(server)
    user = place.user
    uid = user.pw_uid if user is not None else os.getuid()
    extra: dict[str, Any] = {}
    if user is not None:
        extra = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    tmp = Path(place.env().get("TMPDIR") or tempfile.gettempdir())
    base = tmp / f"strongroom-{uid}"
    existing = set(base.glob("*/pitr-*"))
    proc = subprocess.Popen(
        [
            *(str(place.launcher), "restore", "--config", str(place.config), "--yes"),
            *("--to-time", scene.moment.isoformat(), "--database", "shop"),
            *("--to", server.url("shop")),
        ],
        env=place.env(),
        cwd=place.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **extra,
    )
    real_key = place.key.with_name("repo.key.real")
    writer = None
    try:
        deadline = time.monotonic() + 120
        folder = None
        while folder is None:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no throwaway cluster appeared"
            new = set(base.glob("*/pitr-*")) - existing
            folder = next(iter(new), None)
            time.sleep(0.02)
        os.rename(place.key, real_key)
        os.mkfifo(place.key, 0o600)
        place.chown(place.key)
        while writer is None:  # wal-fetch, run by the recovering server, opens the key
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "recovery never fetched WAL"
            try:
                writer = os.open(place.key, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                time.sleep(0.02)
        assert (folder / "data" / "postmaster.pid").exists()
        proc.send_signal(signum)
        _out, err = proc.communicate(timeout=120)
        if signum == signal.SIGKILL:
            assert proc.returncode == -signal.SIGKILL
            assert folder.exists()  # nothing ran to clean up: the next start sweeps it
            swept = place.run("--help")
            assert swept.returncode == 0, swept.stderr
            # another strongroom of this user (the archiver's wal-push) may be sweeping it
            # right now, holding its lock while it stops the server: then it is that one's
            gone = time.monotonic() + 30
            while folder.exists() and time.monotonic() < gone:
                time.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        if writer is not None:
            os.close(writer)
        if real_key.exists():
            place.key.unlink(missing_ok=True)
            os.rename(real_key, place.key)
    if signum == signal.SIGTERM:
        assert proc.returncode == 143, err
        assert err.count("error:") == 1 and "SIGTERM" in err, err
    assert not folder.exists(), f"{folder} was left behind"
    postgres = subprocess.run(
        ["pgrep", "-f", str(folder)], capture_output=True, text=True, check=False
    )
    assert postgres.stdout.strip() == "", postgres.stdout
    assert _ids(server) == before
    names = server.query("postgres", "SELECT datname FROM pg_database WHERE datname LIKE 'shop_%'")
    assert not [n for (n,) in names if "_sr_" in n], names
