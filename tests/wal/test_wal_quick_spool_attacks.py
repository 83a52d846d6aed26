"""Attacks on ``wal-push`` into the spool (issue 18 point 1; ``cli.wal_quick``,
``services.spool_files``, ``services.wal_spool``) through its disk and its process: a full,
read-only or deleted spool, a spool that refuses O_DIRECT, a key file removed or replaced
after the record, SIGKILL at random points of a push.

Every refusal is one ``error:`` line with a documented exit code and no traceback, and a
push that returns 0 leaves the file's exact bytes under its name in the spool."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import run_cli_alone
from tests.wal.quick_attack_helpers import _no_push_failure, _one_error, _spooled, _start
from tests.wal.test_wal_commands import segment
from tests.wal.test_wal_quick import STREAM, _name, _path, _push, quick
from tests.wal.test_wal_spool import _archived, _mount_tmpfs, _umount

__all__ = ["quick"]  # fixtures


# --- the spool's disk ------------------------------------------------------------------------
def test_full_read_only_and_deleted_spool(quick: dict[str, Path]) -> None:
    """A 20 MB tmpfs as the spool: the second segment does not fit (the quick path falls
    back, the whole path exits 6 in one line and records it; no temp file is left); the
    uploader frees it and the retry returns 0; remounted read-only: exit 6; unmounted and
    removed after the settings were recorded: the next push makes the spool again."""
    q = quick
    spool = q["spool"]
    if not _mount_tmpfs(spool, "20m"):
        pytest.skip("needs root to mount a tmpfs")
    try:
        assert _push(q, _name(1), segment(_name(1))).returncode == 0
        full = _push(q, _name(2), segment(_name(2)))
        _one_error(full, 6, f"cannot spool {_name(2)} in {spool}: no space left")
        assert _spooled(q) == [_name(1)] and not _no_push_failure(q)
        again = _push(q, _name(2))
        _one_error(again, 6, "no space left")
        assert _path(again) == "whole"  # a recorded failure: the whole path
        upload = run_cli_alone("wal-upload", "--once", "--config", str(q["config"]),
                               cwd=q["tmp"])  # fmt: skip
        assert upload.returncode == 0, upload.stderr
        retry = _push(q, _name(2))
        assert retry.returncode == 0 and _no_push_failure(q), retry.stderr
        assert (spool / STREAM / _name(2)).read_bytes() == segment(_name(2))
        subprocess.run(["mount", "-o", "remount,ro", str(spool)], check=True)
        try:
            read_only = _push(q, _name(3), segment(_name(3)))
            _one_error(read_only, 6, f"cannot spool {_name(3)} in {spool}: Read-only file system")
        finally:
            subprocess.run(["mount", "-o", "remount,rw", str(spool)], check=True)
        assert _spooled(q) == [_name(2)]
    finally:
        _umount(spool)
    shutil.rmtree(spool, ignore_errors=True)
    gone = _push(q, _name(4), segment(_name(4)))
    assert gone.returncode == 0 and _path(gone) == "whole", gone.stderr
    assert _spooled(q) == [_name(4)]
    assert _path(_push(q, _name(5), segment(_name(5)))) == "quick"


def test_a_spool_that_refuses_o_direct_gets_the_exact_bytes(quick: dict[str, Path]) -> None:
    """A spool on ramfs, which refuses ``O_DIRECT`` (EINVAL; tmpfs takes it since Linux
    6.6): the quick path copies buffered instead, the bytes are exact."""
    q = quick
    spool = q["spool"]
    spool.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "ramfs", "-o", "mode=0700", "ramfs", str(spool)], check=False
    ).returncode == 0  # fmt: skip
    if not mounted:
        pytest.skip("needs root to mount a ramfs")
    try:
        probe = os.open(spool / "probe", os.O_WRONLY | os.O_CREAT | getattr(os, "O_DIRECT", 0))
        os.close(probe)
        pytest.skip("this kernel's ramfs takes O_DIRECT")
    except OSError:
        pass
    try:
        for n in (1, 2, 3):
            result = _push(q, _name(n), segment(_name(n)))
            assert result.returncode == 0, result.stderr
            assert _path(result) == ("whole" if n == 1 else "quick")
            assert (spool / STREAM / _name(n)).read_bytes() == segment(_name(n))
    finally:
        _umount(spool)


def test_a_key_file_removed_or_replaced_after_the_record_loses_nothing(
    quick: dict[str, Path],
) -> None:
    """The spool push needs no key (nothing of it is in the settings record), so with
    the key file gone it still returns 0: the segment waits in the spool; the uploader
    then exits 4 in one line (gone, then replaced by a file that is no key) and moves
    nothing; with the key back everything goes, and fetches back whole."""
    q = quick
    key = q["tmp"] / "k"
    assert _push(q, _name(1), segment(_name(1))).returncode == 0
    key.rename(q["tmp"] / "k.away")
    pushed = _push(q, _name(2), segment(_name(2)))
    assert pushed.returncode == 0 and _path(pushed) == "quick", pushed.stderr

    def upload() -> subprocess.CompletedProcess[str]:
        return run_cli_alone("wal-upload", "--once", "--config", str(q["config"]),
                             cwd=q["tmp"])  # fmt: skip

    _one_error(upload(), 4, f"key file {key} does not exist")
    key.write_text("not a key\n")
    key.chmod(0o600)
    _one_error(upload(), 4, "is not a key file")
    assert _spooled(q) == [_name(1), _name(2)]
    (q["tmp"] / "k.away").replace(key)
    assert upload().returncode == 0
    assert _spooled(q) == []
    fetched = q["tmp"] / "fetched"
    got = run_cli_alone("wal-fetch", _name(2), str(fetched), "--stream", STREAM,
                        "--config", str(q["config"]), cwd=q["tmp"])  # fmt: skip
    assert got.returncode == 0 and fetched.read_bytes() == segment(_name(2)), got.stderr


# --- SIGKILL anywhere -------------------------------------------------------------------------
def test_push_killed_at_random_points_never_leaves_a_partial_file(
    quick: dict[str, Path],
) -> None:
    """SIGKILL and SIGTERM at random moments of quick pushes (start-up, copy, fsync,
    link): under the segment's name there is either nothing or the whole file; SIGTERM
    ends in 0 (done first), or 143 with one ``error:`` line and no temp file left (or
    -15 before the handler is installed), never a traceback; the retry returns 0 with
    the exact bytes; the uploader passes the temp files over and archives every segment
    once, which wal-fetch returns whole."""
    q = quick
    assert _push(q, _name(1), segment(_name(1))).returncode == 0
    rng = random.Random(18)
    names = [_name(n) for n in range(2, 26)]
    for i, name in enumerate(names):
        (q["data"] / "pg_wal" / name).write_bytes(segment(name))
        proc = _start(q, f"pg_wal/{name}")
        time.sleep(rng.uniform(0.0, 0.12))
        term = i % 2 == 1
        proc.send_signal(signal.SIGTERM if term else signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
        assert "Traceback" not in err, err
        folder = q["spool"] / STREAM
        if term:
            assert proc.returncode in (0, 143, -signal.SIGTERM), (proc.returncode, err)
            if proc.returncode == 143:
                assert len([x for x in err.splitlines() if x.startswith("error:")]) == 1, err
            if proc.returncode != -signal.SIGTERM and folder.is_dir():
                assert not list(folder.glob(f".tmp-{name}-*")), "a temp file left"
        target = folder / name
        if target.exists():
            assert target.read_bytes() == segment(name), "a partial file under the name"
        retry = _push(q, name)
        assert retry.returncode == 0, retry.stderr
        assert target.read_bytes() == segment(name)
    upload = run_cli_alone("wal-upload", "--once", "--config", str(q["config"]), cwd=q["tmp"])
    assert upload.returncode == 0, upload.stderr
    assert [n for n in _spooled(q) if not n.startswith(".tmp-")] == []
    assert set(_archived(q["tmp"] / "repo")) >= {_name(1), *names}
    for name in names[::4]:
        fetched = q["tmp"] / f"fetched-{name}"
        got = run_cli_alone("wal-fetch", name, str(fetched), "--stream", STREAM,
                            "--config", str(q["config"]), cwd=q["tmp"])  # fmt: skip
        assert got.returncode == 0 and fetched.read_bytes() == segment(name), got.stderr
