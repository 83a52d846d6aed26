"""A PostgreSQL swap killed at each step boundary is settled by the next command.

The real command line restores with ``STRONGROOM_TEST_KILL_AT=<step>`` (the test hook of
``engines/swap_journal.py``: SIGKILL right after the journal entry for that step is
written); the state the kill left is checked (so the kill landed where it should); then
the next command (``backup``, ``restore --dry-run`` or ``recover``) runs as a new process
with a fresh home folder, as a second host would, and must leave the target exactly as it
was before the restore or exactly restored, open to connections, with no staged copy, no
old copy beyond the one a completed swap keeps, and no journal; then a backup works.
In-process tests cover two recoveries at once, a live swap (left alone), a swap failing
in-process (undone on the spot, or left to the next command) and journals that are not a
live swap's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from strongroom.engines import open_engine, swap_journal
from strongroom.engines.postgresql import PostgresEngine, swap
from strongroom.engines.postgresql.swap import SwapInterrupted, swap_into_place
from strongroom.engines.swap_journal import JournalEntry, SwapStep
from strongroom.errors import RestoreFailed
from strongroom.repository.repository import Repository
from strongroom.services.backup import run_backup
from strongroom.services.repository_access import RepositoryLocation
from strongroom.services.swaps import settle_interrupted_swaps
from strongroom.storage.local import LocalStorage
from tests.fixtures.postgres import unique_db_name
from tests.helpers import REPO_ROOT, cli_ok, run_cli

BACKED_UP = """
CREATE TABLE items (id int PRIMARY KEY, label text NOT NULL);
CREATE TABLE notes (id int PRIMARY KEY, item int REFERENCES items, body text);
INSERT INTO items SELECT g, 'backed-up ' || g FROM generate_series(1, 60) g;
INSERT INTO notes SELECT g, 1 + g % 60, md5(g::text) FROM generate_series(1, 200) g;
"""
LIVE = """
CREATE TABLE items (id int PRIMARY KEY, label text NOT NULL);
CREATE TABLE notes (id int PRIMARY KEY, item int REFERENCES items, body text);
INSERT INTO items SELECT g, 'live ' || g FROM generate_series(1, 40) g;
INSERT INTO notes SELECT g, 1 + g % 40, 'live note' FROM generate_series(1, 90) g;
"""


@dataclass(frozen=True)
class World:
    env: dict[str, str]
    backup_id: str
    restored: tuple[Any, ...]  # fingerprint of what the backup restores
    home: Path


def _comment(pg_server, name: str, text: str | None) -> None:
    with pg_server.connect() as conn:
        conn.execute(
            sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(name), sql.Literal(text))
        )


def fingerprint(pg_server, name: str) -> tuple[Any, ...]:
    """The database's comment and every row of its tables."""
    comment = pg_server.query(
        "postgres",
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
        (name,),
    )[0][0]
    items = pg_server.query(name, "SELECT string_agg(t::text, ',' ORDER BY id) FROM items t")
    notes = pg_server.query(name, "SELECT string_agg(t::text, ',' ORDER BY id) FROM notes t")
    return comment, items[0][0], notes[0][0]


def allows_connections(pg_server, name: str) -> bool | None:
    row = pg_server.query(
        "postgres", "SELECT datallowconn FROM pg_database WHERE datname = %s", (name,)
    )
    return bool(row[0][0]) if row else None


def journals(pg_server, *, carriers_only: bool = False) -> list[tuple[str, JournalEntry]]:
    """Every journal on the server (with ``carriers_only``, not the targets' anchors)."""
    rows = pg_server.query(
        "postgres",
        "SELECT d.datname, d.oid, shobj_description(d.oid, 'pg_database') FROM pg_database d",
    )
    found = [(n, oid, swap_journal.decode(c)) for n, oid, c in rows if swap_journal.is_journal(c)]
    return [(n, e) for n, oid, e in found if not carriers_only or e.details["staged_oid"] == oid]


def olds(pg_server, name: str) -> list[str]:
    rows = pg_server.query("postgres", "SELECT datname FROM pg_database ORDER BY datname")
    return [r[0] for r in rows if r[0].startswith(f"{name}_old_")]


def drop_all(pg_server, *names: str) -> None:
    for name in names:
        for other in [name, *olds(pg_server, name)]:
            pg_server.drop_database(other)


def _repository(world: World) -> Repository:
    return RepositoryLocation(
        world.env["STRONGROOM_REPO"], key_file=Path(world.env["STRONGROOM_KEY_FILE"])
    ).open()


@pytest.fixture(scope="module")
def world(pg_server, tmp_path_factory):
    """A repository holding one backup of a database with a comment (the restored state)."""
    folder = tmp_path_factory.mktemp("swap-crash")
    env = {
        "STRONGROOM_REPO": str(folder / "repo"),
        "STRONGROOM_KEY_FILE": str(folder / "repo.key"),
    }
    source = unique_db_name("src")
    pg_server.create_database(source)
    try:
        pg_server.psql(source, BACKED_UP)
        _comment(pg_server, source, "what the backup's database said")
        Repository.init(LocalStorage(folder / "repo"), key_file=folder / "repo.key")
        world = World(env, "", (), folder / "second-host")
        report = run_backup(_repository(world), open_engine(pg_server.url(source)))
        yield World(env, report.manifest.backup_id, fingerprint(pg_server, source), world.home)
    finally:
        pg_server.drop_database(source)


def live_database(pg_server) -> tuple[str, tuple[Any, ...]]:
    name = unique_db_name("live")
    pg_server.create_database(name)
    pg_server.psql(name, LIVE)
    _comment(pg_server, name, "the live database")
    return name, fingerprint(pg_server, name)


# What the kill must have left, per step: (target exists, target allows connections,
# old copies, the target is still the original). None: not checked.
CRASH_STATE = {
    "close": (True, True, 0, True),
    "rename_away": (True, False, 0, None),  # closed: not readable
    "reopen_old": (False, None, 1, None),
    "rename_in": (False, None, 1, None),
    "drop_old": (True, True, 1, False),
    "finish": (True, True, 1, False),
}

CASES = [
    # step, --drop-old, the next command, what it must do to the swap
    ("close", False, "backup", "undid"),
    ("rename_away", False, "plan", "undid"),
    ("reopen_old", False, "recover", "undid"),
    ("rename_in", False, "restore", "undid"),  # then restores, this time whole
    ("drop_old", True, "backup", "completed"),
    ("finish", False, "recover", "completed"),
]


def _next_command(command: str, url: str, world: World) -> str:
    """Run the next command as another process with another home; its output."""
    env = {**world.env, "HOME": str(world.home), "XDG_STATE_HOME": str(world.home / "state")}
    if command == "backup":
        result = run_cli("backup", url, env=env)
    elif command == "plan":
        result = run_cli("restore", world.backup_id, "--to", url, "--dry-run", env=env)
    elif command == "restore":
        result = run_cli("restore", world.backup_id, "--to", url, "--yes", "--drop-old", env=env)
    else:
        result = run_cli("recover", "--to", url, env=env)
    cli_ok(result)
    return result.stdout.decode() + result.stderr.decode()


def _settled(
    pg_server,
    name: str,
    staged: str,
    verb: str,
    before: Any,
    world: World,
    kept: int,
    backup_works: bool = False,
):
    """The swap into ``name`` is settled: ``before`` back exactly (``undid``; ``None``: no
    database) or the backup exactly restored with ``kept`` old copies equal to ``before``;
    no staged copy, no journal; open to connections; a backup works (already shown when
    ``backup_works``)."""
    assert journals(pg_server) == []
    assert not pg_server.database_exists(staged)
    if verb == "undid" and before is None:
        assert not pg_server.database_exists(name)
        return
    if verb == "undid":
        assert fingerprint(pg_server, name) == before  # exactly as before
        assert olds(pg_server, name) == []
    else:
        assert fingerprint(pg_server, name) == world.restored  # exactly restored
        assert [fingerprint(pg_server, old) for old in olds(pg_server, name)] == [before] * kept
        assert all(allows_connections(pg_server, old) for old in olds(pg_server, name))
    assert allows_connections(pg_server, name) is True
    url = pg_server.url(name)
    with psycopg.connect(url, autocommit=True) as conn:  # open for connections
        assert conn.execute("SELECT count(*) FROM items").fetchone()[0] > 0
    if not backup_works:
        assert run_backup(_repository(world), open_engine(url)).manifest.raw_size > 0


@pytest.mark.parametrize(("step", "drop_old", "command", "verb"), CASES)
def test_a_restore_killed_at_each_step_of_its_swap_is_settled_by_the_next_command(
    pg_server, world, step, drop_old, command, verb
):
    name, before = live_database(pg_server)
    url = pg_server.url(name)
    try:
        args = ["restore", world.backup_id, "--to", url, "--yes", "--no-safety-backup"]
        if drop_old:
            args.append("--drop-old")
        killed = run_cli(*args, env={**world.env, swap_journal.TEST_KILL_ENV: step})
        assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()

        # The kill landed at the step boundary asked for, and left its journal behind.
        ours = [e for _, e in journals(pg_server, carriers_only=True) if e.target == name]
        assert [e.step.value for e in ours] == [step]
        exists, allowed, old_count, original = CRASH_STATE[step]
        assert pg_server.database_exists(name) is exists
        assert allowed is None or allows_connections(pg_server, name) is allowed
        assert len(olds(pg_server, name)) == old_count
        if original is not None:
            assert (fingerprint(pg_server, name)[1:] == before[1:]) is original

        out = _next_command(command, url, world)
        lines = [line for line in out.splitlines() if "interrupted swap into" in line]
        assert len(lines) == 1, out
        assert f"{verb} the interrupted swap into database {name} " in lines[0]
        assert f"(stopped at step {step})" in lines[0]
        if command == "restore":  # the original came back, then was replaced and dropped
            _settled(pg_server, name, ours[0].staged, "completed", before, world, 0)
        else:
            kept = 0 if drop_old or verb == "undid" else 1
            backed_up = command == "backup"
            _settled(pg_server, name, ours[0].staged, verb, before, world, kept, backed_up)
    finally:
        drop_all(pg_server, name)


# --- in-process: concurrency, live swaps, failures, journals that are not live ones ------
def _staged_copy(pg_server, name: str, with_comment: str = "the staged comment") -> str:
    staged = f"{name}_sr_{os.urandom(4).hex()}"
    pg_server.create_database(staged)
    pg_server.psql(staged, BACKED_UP)
    _comment(pg_server, staged, with_comment)
    return staged


def _killed_swap(pg_server, name: str, staged: str, step: str) -> None:
    """Run ``swap_into_place`` in a process killed at ``step``."""
    code = (
        "import sys\n"
        "from strongroom.engines.postgresql import PostgresEngine\n"
        "from strongroom.engines.postgresql.swap import swap_into_place\n"
        "swap_into_place(PostgresEngine(sys.argv[1]), sys.argv[2], keep_old=True)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, pg_server.url(name), staged],
        env={**os.environ, swap_journal.TEST_KILL_ENV: step},
        cwd=REPO_ROOT,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()


@pytest.mark.parametrize(("step", "verb"), [("rename_in", "undid"), ("finish", "completed")])
def test_a_swap_into_a_new_database_killed_at_each_step_is_settled(pg_server, world, step, verb):
    name = unique_db_name("new")
    staged = _staged_copy(pg_server, name, with_comment=world.restored[0])
    try:
        _killed_swap(pg_server, name, staged, step)
        assert pg_server.database_exists(name) is (step == "finish")
        engine = open_engine(pg_server.url(name))
        settled = [r for r in settle_interrupted_swaps(engine) if r.database == name]  # the hook
        assert [r.outcome for r in settled] == [{"undid": "undone"}.get(verb, verb)]
        assert f"(stopped at step {step})" in settled[0].message
        _settled(pg_server, name, staged, verb, None, world, 0)
    finally:
        drop_all(pg_server, name, staged)


def test_two_recoveries_at_once_settle_the_swap_once(pg_server):
    name, before = live_database(pg_server)
    staged = _staged_copy(pg_server, name)
    try:
        _killed_swap(pg_server, name, staged, "rename_in")
        assert not pg_server.database_exists(name)
        barrier = threading.Barrier(2)
        results: list[Any] = []

        def recover() -> None:
            engine = PostgresEngine(pg_server.url())
            barrier.wait(30)
            results.extend(r for r in engine.recover_swaps() if r.database == name)

        threads = [threading.Thread(target=recover) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert [r.outcome for r in results] == ["undone"]
        assert fingerprint(pg_server, name) == before
        assert allows_connections(pg_server, name) is True
        assert not pg_server.database_exists(staged) and olds(pg_server, name) == []
        assert PostgresEngine(pg_server.url()).recover_swaps() == []  # idempotent
    finally:
        drop_all(pg_server, name, staged)


def test_a_new_swap_into_the_same_target_settles_the_killed_one_first(pg_server, caplog):
    name, before = live_database(pg_server)
    first, second = _staged_copy(pg_server, name), _staged_copy(pg_server, name, "second")
    try:
        _killed_swap(pg_server, name, first, "reopen_old")
        assert not pg_server.database_exists(name)
        replaced, kept = swap_into_place(PostgresEngine(pg_server.url(name)), second)
        assert f"undid the interrupted swap into database {name}" in caplog.text
        assert replaced and olds(pg_server, name) == [kept]
        assert fingerprint(pg_server, kept) == before
        assert fingerprint(pg_server, name)[0] == "second"
        assert not pg_server.database_exists(first) and journals(pg_server) == []
    finally:
        drop_all(pg_server, name, first, second)


def test_a_live_swap_is_left_alone_and_then_completes(pg_server, monkeypatch):
    name, before = live_database(pg_server)
    staged = _staged_copy(pg_server, name)
    reached, go = threading.Event(), threading.Event()

    def pause(step: SwapStep) -> None:
        if step is SwapStep.RENAME_IN:
            reached.set()
            assert go.wait(120)

    monkeypatch.setattr(swap_journal, "kill_point", pause)
    outcome: list[Any] = []
    worker = threading.Thread(
        target=lambda: outcome.append(
            swap_into_place(PostgresEngine(pg_server.url(name)), staged, keep_old=False)
        )
    )
    try:
        worker.start()
        assert reached.wait(120)
        monkeypatch.setattr(swap, "LOCK_WAIT", 0.2)
        busy = [r for r in PostgresEngine(pg_server.url()).recover_swaps() if r.database == name]
        assert [r.outcome for r in busy] == ["busy"]
        assert "server process" in busy[0].message
        with pytest.raises(RestoreFailed, match="in progress"):
            settle_interrupted_swaps(PostgresEngine(pg_server.url(name)))  # its own target
        assert not pg_server.database_exists(name)  # mid-swap, untouched
        assert len(olds(pg_server, name)) == 1
        go.set()
        worker.join(120)
        assert outcome == [(True, None)]
        assert fingerprint(pg_server, name)[0] == "the staged comment"
        assert fingerprint(pg_server, name)[1:] != before[1:]
        assert olds(pg_server, name) == [] and journals(pg_server) == []
    finally:
        go.set()
        worker.join(120)
        drop_all(pg_server, name, staged)


def _failing_rename_in(monkeypatch, staged: str) -> None:
    real = swap.rename

    def rename(conn: Any, old: str, new: str) -> None:
        if old == staged:
            raise psycopg.errors.InsufficientPrivilege("simulated: must be owner")
        real(conn, old, new)

    monkeypatch.setattr(swap, "rename", rename)


def test_a_rename_in_that_fails_puts_the_original_back_at_once(pg_server, monkeypatch):
    name, before = live_database(pg_server)
    staged = _staged_copy(pg_server, name)
    try:
        _failing_rename_in(monkeypatch, staged)
        with pytest.raises(RestoreFailed, match=f"the original {name} is unchanged"):
            swap_into_place(PostgresEngine(pg_server.url(name)), staged)
        assert fingerprint(pg_server, name) == before
        assert allows_connections(pg_server, name) is True
        assert olds(pg_server, name) == [] and journals(pg_server) == []
        assert not pg_server.database_exists(staged)
    finally:
        drop_all(pg_server, name, staged)


def test_a_swap_that_cannot_be_undone_at_once_is_left_to_the_next_command(pg_server, monkeypatch):
    name, before = live_database(pg_server)
    staged = _staged_copy(pg_server, name)
    try:
        _failing_rename_in(monkeypatch, staged)

        def settle(*args: Any) -> Any:
            raise psycopg.OperationalError("simulated: connection lost")

        monkeypatch.setattr(swap, "settle", settle)
        with pytest.raises(SwapInterrupted, match="strongroom recover"):
            swap_into_place(PostgresEngine(pg_server.url(name)), staged)
        monkeypatch.undo()
        PostgresEngine(pg_server.url(staged)).drop()  # what run_restore does: refused
        assert pg_server.database_exists(staged)
        assert [e.step for _, e in journals(pg_server, carriers_only=True)] == [SwapStep.RENAME_IN]
        settled = settle_interrupted_swaps(PostgresEngine(pg_server.url(name)))  # the hook
        assert [r.outcome for r in settled if r.database == name] == ["undone"]
        assert fingerprint(pg_server, name) == before
        assert allows_connections(pg_server, name) is True
        assert not pg_server.database_exists(staged) and journals(pg_server) == []
    finally:
        drop_all(pg_server, name, staged)


def test_journals_that_are_not_a_live_swaps(pg_server, world):
    copied, damaged = unique_db_name("copy"), unique_db_name("bad")
    for name in (copied, damaged):
        pg_server.create_database(name)
    try:
        # A journal copied onto another database (its staged OID is not the database's).
        entry = JournalEntry(
            engine="postgresql",
            target=copied,
            staged="elsewhere",
            old=None,
            keep_old=True,
            step=SwapStep.RENAME_IN,
            details={
                "target_oid": None,
                "staged_oid": 1,
                "allow_connections": True,
                "final_comment": None,
            },
        )
        _comment(pg_server, copied, swap_journal.encode(entry))
        _comment(pg_server, damaged, '{"format": "strongroom-swap-journal", "version": 99}')
        found = PostgresEngine(pg_server.url()).recover_swaps()
        assert [(r.database, r.outcome) for r in found] == [(damaged, "failed")]
        assert "cannot be read" in found[0].message
        assert pg_server.database_exists(copied) and pg_server.database_exists(damaged)
        result = run_cli("recover", "--to", pg_server.url(), env=world.env)
        assert result.returncode == 5
        assert f"swap journal on database {damaged}" in result.stdout.decode()
        assert "could not be settled" in result.stderr.decode()
        _comment(pg_server, damaged, None)
        assert PostgresEngine(pg_server.url()).recover_swaps() == []
    finally:
        drop_all(pg_server, copied, damaged)


def _oid(pg_server, name: str) -> int:
    rows = pg_server.query("postgres", "SELECT oid FROM pg_database WHERE datname = %s", (name,))
    return int(rows[0][0])


def test_a_forged_journal_touches_no_database_it_does_not_sit_on(pg_server):
    """Commenting on a database takes its owner: a journal written on one's own database
    naming someone else's must not make a recovery (say, a superuser's backup) rename,
    close, reopen or drop that other database."""
    victim, before = live_database(pg_server)
    forger = unique_db_name("forger")
    pg_server.create_database(forger)
    try:
        forged = JournalEntry(
            engine="postgresql",
            target=forger,  # "committed": the carrier has the target's name
            staged=forger,
            old=victim,
            keep_old=False,  # ... so "drop the old one"
            step=SwapStep.FINISH,
            details={
                "target_oid": _oid(pg_server, victim),
                "staged_oid": _oid(pg_server, forger),
                "allow_connections": False,
                "final_comment": None,
            },
        )
        attempts = [
            (forged, "completed"),
            (replace(forged, target="elsewhere", step=SwapStep.REOPEN_OLD), "failed"),
            (replace(forged, target=victim, step=SwapStep.CLOSE), "undone"),
        ]
        for entry, outcome in attempts:
            _comment(pg_server, forger, swap_journal.encode(entry))
            found = PostgresEngine(pg_server.url()).recover_swaps()
            assert [r.outcome for r in found] == [outcome], found
            assert fingerprint(pg_server, victim) == before
            assert allows_connections(pg_server, victim) is True
            if outcome == "failed":  # it stays, reported, until someone removes it
                assert "does not carry this swap's journal" in found[0].message
                _comment(pg_server, forger, None)
        assert not pg_server.database_exists(forger)  # its own database: dropped by "undo"
    finally:
        drop_all(pg_server, victim, forger)
