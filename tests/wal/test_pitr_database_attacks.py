"""Point-in-time restore of one database, attacked (issue 18, point 4): names that need
quoting, a table whose schema holds a dot restored beside the live data, a restore into
another database than the one recovered, an OS user that cannot read the key, a database
created after the base backup, a moment inside the base backup, a table that already
exists, SIGINT after recovery. One archiving cluster for the module."""

from __future__ import annotations

import json
import os
import pwd
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from strongroom_servers.postgres import PgServer
from tests.wal.support import WalPlace, archived_up_to, make_place, start_archiving
from tests.wal.test_pitr_database import _no_throwaway_left

ODD = 'Camel "Shop" ü'  # a database name that needs quoting everywhere
ODD_SQL = '"Camel ""Shop"" ü"'
ODD_TABLE = '"Sch.ema"."we.ird ""T"""'


@dataclass
class Attack:
    place: WalPlace
    server: PgServer
    moment: str  # T, ISO: after the base backup, before the bad change
    base_window: tuple[str, str]  # the base backup's start and end (ISO)


def _one_error(result: subprocess.CompletedProcess[str], code: int, words: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr, result.stdout[-800:])
    assert result.stderr.count("error:") == 1 and words in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and "s3cret" not in result.stderr + result.stdout


@pytest.fixture(scope="module")
def attack() -> Iterator[Attack]:
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
        server.query("postgres", "CREATE ROLE app NOLOGIN")
        server.query("postgres", f"CREATE DATABASE {ODD_SQL} OWNER app")
        server.create_database("shop")
        server.psql(
            ODD,
            f'CREATE SCHEMA "Sch.ema"; CREATE TABLE {ODD_TABLE} (id int PRIMARY KEY);'
            f"ALTER TABLE {ODD_TABLE} OWNER TO app; INSERT INTO {ODD_TABLE} VALUES (1), (2);",
        )
        server.psql(
            "shop",
            'CREATE TABLE "Orders" (id int PRIMARY KEY); INSERT INTO "Orders" VALUES (1), (2);',
        )
        backup = place.run("backup", "--physical", "--config", str(place.config), server.url())
        assert backup.returncode == 0, backup.stderr
        found = re.search(r"backup (\d{8}T\d{6}Z-[0-9a-f]{8})", backup.stdout + backup.stderr)
        assert found, backup.stdout
        manifest = json.loads((place.repo / "backups" / f"{found[1]}.json").read_text())
        started = str(manifest["started_at"])
        server.create_database("late")  # exists at T, in no base backup
        server.psql(ODD, f"INSERT INTO {ODD_TABLE} VALUES (3)")
        server.psql("shop", 'INSERT INTO "Orders" VALUES (3)')
        moment = server.query("shop", "SELECT now()")[0][0]
        time.sleep(1.1)  # the bad change, well after T
        server.psql(ODD, f"DELETE FROM {ODD_TABLE}")
        server.psql("shop", 'DELETE FROM "Orders" WHERE id = 3; INSERT INTO "Orders" VALUES (9)')
        archived_up_to(server)
        yield Attack(place, server, moment.isoformat(), (started, moment.isoformat()))
    finally:
        server.stop()
        place.remove()


def _env(place: WalPlace) -> dict[str, str]:
    """The place's environment with a temp folder of this module's own: the throwaway
    folders of these runs never show up in another module's (test_pitr_database's signal
    test looks for the one new folder in the shared temp folder)."""
    tmp = place.root / "tmp"
    if not tmp.exists():
        tmp.mkdir(mode=0o700)
        place.chown(tmp)
    return {**place.env(), "TMPDIR": str(tmp)}


def _run(place: WalPlace, *args: str) -> subprocess.CompletedProcess[str]:
    """``place.run`` with :func:`_env`."""
    extra: dict[str, Any] = {}
    if place.user is not None:
        extra = {"user": place.user.pw_uid, "group": place.user.pw_gid, "extra_groups": []}
    return subprocess.run(
        [str(place.launcher), *args],
        env=_env(place),
        cwd=place.root,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        **extra,
    )


def _url(server: PgServer, database: str) -> str:
    return server.url(quote(database, safe=""))


def _ids(server: PgServer, database: str, table: str) -> list[int]:
    rows = server.query(quote(database, safe=""), f"SELECT id FROM {table} ORDER BY id")
    return [r[0] for r in rows]


def _restore(a: Attack, database: str, to: str, *more: str) -> subprocess.CompletedProcess[str]:
    return _run(
        a.place,
        *("restore", "--config", str(a.place.config), "--to-time", a.moment),
        *("--database", database, "--to", to, "--yes", *more),
    )


def test_an_odd_database_name_and_a_table_whose_schema_holds_a_dot(attack: Attack) -> None:
    """The table as of T goes beside the live one into public and is verified (the side
    copy's statistics were looked up by the schema's first dot: 'not verified', then
    '(verified)' printed all the same)."""
    server = attack.server
    result = _restore(
        attack, ODD, _url(server, ODD), "--table", ODD_TABLE, "--into-schema", "public"
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert "not verified" not in result.stderr + result.stdout, result.stderr
    _no_throwaway_left(result.stdout)
    assert _ids(server, ODD, 'public."we.ird ""T"""') == [1, 2, 3]
    assert _ids(server, ODD, ODD_TABLE) == []  # the live table untouched
    # the table's own schema already holds it: one line, nothing changed
    again = _restore(
        attack, ODD, _url(server, ODD), "--table", ODD_TABLE, "--into-schema", "Sch.ema"
    )
    _one_error(again, 5, "already exists")
    assert "throwaway cluster in" not in again.stdout  # refused before any recovery
    assert _ids(server, ODD, ODD_TABLE) == []


def test_shop_into_a_copy_and_the_copy_does_not_take_over_shops_target(attack: Attack) -> None:
    """The pitr dump filed under shop_copy is of the throwaway's database 'shop': it made
    shop_copy 'the target whose backups are of database shop', so a later restore into shop
    filed its dump and safety backup under shop_copy."""
    server = attack.server
    result = _restore(attack, "shop", server.url("shop_copy"))
    assert result.returncode == 0, result.stderr + result.stdout
    assert "restore complete and verified" in result.stdout
    assert _ids(server, "shop_copy", '"Orders"') == [1, 2, 3]
    assert _ids(server, "shop", '"Orders"') == [1, 2, 9]  # the source untouched
    dry = _restore(attack, "shop", server.url("shop"), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "filed under target shop with tags" in dry.stdout, dry.stdout
    # the base backup's URL named database postgres: its cluster target is no logical
    # destination's (the dump of postgres went under target cluster@…)
    maintenance = _restore(attack, "postgres", server.url("postgres"), "--dry-run")
    assert maintenance.returncode == 0, maintenance.stderr
    assert "filed under target postgres with tags" in maintenance.stdout, maintenance.stdout


def test_bad_inputs_fail_before_any_recovery(attack: Attack) -> None:
    place, server = attack.place, attack.server
    cases: list[tuple[list[str], int, str]] = [
        (["--database", "late"], 2, "a database created after a base backup"),
        (
            ["--database", "shop", "--to-time", attack.base_window[0]],
            3,
            "before the oldest base backup",
        ),
        (["--database", "nosuch", "--os-user", "nosuchuser"], 2, "holds no database 'nosuch'"),
        (["--database", "shop", "--table", 'public."Orders'], 2, "cannot read table name"),
        (["--database", "shop", "--table", '"Orders"'], 5, 'table "public"."Orders" already'),
    ]
    for more, code, words in cases:
        args = ["restore", "--config", str(place.config), "--to-time", attack.moment]
        args += ["--to", server.url("shop"), "--yes", *more]
        result = _run(place, *args)
        _one_error(result, code, words)
        assert "throwaway cluster in" not in result.stdout
    assert _ids(server, "shop", '"Orders"') == [1, 2, 9]


def test_as_root_an_os_user_who_cannot_read_the_key_is_refused_first(attack: Attack) -> None:
    place, server = attack.place, attack.server
    if os.geteuid() != 0 or place.user is None:
        pytest.skip("needs root (--os-user)")
    nobody = pwd.getpwnam("nobody").pw_name
    run = [str(place.launcher), "restore", "--config", str(place.config), "--to-time"]
    run += [attack.moment, "--database", "shop", "--to", server.url("shop"), "--yes"]
    for user, words in ((nobody, f"cannot read {place.key}"), ("nosuchuser", "no such OS user")):
        result = subprocess.run(
            [*run, "--os-user", user],
            env=_env(place),
            cwd=place.root,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        _one_error(result, 2, words)
        assert "throwaway cluster in" not in result.stdout
    assert _ids(server, "shop", '"Orders"') == [1, 2, 9]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGKILL], ids=["int", "kill"])
def test_a_signal_during_the_dump_leaves_nothing_after_the_next_command(
    attack: Attack, signum: signal.Signals
) -> None:
    """SIGINT once recovery is over (the dump runs): exit 130, one line, the throwaway gone.
    kill -9 there: the folder and its server stay until the next command of that user (a
    plain ``backup`` here) sweeps them; the live database unchanged and open either way."""
    place, server = attack.place, attack.server
    extra: dict[str, Any] = {}
    if place.user is not None:
        extra = {"user": place.user.pw_uid, "group": place.user.pw_gid, "extra_groups": []}
    proc = subprocess.Popen(
        [
            *(str(place.launcher), "restore", "--config", str(place.config), "--to-time"),
            *(attack.moment, "--database", "shop", "--to", server.url("shop"), "--yes"),
        ],
        env=_env(place),
        cwd=place.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **extra,
    )
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "recovered to" in line:  # the dump starts now
            proc.send_signal(signum)
            break
    _rest, err = proc.communicate(timeout=120)
    folder = re.search(r"throwaway cluster in (\S+)", "".join(seen))
    assert folder, seen
    if signum == signal.SIGINT:
        assert proc.returncode == 130, err
        assert err.count("error:") == 1 and "SIGINT" in err, err
    else:
        assert proc.returncode == -signal.SIGKILL
        assert Path(folder[1]).exists()  # nothing ran to clean up
        backup = _run(place, "backup", "--config", str(place.config), server.url("shop"))
        assert backup.returncode == 0, backup.stderr
        gone = time.monotonic() + 30  # the archiver's wal-push may be the one sweeping it
        while Path(folder[1]).exists() and time.monotonic() < gone:
            time.sleep(0.1)
    assert not Path(folder[1]).exists()
    left = subprocess.run(["pgrep", "-f", folder[1]], capture_output=True, text=True, check=False)
    assert left.stdout.strip() == "", left.stdout
    assert _ids(server, "shop", '"Orders"') == [1, 2, 9]
    names = server.query("postgres", "SELECT datname FROM pg_database WHERE datname LIKE 'shop%'")
    assert sorted(n for (n,) in names if "_sr_" in n) == [], names


@pytest.mark.parametrize("size", ["20m", "48m"], ids=["base-backup", "wal"])
def test_a_full_temp_folder_is_one_line_and_leaves_nothing(attack: Attack, size: str) -> None:
    """TMPDIR on a small tmpfs: 20 MiB does not hold the base backup (was: 'unexpected
    failure (OSError)', exit 70); 48 MiB holds it but not a WAL segment beside it (was:
    'could not locate required checkpoint record', wal-fetch's reason only in -v)."""
    place, server = attack.place, attack.server
    if os.geteuid() != 0 or place.user is None:
        pytest.skip("mounts a tmpfs (root)")
    small = place.root / f"small-{size}"
    small.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=1777", "tmpfs", str(small)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    try:
        result = subprocess.run(
            [
                *(str(place.launcher), "restore", "--config", str(place.config), "--to-time"),
                *(attack.moment, "--database", "shop", "--to", server.url("shop"), "--yes"),
            ],
            env={**_env(place), "TMPDIR": str(small)},
            cwd=place.root,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            user=place.user.pw_uid,
            group=place.user.pw_gid,
            extra_groups=[],
        )
        words = "point TMPDIR at a folder with room" if size == "20m" else "No space left"
        _one_error(result, 5, words)
        _no_throwaway_left(result.stdout)
        assert not any(small.rglob("pitr-*")), list(small.rglob("*"))
    finally:
        subprocess.run(["umount", str(small)], check=False)
    assert _ids(server, "shop", '"Orders"') == [1, 2, 9]


def test_two_at_once_into_the_same_database(attack: Attack) -> None:
    """Both end cleanly (each swap waits for the other's); the database holds shop as of
    T, open for connections, no staged copy left, both throwaway folders gone."""
    place, server = attack.place, attack.server
    server.create_database("twice")
    server.psql("twice", "CREATE TABLE t (id int); INSERT INTO t VALUES (42);")
    extra: dict[str, Any] = {}
    if place.user is not None:
        extra = {"user": place.user.pw_uid, "group": place.user.pw_gid, "extra_groups": []}
    command = [
        *(str(place.launcher), "restore", "--config", str(place.config), "--to-time"),
        *(attack.moment, "--database", "shop", "--to", server.url("twice"), "--yes"),
    ]
    procs = [
        subprocess.Popen(
            command,
            env=_env(place),
            cwd=place.root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            **extra,
        )
        for _ in range(2)
    ]
    results = [(p, *p.communicate(timeout=200)) for p in procs]
    for proc, out, err in results:
        assert proc.returncode == 0 or err.count("error:") == 1, (proc.returncode, err)
        assert "Traceback" not in err
        _no_throwaway_left(out)
    assert any(p.returncode == 0 for p, _o, _e in results), [e for _p, _o, e in results]
    assert _ids(server, "twice", '"Orders"') == [1, 2, 3]
    rows = server.query(
        "postgres",
        "SELECT datname, datallowconn FROM pg_database WHERE datname LIKE 'twice%'",
    )
    assert [r for r in rows if "_sr_" in r[0] or not r[1]] == [], rows
