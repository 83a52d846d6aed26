"""The WAL spool (docs/design.md, "The WAL spool") through the real command line
(``strongroom.cli.entry``, the path PostgreSQL runs): wal-push into the spool, duplicate
and conflicting pushes, wal-fetch from the spool, wal-upload emptying it (and a wal-upload
killed mid-upload losing nothing), a conflict with the archive left in the spool, a full
spool (tmpfs) failing in one line and reported by health; then a real cluster archiving
through a full spool: PostgreSQL keeps the WAL, health says so, and after the uploader
runs every segment arrives without a gap and a restore recovers everything."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT, run_cli_alone, text_ok
from tests.wal.test_wal_commands import SYSID, fails, segment

ENTRY = [sys.executable, "-m", "strongroom.cli.entry"]
STREAM = f"postgresql-{SYSID}"


def _cli(
    *args: str, c: dict[str, Path], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "src"), str(REPO_ROOT)])
    env["HOME"] = str(c["tmp"])
    return subprocess.run(
        [*ENTRY, *args, "--config", str(c["config"])],
        env=env,
        cwd=cwd or c["data"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _mount_tmpfs(folder: Path, size: str) -> bool:
    if os.geteuid() != 0:
        return False
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(folder)],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


def _umount(folder: Path) -> None:
    subprocess.run(["umount", "-l", str(folder)], capture_output=True, check=False)


@pytest.fixture
def spooled(tmp_path: Path) -> Iterator[dict[str, Path]]:
    """A repository, a data directory (global/pg_control, pg_wal/) and strongroom.toml
    naming both the repository and a spool folder."""
    datadir = tmp_path / "data"
    (datadir / "global").mkdir(parents=True)
    (datadir / "pg_wal").mkdir()
    (datadir / "global" / "pg_control").write_bytes(SYSID.to_bytes(8, "little") + bytes(8184))
    config = tmp_path / "strongroom.toml"
    config.write_text(
        f'[repository]\nlocation = "{tmp_path / "repo"}"\nkey_file = "{tmp_path / "k"}"\n'
        '[wal]\nspool = "spool"\n'  # relative: to the file's folder
    )
    c = {"data": datadir, "repo": tmp_path / "repo", "spool": tmp_path / "spool"}
    c.update(tmp=tmp_path, config=config)
    text_ok(run_cli_alone("init", "--config", str(config), cwd=tmp_path))
    yield c


def _push(c: dict[str, Path], name: str, data: bytes) -> subprocess.CompletedProcess[str]:
    (c["data"] / "pg_wal" / name).write_bytes(data)
    return _cli("wal-push", f"pg_wal/{name}", c=c)


def _waiting(c: dict[str, Path]) -> list[str]:
    folder = c["spool"] / STREAM
    return (
        sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
        if folder.is_dir()
        else []
    )


def _archived(repo: Path) -> list[str]:
    """Names archived in the repository (a storage temp file a kill left is none)."""
    files = [p for p in (repo / "logs").rglob("*") if p.is_file() and not p.name.startswith(".")]
    return sorted(p.name.rsplit("-", 1)[0] for p in files)


def test_push_spools_fetch_reads_it_upload_empties_it(spooled: dict[str, Path]) -> None:
    c = spooled
    name = "000000010000000000000003"
    data = segment(name)
    assert _push(c, name, data).returncode == 0
    assert (c["spool"] / STREAM / name).read_bytes() == data
    assert not (c["repo"] / "logs").exists() or not _archived(c["repo"])  # not uploaded yet
    # the same content again: success, nothing written; other content: exit 7, one line
    before = (c["spool"] / STREAM / name).stat().st_mtime_ns
    assert _push(c, name, data).returncode == 0
    assert (c["spool"] / STREAM / name).stat().st_mtime_ns == before
    fails(_push(c, name, segment(name, seed=2)), 7, "already in the WAL spool .* different")
    assert (c["spool"] / STREAM / name).read_bytes() == data
    # wal-fetch finds it in the spool (a restore on the same host)
    (c["data"] / "pg_wal" / name).unlink()
    assert _cli("wal-fetch", name, "pg_wal/RECOVERYXLOG", c=c).returncode == 0
    assert (c["data"] / "pg_wal" / "RECOVERYXLOG").read_bytes() == data
    assert _cli("wal-fetch", "000000010000000000000004", "pg_wal/X", c=c).returncode == 1
    # upload: into the repository, out of the spool; fetch then reads the repository
    upload = _cli("wal-upload", "--once", c=c)
    assert upload.returncode == 0, upload.stderr
    assert "uploaded 1 WAL file(s)" in upload.stdout
    assert _waiting(c) == [] and _archived(c["repo"]) == [name]
    (c["data"] / "pg_wal" / "RECOVERYXLOG").unlink()
    assert _cli("wal-fetch", name, "pg_wal/RECOVERYXLOG", c=c).returncode == 0
    assert (c["data"] / "pg_wal" / "RECOVERYXLOG").read_bytes() == data
    # PostgreSQL pushing it again (it missed the answer): spooled, then a no-op upload
    assert _push(c, name, data).returncode == 0
    assert _cli("wal-upload", "--once", c=c).returncode == 0
    assert _waiting(c) == [] and _archived(c["repo"]) == [name]
    # other content for a name already uploaded: exit 7 (the upload's mark), not spooled
    fails(_push(c, name, segment(name, seed=3)), 7, "was uploaded from the WAL spool .* differ")
    assert _waiting(c) == []
    # the mark gone (kept a week): spooled; wal-upload exits 7, the file stays
    (c["spool"] / ".uploaded" / STREAM / name).unlink()
    assert _push(c, name, segment(name, seed=3)).returncode == 0
    conflict = _cli("wal-upload", "--once", c=c)
    fails(conflict, 7, f"archived with other content: {STREAM}/{name}")
    assert _waiting(c) == [name] and _archived(c["repo"]) == [name]
    health = _cli("health", "--json", c=c)
    assert health.returncode == 2, health.stdout + health.stderr
    report = json.loads(health.stdout)["wal_spool"]
    assert report["status"] == "critical" and report["files"] == 1
    assert "archived with other content" in " ".join(report["reasons"])


def test_upload_killed_mid_upload_loses_nothing(spooled: dict[str, Path]) -> None:
    """SIGKILL wal-upload once it has archived some files: every segment is in the
    repository or still in the spool (deleted only once archived), the next upload moves
    the rest, and each fetches back identical."""
    c = spooled
    names = [f"0000000100000000000000{n:02X}" for n in range(16, 24)]
    contents = {name: segment(name) for name in names}
    for name in names:
        assert _push(c, name, contents[name]).returncode == 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "src"), str(REPO_ROOT)])
    proc = subprocess.Popen(
        [*ENTRY, "wal-upload", "--once", "--config", str(c["config"])],
        env=env,
        cwd=c["data"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if (c["repo"] / "logs").is_dir() and _archived(c["repo"]):
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    waiting, archived = _waiting(c), _archived(c["repo"])
    assert set(waiting) | set(archived) == set(names)  # nothing lost
    assert waiting, "the kill landed after the upload ended: no mid-upload case"
    assert _cli("wal-upload", "--once", c=c).returncode == 0
    assert _waiting(c) == [] and _archived(c["repo"]) == names
    for name in names:
        (c["data"] / "pg_wal" / name).unlink()
        assert _cli("wal-fetch", name, "pg_wal/R", c=c).returncode == 0
        assert (c["data"] / "pg_wal" / "R").read_bytes() == contents[name]


def test_full_spool_fails_in_one_line_and_health_says_so(spooled: dict[str, Path]) -> None:
    c = spooled
    if not _mount_tmpfs(c["spool"], "40m"):
        pytest.skip("needs root to mount a small tmpfs as a full spool disk")
    try:
        names = [f"0000000100000000000000{n:02X}" for n in range(32, 35)]
        assert _push(c, names[0], segment(names[0])).returncode == 0
        assert _push(c, names[1], segment(names[1])).returncode == 0
        full = _push(c, names[2], segment(names[2]))
        fails(full, 6, f"cannot spool {names[2]} in .*: no space left")
        assert _waiting(c) == names[:2]  # no partial file left behind
        assert not [p for p in (c["spool"] / STREAM).iterdir() if p.name.startswith(".tmp")]
        health = _cli("health", c=c)
        assert health.returncode == 2, health.stdout + health.stderr
        assert f"could not spool {names[2]}" in health.stdout
        assert "no space left (PostgreSQL keeps the WAL and retries)" in health.stdout
        assert "2 file(s), 33554432 bytes waiting" in health.stdout
        # space frees when the uploader runs; the retry then spools, and health is clean
        assert _cli("wal-upload", "--once", c=c).returncode == 0
        assert _push(c, names[2], segment(names[2])).returncode == 0
        assert _cli("wal-upload", "--once", c=c).returncode == 0
        assert _archived(c["repo"]) == names and _waiting(c) == []
        health = _cli("health", "--json", c=c)
        assert health.returncode == 0, health.stdout + health.stderr
        assert json.loads(health.stdout)["wal_spool"]["reasons"] == []
    finally:
        _umount(c["spool"])


def test_bad_spool_option_and_no_spool_for_upload(spooled: dict[str, Path]) -> None:
    c = spooled
    name = "000000010000000000000005"
    (c["data"] / "pg_wal" / name).write_bytes(segment(name))
    blocker = c["tmp"] / "a-file"
    blocker.write_text("not a folder")
    # --spool beats the file's [wal] spool; a spool that cannot be a folder: exit 6
    bad = _cli("wal-push", "--spool", str(blocker / "spool"), f"pg_wal/{name}", c=c)
    fails(bad, 6, "cannot use the WAL spool")
    # no spool anywhere: wal-upload says how to name one (exit 2)
    plain = c["tmp"] / "plain.toml"
    plain.write_text(c["config"].read_text().split("[wal]")[0])
    no_spool = subprocess.run(
        [*ENTRY, "wal-upload", "--once", "--config", str(plain)],
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")},
            "PYTHONPATH": str(REPO_ROOT / "src"),
        },
        cwd=c["tmp"],
        capture_output=True,
        text=True,
        check=False,
    )
    fails(no_spool, 2, "no WAL spool configured")


# --- a real cluster archiving through a spool that fills up -------------------------
@pytest.fixture(scope="module")
def spool_cluster() -> Iterator[tuple[object, object, Path]]:
    from strongroom_servers import ServerUnavailable
    from strongroom_servers.postgres import start_server
    from tests.wal.support import make_place

    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs as a full spool disk")
    place = make_place()
    spool = place.root / "spool"
    if not _mount_tmpfs(spool, "40m"):
        place.remove()
        pytest.skip("cannot mount a tmpfs here")
    place.chown(spool)
    with place.config.open("a") as conf:
        conf.write(f'[wal]\nspool = "{spool}"\n')
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
        _umount(spool)
        place.remove()
        pytest.fail(str(exc), pytrace=False)
    try:
        yield place, server, spool
    finally:
        server.stop()
        _umount(spool)
        place.remove()


def _segment_number(name: str) -> int:
    return int(name[8:16], 16) * 256 + int(name[16:24], 16)


def _wait(predicate: object, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_cluster_archiving_through_a_full_spool(
    spool_cluster: tuple[object, object, Path],
) -> None:
    from strongroom_servers.postgres import PgServer, free_port
    from tests.wal.support import WalPlace

    place, server, spool = spool_cluster
    assert isinstance(place, WalPlace) and isinstance(server, PgServer)
    config = ("--config", str(place.config))
    server.query("postgres", "CREATE TABLE marker (id int PRIMARY KEY)")
    backup = place.run("backup", "--physical", *config, server.url())
    assert backup.returncode == 0, backup.stderr
    assert place.run("wal-upload", "--once", *config).returncode == 0

    def archiver() -> tuple[str | None, int, str | None]:
        row = server.query(
            "postgres",
            "SELECT last_archived_wal, failed_count, last_failed_wal FROM pg_stat_archiver",
        )[0]
        return row[0], int(row[1]), row[2]

    # fill the 40 MB spool: two segments fit, the third push fails
    for i in range(4):
        server.query("postgres", f"INSERT INTO marker VALUES ({i})")
        server.query("postgres", "SELECT pg_switch_wal()")
    _wait(lambda: archiver()[1] > 0, "a failed archive_command")
    _, failed_count, failed = archiver()
    assert failed is not None
    assert (server.data_dir / "pg_wal" / failed).is_file()  # PostgreSQL keeps the WAL
    assert (server.data_dir / "pg_wal" / "archive_status" / f"{failed}.ready").exists()
    health = place.run("health", *config)
    assert health.returncode == 2, health.stdout + health.stderr
    assert f"could not spool {failed}" in health.stdout and "no space left" in health.stdout
    _wait(lambda: archiver()[1] > failed_count, "PostgreSQL retrying the push")
    # the uploader frees the space; the archiver's next try spools the rest
    assert place.run("wal-upload", "--once", *config).returncode == 0
    server.query("postgres", "INSERT INTO marker VALUES (100)")
    last = server.query("postgres", "SELECT pg_walfile_name(pg_switch_wal())")[0][0]
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline and (archiver()[0] or "") < last:
        assert place.run("wal-upload", "--once", *config).returncode == 0
        time.sleep(0.3)
    assert (archiver()[0] or "") >= last, archiver()
    assert place.run("wal-upload", "--once", *config).returncode == 0
    assert not [p for p in spool.rglob("0000*") if p.is_file()]
    health = place.run("health", "--json", *config)
    assert json.loads(health.stdout)["wal_spool"]["status"] == "healthy", health.stdout
    # every segment arrived, no gap
    segments = sorted(
        n
        for n in _archived(place.repo)
        if len(n) == 24 and all(ch in "0123456789ABCDEF" for ch in n)
    )
    numbers = [_segment_number(n) for n in segments]
    assert numbers == list(range(numbers[0], numbers[-1] + 1)), segments
    assert segments[-1] >= last
    # and a restore on another data directory recovers every marker
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
        assert ids == {0, 1, 2, 3, 100}
    finally:
        extra: dict[str, object] = {}
        if place.user is not None:
            extra = {"user": place.user.pw_uid, "group": place.user.pw_gid, "extra_groups": []}
        with contextlib.suppress(subprocess.SubprocessError):
            subprocess.run(
                [str(server.bin_dir / "pg_ctl"), "-D", str(datadir), "-m", "immediate", "stop"],
                capture_output=True, check=False, timeout=60, **extra,  # type: ignore[arg-type]
            )  # fmt: skip


def test_run_uploads_the_spool(spooled: dict[str, Path]) -> None:
    """``strongroom run`` with ``[wal] spool`` empties the spool into the repository and
    stops cleanly on SIGTERM."""
    c = spooled
    names = ["000000010000000000000061", "000000010000000000000062"]
    for name in names:
        assert _push(c, name, segment(name)).returncode == 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "src"), str(REPO_ROOT)])
    env["HOME"] = str(c["tmp"])
    proc = subprocess.Popen(
        [*ENTRY, "run", "--config", str(c["config"])],
        env=env,
        cwd=c["tmp"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _waiting(c) and proc.poll() is None:
            time.sleep(0.1)
        assert _waiting(c) == [], proc.stderr.read() if proc.poll() is not None else "still waiting"
        assert _archived(c["repo"]) == names
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err


def test_upload_loop_stops_cleanly_on_sigterm(spooled: dict[str, Path]) -> None:
    """``wal-upload`` without --once keeps emptying the spool until SIGTERM, then exits 0
    saying what it moved."""
    c = spooled
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "src"), str(REPO_ROOT)])
    proc = subprocess.Popen(
        [*ENTRY, "wal-upload", "--config", str(c["config"])],
        env=env,
        cwd=c["tmp"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        name = "000000010000000000000071"
        assert _push(c, name, segment(name)).returncode == 0  # after the uploader started
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _waiting(c) and proc.poll() is None:
            time.sleep(0.1)
        assert _archived(c["repo"]) == [name] and _waiting(c) == []
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "uploaded 1 WAL file(s)" in out
