"""SQLite restore fidelity: the restored file keeps the owner, group and mode of the file it
replaces, so the application that owns the database can still open it (issue 13, input 5).

The ownership tests need root (as in CI): they chown a live database to the system user
``strongroom-test`` and open the restored file as that user."""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import sqlite3
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from strongroom.engines.sqlite import NEW_FILE_MODE, SqliteEngine, new_file_mode
from strongroom.repository.keys import KeySource
from strongroom.repository.repository import Repository
from strongroom.services.backup import run_backup
from strongroom.services.restore import run_restore
from strongroom.storage.memory import MemoryStorage
from strongroom_servers.common import ensure_system_user
from tests.helpers import cli_ok, make_sqlite_db, repository_env, run_cli, sqlite_counts

APP_USER = "strongroom-test"


@pytest.fixture()
def repo(tmp_path: Path) -> Repository:
    storage = MemoryStorage()
    Repository.init(storage, key_file=tmp_path / "k")
    return Repository.open(storage, KeySource(key_file=tmp_path / "k"))


@pytest.fixture()
def app_user() -> tuple[int, int]:
    """The uid and gid of the application's system user (root only: chown needs it)."""
    if os.geteuid() != 0:
        pytest.skip("giving a file to another user needs root")
    entry = ensure_system_user(APP_USER)
    return entry.pw_uid, entry.pw_gid


@pytest.fixture()
def app_dir(app_user: tuple[int, int]) -> Iterator[Path]:
    """The application's data folder, owned by its user (as /var/lib/app would be); outside
    pytest's root-only temp folders so that user can reach it."""
    folder = Path(tempfile.mkdtemp(prefix="strongroom-fidelity-", dir="/tmp"))
    try:
        os.chown(folder, *app_user)
        folder.chmod(0o750)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture()
def umask() -> Iterator[None]:
    """Restore the process umask a test changes."""
    saved = os.umask(0o022)
    os.umask(saved)
    try:
        yield
    finally:
        os.umask(saved)


def _live_db(folder: Path, owner: tuple[int, int], mode: int, journal: str = "delete") -> Path:
    path = make_sqlite_db(folder / "app.db", users=300, orders=600)
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA journal_mode={journal}").fetchone()
    db.close()
    for name in (path, *(Path(f"{path}{s}") for s in ("-wal", "-shm"))):
        if name.exists():
            os.chown(name, *owner)
    path.chmod(mode)
    return path


def _grow(path: Path) -> None:
    make_sqlite_db(path, users=50, orders=50, seed=99)


def _attributes(path: Path) -> tuple[int, int, int]:
    info = path.stat()
    return info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)


def _open_as(owner: tuple[int, int], path: Path) -> tuple[bool, str]:
    """What the application does with its database, as its user: open it read-write,
    write a row, read back. (True, row count) or (False, the error). A forked child drops
    to the user (the interpreter may live where that user cannot reach)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(owner[1])
            os.setuid(owner[0])
            db = sqlite3.connect(path, timeout=10)
            db.execute("INSERT INTO users (email, bio) VALUES ('app@example.com', '')")
            db.commit()
            message = str(db.execute("SELECT count(*) FROM users").fetchone()[0])
            db.close()
            code = 0
        except BaseException as exc:
            message = f"{type(exc).__name__}: {exc}"
        finally:
            os.write(write_end, message.encode())
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        message = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0, message


def _litter(folder: Path) -> list[str]:
    """Files a restore must not leave behind (staged files, their -wal/-shm)."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_the_check_is_meaningful_a_root_owned_0600_copy_cannot_be_opened(app_user, app_dir):
    live = _live_db(app_dir, app_user, 0o640)
    assert _open_as(app_user, live) == (True, "301")
    copy = app_dir / "copy.db"
    shutil.copyfile(live, copy)
    copy.chmod(0o600)  # what a restore by root used to give: root:root 0600
    assert _open_as(app_user, copy) == (False, "OperationalError: unable to open database file")


@pytest.mark.parametrize("journal", ["delete", "wal"])
def test_restore_over_a_file_keeps_its_owner_group_and_mode(repo, app_user, app_dir, journal):
    live = _live_db(app_dir, app_user, 0o640, journal)
    backup = run_backup(repo, SqliteEngine(str(live))).manifest
    _grow(live)
    os.chown(live, *app_user)  # growing it as root did not change it; be explicit
    before = _attributes(live)
    assert before == (*app_user, 0o640)

    report = run_restore(repo, backup, SqliteEngine(str(live)))

    assert report.ok and report.swapped
    assert _attributes(live) == before
    assert sqlite_counts(live) == {"users": 300, "orders": 600}
    # the kept old file is the old inode: its own owner, group and mode
    assert report.old_kept_as is not None
    assert _attributes(Path(report.old_kept_as)) == before
    # no staged file and none of its -wal/-shm (a WAL-mode copy leaves them on reading)
    assert _litter(app_dir) == []
    assert _open_as(app_user, live) == (True, "301")


def test_the_file_never_appears_with_other_attributes(repo, app_user, app_dir, monkeypatch):
    live = _live_db(app_dir, app_user, 0o660)
    backup = run_backup(repo, SqliteEngine(str(live))).manifest
    seen: list[tuple[int, int, int]] = []
    real_replace = os.replace

    def spy(src, dst, *args, **kwargs):
        if Path(dst) == live:
            seen.append(_attributes(Path(src)))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", spy)
    assert run_restore(repo, backup, SqliteEngine(str(live)), keep_old=False).swapped
    assert seen == [(*app_user, 0o660)]  # set on the staged file, before the rename
    assert _attributes(live) == (*app_user, 0o660)


def test_a_refused_chown_is_logged_and_the_restore_goes_on(repo, tmp_path, monkeypatch, caplog):
    """As a non-root user: the OS refuses another owner; the group (one the user belongs
    to) and the mode are still taken, a warning says what happened, the restore succeeds."""
    live = make_sqlite_db(tmp_path / "app.db", users=100, orders=100)
    live.chmod(0o640)
    backup = run_backup(repo, SqliteEngine(str(live))).manifest
    like = live.stat()
    foreign_uid = like.st_uid + 4242
    real_stat = os.stat
    real_fchown = os.fchown
    calls: list[tuple[int, int]] = []

    def stat_as_if_foreign(path, *args, **kwargs):
        result = real_stat(path, *args, **kwargs)
        if Path(path) == live:
            values = list(result)
            values[stat.ST_UID] = foreign_uid
            return os.stat_result(values)
        return result

    def refusing_fchown(fd, uid, gid):
        calls.append((uid, gid))
        if uid != -1:
            raise PermissionError(errno.EPERM, "Operation not permitted")
        return real_fchown(fd, uid, gid)

    monkeypatch.setattr(os, "stat", stat_as_if_foreign)
    monkeypatch.setattr(os, "fchown", refusing_fchown)
    with caplog.at_level(logging.WARNING, logger="strongroom.engines.sqlite"):
        report = run_restore(repo, backup, SqliteEngine(str(live)), safety_backup=False)
    monkeypatch.undo()

    assert report.ok and report.swapped
    assert calls == [(foreign_uid, like.st_gid)]  # the group was already right
    assert stat.S_IMODE(live.stat().st_mode) == 0o640
    assert live.stat().st_gid == like.st_gid
    assert any(
        "cannot give" in r.getMessage() and "Operation not permitted" in r.getMessage()
        for r in caplog.records
    )


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077])
def test_a_new_file_gets_the_default_mode_filtered_by_the_umask(repo, tmp_path, umask, mask):
    source = make_sqlite_db(tmp_path / "source.db", users=100, orders=100)
    backup = run_backup(repo, SqliteEngine(str(source))).manifest
    os.umask(mask)
    assert new_file_mode() == NEW_FILE_MODE & ~mask
    target = tmp_path / "new.db"
    report = run_restore(repo, backup, SqliteEngine(str(target)))
    assert report.ok and report.swapped and report.old_kept_as is None
    info = target.stat()
    assert stat.S_IMODE(info.st_mode) == 0o644 & ~mask
    assert (info.st_uid, info.st_gid) == (os.geteuid(), os.getegid())
    assert _litter(tmp_path) == []


def test_the_engine_restore_into_a_new_file_gets_the_default_mode(tmp_path, umask):
    """The unstaged path (``Engine.restore``, as drills use it) gives the same mode."""
    source = make_sqlite_db(tmp_path / "source.db", users=10, orders=10)
    os.umask(0o027)
    target = SqliteEngine(str(tmp_path / "copy.db"))
    target.restore([source.read_bytes()])
    assert stat.S_IMODE(target.path.stat().st_mode) == 0o640
    assert _litter(tmp_path) == []


# --- the same through the command line ---------------------------------------------------


def test_cli_restore_over_a_file_keeps_its_owner_group_and_mode(tmp_path, app_user, app_dir):
    env = repository_env(tmp_path)
    live = _live_db(app_dir, app_user, 0o640, "wal")
    cli_ok(run_cli("init", env=env))
    out = cli_ok(run_cli("backup", str(live), env=env))
    backup_id = re.search(r"backup (\S+) complete", out).group(1)
    _grow(live)
    before = _attributes(live)

    out = cli_ok(run_cli("restore", backup_id, "--to", str(live), "--yes", env=env))

    assert "verified" in out
    assert _attributes(live) == before == (*app_user, 0o640)
    assert sqlite_counts(live) == {"users": 300, "orders": 600}
    kept = [p for p in app_dir.iterdir() if p.name.startswith("app.db.old-")]
    assert len(kept) == 1 and _attributes(kept[0]) == before
    assert _litter(app_dir) == []
    assert _open_as(app_user, live) == (True, "301")


def test_cli_restore_into_a_new_file_gets_the_default_mode(tmp_path, umask):
    env = repository_env(tmp_path)
    source = make_sqlite_db(tmp_path / "source.db", users=100, orders=100)
    cli_ok(run_cli("init", env=env))
    cli_ok(run_cli("backup", str(source), env=env))
    os.umask(0o027)  # inherited by the command
    target = tmp_path / "new.db"
    cli_ok(run_cli("restore", "latest", "--to", str(target), "--yes", env=env))
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sqlite_counts(target) == sqlite_counts(source)
