"""SIGTERM, SIGINT and kill -9 at chosen moments of real command-line runs.

Each run is held at a known point by the database itself, never by a sleep:

* a PostgreSQL restore: the backup holds a table whose CHECK constraint calls a function
  that waits (``pg_sleep`` in a loop) until a role named by the test exists, so
  ``pg_restore`` (streaming, or a ``-j`` worker) blocks while copying that table's row
  into the staged database. The signal is sent once ``pg_stat_activity`` shows it waiting.
* a PostgreSQL backup: the test holds an ACCESS EXCLUSIVE lock on a table, so ``pg_dump``
  waits for it, with the backup's repository lock taken.
* a SQLite restore or restore drill: one chunk of the backup is replaced by a FIFO that
  the test holds open, so the restore blocks reading it, with the staged file beside the
  target (the drill: in its private temp folder); the test sends the signal, then writes
  the chunk's real bytes.
* a prune: the test holds a backup's shared lock, so prune waits with its exclusive lock.

Each test then checks the contract: the exit code (130 SIGINT, 143 SIGTERM), exactly one
``error:`` line and no traceback, no staged copy left, the target untouched, no temp file
left in ``$TMPDIR`` (a folder of the test's), the repository lock released (a following
``prune`` runs at once) and no child process left (checked by pid).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from strongroom.engines import open_engine
from strongroom.repository.keys import KeySource
from strongroom.repository.locks import acquire_shared
from strongroom.repository.repository import Repository
from strongroom.services.backup import run_backup
from strongroom.storage.local import LocalStorage
from tests.helpers import (
    REPO_ROOT,
    STRONGROOM,
    make_sqlite_db,
    open_test_repo,
    sqlite_counts,
    unpack_to_loose,
)

TIMEOUT = 90.0  # generous: the suite shares two cores with other work


def until(condition, what, timeout=TIMEOUT, process=None):
    """Wait until ``condition()`` is true (polling); fail after ``timeout`` seconds or when
    ``process`` ends first."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            _, err = process.communicate()
            raise AssertionError(f"ended before {what}: {process.returncode} {err.decode()}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return fields[0] != "Z"


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid``."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return {p for p in found if alive(p)}


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if not p.is_dir())


class Cli:
    """One strongroom process in the background, with its own ``$TMPDIR``."""

    def __init__(self, *args: str, env: dict[str, str]) -> None:
        full = dict(os.environ)
        for name in ("STRONGROOM_PASSPHRASE", "DATABASE_URL", "STRONGROOM_RESTORE_JOBS"):
            full.pop(name, None)
        full.update(env)
        self.process = subprocess.Popen(
            [*STRONGROOM, *args],
            env=full,
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def finish(self, timeout: float = TIMEOUT) -> tuple[int, str]:
        _, err = self.process.communicate(timeout=timeout)
        return self.process.returncode, err.decode()


def run(*args: str, env: dict[str, str], timeout: float = TIMEOUT) -> tuple[int, str, str]:
    cli = Cli(*args, env=env)
    out, err = cli.process.communicate(timeout=timeout)
    return cli.process.returncode, out.decode(), err.decode()


def assert_one_error(err: str, code: int, returncode: int, *needles: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert returncode == code, (returncode, err)
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], err
    return lines[0]


def back_up(tmp_path: Path, url: str) -> None:
    """A backup taken in this process (quicker than a command-line run)."""
    repo = Repository.open(LocalStorage(tmp_path / "repo"), KeySource(tmp_path / "repo.key"))
    run_backup(repo, open_engine(url))


@pytest.fixture()
def env(tmp_path):
    temp = tmp_path / "tmp"
    temp.mkdir()
    repo = tmp_path / "repo"
    key = tmp_path / "repo.key"
    Repository.init(LocalStorage(repo), key_file=key)
    return {
        "STRONGROOM_REPO": str(repo),
        "STRONGROOM_KEY_FILE": str(key),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "TMPDIR": str(temp),
    }


def temp_is_clean(env) -> None:
    """Nothing left in the test's temp folder: not a file, not a process folder."""
    temp = Path(env["TMPDIR"])
    assert files_under(temp) == []
    for base in temp.glob("strongroom-*"):
        assert list(base.iterdir()) == [], list(base.iterdir())


# --- PostgreSQL ---------------------------------------------------------------------------

GATE_SQL = """
CREATE FUNCTION gate_check(v int) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  WHILE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') LOOP
    PERFORM pg_sleep(0.02);
  END LOOP;
  RETURN true;
END $$;
CREATE TABLE gate (v int CHECK (gate_check(v)));
CREATE TABLE things (id int PRIMARY KEY, note text);
INSERT INTO things SELECT g, md5(g::text) FROM generate_series(1, 3000) g;
CREATE ROLE {role};
INSERT INTO gate VALUES (1);
DROP ROLE {role};
"""


@pytest.fixture()
def gated(pg_server, pg_db, env, tmp_path):
    """A database whose restore blocks on the ``gate`` table; backed up."""
    name = pg_db.rsplit("/", 1)[1]
    role = f"gate_{uuid.uuid4().hex[:10]}"
    pg_server.psql(name, GATE_SQL.format(role=role))
    back_up(tmp_path, pg_db)
    pg_server.psql(name, "DELETE FROM things WHERE id > 2000")  # the live state differs
    yield pg_db, name, role
    with pg_server.connect() as conn:
        conn.execute(f"DROP ROLE IF EXISTS {role}")
        for (left,) in conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s OR datname LIKE %s",
            (f"{name}_sr_%", f"{name}_old_%"),
        ).fetchall():
            conn.execute(f'DROP DATABASE IF EXISTS "{left}" WITH (FORCE)')


def staged_databases(pg_server, name):
    rows = pg_server.query(
        "postgres", "SELECT datname FROM pg_database WHERE datname LIKE %s", (f"{name}_sr_%",)
    )
    return [r[0] for r in rows]


def gate_waiting(pg_server, name):
    """The staged database's session copying into ``gate`` waits at the gate."""
    rows = pg_server.query(
        "postgres",
        "SELECT pid FROM pg_stat_activity WHERE datname LIKE %s AND wait_event = 'PgSleep'"
        " AND query LIKE 'COPY%%gate%%'",
        (f"{name}_sr_%",),
    )
    return bool(rows)


def test_sigterm_during_a_parallel_postgres_restore_cleans_up(pg_server, gated, env):
    url, name, _ = gated
    cli = Cli(
        "restore", "latest", "--to", url, "--yes", "--no-safety-backup",
        env={**env, "STRONGROOM_RESTORE_JOBS": "2"},
    )  # fmt: skip
    until(lambda: gate_waiting(pg_server, name), "pg_restore at the gate", process=cli.process)
    children = descendants(cli.process.pid)
    tools = {p for p in children if b"pg_restore" in Path(f"/proc/{p}/cmdline").read_bytes()}
    # the gate's data is restored by a pg_restore of its own (restore_overlap: one per
    # batch of tables, started while the dump is written)
    assert len(tools) >= 1, children
    # the decrypted dump of the parallel restore has no name anywhere
    assert {p.name for p in files_under(Path(env["TMPDIR"]))} <= {".lock"}
    cli.process.send_signal(signal.SIGTERM)
    code, err = cli.finish()
    assert_one_error(err, 143, code, "interrupted by SIGTERM", "untouched")
    assert staged_databases(pg_server, name) == []
    assert pg_server.query(name, "SELECT count(*) FROM things")[0][0] == 2000  # as it was
    assert [p for p in children if alive(p)] == []
    temp_is_clean(env)


class StderrLines:
    """The lines a process writes to stderr, read as they come (a thread)."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stderr is not None
        for line in process.stderr:
            self.lines.append(line.decode())

    def text(self) -> str:
        self._thread.join(TIMEOUT)
        return "".join(self.lines)


def test_a_signal_during_the_swap_waits_for_the_swap_to_finish(pg_server, gated, env):
    """The swap runs in a deferred section: held inside it (the test holds a lock on the
    staged database that the swap's statements need), the restore takes SIGINT, says it
    finishes the swap first, does, and then stops, saying the restore had completed."""
    url, name, role = gated
    cli = Cli("restore", "latest", "--to", url, "--yes", "--no-safety-backup", env=env)
    stderr = StderrLines(cli.process)
    until(lambda: gate_waiting(pg_server, name), "pg_restore at the gate", process=cli.process)
    (staged,) = staged_databases(pg_server, name)
    with pg_server.connect(autocommit=False) as holder:
        holder.execute(f"COMMENT ON DATABASE \"{staged}\" IS 'held by the test'")  # not committed
        holder_pid = holder.info.backend_pid
        pg_server.query("postgres", f"CREATE ROLE {role}")  # opens the gate
        until(
            lambda: pg_server.query(
                "postgres",
                "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid <> %s"
                " AND query ILIKE %s",
                (holder_pid, "%database%"),
            ),
            "the swap waiting for the test's lock",
            process=cli.process,
        )
        cli.process.send_signal(signal.SIGINT)
        until(
            lambda: any("finishing the step under way" in line for line in stderr.lines),
            "the signal to be deferred",
            process=cli.process,
        )
        holder.rollback()
    code = cli.process.wait(TIMEOUT)
    err = stderr.text()
    assert_one_error(err, 130, code, "interrupted by SIGINT", "the restore had completed")
    assert pg_server.query(name, "SELECT count(*) FROM things")[0][0] == 3000  # restored
    assert staged_databases(pg_server, name) == []
    temp_is_clean(env)


def test_sigterm_during_a_postgres_backup_releases_its_lock(pg_server, pg_db, env, tmp_path):
    name = pg_db.rsplit("/", 1)[1]
    pg_server.psql(name, "CREATE TABLE held (id int); INSERT INTO held VALUES (1);")
    with pg_server.connect(name, autocommit=False) as holder:
        holder.execute("LOCK TABLE held IN ACCESS EXCLUSIVE MODE")
        cli = Cli("backup", pg_db, env=env)
        until(
            lambda: pg_server.query(
                "postgres",
                "SELECT 1 FROM pg_stat_activity WHERE datname = %s"
                " AND application_name = 'pg_dump' AND wait_event_type = 'Lock'",
                (name,),
            ),
            "pg_dump waiting for the lock",
            process=cli.process,
        )
        locks = list((tmp_path / "repo" / "locks").glob("*.json"))
        assert len(locks) == 1  # the backup's shared lock
        children = descendants(cli.process.pid)
        assert children
        cli.process.send_signal(signal.SIGTERM)
        code, err = cli.finish()
        holder.rollback()
    assert_one_error(err, 143, code, "interrupted by SIGTERM", "nothing unfinished was recorded")
    assert [p for p in children if alive(p)] == []
    assert list((tmp_path / "repo" / "locks").glob("*.json")) == []
    started = time.monotonic()
    code, _, err = run("prune", "--wait", "0", env=env)
    assert code == 0, err  # nothing to wait for
    assert time.monotonic() - started < 30
    assert list((tmp_path / "repo" / "backups").glob("*.json")) == []  # nothing recorded
    temp_is_clean(env)


def test_kill_9_during_a_parallel_restore_leaves_no_child_and_no_plaintext(pg_server, gated, env):
    url, name, _ = gated
    cli = Cli(
        "restore", "latest", "--to", url, "--yes", "--no-safety-backup",
        env={**env, "STRONGROOM_RESTORE_JOBS": "2"},
    )  # fmt: skip
    until(lambda: gate_waiting(pg_server, name), "pg_restore at the gate", process=cli.process)
    children = descendants(cli.process.pid)
    assert len(children) >= 1, children  # the gate's data's pg_restore (restore_overlap)
    cli.process.send_signal(signal.SIGKILL)
    cli.process.wait()
    until(lambda: not any(alive(p) for p in children), "the children to die with strongroom")
    # the killed restore's query was cancelled: nothing waits at the gate any more
    until(lambda: not gate_waiting(pg_server, name), "the staged session to end")
    temp = Path(env["TMPDIR"])
    assert [p.name for p in files_under(temp)] == [".lock"]  # the dump never had a name
    (leftover,) = list(next(temp.glob("strongroom-*")).iterdir())
    assert str(cli.process.pid) in leftover.name
    code, _, err = run("list", env=env)  # any next start sweeps the dead process's folder
    assert code == 0, err
    temp_is_clean(env)


# --- SQLite -------------------------------------------------------------------------------


def staged_files(db: Path) -> list[str]:
    return sorted(p.name for p in db.parent.iterdir() if db.name in p.name and p != db)


class HeldChunk:
    """The first chunk of the only backup replaced by a FIFO this test holds open: a
    restore that reaches it blocks reading it until :meth:`release` writes its bytes."""

    def __init__(self, tmp_path: Path) -> None:
        repo = open_test_repo(tmp_path)
        unpack_to_loose(repo)  # one file per chunk (the version 1 layout, still read)
        (manifest,) = repo.list_backups()
        chunk = manifest.chunks[0].chunk_id
        self.path = tmp_path / "repo" / "chunks" / chunk[:2] / chunk
        self.stored = self.path.read_bytes()
        self.path.unlink()
        os.mkfifo(self.path)
        self.writer: int | None = os.open(self.path, os.O_RDWR)  # so the reader's open returns

    def read_by(self, pid: int) -> bool:
        try:
            return any(
                os.readlink(fd) == str(self.path) for fd in Path(f"/proc/{pid}/fd").iterdir()
            )
        except OSError:
            return False

    def release(self) -> None:
        if self.writer is not None:
            os.write(self.writer, self.stored)
            os.close(self.writer)
            self.writer = None


@pytest.fixture()
def sqlite_backup(tmp_path, env):
    """A SQLite database, backed up, then changed; its first chunk held (:class:`HeldChunk`)."""
    db = make_sqlite_db(tmp_path / "app.db", users=3000, orders=9000)
    back_up(tmp_path, str(db))
    before = sqlite_counts(db)
    make_sqlite_db(db, users=10, orders=10, seed=3)  # the live state differs from the backup
    assert sqlite_counts(db) != before
    held = HeldChunk(tmp_path)
    yield db, held
    held.release()


def test_sigint_during_a_sqlite_restore_cleans_up(sqlite_backup, env):
    db, held = sqlite_backup
    live = sqlite_counts(db)
    cli = Cli("restore", "latest", "--to", str(db), "--yes", "--no-safety-backup", env=env)
    until(lambda: held.read_by(cli.process.pid), "the restore reading", process=cli.process)
    assert staged_files(db), "the staged file is there"
    cli.process.send_signal(signal.SIGINT)
    held.release()  # the reading thread finishes; the signal is in already
    code, err = cli.finish()
    assert_one_error(err, 130, code, "interrupted by SIGINT", "untouched")
    assert staged_files(db) == []
    assert sqlite_counts(db) == live
    temp_is_clean(env)


def test_sigterm_during_a_restore_drill_drops_the_scratch_copy(sqlite_backup, env, tmp_path):
    _, held = sqlite_backup
    cli = Cli("verify", "latest", "--restore", env=env)
    until(lambda: held.read_by(cli.process.pid), "the drill reading", process=cli.process)
    # os.walk, not rglob: the running drill may remove a folder while the walk reads it
    scratch = [
        name
        for _, folders, files in os.walk(env["TMPDIR"])
        for name in folders + files
        if "strongroom_verify_" in name
    ]
    assert scratch, "the drill restores into its private temp folder"
    cli.process.send_signal(signal.SIGTERM)
    held.release()
    code, err = cli.finish()
    assert_one_error(err, 143, code, "interrupted by SIGTERM", "nothing unfinished was recorded")
    assert list((tmp_path / "repo").glob("verifications/**/*.json")) == []  # none recorded
    temp_is_clean(env)


def test_sigterm_while_prune_waits_releases_its_lock(tmp_path, env):
    storage = LocalStorage(tmp_path / "repo")
    backup_lock = acquire_shared(storage, "a backup elsewhere")  # prune must wait for it
    try:
        cli = Cli("prune", "--wait", "600", env=env)
        locks = tmp_path / "repo" / "locks"
        until(lambda: len(list(locks.glob("*.json"))) == 2, "prune's lock", process=cli.process)
        cli.process.send_signal(signal.SIGTERM)
        code, err = cli.finish()
        assert_one_error(err, 143, code, "interrupted by SIGTERM")
        assert [p.name for p in locks.glob("*.json")] == [Path(backup_lock.key).name]
    finally:
        backup_lock.release()
    temp_is_clean(env)
