"""Faults of WAL archiving and recovery on a real cluster archiving into an S3 repository
(moto behind the fault-injecting proxy, ``strongroom_servers.s3proxy``), issue 18:

- the archiver killed (``kill -9``) while its ``wal-push`` uploads a segment: PostgreSQL
  retries; no gap, no second copy, the archived copy byte-identical to ``pg_wal``'s;
- the storage unreachable (black hole) for a while: segments wait (``failed_count``
  grows, nothing archived), then go when it is back;
- after both, ``restore latest`` from S3 (base backup and WAL through the proxy)
  recovers every marker committed;
- ``--to-timeline 9``: exit 3 naming the timelines there; a segment deleted from the
  archive: exit 7 naming it and the stream, before the data directory is written.

The first S3 test of backup --physical, wal-push, wal-fetch and restore --to-datadir."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest

from strongroom_servers import ServerUnavailable
from strongroom_servers.postgres import PgServer, free_port, start_server
from strongroom_servers.s3proxy import FaultProxy
from tests.fixtures.s3 import FAKE_ENV
from tests.wal.support import WalPlace, make_place, stop_copy, tail

DEADLINE = 2  # seconds one wal-push may spend on the storage (storage_deadline)
OUTAGE = 20.0  # seconds the storage is a black hole


@dataclass
class S3Cluster:
    place: WalPlace
    server: PgServer
    proxy: FaultProxy
    client: Any  # boto3 S3 client straight to moto (not through the proxy)
    bucket: str
    config: Path
    stream: str
    next_marker: int = 0

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """``strongroom ARGS --config s3.toml`` as the server's OS user, with the fake
        AWS credentials (``WalPlace.run`` drops every variable strongroom reads)."""
        extra: dict[str, Any] = {}
        user = self.place.user
        if user is not None:
            extra = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        return subprocess.run(
            [str(self.place.launcher), *args, "--config", str(self.config)],
            env={**self.place.env(), **FAKE_ENV},
            cwd=self.place.root,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **extra,
        )

    def markers(self, count: int) -> None:
        with self.server.connect() as conn:
            for _ in range(count):
                conn.execute("INSERT INTO marker VALUES (%s)", (self.next_marker,))
                self.next_marker += 1

    def switch(self) -> str:
        return str(self.server.query("postgres", "SELECT pg_walfile_name(pg_switch_wal())")[0][0])

    def archiver(self) -> tuple[int, int, str | None]:
        row = self.server.query(
            "postgres",
            "SELECT archived_count, failed_count, last_archived_wal FROM pg_stat_archiver",
        )[0]
        return int(row[0]), int(row[1]), row[2]

    def wait_archived(self, segment: str, timeout: float = 120.0) -> float:
        """Seconds until ``segment`` (and so every one before it) is archived."""
        clock = time.monotonic()
        while time.monotonic() - clock < timeout:
            last = self.archiver()[2]
            if last is not None and last >= segment:
                return time.monotonic() - clock
            time.sleep(0.1)
        raise AssertionError(
            f"{segment} not archived: {self.archiver()}; {tail(self.server.log_file)}"
        )

    def copies(self, segment: str) -> list[str]:
        prefix = f"wal/logs/{self.stream}/{segment[:16]}/{segment}-"
        listed = self.client.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return [o["Key"] for o in listed.get("Contents", [])]


@pytest.fixture(scope="module")
def s3c(moto_server: str) -> Iterator[S3Cluster]:
    client = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    bucket = f"strongroom-wal-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    proxy = FaultProxy(moto_server, seed=18)
    proxy.start()
    place = make_place()
    config = place.root / "s3.toml"
    config.write_text(
        f'[repository]\nlocation = "s3://{bucket}/wal"\ns3_endpoint = "{proxy.url}"\n'
        f'key_file = "{place.root / "s3.key"}"\nstorage_deadline = {DEADLINE}\n'
    )
    place.chown(config)
    server = None
    try:
        made = S3Cluster(place, None, proxy, client, bucket, config, "").run("init")  # type: ignore[arg-type]
        assert made.returncode == 0, made.stderr
        try:
            server = start_server(
                {
                    "archive_mode": "on",
                    "archive_command": f"'{place.launcher}' wal-push --config '{config}' %p",
                    "wal_level": "replica",
                    "archive_timeout": "60",
                    "wal_keep_size": "1GB",  # archived segments stay in pg_wal to compare
                }
            )
        except ServerUnavailable as exc:
            pytest.fail(str(exc), pytrace=False)
        sysid = server.query("postgres", "SELECT system_identifier FROM pg_control_system()")
        cluster = S3Cluster(
            place, server, proxy, client, bucket, config, f"postgresql-{sysid[0][0]}"
        )
        server.query("postgres", "CREATE TABLE marker (id int PRIMARY KEY)")
        cluster.markers(5)
        backup = cluster.run("backup", "--physical", server.url())
        assert backup.returncode == 0, backup.stderr
        yield cluster
    finally:
        if server is not None:
            server.stop()
        proxy.stop()
        place.remove()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                client.delete_object(Bucket=bucket, Key=item["Key"])
        client.delete_bucket(Bucket=bucket)


def _wal_push_pids(config: Path) -> list[int]:
    """The ``strongroom wal-push`` processes of this cluster (started by its archiver)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"wal-push" in argv and str(config).encode() in argv:
            found.append(int(entry.name))
    return found


def _open_connections(proxy: FaultProxy) -> set[socket.socket]:
    """The proxy's client connections being served now: a handler holding an upload keeps
    its connection until it has forwarded it and answered."""
    with proxy._mutex:
        return set(proxy._sockets)


def test_archiver_killed_mid_upload_leaves_no_gap_and_no_duplicate(s3c: S3Cluster) -> None:
    # the segment's upload reaches the proxy and is held there (forwarded 8 s late, as a
    # server that had the whole request may still store it): wal-push is killed meanwhile
    s3c.proxy.set_fault("slow", delay=8.0, methods=frozenset({"PUT"}), key_contains="/logs/")
    faults = s3c.proxy.faults
    s3c.markers(20)
    segment = s3c.switch()
    deadline = time.monotonic() + 60
    while s3c.proxy.faults == faults:
        assert time.monotonic() < deadline, f"no upload of {segment}: {s3c.archiver()}"
        time.sleep(0.05)
    held = _open_connections(s3c.proxy)  # the held upload's among them, open until it lands
    pids = _wal_push_pids(s3c.config)
    assert pids, "no wal-push process while its upload is held"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    s3c.proxy.set_fault(None)
    s3c.wait_archived(segment)
    print(
        f"\nwal-push killed mid-upload: {segment} archived {time.monotonic() - killed:.1f} s later"
    )
    assert len(s3c.copies(segment)) == 1
    fetched = s3c.place.root / "fetched"
    result = s3c.run("wal-fetch", "--stream", s3c.stream, segment, str(fetched))
    assert result.returncode == 0, result.stderr
    assert fetched.read_bytes() == (s3c.server.data_dir / "pg_wal" / segment).read_bytes()
    # the held upload lands now (its connection closes once moto has answered it): the
    # same name and content, still one copy
    deadline = time.monotonic() + 60
    while held & _open_connections(s3c.proxy):
        assert time.monotonic() < deadline, "the held upload never finished"
        time.sleep(0.1)
    assert len(s3c.copies(segment)) == 1


def test_storage_outage_segments_wait_then_go(s3c: S3Cluster) -> None:
    archived, failed, last = s3c.archiver()
    s3c.proxy.set_fault("blackhole")
    started = time.monotonic()
    waiting = []
    while time.monotonic() - started < OUTAGE:
        s3c.markers(5)
        waiting.append(s3c.switch())  # a new .ready file also wakes a waiting archiver
        time.sleep(4)
    during = s3c.archiver()
    ready = list((s3c.server.data_dir / "pg_wal" / "archive_status").glob("*.ready"))
    s3c.proxy.set_fault(None)
    back = time.monotonic()
    assert during[0] == archived and during[2] == last, during  # nothing went
    assert during[1] >= failed + 2, during  # every attempt failed within the deadline
    assert len(ready) >= len(waiting), ready  # the segments wait in pg_wal
    s3c.markers(5)
    final = s3c.switch()
    catch_up = s3c.wait_archived(final)
    after = s3c.archiver()
    print(
        f"\nstorage outage {OUTAGE:.0f} s: failed_count +{during[1] - failed}, "
        f"{len(ready)} segments waited; all archived {time.monotonic() - back:.1f} s after "
        f"it ended (wait {catch_up:.1f} s); archived_count +{after[0] - archived}"
    )
    assert after[0] >= archived + len(waiting) + 1
    for segment in waiting:
        assert len(s3c.copies(segment)) == 1, segment


def test_restore_latest_from_s3_recovers_every_marker(s3c: S3Cluster) -> None:
    expected = {int(r[0]) for r in s3c.server.query("postgres", "SELECT id FROM marker")}
    s3c.wait_archived(s3c.switch())
    assert expected == set(range(s3c.next_marker))
    datadir = s3c.place.root / "latest"
    port = free_port()
    clock = time.monotonic()
    result = s3c.run(
        "restore", "latest", "--to-datadir", str(datadir), "--start", "--port", str(port)
    )
    try:
        assert result.returncode == 0, result.stderr + result.stdout
        assert "all archived" in result.stdout
        url = f"host=127.0.0.1 port={port} dbname=postgres user={s3c.server.user}"
        with psycopg.connect(url, password=s3c.server.password, autocommit=True) as conn:
            ids = {int(r[0]) for r in conn.execute("SELECT id FROM marker").fetchall()}
        assert ids == expected, sorted(ids ^ expected)
        print(f"\nrestore latest from S3: {len(ids)} markers in {time.monotonic() - clock:.1f} s")
    finally:
        stop_copy(s3c.place, s3c.server, datadir)


def test_a_timeline_not_in_the_archive_exits_3_naming_those_there(s3c: S3Cluster) -> None:
    datadir = s3c.place.root / "tl9"
    result = s3c.run("restore", "latest", "--to-datadir", str(datadir), "--to-timeline", "9")
    assert result.returncode == 3, result.stderr
    assert "timeline 9 is not in the archive (timelines there: 1)" in result.stderr
    assert result.stderr.count("error:") == 1 and not datadir.exists()


def test_a_segment_deleted_from_the_archive_exits_7_naming_it(s3c: S3Cluster) -> None:
    """Last in this module: it damages the archive."""
    segment = s3c.switch()
    s3c.wait_archived(segment)
    s3c.markers(1)
    s3c.wait_archived(s3c.switch())
    (key,) = s3c.copies(segment)
    s3c.client.delete_object(Bucket=s3c.bucket, Key=key)
    datadir = s3c.place.root / "gap"
    result = s3c.run("restore", "latest", "--to-datadir", str(datadir), "--start")
    assert result.returncode == 7, result.stderr
    assert f"WAL segment {segment} of stream {s3c.stream} is missing" in result.stderr
    assert result.stderr.count("error:") == 1 and "Traceback" not in result.stderr
    assert not datadir.exists()
