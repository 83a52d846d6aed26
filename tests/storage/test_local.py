"""LocalStorage specifics: atomic writes, leftovers of killed writers, a full disk."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from strongroom.errors import StorageError, StorageFull
from strongroom.storage.local import TEMP_PREFIX, LocalStorage


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(TEMP_PREFIX)]


def test_put_leaves_no_temp_files_and_creates_parents(tmp_path: Path) -> None:
    root = tmp_path / "does" / "not" / "exist"
    storage = LocalStorage(root)
    storage.put("chunks/ab/ab12", b"a" * 100_000)
    storage.put("chunks/ab/ab12", b"b" * 10)
    storage.put("config", b"c")
    assert (root / "chunks" / "ab" / "ab12").read_bytes() == b"b" * 10
    assert temp_files(root) == []
    assert sorted(p.name for p in (root / "chunks" / "ab").iterdir()) == ["ab12"]


def test_writer_killed_mid_put_leaves_old_object_and_an_unlisted_temp(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    storage = LocalStorage(root)
    storage.put("backups/b1.json", b"old manifest")
    # A real writer process, SIGKILLed after writing its temp file but before the rename.
    script = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from strongroom.storage.local import LocalStorage
        os.replace = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
        LocalStorage(Path({str(root)!r})).put("backups/b1.json", b"new manifest" * 1000)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], check=False, timeout=60)
    assert result.returncode == -signal.SIGKILL

    leftovers = temp_files(root)
    assert len(leftovers) == 1  # the killed writer really did leave a temp file
    assert leftovers[0].read_bytes() == b"new manifest" * 1000
    assert storage.get("backups/b1.json") == b"old manifest"
    assert list(storage.list("")) == ["backups/b1.json"]
    assert list(storage.list("backups/")) == ["backups/b1.json"]


def test_failed_put_removes_its_temp_file(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    (tmp_path / "chunks" / "ab").mkdir(parents=True)  # a directory where the object should go
    with pytest.raises(StorageError) as info:
        storage.put("chunks/ab", b"data")
    assert "chunks/ab" in str(info.value)
    assert "\n" not in str(info.value)
    assert temp_files(tmp_path) == []


def test_list_and_get_need_an_existing_root(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "missing")
    with pytest.raises(StorageError, match="does not exist"):
        list(storage.list(""))
    assert storage.exists("config") is False
    storage.put("config", b"x")
    assert list(storage.list("")) == ["config"]


def test_file_permissions_follow_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        LocalStorage(tmp_path).put("config", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "config").stat().st_mode & 0o777 == 0o640


# --- a full disk, on a real tiny tmpfs ------------------------------------------------
@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 512 KiB tmpfs mounted for this test (root only), always unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs to fill a disk needs root")
    mountpoint = tmp_path / "tiny"
    mountpoint.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip() or mounted.returncode}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)


def test_full_disk_raises_storage_full_and_leaves_nothing(tiny_disk: Path) -> None:
    storage = LocalStorage(tiny_disk / "repo")
    storage.put("config", b"small")

    with pytest.raises(StorageFull) as info:
        storage.put("chunks/ab/big", os.urandom(2 * 1024 * 1024))

    message = str(info.value)
    assert message == (
        f"repository disk is full at {tiny_disk / 'repo'}: "
        "no space left while writing chunks/ab/big"
    )
    assert "\n" not in message
    assert storage.exists("chunks/ab/big") is False
    assert temp_files(tiny_disk) == []
    assert list(storage.list("")) == ["config"]
    # The space came back: a small write still works.
    storage.put("chunks/ab/small", b"x" * 1000)
    assert storage.get("chunks/ab/small") == b"x" * 1000


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A folder other users can reach (pytest's own tmp_path sits under a 0700 folder)."""
    path = Path(tempfile.mkdtemp(prefix="strongroom-local-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to write as another user")
def test_root_writing_a_repository_owned_by_another_user_leaves_it_writable_by_that_user(
    open_tmp: Path,
) -> None:
    """cron runs ``strongroom backup`` as root, the archiver runs ``wal-push`` as postgres:
    a chunk folder root makes must not refuse postgres's next chunk (CI saw ``Permission
    denied`` on ``chunks/91/…``)."""
    nobody = 65534
    root = open_tmp / "repo"
    root.mkdir()
    os.chown(root, nobody, nobody)
    storage = LocalStorage(root)
    storage.put("chunks/91/aa", b"a")
    assert storage.create("locks/one", b"l") is True
    for path in (
        root / "chunks",
        root / "chunks" / "91",
        root / "chunks" / "91" / "aa",
        root / "locks" / "one",
    ):
        assert (path.stat().st_uid, path.stat().st_gid) == (nobody, nobody), path
    code = (  # what the other user's strongroom does there: write, rename, remove, mkdir
        "import os, sys; r = sys.argv[1]; open(r + '/chunks/91/.t', 'w').write('b'); "
        "os.replace(r + '/chunks/91/.t', r + '/chunks/91/bb'); os.unlink(r + '/chunks/91/aa'); "
        "os.mkdir(r + '/chunks/92'); open(r + '/chunks/92/cc', 'w').write('c')"
    )
    done = subprocess.run(  # the system Python: the venv may not be readable by nobody
        ["/usr/bin/python3", "-c", code, str(root)],
        user=nobody,
        group=nobody,
        capture_output=True,
        text=True,
        check=False,
        cwd="/",
    )
    assert done.returncode == 0, done.stderr
    assert sorted(storage.list("chunks/")) == ["chunks/91/bb", "chunks/92/cc"]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_root_writing_its_own_repository_changes_no_owner(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "repo")
    storage.put("chunks/91/aa", b"a")
    assert (tmp_path / "repo" / "chunks" / "91" / "aa").stat().st_uid == 0
