"""Private temp files: 0600/0700, unnamed where possible, swept after a killed process.

Processes that own temp folders are real Python processes started here (each with
``TMPDIR`` set to a folder of the test), killed or left to exit, then looked at."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from strongroom import tempfiles
from strongroom.engines.mysql.connection import MysqlConnection
from strongroom.engines.process import run_tool
from tests.helpers import REPO_ROOT

OWNER = textwrap.dedent(
    """
    import sys
    from strongroom import tempfiles
    folder = tempfiles.private_dir()
    (folder / "plain.dump").write_bytes(b"decrypted rows")
    print(folder, flush=True)
    if sys.argv[1] == "wait":
        sys.stdin.read()
    """
)


def start_owner(temp: Path, mode: str) -> tuple[subprocess.Popen[bytes], Path]:
    """A process that makes its private folder and writes a file in it; (process, folder)."""
    process = subprocess.Popen(
        [sys.executable, "-c", OWNER, mode],
        env={**os.environ, "TMPDIR": str(temp)},
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    folder = Path(process.stdout.readline().decode().strip())
    return process, folder


@pytest.fixture()
def temp(tmp_path, monkeypatch):
    """``$TMPDIR`` of this process and its children: a fresh folder."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr("tempfile.tempdir", None)  # gettempdir() reads TMPDIR again
    monkeypatch.setattr(tempfiles, "_own", None)
    yield folder
    tempfiles.remove_own()


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_the_private_folder_is_this_users_alone(temp):
    folder = tempfiles.private_dir()
    assert folder.parent == temp / f"strongroom-{os.getuid()}"
    assert folder.name.startswith(f"{os.getpid()}-")
    assert mode(folder.parent) == 0o700 and mode(folder) == 0o700
    assert mode(folder / tempfiles.LOCK_NAME) == 0o600
    assert tempfiles.private_dir() == folder  # one per process
    tempfiles.remove_own()
    assert not folder.exists()


def test_a_base_folder_someone_else_made_is_not_used(temp):
    base = temp / f"strongroom-{os.getuid()}"
    base.symlink_to(temp)  # not a real folder of ours (as another user's would not be)
    folder = tempfiles.private_dir()
    assert folder.parent == temp and folder.name.startswith("strongroom-")
    assert mode(folder) == 0o700


def test_a_spool_has_no_name_yet_a_child_reads_it(temp):
    with tempfiles.spool() as spool:
        spool.handle.write(b"decrypted dump bytes")
        spool.handle.flush()
        assert spool.path.startswith("/dev/fd/")
        names = [p.name for p in tempfiles.private_dir().iterdir()]
        assert names == [tempfiles.LOCK_NAME]  # nothing to find on disk
        assert stat.S_IMODE(os.fstat(spool.handle.fileno()).st_mode) == 0o600
        result = run_tool(["cat", spool.path], pass_fds=spool.pass_fds)
        assert result.returncode == 0, result.stderr
        assert result.stdout == b"decrypted dump bytes"


def test_a_killed_processs_folder_is_swept_at_the_next_start(temp):
    process, folder = start_owner(temp, "wait")
    assert (folder / "plain.dump").exists()
    assert tempfiles.sweep() == 0  # it lives: its folder stays
    assert folder.exists()
    process.kill()
    process.wait()
    assert folder.exists()  # kill -9: nothing ran
    assert tempfiles.sweep() == 1
    assert not folder.exists()


def test_a_process_removes_its_own_folder_when_it_exits(temp):
    process, folder = start_owner(temp, "exit")
    assert process.wait(timeout=60) == 0
    assert not folder.exists()


def test_a_folder_being_set_up_by_a_live_process_is_left_alone(temp):
    base = temp / f"strongroom-{os.getuid()}"
    base.mkdir(mode=0o700)
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        being_made = base / f"{tempfiles.NEW_PREFIX}{sleeper.pid}-abc"
        being_made.mkdir()
        dead = base / f"{tempfiles.NEW_PREFIX}999999999-abc"  # no such pid
        dead.mkdir()
        assert tempfiles.sweep() == 1
        assert being_made.exists() and not dead.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_what_older_versions_left_is_removed_once_old_enough(temp):
    old_dir = temp / "strongroom-restore-abc"
    old_dir.mkdir()
    (old_dir / "dump").write_bytes(b"decrypted")
    old_cnf = temp / "strongroom-my-xyz.cnf"
    old_cnf.write_text("[client]\npassword=secret\n")
    recent = temp / "strongroom-tables-new"
    recent.mkdir()
    recent_cnf = temp / "strongroom-my-new.cnf"  # a client of an old version may read it now
    recent_cnf.write_text("[client]\n")
    unrelated = temp / "someone-elses-file"
    unrelated.write_text("keep")
    day_ago = time.time() - tempfiles.LEGACY_AGE - 60
    for path in (old_dir, unrelated):
        os.utime(path, (day_ago, day_ago))
    hour_ago = time.time() - 3600
    os.utime(old_cnf, (hour_ago, hour_ago))
    assert tempfiles.sweep() == 2
    assert not old_dir.exists() and not old_cnf.exists()
    assert recent.exists() and recent_cnf.exists() and unrelated.exists()


def test_the_mysql_option_file_without_memfd_is_private_and_removed(temp, monkeypatch):
    def no_memfd(*_args):
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(os, "memfd_create", no_memfd)
    connection = MysqlConnection("mysql://app:s3cret@127.0.0.1:3306/shop")
    options = connection.write_option_file()
    try:
        assert options.pass_fds == ()
        assert options.path.parent == tempfiles.private_dir()
        assert mode(options.path) == 0o600
        assert 'password="s3cret"' in options.path.read_text()
    finally:
        options.close()
    assert not options.path.exists()


def test_the_mysql_option_file_lives_in_memory(temp):
    connection = MysqlConnection("mysql://app:s3cret@127.0.0.1:3306/shop")
    with connection.option_file() as options:
        assert options.pass_fds and str(options.path).startswith("/dev/fd/")
        assert [p.name for p in tempfiles.private_dir().iterdir()] == [tempfiles.LOCK_NAME]
        result = run_tool(["cat", str(options.path)], pass_fds=options.pass_fds)
        assert b'password="s3cret"' in result.stdout


def test_sweeping_a_missing_or_foreign_base_folder_does_nothing(temp, monkeypatch):
    assert tempfiles.sweep() == 0  # no base folder yet
    base = temp / f"strongroom-{os.getuid()}"
    base.symlink_to(temp)
    (temp / "1-abc").mkdir()  # would look dead if the link were followed
    assert tempfiles.sweep() == 0
    assert (temp / "1-abc").exists()


FOR_USER = textwrap.dedent(
    """
    import sys
    from strongroom import tempfiles
    folder = tempfiles.folder_for(int(sys.argv[1]), int(sys.argv[2]), "pitr-")
    (folder / "data").mkdir()
    print(folder, flush=True)
    sys.stdin.read()
    """
)


@pytest.mark.skipif(os.geteuid() != 0, reason="root makes folders for another user")
def test_a_folder_root_made_for_another_user_is_theirs_and_swept_after_a_kill(temp):
    from strongroom_servers.common import run_as_user

    user = run_as_user()
    assert user is not None
    process = subprocess.Popen(
        [sys.executable, "-c", FOR_USER, str(user.pw_uid), str(user.pw_gid)],
        env={**os.environ, "TMPDIR": str(temp)},
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    folder = Path(process.stdout.readline().decode().strip())
    try:
        assert folder.parent == temp / f"strongroom-{user.pw_uid}"
        for path in (folder.parent, folder, folder / ".lock"):
            assert os.lstat(path).st_uid == user.pw_uid, path
        assert mode(folder) == 0o700
        assert tempfiles.sweep() == 0  # its maker lives (holds the lock): it stays
        assert folder.exists()
    finally:
        process.kill()
        process.wait()
    assert folder.exists()  # kill -9: nothing ran
    assert tempfiles.sweep() == 1  # root's sweep covers the other user's folder
    assert not folder.exists()
