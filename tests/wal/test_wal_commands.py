"""wal-push / wal-fetch through the real command line, on a data directory that holds only
what they read (global/pg_control) and segments with real long page headers: archiving,
repeated and conflicting pushes, missing files, history and backup files, prune and check
leaving the archive alone, and a wal-push killed mid-write."""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import struct
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import STRONGROOM, run_cli_alone, text_ok

SYSID = 7301234567890123456
SEGMENT_SIZE = 16 * 1024 * 1024


def segment(name: str, sysid: int = SYSID, seed: int = 1) -> bytes:
    """A 16 MB segment: a long page header naming ``sysid``, then WAL-like content (some
    random records, long zero runs), as compressible as real WAL roughly is."""
    rng = random.Random(f"{name}-{seed}")
    header = struct.pack("=HHIQIIQII", 0xD110, 0x0002, 1, 0, 0, 0, sysid, SEGMENT_SIZE, 8192)
    body = bytearray(SEGMENT_SIZE - len(header))
    for start in range(0, len(body), 8192):
        record = rng.randbytes(rng.randint(200, 3000))
        body[start : start + len(record)] = record
    return header + bytes(body)


_INITIALISED: dict[str, Path] = {}  # this worker's repository made by `strongroom init`


def _initialised(factory: pytest.TempPathFactory) -> Path:
    """A folder holding ``repo`` and its key file ``k``, made once per worker by the real
    ``strongroom init`` (a CLI start costs ~0.7 s of CPU; 46 tests need an empty one)."""
    if "root" not in _INITIALISED:
        root = factory.mktemp("wal-initialised")
        env = {"STRONGROOM_REPO": str(root / "repo"), "STRONGROOM_KEY_FILE": str(root / "k")}
        text_ok(run_cli_alone("init", env=env, cwd=root))
        _INITIALISED["root"] = root
    return _INITIALISED["root"]


@pytest.fixture
def cluster(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A repository, its key, and a data directory with global/pg_control and pg_wal/:
    each test's own copy (file modes kept: the key stays 0600) of an empty repository
    ``strongroom init`` made once."""
    datadir = tmp_path / "data"
    (datadir / "global").mkdir(parents=True)
    (datadir / "pg_wal").mkdir()
    (datadir / "global" / "pg_control").write_bytes(struct.pack("=Q", SYSID) + bytes(8184))
    made = _initialised(tmp_path_factory)
    shutil.copytree(made / "repo", tmp_path / "repo")
    shutil.copy2(made / "k", tmp_path / "k")
    assert (tmp_path / "k").stat().st_mode & 0o777 == 0o600
    return {"data": datadir, "repo": tmp_path / "repo", "key": tmp_path / "k", "tmp": tmp_path}


def fails(result: subprocess.CompletedProcess[str], code: int, pattern: str) -> None:
    """Exit ``code`` with exactly one ``error:`` line matching ``pattern``, no traceback."""
    import re

    assert result.returncode == code, (result.returncode, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and re.search(pattern, lines[0]), result.stderr
    assert "Traceback" not in result.stderr


def _env(c: dict[str, Path]) -> dict[str, str]:
    return {"STRONGROOM_REPO": str(c["repo"]), "STRONGROOM_KEY_FILE": str(c["key"])}


def push(c: dict[str, Path], name: str, data: bytes) -> subprocess.CompletedProcess[str]:
    (c["data"] / "pg_wal" / name).write_bytes(data)
    return run_cli_alone("wal-push", f"pg_wal/{name}", env=_env(c), cwd=c["data"])


def fetch(
    c: dict[str, Path], name: str, dest: str = "pg_wal/RECOVERYXLOG"
) -> subprocess.CompletedProcess[str]:
    return run_cli_alone("wal-fetch", name, dest, env=_env(c), cwd=c["data"])


def log_objects(repo: Path) -> list[Path]:
    return sorted(p for p in (repo / "logs").rglob("*") if p.is_file())


def test_push_fetch_repeat_and_conflict(cluster: dict[str, Path]) -> None:
    name = "000000010000000000000003"
    data = segment(name)
    text_ok(push(cluster, name, data))
    objects = log_objects(cluster["repo"])
    assert len(objects) == 1
    assert objects[0].parent.name == "0000000100000000"
    stored = objects[0].read_bytes()
    assert stored.startswith(b"age-encryption.org/v1\n")  # encrypted like every chunk
    assert data[100:4000] not in stored
    assert len(stored) < len(data) / 2  # compressed
    text_ok(fetch(cluster, name))
    assert (cluster["data"] / "pg_wal" / "RECOVERYXLOG").read_bytes() == data
    # PostgreSQL retries a push whose answer it missed: same content, success, no new object
    text_ok(push(cluster, name, data))
    assert log_objects(cluster["repo"]) == objects
    # other content under the same name: refused loudly, the archived copy stays
    other = segment(name, seed=2)
    fails(push(cluster, name, other), 7, r"already archived .* different content")
    assert log_objects(cluster["repo"]) == objects
    text_ok(fetch(cluster, name, "pg_wal/again"))
    assert (cluster["data"] / "pg_wal" / "again").read_bytes() == data


def test_fetch_of_a_file_never_pushed_exits_1_quietly(cluster: dict[str, Path]) -> None:
    for name in ("000000010000000000000009", "00000002.history"):
        result = fetch(cluster, name)
        assert result.returncode == 1, result.stderr
        assert result.stderr == "" and result.stdout == ""
        assert not (cluster["data"] / "pg_wal" / "RECOVERYXLOG").exists()
    assert list((cluster["data"] / "pg_wal").iterdir()) == []  # no temp file left either


def test_history_and_backup_files_are_archived(cluster: dict[str, Path]) -> None:
    history = b"1\t0/3000000\tbefore 2026-11-30 14:03:12+00\n"
    label = b"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n"
    text_ok(push(cluster, "00000002.history", history))
    text_ok(push(cluster, "000000010000000000000002.00000028.backup", label))
    text_ok(fetch(cluster, "00000002.history", "pg_wal/h"))
    assert (cluster["data"] / "pg_wal" / "h").read_bytes() == history
    text_ok(fetch(cluster, "000000010000000000000002.00000028.backup", "pg_wal/b"))
    assert (cluster["data"] / "pg_wal" / "b").read_bytes() == label
    groups = {p.parent.name for p in log_objects(cluster["repo"])}
    assert groups == {"history", "0000000100000000"}


def test_refuses_foreign_segments_and_odd_names(cluster: dict[str, Path]) -> None:
    name = "000000010000000000000004"
    fails(push(cluster, name, segment(name, sysid=SYSID + 1)), 7, r"belongs to the cluster")
    fails(push(cluster, "pg_control.bak", b"x"), 2, r"not a WAL file name")
    fails(fetch(cluster, "../../config"), 2, r"not a WAL file name")
    assert not (cluster["repo"] / "logs").exists()


def test_prune_and_check_leave_the_archive_alone(cluster: dict[str, Path]) -> None:
    """Prune deletes chunks no manifest references: WAL objects are no chunks and must
    survive it, byte for byte; check must not call them damaged."""
    sqlite_db = cluster["tmp"] / "app.db"
    env = _env(cluster)
    backup_ids = []
    for _round in range(2):  # two backups of different data: forget drops the first
        with sqlite3.connect(sqlite_db) as db:
            db.execute("CREATE TABLE IF NOT EXISTS t (x)")
            db.execute("DELETE FROM t")
            rows = [(os.urandom(300).hex(),) for _ in range(3000)]
            db.executemany("INSERT INTO t VALUES (?)", rows)
        sqlite3.connect(sqlite_db).execute("VACUUM").connection.close()
        out = text_ok(run_cli_alone("backup", str(sqlite_db), env=env, cwd=cluster["tmp"]))
        backup_ids.append(out.split()[1])
    names = [f"00000001000000000000000{i}" for i in range(1, 4)]
    segments = {name: segment(name) for name in names}
    for name, data in segments.items():
        text_ok(push(cluster, name, data))
    text_ok(push(cluster, "00000002.history", b"1\t0/3000000\tno recovery target specified\n"))
    before = {p: p.read_bytes() for p in log_objects(cluster["repo"])}
    text_ok(run_cli_alone("forget", "--keep-last", "1", env=env, cwd=cluster["tmp"]))
    assert not (cluster["repo"] / "backups" / f"{backup_ids[0]}.json").exists()

    def chunk_objects() -> int:  # loose chunks and packs (issue 19)
        found = [*(cluster["repo"] / "chunks").rglob("*"), *(cluster["repo"] / "packs").rglob("*")]
        return sum(1 for p in found if p.is_file())

    chunks_before = chunk_objects()
    text_ok(run_cli_alone("prune", env=env, cwd=cluster["tmp"]))
    chunks_after = chunk_objects()
    assert chunks_after < chunks_before  # prune did delete: the forgotten backup's chunks
    assert {p: p.read_bytes() for p in log_objects(cluster["repo"])} == before
    text_ok(run_cli_alone("check", "--read-data", env=env, cwd=cluster["tmp"]))
    for name, data in segments.items():
        text_ok(fetch(cluster, name, f"pg_wal/{name}.back"))
        assert (cluster["data"] / "pg_wal" / f"{name}.back").read_bytes() == data


def test_killed_push_leaves_nothing_fetch_would_return(cluster: dict[str, Path]) -> None:
    """SIGKILL a wal-push at many moments (reading, compressing, encrypting, writing):
    afterwards a fetch finds nothing (exit 1) or the whole segment, never part of it;
    PostgreSQL's retry then archives it."""
    name = "000000010000000000000007"
    data = segment(name)
    (cluster["data"] / "pg_wal" / name).write_bytes(data)
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    env.update(_env(cluster), PYTHONPATH=str(Path(__file__).resolve().parents[2] / "src"))

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [*STRONGROOM, "wal-push", f"pg_wal/{name}"],
            cwd=cluster["data"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    # Kill at fractions of what a whole push takes here and now (fixed delays missed
    # every push on an idle host once wal-push started without Typer: all ended first)
    began = time.monotonic()
    assert start().wait() == 0
    whole = time.monotonic() - began
    shutil.rmtree(cluster["repo"] / "logs")
    outcomes = []
    for fraction in [0.15, 0.3, 0.45, 0.55, 0.65, 0.75, 0.85, 0.95, 1.1, 1.5]:
        proc = start()
        time.sleep(whole * fraction)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        result = fetch(cluster, name, "pg_wal/RECOVERYXLOG")
        target = cluster["data"] / "pg_wal" / "RECOVERYXLOG"
        if result.returncode == 1:
            assert not target.exists()
            outcomes.append("absent")
        else:
            assert result.returncode == 0, result.stderr
            assert target.read_bytes() == data
            target.unlink()
            outcomes.append("whole")
            shutil.rmtree(cluster["repo"] / "logs")  # start over: catch a later cut
    assert "absent" in outcomes, outcomes  # some kills did land mid-push
    # What a kill inside the storage write leaves (the kills above rarely land in its few
    # milliseconds): LocalStorage's temp file, half written, beside where the object goes
    group = cluster["repo"] / "logs" / f"postgresql-{SYSID}" / "0000000100000000"
    group.mkdir(parents=True, exist_ok=True)
    (group / f".tmp-{name}-{'0' * 64}-1234abcd").write_bytes(
        b"age-encryption.org/v1\n" + data[:4096]
    )
    result = fetch(cluster, name)
    assert result.returncode == 1 and result.stderr == ""
    assert not (cluster["data"] / "pg_wal" / "RECOVERYXLOG").exists()
    text_ok(push(cluster, name, data))  # PostgreSQL's retry archives it
    text_ok(fetch(cluster, name))
    assert (cluster["data"] / "pg_wal" / "RECOVERYXLOG").read_bytes() == data


def test_damaged_or_swapped_objects_are_refused(cluster: dict[str, Path]) -> None:
    """A flipped byte, or one segment's object renamed to another's name: fetch exits 7
    (PostgreSQL stops rather than replaying wrong WAL) and check --read-data names it."""
    first, second = "000000010000000000000001", "000000010000000000000002"
    text_ok(push(cluster, first, segment(first)))
    text_ok(push(cluster, second, segment(second)))
    a, b = log_objects(cluster["repo"])
    blob = bytearray(a.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    a.write_bytes(bytes(blob))
    fails(fetch(cluster, first), 7, r"is damaged: it does not decrypt")
    result = run_cli_alone("check", "--read-data", env=_env(cluster), cwd=cluster["tmp"])
    assert result.returncode == 7, result.stderr
    assert f"LOG      {a.relative_to(cluster['repo'])} is damaged" in result.stderr
    # the second segment's object under the first one's name (its digest kept)
    a.unlink()
    b.rename(a.parent / (first + "-" + b.name.rsplit("-", 1)[1]))
    fails(fetch(cluster, first), 7, r"does not match its name")
    assert fetch(cluster, second).returncode == 1


def test_the_wal_commands_start_without_the_rest_of_the_command_line(tmp_path):
    """PostgreSQL starts ``wal-push`` once per segment: the console script's light path
    (cli.entry) runs it without importing the other commands or any database driver, and
    with the same global options and error line."""
    import subprocess
    import sys

    probe = (
        "import sys, atexit\n"
        "atexit.register(lambda: print(sorted({m.split('.')[0] if not m.startswith('strongroom')"
        " else m for m in sys.modules if m.startswith(('psycopg', 'pymysql', 'fastapi',"
        " 'strongroom.cli.backup_cmd', 'strongroom.engines.postgresql.engine'))}),"
        " file=sys.stderr))\n"
        "sys.argv = ['strongroom', 'wal-fetch', '000000010000000000000001', "
        f"'{tmp_path / 'out'}', '--repo', '{tmp_path / 'nowhere'}']\n"
        "from strongroom.cli.entry import main\n"
        "main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    lines = done.stderr.strip().splitlines()
    assert lines[-1] == "[]", done.stderr  # nothing heavy was imported
    assert done.returncode == 3 and lines[0].startswith("error: "), done.stderr
    assert not (tmp_path / "out").exists()
