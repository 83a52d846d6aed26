"""``strongroom wal-receive`` on a real cluster that does not archive (archive_mode off):
WAL streamed through a replication slot by a role with REPLICATION, markers committed every
100 ms, the server crashed (and, in some runs, wal-receive killed with it: the host lost),
``restore latest`` recovering every marker up to the recovery point, which is measured
(newest committed marker against newest recovered, target <= 5 s); wal-receive stopped
for a while and restarted loses nothing (the slot kept the WAL); a restore to a time
recovers exactly the markers committed up to it; one-line refusals."""

from __future__ import annotations

import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from strongroom_servers import ServerUnavailable
from strongroom_servers.postgres import PgServer, free_port, start_server
from tests.wal.support import WalPlace, make_place

STREAMER, STREAMER_PW = "streamer", "str3am-pw"
RUNS = 3  # crashes measured
TARGET_SECONDS = 5.0  # issue 18's recovery point for streaming


def _url(server: PgServer, user: str, password: str) -> str:
    return f"postgresql://{user}:{password}@{server.host}:{server.port}/postgres"


@pytest.fixture(scope="module")
def streaming() -> Iterator[tuple[WalPlace, PgServer]]:
    place = make_place()
    try:
        server = start_server({"track_commit_timestamp": "on", "wal_level": "replica"})
    except ServerUnavailable as exc:
        place.remove()
        pytest.fail(str(exc), pytrace=False)
    try:
        server.query(
            "postgres", f"CREATE ROLE {STREAMER} LOGIN REPLICATION PASSWORD '{STREAMER_PW}'"
        )
        server.query("postgres", "CREATE ROLE plain LOGIN PASSWORD 'plain-pw'")
        yield place, server
    finally:
        server.stop()
        place.remove()


class Receiver:
    """``strongroom -v wal-receive`` running as the server's OS user."""

    def __init__(self, place: WalPlace, server: PgServer, *extra: str) -> None:
        self.out = place.root / f"receiver-{time.monotonic_ns()}.out"
        self.err = self.out.with_suffix(".err")
        user: dict[str, Any] = {}
        if place.user is not None:
            user = {"user": place.user.pw_uid, "group": place.user.pw_gid, "extra_groups": []}
        command = [str(place.launcher), "-v", "wal-receive", "--config", str(place.config)]
        command += [_url(server, STREAMER, STREAMER_PW), "--spool", str(place.root / "spool")]
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen(
                [*command, *extra], env=place.env(), cwd=place.root, stdout=out, stderr=err, **user
            )
        deadline = time.monotonic() + 60
        while "streaming WAL into" not in self.out.read_text():
            assert self.proc.poll() is None, self.err.read_text()
            assert time.monotonic() < deadline, self.err.read_text()
            time.sleep(0.05)

    def stop(self, signum: int = signal.SIGTERM) -> tuple[int, str]:
        self.proc.send_signal(signum)
        code = self.proc.wait(timeout=60)
        return code, self.err.read_text()


class Markers:
    """A marker row committed every 100 ms (synchronous_commit on: a commit returns once
    its WAL is flushed); ``acked`` maps each id to the moment its commit returned."""

    def __init__(self, server: PgServer, first: int) -> None:
        self.acked: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(server, first))
        self._thread.start()

    def _run(self, server: PgServer, first: int) -> None:
        try:
            with server.connect() as conn:
                conn.execute("SET synchronous_commit = on")
                i = first
                while not self._stop.is_set():
                    conn.execute("INSERT INTO marker VALUES (%s, clock_timestamp())", (i,))
                    self.acked[i] = time.time()
                    i += 1
                    time.sleep(0.1)
        except psycopg.Error:
            pass  # the server crashed: the commits acknowledged so far are in acked

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def _stop_cluster(place: WalPlace, server: PgServer, datadir: Path) -> None:
    extra: dict[str, Any] = {}
    if place.user is not None:
        extra = {"user": place.user.pw_uid, "group": place.user.pw_gid, "extra_groups": []}
    subprocess.run(
        [str(server.bin_dir / "pg_ctl"), "-D", str(datadir), "-m", "immediate", "-w", "stop"],
        capture_output=True,
        check=False,
        timeout=60,
        **extra,
    )


def _restore(place: WalPlace, server: PgServer, name: str, *args: str) -> set[int]:
    datadir, port = place.root / name, free_port()
    result = place.run(
        "restore", "--config", str(place.config), "--to-datadir", str(datadir), "--start",
        "--port", str(port), *args, timeout=600,
    )  # fmt: skip
    try:
        assert result.returncode == 0, result.stderr + result.stdout
        assert "wal-fetch --snapshots" in (datadir / "postgresql.auto.conf").read_text()
        url = f"host=127.0.0.1 port={port} dbname=postgres user={server.user}"
        with psycopg.connect(url, password=server.password, autocommit=True) as conn:
            return {int(row[0]) for row in conn.execute("SELECT id FROM marker").fetchall()}
    finally:
        _stop_cluster(place, server, datadir)


def _wait_streaming(server: PgServer, slot: str = "strongroom") -> None:
    deadline = time.monotonic() + 60
    query = "SELECT active FROM pg_replication_slots WHERE slot_name = %s"
    while server.query("postgres", query, (slot,)) != [(True,)]:
        assert time.monotonic() < deadline, "wal-receive did not stream again"
        time.sleep(0.1)


def _one_error(result: subprocess.CompletedProcess[str], code: int, pattern: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and re.search(pattern, lines[0]), result.stderr
    assert "Traceback" not in result.stderr and STREAMER_PW not in result.stderr


def test_refusals_are_one_line(streaming: tuple[WalPlace, PgServer]) -> None:
    place, server = streaming
    config = ("--config", str(place.config))
    _one_error(place.run("wal-receive", *config, "mysql://u:p@127.0.0.1/x"), 5, "PostgreSQL")
    _one_error(
        place.run("wal-receive", *config, _url(server, "plain", "plain-pw")), 5, "REPLICATION"
    )
    _one_error(
        place.run("wal-receive", *config, _url(server, STREAMER, STREAMER_PW)),
        5,
        "slot strongroom does not exist.*--create-slot",
    )
    _one_error(
        place.run("wal-receive", *config, "--slot", "Bad-Name", server.url()), 2, "slot name"
    )
    # archive_mode off and nothing streams: a base backup would not be recoverable
    _one_error(
        place.run("backup", "--physical", *config, server.url()),
        2,
        "neither archives WAL.*nor streams it.*wal-receive",
    )


def test_streamed_wal_recovers_to_within_the_recovery_point(
    streaming: tuple[WalPlace, PgServer],
) -> None:
    place, server = streaming
    config = ("--config", str(place.config))
    clock = time.monotonic()
    receiver = Receiver(place, server, "--create-slot")
    server.query("postgres", "CREATE TABLE marker (id int PRIMARY KEY, at timestamptz NOT NULL)")
    server.query(  # a bulk load: whole 16 MB segments to measure a snapshot's cost on
        "postgres",
        "CREATE TABLE bulk AS SELECT g, md5(g::text) AS h FROM generate_series(1, 250000) g",
    )
    markers = Markers(server, 0)
    time.sleep(0.5)
    backup = place.run("backup", "--physical", *config, server.url())
    assert backup.returncode == 0, backup.stderr

    # wal-receive stopped for a while: the slot keeps the WAL of three segment switches
    code, err = receiver.stop()
    assert code == 143 and "interrupted by SIGTERM" in err, err
    for _ in range(3):
        time.sleep(0.5)
        server.query("postgres", "SELECT pg_switch_wal()")
    receiver = Receiver(place, server)  # the slot exists now: no --create-slot

    points: list[float] = []
    for run in range(RUNS):
        time.sleep(2.5)
        host_lost = run % 2 == 1  # wal-receive dies with the server: no final pass
        if host_lost:
            receiver.proc.kill()
        server.crash()
        markers.stop()
        if host_lost:
            receiver.proc.wait(timeout=30)
        else:  # wal-receive keeps running: pg_receivewal dies and is restarted until it streams
            time.sleep(1.0)
        newest_acked = max(markers.acked)
        recovered = _restore(place, server, f"run{run}", "latest")
        server.restart()
        on_server = {int(r[0]) for r in server.query("postgres", "SELECT id FROM marker")}
        newest = max(recovered)
        # nothing missing before the newest recovered marker, nothing the server lacks
        assert recovered == {i for i in on_server if i <= newest}, sorted(on_server - recovered)
        point = max(0.0, markers.acked[newest_acked] - markers.acked.get(newest, 0.0))
        points.append(point)
        print(
            f"\nrun {run} ({'host lost' if host_lost else 'server crashed'}): newest "
            f"acknowledged marker {newest_acked}, newest recovered {newest}: recovery point "
            f"{point:.2f} s"
        )
        assert point <= TARGET_SECONDS, (run, newest_acked, newest)
        if host_lost:
            receiver = Receiver(place, server)
        else:
            _wait_streaming(server)
        markers = Markers(server, max(on_server) + 1)
    # snapshots were stored, and none is left of a segment archived whole
    snapshots = {p.name.split(".")[0] for p in (place.repo / "logs").rglob("*.partial.*")}
    whole = {p.name.split("-")[0] for p in (place.repo / "logs").rglob("*") if p.is_file()}
    assert snapshots and not snapshots & whole, (snapshots, whole)

    # a time in the middle of the last run: exactly the markers committed up to it
    time.sleep(1.0)
    markers.stop()
    code, err = receiver.stop()
    assert code == 143, err
    assert err.count("pg_receivewal stopped") == 1, err  # one warning for the outage
    committed = dict(
        server.query("postgres", "SELECT id, pg_xact_commit_timestamp(xmin) FROM marker")
    )
    ordered = sorted(committed.values())
    moment: datetime = ordered[-12] + (ordered[-11] - ordered[-12]) / 2
    expected = {i for i, at in committed.items() if at <= moment}
    assert _restore(place, server, "to-time", "--to-time", moment.isoformat()) == expected
    assert moment - ordered[0] > timedelta(seconds=5)

    # the cost of a snapshot of a whole 16 MB segment of the bulk load
    print(f"\nrecovery point per run (s): {', '.join(f'{p:.2f}' for p in points)}")
    print(f"worst {max(points):.2f} s; {_snapshot_cost(place)}")
    print(f"test wall time {time.monotonic() - clock:.1f} s")


def _snapshot_cost(place: WalPlace) -> str:
    from strongroom.cli.options import location
    from strongroom.repository.log_snapshots import LogSnapshots
    from strongroom.repository.logs import LogArchive

    repo = location(None, None, None, str(place.config)).open()
    archive = LogArchive(repo)
    streams = [p.name for p in (place.repo / "logs").iterdir()]
    files = [f for s in streams for f in archive.files(s) if len(f.name) == 24]
    assert files, "no whole segment archived"
    sizes = {f: (place.repo / f.key).stat().st_size for f in files}
    biggest = max(files, key=lambda f: sizes[f])
    data = archive.read(biggest)
    clock = time.monotonic()
    result = LogSnapshots(repo, archive).push("cost-probe", biggest.group, biggest.name, data)
    seconds = time.monotonic() - clock
    assert result is not None
    return (
        f"snapshot of a whole 16 MB segment of a bulk load: {seconds * 1000:.0f} ms, "
        f"{result.stored_bytes / 1e6:.1f} MB stored"
    )
