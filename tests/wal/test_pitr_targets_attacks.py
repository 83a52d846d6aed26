"""Hostile cases for the PITR targets (issue 18): restore-point names and roles, concurrent
and killed restore-point calls, xids with an epoch, timelines, odd --to-datadir folders,
two clusters in one repository, a damaged history file, a restore killed while laying
down. One real archiving cluster (and a second one for the two-stream cases) per module;
every bad input: exit code, exactly one ``error:`` line, no traceback, nothing written."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from strongroom_servers import ServerUnavailable
from strongroom_servers.postgres import PgServer, free_port, start_server
from tests.wal.support import WalPlace, archived_up_to, make_place, stop_copy

Cluster = tuple[WalPlace, PgServer, dict[str, Any]]


def _archiving(place: WalPlace) -> PgServer:
    return start_server(
        {
            "archive_mode": "on",
            "archive_command": place.archive_command(),
            "wal_level": "replica",
            "archive_timeout": "60",
        }
    )


def _backup_id(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout.split()[1]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """Cluster A: a base backup, markers 0-4 (xid of each kept), roles ``app`` (no
    rights) and ``half`` (pg_create_restore_point only). Cluster B archives into the same
    repository and has one base backup (two streams)."""
    place = make_place()
    servers: list[PgServer] = []
    try:
        try:
            server = _archiving(place)
            servers.append(server)
            other = _archiving(place)
            servers.append(other)
        except ServerUnavailable as exc:
            pytest.fail(str(exc), pytrace=False)
        config = ("--config", str(place.config))
        server.query("postgres", "CREATE TABLE marker (id int PRIMARY KEY)")
        server.query("postgres", "CREATE ROLE app LOGIN PASSWORD 'app-secret-77'")
        server.query("postgres", "CREATE ROLE half LOGIN PASSWORD 'half-secret-77'")
        server.query("postgres", "GRANT EXECUTE ON FUNCTION pg_create_restore_point(text) TO half")
        first = _backup_id(place.run("backup", "--physical", *config, server.url()))
        b_backup = _backup_id(place.run("backup", "--physical", *config, other.url()))
        xids: dict[int, int] = {}
        with server.connect() as conn:
            for i in range(5):
                row = conn.execute(
                    "INSERT INTO marker VALUES (%s) RETURNING xmin::text", (i,)
                ).fetchone()
                assert row is not None
                xids[i] = int(row[0])
                if i == 2:
                    made = place.run("restore-point", "after-2", "--to", server.url(), *config)
                    assert made.returncode == 0, made.stderr
        archived_up_to(server)
        archived_up_to(other)
        facts: dict[str, Any] = {"xids": xids, "first": first, "b_backup": b_backup}
        facts["other"] = other
        yield place, server, facts
    finally:
        for s in servers:
            s.stop()
        place.remove()


def _one_error(result: subprocess.CompletedProcess[str], code: int, words: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr, result.stdout)
    assert result.stderr.count("error:") == 1, result.stderr
    assert words in result.stderr, result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def _points_named(server: PgServer, name: str) -> int:
    """How many restore-point records named ``name`` the cluster's WAL holds (pg_waldump
    over its pg_wal, after a switch so the records are in finished segments)."""
    server.query("postgres", "SELECT pg_switch_wal()")
    found = 0
    for segment in sorted((server.data_dir / "pg_wal").glob("0000000*")):
        if len(segment.name) != 24:
            continue
        out = subprocess.run(
            [str(server.bin_dir / "pg_waldump"), "-r", "XLOG", str(segment)],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        found += len(re.findall(rf"RESTORE_POINT {re.escape(name)}\b", out))
    return found


def _restore(place: WalPlace, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return place.run("restore", "--config", str(place.config), *args, timeout=timeout)


def _listed(place: WalPlace) -> str:
    r = place.run("restore-point", "--list", "--json", "--config", str(place.config))
    assert r.returncode == 0, r.stderr
    return r.stdout


# --- restore-point names and roles ---------------------------------------------------


@pytest.mark.parametrize("name", ["has space", "quo'te", "ünïcode", "../x", "a" * 64, ".dot"])
def test_odd_restore_point_names_are_refused_before_connecting(cluster: Cluster, name: str) -> None:
    place, server, _ = cluster
    r = place.run("restore-point", name, "--to", server.url(), "--config", str(place.config))
    _one_error(r, 2, "not a restore point name")
    assert not [k for k in (place.repo / "restore-points").rglob("*") if name and name in str(k)]


def test_a_63_character_name_is_made_recorded_and_restorable(cluster: Cluster) -> None:
    """PostgreSQL keeps 63 bytes of a restore point name: the longest name strongroom
    accepts is kept whole, so the record and the WAL agree."""
    place, server, _ = cluster
    name = "n" * 63
    made = place.run("restore-point", name, "--to", server.url(), "--config", str(place.config))
    assert made.returncode == 0, made.stderr
    assert _points_named(server, name) == 1
    assert f'"{name}"' in _listed(place)
    datadir = place.root / "long-name"
    r = _restore(place, "--to-datadir", str(datadir), "--to-restore-point", name)
    assert r.returncode == 0, r.stderr
    assert f"recovery_target_name = '{name}'" in (datadir / "postgresql.auto.conf").read_text()


def test_a_role_without_rights_gets_one_line_and_no_point(cluster: Cluster) -> None:
    place, server, _ = cluster
    url = server.url().replace(f"{server.user}:{server.password}@", "app:app-secret-77@")
    r = place.run("restore-point", "by-app", "--to", url, "--config", str(place.config))
    _one_error(r, 5, "GRANT EXECUTE ON FUNCTION pg_create_restore_point(text), pg_switch_wal()")
    assert "app-secret-77" not in r.stderr + r.stdout
    assert "by-app" not in _listed(place)


def test_a_role_that_may_create_but_not_switch_makes_no_point(cluster: Cluster) -> None:
    """Before the fix the point was made, pg_switch_wal was refused and nothing was
    recorded: each retry put one more point of that name in the WAL."""
    place, server, _ = cluster
    url = server.url().replace(f"{server.user}:{server.password}@", "half:half-secret-77@")
    for _ in range(2):
        r = place.run("restore-point", "by-half", "--to", url, "--config", str(place.config))
        _one_error(r, 5, "GRANT EXECUTE ON FUNCTION pg_switch_wal() TO half")
    assert _points_named(server, "by-half") == 0
    assert "by-half" not in _listed(place)
    # the name is not burned: a superuser can make it afterwards
    ok = place.run("restore-point", "by-half", "--to", server.url(), "--config", str(place.config))
    assert ok.returncode == 0, ok.stderr


def test_a_restore_point_into_a_repository_without_a_base_backup_of_the_cluster(
    cluster: Cluster,
) -> None:
    """--config naming another repository (a newcomer's slip): before the fix the point
    was made and recorded where it could never be recovered to."""
    _place, server, _ = cluster
    elsewhere = make_place()
    try:
        r = elsewhere.run(
            "restore-point", "wrong-repo", "--to", server.url(), "--config", str(elsewhere.config)
        )
        _one_error(r, 3, "holds no base backup of this cluster")
        assert not (elsewhere.repo / "restore-points").exists() or not list(
            (elsewhere.repo / "restore-points").rglob("*.json")
        )
        assert _points_named(server, "wrong-repo") == 0
    finally:
        elsewhere.remove()


def test_concurrent_restore_points_of_one_name_make_one(cluster: Cluster) -> None:
    place, server, _ = cluster
    results: list[subprocess.CompletedProcess[str]] = []

    def one() -> None:
        results.append(
            place.run("restore-point", "race", "--to", server.url(), "--config", str(place.config))
        )

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(r.returncode for r in results)
    assert codes == [0, 2, 2, 2], [r.stderr for r in results]
    for r in results:
        if r.returncode == 2:
            assert r.stderr.count("error:") == 1 and "restore point named 'race'" in r.stderr
    assert _points_named(server, "race") == 1
    assert _listed(place).count('"race"') == 1


def _launcher_python(place: WalPlace) -> tuple[str, str]:
    text = place.launcher.read_text()
    found = re.search(r"PYTHONPATH='([^']*)' exec '([^']*)'", text)
    assert found is not None, text
    return found[1], found[2]


def test_a_restore_point_killed_between_server_and_record_burns_the_name(
    cluster: Cluster,
) -> None:
    """kill -9 after pg_create_restore_point, before the record is written: the point is
    in the WAL, the repository holds only the claim; a retry of that name is refused (it
    would put a second point of the name in the WAL, recovery stopping at the first)."""
    place, server, _ = cluster
    pythonpath, python = _launcher_python(place)
    code = (
        "import os, signal\n"
        "from strongroom.cli.options import location\n"
        "from strongroom.engines.postgresql.recovery_points import create_restore_point\n"
        "from strongroom.repository.restore_points import reserve_restore_point\n"
        f"repo = location(None, None, None, {str(place.config)!r}).open()\n"
        "def reserve(stream):\n"
        "    reserve_restore_point(repo.storage, stream, 'killed')\n"
        "    return lambda: None\n"
        f"create_restore_point({server.url()!r}, 'killed', reserve)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    extra: dict[str, Any] = {}
    if place.user is not None:
        extra = {"user": place.user.pw_uid, "group": place.user.pw_gid, "extra_groups": []}
    env = {**place.env(), "PYTHONPATH": pythonpath}
    dead = subprocess.run(
        [python, "-c", code],
        env=env,
        cwd=place.root,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        **extra,
    )
    assert dead.returncode == -signal.SIGKILL, dead.stderr
    assert _points_named(server, "killed") == 1
    again = place.run(
        "restore-point", "killed", "--to", server.url(), "--config", str(place.config)
    )
    _one_error(again, 2, "never recorded")
    assert _points_named(server, "killed") == 1
    assert '"killed"' not in _listed(place)
    r = _restore(
        place, "--to-datadir", str(place.root / "to-killed"), "--to-restore-point", "killed"
    )
    _one_error(r, 3, "no restore point named 'killed'")
    assert not (place.root / "to-killed").exists()


# --- restore targets -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (("--to-xid", "0"), 2, "not a transaction id"),
        (("--to-xid", "-1"), 2, "not a transaction id"),
        (("--to-xid", "\uff11\uff12"), 2, "not a transaction id"),
        (("--to-xid", str(1 << 64)), 2, "not a transaction id"),
        (("--to-xid", str((1 << 64) - 1)), 3, "earlier epoch"),
        (("--to-timeline", "-1"), 2, "not latest, current or a timeline"),
        (("--to-timeline", "0x2"), 2, "not latest, current or a timeline"),
        (("--to-timeline", str(1 << 32)), 2, "not latest, current or a timeline"),
        (("--to-timeline", "2 "), 3, "timeline 2 is not in the archive"),
        (("--to-restore-point", "after-2", "--to-xid", "900"), 2, "choose one of"),
        (("--port", "70000"), 2, "not a TCP port"),
        (("--to-time", "0001-01-01"), 2, "is not a time like"),
        (("--to-time", "9999-12-31T23:59:59-12:00"), 2, "is not a time like"),
        (("--to-lsn", "FFFFFFFF/FFFFFFFF"), 5, "is after the newest archived WAL"),
    ],
)
def test_bad_targets_exit_in_one_line(
    cluster: Cluster, args: tuple[str, ...], code: int, words: str
) -> None:
    place, _server, _ = cluster
    datadir = place.root / "never"
    r = _restore(place, "--to-datadir", str(datadir), "--target", _target_a(cluster), *args)
    _one_error(r, code, words)
    assert not datadir.exists()


def test_an_xid_with_an_epoch_never_recovers_its_earlier_namesake(cluster: Cluster) -> None:
    """8-byte xid8 form, epoch 1, low 32 bits of a transaction that committed (epoch 0):
    PostgreSQL compares the low 32 bits only; before the fix restore stopped after the
    old transaction and reported success."""
    place, _server, facts = cluster
    datadir = place.root / "epoch"
    xid = (1 << 32) + int(facts["xids"][1])
    r = _restore(
        place, "--to-datadir", str(datadir), "--target", _target_a(cluster), "--to-xid", str(xid)
    )
    _one_error(r, 3, f"would stop at id {facts['xids'][1]} of an earlier epoch")
    assert not datadir.exists()
    named = _restore(place, str(facts["first"]), "--to-datadir", str(datadir), "--to-xid", str(xid))
    _one_error(named, 3, "cannot recover to transaction")
    assert not datadir.exists()


@pytest.mark.parametrize("args", [("--start",), ("--to-xid", "900"), ("--port", "5999")])
def test_pitr_options_without_a_datadir(cluster: Cluster, args: tuple[str, ...]) -> None:
    place, _server, _ = cluster
    _one_error(_restore(place, *args), 2, "go with --to-datadir")


# --- where the data directory goes -----------------------------------------------------


def _target_a(cluster: Cluster) -> str:
    _place, server, _ = cluster
    return f"cluster@127.0.0.1:{server.port}"


def test_datadir_a_file_the_live_datadir_or_a_full_folder_is_refused(cluster: Cluster) -> None:
    place, server, _ = cluster
    file = place.root / "a-file"
    file.write_text("keep me")
    full = place.root / "full"
    full.mkdir()
    (full / "precious").write_text("keep me")
    live_before = sorted(p.name for p in server.data_dir.iterdir())
    for where in (file, server.data_dir, full):
        r = _restore(place, "--to-datadir", str(where), "--target", _target_a(cluster))
        _one_error(r, 2, "is not an empty folder")
        assert "restoring base backup" not in r.stdout  # refused before saying anything
    assert file.read_text() == "keep me" and (full / "precious").read_text() == "keep me"
    assert sorted(p.name for p in server.data_dir.iterdir()) == live_before


def test_datadir_inside_the_live_cluster_or_the_repository_is_refused(cluster: Cluster) -> None:
    """Before the fix a 23 MB cluster was laid down inside the live one's pg_wal, or in
    the repository folder (exit 0)."""
    place, server, _ = cluster
    for where in (server.data_dir / "pg_wal" / "inside", place.repo / "inside"):
        r = _restore(place, "--to-datadir", str(where), "--target", _target_a(cluster))
        _one_error(r, 2, "is inside the")
        assert not where.exists()


def test_datadir_of_another_user_is_a_usage_error(cluster: Cluster) -> None:
    """An empty folder the restoring user does not own: was exit 70 'unexpected failure
    (PermissionError)'."""
    place, _server, _ = cluster
    if place.user is None:
        pytest.skip("needs the tests to run as root (the server runs as another user)")
    theirs = place.root / "root-owned"
    theirs.mkdir(mode=0o755)
    r = _restore(place, "--to-datadir", str(theirs), "--target", _target_a(cluster))
    _one_error(r, 2, "cannot use")
    assert list(theirs.iterdir()) == []


def test_restore_point_into_a_path_with_spaces_recovers_and_starts(cluster: Cluster) -> None:
    place, server, _ = cluster
    parent = place.root / "with space 'q'"
    parent.mkdir()
    place.chown(parent)
    datadir = parent / "data dir"
    port = free_port()
    r = _restore(
        place,
        "--to-datadir",
        str(datadir),
        "--to-restore-point",
        "after-2",
        "--start",
        "--port",
        str(port),
    )
    try:
        assert r.returncode == 0, r.stderr + r.stdout
        assert f"pg_ctl -D {shlex.quote(str(datadir))}" not in r.stdout  # started, not told
        url = f"host=127.0.0.1 port={port} dbname=postgres user={server.user}"
        with psycopg.connect(url, password=server.password, autocommit=True) as conn:
            ids = {int(row[0]) for row in conn.execute("SELECT id FROM marker").fetchall()}
        assert ids == {0, 1, 2}
    finally:
        stop_copy(place, server, datadir)


def test_restore_killed_while_laying_down_then_again_into_the_folder(cluster: Cluster) -> None:
    place, _server, _ = cluster
    datadir = place.root / "killed-lay-down"
    extra: dict[str, Any] = {}
    if place.user is not None:
        extra = {"user": place.user.pw_uid, "group": place.user.pw_gid, "extra_groups": []}
    proc = subprocess.Popen(
        [
            str(place.launcher),
            "restore",
            "--config",
            str(place.config),
            "--to-datadir",
            str(datadir),
            "--target",
            _target_a(cluster),
        ],
        env=place.env(),
        cwd=place.root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        **extra,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if datadir.exists() and any(datadir.iterdir()):
            break
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert datadir.exists()
    left = sorted(p.name for p in datadir.iterdir())
    r = _restore(place, "--to-datadir", str(datadir), "--target", _target_a(cluster))
    _one_error(r, 2, "is not an empty folder")
    assert sorted(p.name for p in datadir.iterdir()) == left  # the second run touched nothing


# --- two clusters, one repository ---------------------------------------------------------


def test_two_clusters_latest_without_a_target_is_refused(cluster: Cluster) -> None:
    """Before the fix: the newest base backup of either cluster was laid down."""
    place, _server, _ = cluster
    datadir = place.root / "which"
    r = _restore(place, "--to-datadir", str(datadir))
    _one_error(r, 2, "base backups of 2 clusters")
    assert not datadir.exists()


def test_two_clusters_the_target_or_the_restore_point_decides(cluster: Cluster) -> None:
    place, _server, facts = cluster
    r = _restore(
        place, "--to-datadir", str(place.root / "a-latest"), "--target", _target_a(cluster)
    )
    assert r.returncode == 0, r.stderr
    assert str(facts["first"]) in r.stdout and str(facts["b_backup"]) not in r.stdout
    # the point names its stream: cluster A's base backup, though B's is newer
    p = _restore(
        place, "--to-datadir", str(place.root / "a-point"), "--to-restore-point", "after-2"
    )
    assert p.returncode == 0, p.stderr
    assert str(facts["first"]) in p.stdout


def test_a_name_in_both_streams_the_named_base_backup_decides(cluster: Cluster) -> None:
    """Before the fix the error said to name the base backup, and naming it did not help."""
    place, server, facts = cluster
    other: PgServer = facts["other"]
    for url in (server.url(), other.url()):
        made = place.run("restore-point", "both", "--to", url, "--config", str(place.config))
        assert made.returncode == 0, made.stderr
    datadir = place.root / "both"
    r = _restore(place, "--to-datadir", str(datadir), "--to-restore-point", "both")
    _one_error(r, 2, "exists in several streams")
    assert not datadir.exists()
    r = _restore(
        place, str(facts["b_backup"]), "--to-datadir", str(datadir), "--to-restore-point", "both"
    )
    assert r.returncode == 0, r.stderr
    assert str(facts["b_backup"]) in r.stdout


def test_a_point_of_the_same_name_made_outside_strongroom_is_never_success(
    cluster: Cluster,
) -> None:
    """SELECT pg_create_restore_point('outside') by hand, rows, then strongroom
    restore-point outside: PostgreSQL stops at the first one; before the fix restore
    reported success with the rows in between missing."""
    place, server, _ = cluster
    server.query("postgres", "SELECT pg_create_restore_point('outside')")
    server.query("postgres", "INSERT INTO marker VALUES (100)")
    made = place.run(
        "restore-point", "outside", "--to", server.url(), "--config", str(place.config)
    )
    assert made.returncode == 0, made.stderr
    archived_up_to(server)
    datadir = place.root / "outside"
    r = _restore(
        place,
        "--to-datadir",
        str(datadir),
        "--to-restore-point",
        "outside",
        "--start",
        "--port",
        str(free_port()),
    )
    stop_copy(place, server, datadir)
    _one_error(r, 5, "a point of that name made outside strongroom comes first")
    assert "recover with --to-lsn" in r.stderr and "recovered to" not in r.stdout


# --- a damaged history file (runs last: it changes cluster B's stream) --------------------------


def test_a_damaged_history_file_counts_only_when_recovery_reads_it(cluster: Cluster) -> None:
    place, _server, facts = cluster
    other: PgServer = facts["other"]
    target = f"cluster@127.0.0.1:{other.port}"
    stream = next(
        p.name for p in (place.repo / "logs").iterdir() if _has_backup_of(place, p.name, other)
    )
    history = place.root / "00000002.history"
    push = ("wal-push", "--config", str(place.config), "--stream", stream, str(history))
    for garbage in ("not a history file\n", "2\t0/3000000\tnames itself\n", ""):
        history.write_text(garbage)
        place.chown(history)
        # before the fix: archived, and then no real 00000002.history could ever be
        _one_error(place.run(*push), 7, "is not a timeline history file")
    assert not (place.repo / "logs" / stream / "history").exists()
    history.write_text("1\t0/3000000\tno recovery target specified\n")
    pushed = place.run(*push)
    assert pushed.returncode == 0, pushed.stderr
    (stored,) = (place.repo / "logs" / stream / "history").iterdir()
    damaged = bytearray(stored.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    stored.write_bytes(bytes(damaged))
    datadir = place.root / "b-latest"
    r = _restore(place, "--to-datadir", str(datadir), "--target", target)
    _one_error(r, 7, "is damaged")
    assert not datadir.exists()
    r = _restore(place, "--to-datadir", str(datadir), "--target", target, "--to-timeline", "2")
    _one_error(r, 7, "is damaged")
    # timeline 1 (current) never reads it: before the fix this was refused as well
    ok = _restore(
        place, "--to-datadir", str(datadir), "--target", target, "--to-timeline", "current"
    )
    assert ok.returncode == 0, ok.stderr
    assert str(facts["b_backup"]) in ok.stdout


def _has_backup_of(place: WalPlace, stream: str, server: PgServer) -> bool:
    row = server.query("postgres", "SELECT system_identifier FROM pg_control_system()")[0]
    return stream == f"postgresql-{row[0]}"
