"""Attacks on ``wal-push`` into the spool (issue 18 point 1; ``cli.wal_quick``,
``services.spool_files``, ``services.wal_spool``) from real clusters: the archiver
(PostgreSQL's OS user) after root used the spool first and pushes were killed, and a
1 MiB-segment cluster archiving through the quick path."""

from __future__ import annotations

import os
import random
import subprocess
import time
from pathlib import Path

import pytest

from tests.wal.test_wal_spool import _archived


# --- real clusters ----------------------------------------------------------------------------
def _as_root(place: object, *args: str) -> subprocess.CompletedProcess[str]:
    from tests.wal.support import WalPlace

    assert isinstance(place, WalPlace)
    return subprocess.run(
        [str(place.launcher), *args], env=place.env(), cwd=place.root, capture_output=True,
        text=True, timeout=300, check=False,
    )  # fmt: skip


def _archiver(server: object) -> tuple[str | None, int, str | None]:
    from strongroom_servers.postgres import PgServer

    assert isinstance(server, PgServer)
    row = server.query(
        "postgres", "SELECT last_archived_wal, failed_count, last_failed_wal FROM pg_stat_archiver"
    )[0]
    return row[0], int(row[1]), row[2]


def _wait_for(predicate: object, what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _contiguous(names: list[str]) -> list[int]:
    segments = sorted(n for n in set(names) if len(n) == 24)
    numbers = [int(n[8:16], 16) * 256 + int(n[16:24], 16) for n in segments]
    assert numbers == list(range(numbers[0], numbers[-1] + 1)), segments
    return numbers


def _wal_push_pids(config: Path) -> list[int]:
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


def test_archiver_after_root_used_the_spool_and_killed_pushes_lose_nothing() -> None:
    """The deployment's shape: root tried the uploader first, so the spool is root's
    (0700); PostgreSQL's archiver runs as the server's OS user. Its pushes fail in one
    ``error:`` line (no traceback in the server log), PostgreSQL keeps the WAL; once the
    spool is given to that user, archiving catches up. Then every wal-push the archiver
    starts is killed (SIGKILL) a few times at random moments while WAL keeps coming: the
    retries spool everything, the upload leaves no gap, and a restore recovers every
    marker committed."""
    from strongroom_servers.postgres import free_port
    from tests.wal.support import make_place, start_archiving, stop_copy, tail

    place = make_place()
    if place.user is None:
        place.remove()
        pytest.skip("needs root: the archiver must run as another user than the first caller")
    spool = place.root / "spool"
    with place.config.open("a") as conf:
        conf.write(f'[wal]\nspool = "{spool}"\n')
    first = _as_root(place, "wal-upload", "--once", "--config", str(place.config))
    assert first.returncode == 0, first.stderr
    assert spool.stat().st_uid == 0 and spool.stat().st_mode & 0o777 == 0o700
    server = start_archiving(place, {"archive_mode": "on", "wal_level": "replica"})
    config = ("--config", str(place.config))
    try:
        server.query("postgres", "CREATE TABLE marker (id int PRIMARY KEY)")
        server.query("postgres", "INSERT INTO marker VALUES (0)")
        refused = server.query("postgres", "SELECT pg_walfile_name(pg_switch_wal())")[0][0]
        _wait_for(lambda: _archiver(server)[1] >= 2, "failed pushes")
        assert (server.data_dir / "pg_wal" / "archive_status" / f"{refused}.ready").exists()
        log = tail(server.log_file, 400)
        errors = [line for line in log.splitlines() if line.startswith("error:")]
        assert errors and all("Permission denied" in line for line in errors), log
        assert "Traceback" not in log
        for path in [spool, *spool.rglob("*")]:
            place.chown(path)
        _wait_for(lambda: (_archiver(server)[0] or "") >= refused, f"{refused} archived")
        backup = place.run("backup", "--physical", *config, server.url())
        assert backup.returncode == 0, backup.stderr
        # kill the archiver's pushes at random moments while WAL keeps coming
        rng = random.Random(1818)
        kills, marker = 0, 1
        # a spooled push can end within the random wait (p50 ~50 ms, less on an idle
        # host): go on until 4 pushes were killed (8 rounds once gave only 2 or 3)
        for round_number in range(40):
            if round_number >= 8 and kills >= 4:
                break
            server.query("postgres", f"INSERT INTO marker VALUES ({marker})")
            marker += 1
            server.query("postgres", "SELECT pg_switch_wal()")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                pids = _wal_push_pids(place.config)
                if pids:
                    time.sleep(rng.uniform(0.0, 0.03))
                    for pid in pids:
                        try:
                            os.kill(pid, 9)
                            kills += 1
                        except ProcessLookupError:
                            pass
                    break
                time.sleep(0.002)
        server.query("postgres", f"INSERT INTO marker VALUES ({marker})")
        last = server.query("postgres", "SELECT pg_walfile_name(pg_switch_wal())")[0][0]
        _wait_for(lambda: (_archiver(server)[0] or "") >= last, f"{last} archived")
        assert kills >= 4, kills
        upload = place.run("wal-upload", "--once", *config)
        assert upload.returncode == 0, upload.stderr
        assert not [p for p in spool.rglob("0000*") if p.is_file()]
        numbers = _contiguous(_archived(place.repo))
        assert numbers[-1] >= int(last[8:16], 16) * 256 + int(last[16:24], 16)
        datadir = place.root / "restored"
        port = free_port()
        restore = place.run(*("restore", "latest", *config, "--to-datadir", str(datadir)),
                            "--start", "--port", str(port), timeout=300)  # fmt: skip
        try:
            assert restore.returncode == 0, restore.stderr + restore.stdout
            import psycopg

            url = f"host=127.0.0.1 port={port} dbname=postgres user={server.user}"
            with psycopg.connect(url, password=server.password, autocommit=True) as conn:
                ids = {int(r[0]) for r in conn.execute("SELECT id FROM marker").fetchall()}
            assert ids == set(range(marker + 1))
        finally:
            stop_copy(place, server, datadir)
    finally:
        server.stop()
        place.remove()


def test_a_cluster_with_1_mib_segments_archives_through_the_quick_path() -> None:
    """``wal_segment_size`` 1 MiB (``pg_resetwal --wal-segsize=1``, as ``initdb
    --wal-segsize=1`` makes it): every segment is spooled at 1 MiB with the bytes of
    ``pg_wal``, the upload leaves no gap, and wal-fetch returns them whole."""
    from tests.wal.support import make_place, start_archiving

    place = make_place()
    spool = place.root / "spool"
    with place.config.open("a") as conf:
        conf.write(f'[wal]\nspool = "{spool}"\n')
    server = start_archiving(place, {"archive_mode": "on", "wal_level": "replica"})
    try:
        server._run([str(server.bin_dir / "pg_ctl"), "-D", str(server.data_dir), "-m", "fast",
                     "-w", "stop"], timeout=60)  # fmt: skip
        reset = server._run([str(server.bin_dir / "pg_resetwal"), "--wal-segsize=1",
                             "-D", str(server.data_dir)], timeout=60)  # fmt: skip
        assert reset.returncode == 0, reset.stderr
        server.restart()
        size = server.query("postgres", "SHOW wal_segment_size")[0][0]
        assert size in ("1MB", "1024kB"), size
        start = server.query("postgres", "SELECT pg_walfile_name(pg_current_wal_lsn())")[0][0]
        server.query("postgres", "CREATE TABLE t (id int, pad text)")
        names = []
        for i in range(6):
            rows = f"generate_series({i * 2000}, {i * 2000 + 1999})"
            server.query("postgres", f"INSERT INTO t SELECT g, repeat('x', 200) FROM {rows} g")
            names.append(server.query("postgres", "SELECT pg_walfile_name(pg_switch_wal())")[0][0])
        _wait_for(lambda: (_archiver(server)[0] or "") >= names[-1], f"{names[-1]} archived")
        assert _archiver(server)[1] == 0, _archiver(server)
        stream = next(p.name for p in spool.iterdir() if p.is_dir())
        for name in names:
            spooled = spool / stream / name
            assert spooled.stat().st_size == 1 << 20, name
            original = server.data_dir / "pg_wal" / name
            if original.exists():  # (not recycled yet)
                assert spooled.read_bytes() == original.read_bytes()
        upload = place.run("wal-upload", "--once", "--config", str(place.config))
        assert upload.returncode == 0, upload.stderr
        numbers = _contiguous([n for n in _archived(place.repo) if n >= start])
        assert len(numbers) >= len(names)  # (the 16 MiB ones before the reset: other names)
        fetched = place.root / "fetched"
        got = place.run("wal-fetch", "--stream", stream, names[-1], str(fetched),
                        "--config", str(place.config))  # fmt: skip
        assert got.returncode == 0, got.stderr
        assert fetched.stat().st_size == 1 << 20
    finally:
        server.stop()
        place.remove()
