"""Attacks on a backup's pack session (pack_session.py) with the process stopped while it
indexes: the real command line killed with SIGKILL while it writes index objects (SQLite and
PostgreSQL), and ^C (a real SIGINT) while close() or finish() waits for an index object."""

from __future__ import annotations

import os
import random
import threading
from pathlib import Path

import pytest

from strongroom.services import backup
from strongroom.storage.local import LocalStorage
from tests.helpers import make_sqlite_db
from tests.repository.pack_session_helpers import (
    _files,
    _open,
    _rows,
    tiny_pack_storage,
)


@pytest.fixture()
def storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalStorage:
    return tiny_pack_storage(tmp_path, monkeypatch)


# --- the real command line, killed with SIGKILL while it writes index objects ----------

# `strongroom` with 16 KiB packs and one pack per index object, so a small database's
# backup writes dozens of index objects (the product's 16 MiB x 64 would need 1 GiB)
_SMALL_PACKS = (
    "import sys\n"
    "from strongroom.repository import chunks, pack_session\n"
    "pack_session.INDEX_MAX_PACKS = 1\n"
    "chunks.ChunkStore.pack_writer = lambda self, target_size=0: "
    "pack_session.PackSession(self, 16 * 1024)\n"
    "from strongroom.cli.app import main\n"
    "sys.argv[0] = 'strongroom'\n"
    "main()\n"
)


def _backup_id(out: str) -> str:
    import re

    match = re.search(r"backup (\S+) complete", out)
    assert match, out
    return match.group(1)


def test_a_backup_killed_while_writing_index_objects_loses_nothing(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    from tests.helpers import REPO_ROOT, cli_ok, repository_env, run_cli

    env = repository_env(tmp_path)
    cli_ok(run_cli("init", env=env))
    shop = make_sqlite_db(tmp_path / "shop.db", users=1500, orders=4500)
    first = _backup_id(cli_ok(run_cli("backup", str(shop), env=env)))
    rows = _rows(shop)
    index_dir = tmp_path / "repo" / "index"
    rng = random.Random(11)
    killed = 0
    for round_ in range(4):
        other = make_sqlite_db(tmp_path / f"other{round_}.db", users=1500, orders=4500, seed=round_)
        before = _files(index_dir)
        stop_at = before + rng.randint(1, 8)
        proc = subprocess.Popen(
            [sys.executable, "-c", _SMALL_PACKS, "backup", str(other)],
            env={**os.environ, **env},
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 120
            while proc.poll() is None and time.monotonic() < deadline:
                if _files(index_dir) >= stop_at:
                    time.sleep(rng.random() * 0.05)  # anywhere in the next index write
                    break
                time.sleep(0.002)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                killed += 1
            proc.wait()
        after: str | None = None
        if round_ % 2:  # the same backup again at once: it reuses what the dead one indexed
            after = _backup_id(cli_ok(run_cli("backup", str(other), env=env)))
        # what a user does next: prune (the dead backup's lock goes), check, restore
        cli_ok(run_cli("prune", env=env))
        cli_ok(run_cli("check", "--read-data", env=env))
        if after is not None:
            into = tmp_path / f"after{round_}.db"
            cli_ok(run_cli("restore", after, "--to", f"sqlite://{into}", "--yes", env=env))
            assert _rows(into) == _rows(other)
        into = tmp_path / f"restored{round_}.db"
        cli_ok(run_cli("restore", first, "--to", f"sqlite://{into}", "--yes", env=env))
        assert _rows(into) == rows
    assert killed >= 2, "the backups ended before they were killed"
    last = _backup_id(cli_ok(run_cli("backup", str(tmp_path / "other0.db"), env=env)))
    cli_ok(run_cli("check", "--read-data", env=env))
    into = tmp_path / "last.db"
    cli_ok(run_cli("restore", last, "--to", f"sqlite://{into}", "--yes", env=env))
    assert _rows(into) == _rows(tmp_path / "other0.db")


# --- ^C while close() waits for an index object being written --------------------------


@pytest.fixture
def sigint():
    """Send the main thread a real SIGINT (a user's ^C), with Python's handler in place."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield lambda: signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
    signal.signal(signal.SIGINT, previous)


def test_a_keyboard_interrupt_during_close_waits_for_an_index_object_being_written(
    storage: LocalStorage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sigint
) -> None:
    """The backup is stopped (no finish) while an upload thread writes an index object:
    close() aborts the pack session, which waits for that upload. A ^C landing in that
    wait must not let close() return (and the backup release its lock) while the thread
    still writes the index object: prune would not see it and could delete its packs."""
    import time

    repo = _open(storage, tmp_path, monkeypatch)
    real_put = storage.put
    writing, release = threading.Event(), threading.Event()

    def put(key: str, data: bytes) -> None:
        if key.startswith("index/"):
            writing.set()
            release.wait(10)
        real_put(key, data)

    monkeypatch.setattr(storage, "put", put)
    repo.chunks.prepare_known()
    writer = backup._ChunkWriter(repo, workers=2)
    rng = random.Random(3)
    for _ in range(24):
        writer.submit(rng.randbytes(1000))
    writer.results()
    assert writing.wait(10), "no index object was started"

    def interrupt_then_release() -> None:
        time.sleep(0.2)
        sigint()
        time.sleep(0.5)
        release.set()

    helper = threading.Thread(target=interrupt_then_release)
    helper.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            writer.close()
        assert release.is_set(), "close() returned while the index object was being written"
        alive = [t for t in threading.enumerate() if t.name.startswith("sr-pack") and t.is_alive()]
        assert not alive
    finally:
        release.set()
        helper.join()


# --- PostgreSQL: killed while indexing, backed up again at once, repeats across groups ---


def test_a_postgres_backup_killed_while_indexing_then_backed_up_again_restores(
    pg_server, pg_db: str, pg_new_db: str, tmp_path: Path
) -> None:
    """A PostgreSQL database with the same 20 KB value in many rows (repeats in every
    index group); the real CLI (16 KiB packs, one per index object) is SIGKILLed after a
    few index objects, backed up again at once (reusing them), then pruned and checked;
    both the backup before and the one after restore with the same rows."""
    import signal
    import subprocess
    import sys
    import time

    from tests.helpers import REPO_ROOT, cli_ok, repository_env, run_cli

    name = pg_db.rsplit("/", 1)[1]
    pg_server.psql(
        name,
        "CREATE TABLE t (id int PRIMARY KEY, v text);"
        "INSERT INTO t SELECT g, CASE WHEN g % 3 = 0 THEN repeat('x', 20000)"
        " ELSE md5(g::text) || repeat(md5((g * 7)::text), 30) END"
        " FROM generate_series(1, 3000) g;",
    )
    digest = "SELECT count(*), md5(string_agg(v, ',' ORDER BY id)) FROM t"
    env = repository_env(tmp_path)
    cli_ok(run_cli("init", env=env))
    before = pg_server.query(name, digest)
    first = _backup_id(cli_ok(run_cli("backup", pg_db, "--target", "shop", env=env)))
    pg_server.psql(name, "UPDATE t SET v = v || '!' WHERE id % 11 = 0;")
    after_rows = pg_server.query(name, digest)
    index_dir = tmp_path / "repo" / "index"
    stop_at = _files(index_dir) + 3
    proc = subprocess.Popen(
        [sys.executable, "-c", _SMALL_PACKS, "backup", pg_db, "--target", "shop"],
        env={**os.environ, **env},
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and _files(index_dir) < stop_at:
            assert time.monotonic() < deadline
            time.sleep(0.002)
    finally:
        killed = proc.poll() is None
        if killed:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert killed, "the backup ended before it was killed"
    second = _backup_id(cli_ok(run_cli("backup", pg_db, "--target", "shop", env=env)))
    cli_ok(run_cli("prune", env=env))
    cli_ok(run_cli("check", "--read-data", env=env))
    new_name = pg_new_db.rsplit("/", 1)[1]
    for backup_id, rows in ((first, before), (second, after_rows)):
        cli_ok(
            run_cli("restore", backup_id, "--to", pg_new_db, "--yes", "--no-safety-backup", env=env)
        )
        assert pg_server.query(new_name, digest) == rows


def test_two_keyboard_interrupts_during_finish_and_close_wait_for_the_index_object(
    storage: LocalStorage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sigint
) -> None:
    """^C while finish() waits for the uploads (an upload thread writes an index object),
    a second ^C while its pool shuts down, then close(): nothing returns while the index
    object is still being written."""
    import time

    repo = _open(storage, tmp_path, monkeypatch)
    real_put = storage.put
    writing, release = threading.Event(), threading.Event()

    def put(key: str, data: bytes) -> None:
        if key.startswith("index/") and not release.is_set():
            writing.set()
            release.wait(10)
        real_put(key, data)

    monkeypatch.setattr(storage, "put", put)
    repo.chunks.prepare_known()
    writer = backup._ChunkWriter(repo, workers=2)
    rng = random.Random(6)
    for _ in range(24):
        writer.submit(rng.randbytes(1000))
    writer.results()
    assert writing.wait(10), "no index object was started"

    def interrupt_twice_then_release() -> None:
        time.sleep(0.2)
        sigint()
        time.sleep(0.2)
        sigint()
        time.sleep(0.5)
        release.set()

    helper = threading.Thread(target=interrupt_twice_then_release)
    helper.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            try:
                writer.finish()
            finally:
                writer.close()
        assert release.is_set(), "returned while the index object was being written"
        alive = [t for t in threading.enumerate() if t.name.startswith("sr-pack") and t.is_alive()]
        assert not alive
    finally:
        release.set()
        helper.join()
