"""A SQLite swap killed at each step boundary is settled by the next command.

The real command line restores over a live file with ``STRONGROOM_TEST_KILL_AT=<step>``
(the test hook of ``engines/swap_journal.py``: SIGKILL right after the journal entry for
that step is written); the state the kill left is checked (so the kill landed where it
should); then the next command (``backup``, ``restore --dry-run``, ``restore`` or
``recover``) runs as a new process with a fresh home folder and must say so in one line
and leave the target exactly as it was (same inode, bytes, rows) or exactly restored (the
backup's bytes), with no staged file, no journal, no lock file, no old copy beyond the one
a completed swap keeps (the original, unchanged); the file opens, passes ``PRAGMA
integrity_check``, and a backup of it works. In-process tests cover two recoveries at
once, a live swap (left alone), a swap failing in-process, the old ``-wal``/``-shm`` a
completed swap must not remove while they are in use, and journals that are not a live
swap's.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from strongroom.engines import sqlite_swap, swap_journal
from strongroom.engines.sqlite import SqliteEngine
from strongroom.engines.swap_journal import JournalEntry, SwapStep
from strongroom.errors import RestoreFailed
from strongroom.repository.keys import KeySource
from strongroom.repository.repository import Repository
from strongroom.services.backup import run_backup
from strongroom.services.swaps import settle_interrupted_swaps
from strongroom.storage.local import LocalStorage
from tests.helpers import cli_ok, make_sqlite_db, run_cli


@dataclass(frozen=True)
class World:
    env: dict[str, str]
    backup_id: str
    restored: bytes  # the file a restore of the backup writes
    home: Path


def _repository(world: World) -> Repository:
    env = world.env
    return Repository.open(
        LocalStorage(Path(env["STRONGROOM_REPO"])),
        KeySource(key_file=Path(env["STRONGROOM_KEY_FILE"])),
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    """A repository holding one backup of a small database (the restored state)."""
    folder = tmp_path_factory.mktemp("sqlite-swap-crash")
    env = {
        "STRONGROOM_REPO": str(folder / "repo"),
        "STRONGROOM_KEY_FILE": str(folder / "repo.key"),
    }
    Repository.init(LocalStorage(folder / "repo"), key_file=folder / "repo.key")
    source = make_sqlite_db(folder / "source.db", users=150, orders=300, seed=1)
    world = World(env, "", b"", folder / "second-host")
    repo = _repository(world)
    manifest = run_backup(repo, SqliteEngine(str(source))).manifest
    restored = b"".join(repo.read_stream(manifest))
    return replace(world, backup_id=manifest.backup_id, restored=restored)


@dataclass(frozen=True)
class Original:
    inode: int
    data: bytes


def live_file(folder: Path) -> tuple[Path, Original]:
    """A live database in WAL mode (so the swap checkpoints it) with other rows."""
    path = make_sqlite_db(folder / "shop.db", users=90, orders=120, seed=2)
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("INSERT INTO users (email, bio) VALUES ('live', 'only in the live file')")
    db.commit()
    db.close()  # the last connection checkpoints and removes the -wal
    return path, Original(path.stat().st_ino, path.read_bytes())


def leftovers(folder: Path, name: str) -> list[str]:
    """What the folder holds for ``name`` besides the file and its -wal/-shm."""
    return sorted(
        p.name
        for p in folder.iterdir()
        if name in p.name and p.name != name and p.name not in (f"{name}-wal", f"{name}-shm")
    )


def journal(path: Path) -> JournalEntry | None:
    return swap_journal.read_file(sqlite_swap.journal_path(path))


def assert_opens(path: Path) -> None:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT count(*) FROM users").fetchone()[0] > 0
    finally:
        db.close()


def _restore_args(world: World, path: Path, drop_old: bool) -> list[str]:
    args = ["restore", world.backup_id, "--to", f"sqlite://{path}", "--yes"]
    return [*args, "--no-safety-backup", *(["--drop-old"] if drop_old else [])]


def _killed_restore(world: World, path: Path, step: str, drop_old: bool) -> None:
    killed = run_cli(
        *_restore_args(world, path, drop_old), env={**world.env, swap_journal.TEST_KILL_ENV: step}
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()


def _next_command(command: str, path: Path, world: World) -> str:
    """Run the next command as another process with another home; its output."""
    env = {**world.env, "HOME": str(world.home), "XDG_STATE_HOME": str(world.home / "state")}
    url = f"sqlite://{path}"
    if command == "backup":
        result = run_cli("backup", url, env=env)
    elif command == "plan":
        result = run_cli("restore", world.backup_id, "--to", url, "--dry-run", env=env)
    elif command == "restore":
        result = run_cli(*_restore_args(world, path, True), env=env)
    else:
        result = run_cli("recover", "--to", url, env=env)
    cli_ok(result)
    return result.stdout.decode() + result.stderr.decode()


# step, --drop-old, the next command, what it must do; what the kill left: (old link
# made, the rename done)
CASES = [
    ("rename_away", False, "backup", "undid", (False, False)),
    ("rename_in", False, "plan", "undid", (True, False)),
    ("rename_in", True, "recover", "undid", (False, False)),
    ("rename_in", False, "restore", "undid", (True, False)),  # then restores, whole
    ("finish", False, "backup", "completed", (True, True)),
    ("finish", True, "plan", "completed", (False, True)),
]


@pytest.mark.parametrize(("step", "drop_old", "command", "verb", "left"), CASES)
def test_a_restore_killed_at_each_step_of_its_swap_is_settled_by_the_next_command(
    world, tmp_path, step, drop_old, command, verb, left
):
    path, original = live_file(tmp_path)
    _killed_restore(world, path, step, drop_old)

    # The kill landed at the step boundary asked for, and left its journal behind.
    entry = journal(path)
    assert entry is not None and entry.step.value == step
    linked, renamed = left
    olds = [p for p in tmp_path.iterdir() if p.name.startswith("shop.db.old-")]
    assert [p.stat().st_ino for p in olds] == ([original.inode] if linked else [])
    assert Path(entry.staged).exists() is not renamed
    assert (path.stat().st_ino == original.inode) is not renamed
    assert path.read_bytes() == (world.restored if renamed else original.data)

    out = _next_command(command, path, world)
    lines = [line for line in out.splitlines() if "interrupted swap into" in line]
    assert len(lines) == 1, out
    assert (
        f"{verb} the interrupted swap into SQLite file {path} (stopped at step {step})"
        in (lines[0])
    )
    if command == "restore":  # the original came back, then was replaced for good
        verb, olds_kept = "completed", []
    else:
        olds_kept = [p.name for p in olds] if verb == "completed" else []
    assert leftovers(tmp_path, "shop.db") == olds_kept  # no staged file, journal, lock
    assert journal(path) is None
    if verb == "undid":
        assert path.stat().st_ino == original.inode and path.read_bytes() == original.data
    else:
        assert path.read_bytes() == world.restored
        assert [(tmp_path / n).read_bytes() for n in olds_kept] == [original.data] * len(olds_kept)
    assert_opens(path)
    if command != "backup":
        assert run_backup(_repository(world), SqliteEngine(str(path))).manifest.raw_size > 0
    assert SqliteEngine(str(path)).recover_swaps() == []  # idempotent


@pytest.mark.parametrize(("step", "verb"), [("rename_in", "undid"), ("finish", "completed")])
def test_a_restore_into_a_new_file_killed_at_each_step_is_settled(world, tmp_path, step, verb):
    path = tmp_path / "shop.db"
    _killed_restore(world, path, step, False)
    assert path.exists() is (step == "finish")
    out = _next_command("recover", path, world)
    assert f"{verb} the interrupted swap into SQLite file {path} (stopped at step {step})" in out
    assert leftovers(tmp_path, "shop.db") == []
    if verb == "undid":
        assert not path.exists()
        assert "there was no file before" in out
    else:
        assert path.read_bytes() == world.restored
        assert_opens(path)


# --- in-process: concurrency, live swaps, failures, journals that are not live ones ------
class _Stop(BaseException):
    """Stands for a kill, in-process (nothing catches it)."""


def _staged(world: World, target: SqliteEngine) -> SqliteEngine:
    staged = target.staging()
    staged.restore([world.restored])
    return staged


def _stop_at(monkeypatch, step: SwapStep) -> None:
    """Stop the swap at ``step`` as a kill would: no settling on the spot either."""

    def hook(now: SwapStep) -> None:
        if now is step:
            raise _Stop(step)

    def no_settling(target: Path, entry: JournalEntry, exc: BaseException) -> None:
        raise exc

    monkeypatch.setattr(swap_journal, "kill_point", hook)
    monkeypatch.setattr(sqlite_swap, "_settle_after_failure", no_settling)


def _swap_stopped_at(monkeypatch, world: World, path: Path, step: SwapStep, keep_old=True):
    engine = SqliteEngine(str(path))
    _stop_at(monkeypatch, step)
    with pytest.raises(_Stop):
        engine.swap_in(_staged(world, engine), keep_old=keep_old)
    monkeypatch.undo()
    assert journal(path) is not None


def test_two_recoveries_at_once_settle_the_swap_once(world, tmp_path, monkeypatch):
    path, original = live_file(tmp_path)
    _swap_stopped_at(monkeypatch, world, path, SwapStep.RENAME_IN)
    barrier = threading.Barrier(2)
    results: list[Any] = []

    def recover() -> None:
        engine = SqliteEngine(str(path))
        barrier.wait(30)
        results.extend(engine.recover_swaps())

    threads = [threading.Thread(target=recover) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [r.outcome for r in results] == ["undone"]
    assert results[0].database == "shop"
    assert path.stat().st_ino == original.inode and path.read_bytes() == original.data
    assert leftovers(tmp_path, "shop.db") == []


def test_a_live_swap_is_left_alone_and_then_completes(world, tmp_path, monkeypatch):
    path, original = live_file(tmp_path)
    engine = SqliteEngine(str(path))
    staged = _staged(world, engine)
    reached, go = threading.Event(), threading.Event()

    def pause(step: SwapStep) -> None:
        if step is SwapStep.RENAME_IN:
            reached.set()
            assert go.wait(60)

    monkeypatch.setattr(swap_journal, "kill_point", pause)
    outcome: list[Any] = []
    worker = threading.Thread(target=lambda: outcome.append(engine.swap_in(staged, keep_old=False)))
    try:
        worker.start()
        assert reached.wait(60)
        monkeypatch.setattr(sqlite_swap, "LOCK_WAIT", 0.2)
        busy = SqliteEngine(str(path)).recover_swaps()
        assert [r.outcome for r in busy] == ["busy"]
        assert f"process {os.getpid()}" in busy[0].message
        with pytest.raises(RestoreFailed, match="in progress"):
            settle_interrupted_swaps(SqliteEngine(str(path)))  # its own file: stops
        assert path.read_bytes() == original.data and staged.path.exists()  # untouched
        go.set()
        worker.join(60)
        assert outcome == [None]
        assert path.read_bytes() == world.restored
        assert leftovers(tmp_path, "shop.db") == []
    finally:
        go.set()
        worker.join(60)


def test_a_rename_that_fails_puts_the_original_back_at_once(world, tmp_path, monkeypatch):
    path, original = live_file(tmp_path)
    engine = SqliteEngine(str(path))
    staged = _staged(world, engine)
    real = os.replace

    def failing(src: Any, dst: Any) -> None:
        if Path(src) == staged.path:
            raise PermissionError(13, "Permission denied (simulated)")
        real(src, dst)

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(RestoreFailed, match="the original file is unchanged"):
        engine.swap_in(staged, keep_old=True)
    monkeypatch.undo()
    assert path.stat().st_ino == original.inode and path.read_bytes() == original.data
    assert leftovers(tmp_path, "shop.db") == []  # the old link and staged file gone too


def test_the_old_wal_and_shm_are_left_while_in_use_else_removed(world, tmp_path, monkeypatch):
    """A completed recovery removes the old -wal/-shm only if nothing has used them since
    the swap: a connection to the restored file may have joined them meanwhile."""
    path, _ = live_file(tmp_path)
    holder = run_cli_holder(path)
    try:
        _swap_stopped_at(monkeypatch, world, path, SwapStep.FINISH)
        wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
        assert wal.exists() and shm.exists()  # the holder's, beside the restored file
        found = SqliteEngine(str(path)).recover_swaps()
        assert [r.outcome for r in found] == ["completed"]
        assert "shop.db-wal, shop.db-shm beside it were left in place" in found[0].message
        assert wal.exists() and shm.exists() and journal(path) is None
    finally:
        holder.stdin.close()
        holder.wait(30)

    # Unused (only this process had the file open): removed, as the swap itself does.
    path.unlink()
    for name in (wal, shm):
        name.unlink(missing_ok=True)
    path, _ = live_file(tmp_path)
    db = sqlite3.connect(path)
    assert db.execute("SELECT count(*) FROM users").fetchone()[0] > 0  # -wal and -shm open
    try:
        _swap_stopped_at(monkeypatch, world, path, SwapStep.FINISH)
        assert wal.exists() and shm.exists()
        found = SqliteEngine(str(path)).recover_swaps()
        assert [r.outcome for r in found] == ["completed"] and "left" not in found[0].message
        assert not wal.exists() and not shm.exists()
    finally:
        db.close()
    assert_opens(path)
    assert path.read_bytes() == world.restored


def run_cli_holder(path: Path) -> Any:
    """Another process holding ``path`` open (WAL mode), until its stdin closes."""
    code = (
        "import sqlite3, sys\n"
        f"db = sqlite3.connect({str(path)!r})\n"
        "db.execute('SELECT count(*) FROM users').fetchone()\n"
        "print('open', flush=True)\n"
        "sys.stdin.read()\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
    return holder


def _entry(path: Path, **change: Any) -> JournalEntry:
    entry = JournalEntry(
        engine="sqlite",
        target=str(path),
        staged=str(path.with_name(f".{path.name}.sr-0123abcd.restoring")),
        old=None,
        keep_old=True,
        step=SwapStep.RENAME_IN,
        details={"target_id": None, "staged_id": [0, 0], "companions": {}},
    )
    return replace(entry, **change)


def test_journals_that_are_not_a_live_swaps(world, tmp_path):
    path, original = live_file(tmp_path)
    inode = [path.stat().st_dev, original.inode]
    journal_file = sqlite_swap.journal_path(path)
    # names the target itself as the staged file, to have a recovery remove it
    forged = _entry(path, staged=str(path), details={**_entry(path).details, "staged_id": inode})
    # names another file of the folder, by its own inode, as the "old copy" to remove
    victim = make_sqlite_db(tmp_path / "other.db", users=5, orders=5)
    other = [victim.stat().st_dev, victim.stat().st_ino]
    aimed = _entry(
        path,
        old=str(victim),
        details={"target_id": inode, "staged_id": [0, 1], "companions": {}},
    )
    for entry in (forged, aimed):
        swap_journal.write_file(journal_file, entry)
        found = SqliteEngine(str(path)).recover_swaps()
        assert [r.outcome for r in found] == ["failed"], found
        assert "not a name a swap gives" in found[0].message
        assert journal(path) is not None  # reported until someone acts
        assert path.read_bytes() == original.data and victim.exists()
        assert [victim.stat().st_dev, victim.stat().st_ino] == other

    journal_file.write_text('{"format": "strongroom-swap-journal", "version": 99}\n')
    result = run_cli("recover", "--to", f"sqlite://{path}", env=world.env)
    assert result.returncode == 5
    assert f"the swap journal {journal_file} cannot be read" in result.stdout.decode()
    assert "could not be settled" in result.stderr.decode()
    backup = run_cli("backup", f"sqlite://{path}", env=world.env)
    assert backup.returncode == 5  # the file's own journal: no backup until it is settled
    journal_file.unlink()
    assert SqliteEngine(str(path)).recover_swaps() == []
    assert leftovers(tmp_path, "shop.db") == []
