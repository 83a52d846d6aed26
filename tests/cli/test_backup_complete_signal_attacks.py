"""Attacks on f343602 (a signal once a backup's manifest is written names the backup): real
`strongroom` processes whose own code sends the signal from inside a patched function (the
``_SIGNAL_AFTER_MANIFEST`` trick of test_signal_timing_attacks.py), so the moment is exact:
during the deferred manifest write (one, two and three signals), with a failing manifest
write, in the lock release, the run record, the metrics and the report, and in the safety
backup a restore takes. Plus: ``interrupts.deferred`` and ``told_complete`` in a thread
that is not the main one (the web service's and scheduler's jobs) change nothing."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from strongroom import interrupts
from tests.cli.test_signals import (  # noqa: F401 (the fixture)
    TIMEOUT,
    alive,
    assert_one_error,
    env,
    run,
)
from tests.helpers import REPO_ROOT, make_sqlite_db

pytestmark = pytest.mark.slow

# ``{patch}`` is Python run before the command line starts; ``sig(n)`` sends signal ``n`` to
# the process itself (the handler raises at the next bytecode, unless deferred).
_SCRIPT = """\
import os, signal, sys
def sig(n=signal.SIGTERM):
    os.kill(os.getpid(), n)
{patch}
from strongroom.cli.app import main
sys.argv[0] = 'strongroom'
main()
"""


def _patched(patch: str, *args: str, given: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL",)}
    full.update(given)
    return subprocess.run(
        [sys.executable, "-c", _SCRIPT.format(patch=patch), *args],
        env=full,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def _repo(given: dict[str, str]) -> Path:
    return Path(given["STRONGROOM_REPO"])


def _manifests(given: dict[str, str]) -> list[str]:
    return sorted(p.stem for p in (_repo(given) / "backups").glob("*.json"))


def _locks(given: dict[str, str]) -> list[Path]:
    return sorted((_repo(given) / "locks").glob("*.json"))


def _runs(given: dict[str, str]) -> list[Path]:
    return sorted((_repo(given) / "runs").rglob("*.json"))


def _all_is_well(given: dict[str, str], tmp_path: Path, db: Path) -> None:
    """No lock left, every manifest's chunks are there (check --read-data), and the latest
    backup restores to the database's rows."""
    assert _locks(given) == []
    code, out, err = run("check", "--read-data", env=given)
    assert code == 0, (out, err)
    into = tmp_path / "restored.db"
    code, _, err = run("restore", "latest", "--to", str(into), "--yes", env=given)
    assert code == 0, err
    with sqlite3.connect(db) as a, sqlite3.connect(into) as b:
        q = "SELECT count(*), sum(id) FROM orders"
        assert a.execute(q).fetchall() == b.execute(q).fetchall()


@pytest.fixture()
def db(tmp_path: Path) -> Path:
    return make_sqlite_db(tmp_path / "app.db", users=300, orders=900)


_DURING_WRITE = """
from strongroom.repository.repository import Repository
real = Repository.write_manifest
def write(self, manifest):
    for _ in range({signals}):
        sig()  # inside the deferred section: the handler notes it, the write goes on
    real(self, manifest)
Repository.write_manifest = write
"""


def test_one_signal_during_the_manifest_write_waits_for_it_then_names_the_backup(
    tmp_path: Path,
    env: dict[str, str],  # noqa: F811
    db: Path,
) -> None:
    result = _patched(_DURING_WRITE.format(signals=1), "backup", str(db), given=env)
    (backup_id,) = _manifests(env)  # the write was not cut short
    line = assert_one_error(result.stderr, 143, result.returncode, "interrupted by SIGTERM")
    assert f"backup {backup_id} of app is complete" in line, line
    assert "did not run" in line and "nothing unfinished" not in line, line
    assert "finishing the step under way first" in result.stderr, result.stderr
    assert _runs(env) == []  # as the line says: no run record
    assert "complete" not in result.stdout  # no report printed
    _all_is_well(env, tmp_path, db)


def test_a_second_signal_during_the_manifest_write_is_a_note_and_changes_nothing(
    tmp_path: Path,
    env: dict[str, str],  # noqa: F811
    db: Path,
) -> None:
    result = _patched(_DURING_WRITE.format(signals=2), "backup", str(db), given=env)
    (backup_id,) = _manifests(env)
    line = assert_one_error(result.stderr, 143, result.returncode, "interrupted by SIGTERM")
    assert f"backup {backup_id} of app is complete" in line, line
    assert "still stopping after SIGTERM: finishing the step under way" in result.stderr
    _all_is_well(env, tmp_path, db)


def test_a_third_signal_during_the_manifest_write_ends_the_process_at_once(
    tmp_path: Path,
    env: dict[str, str],  # noqa: F811
    db: Path,
) -> None:
    """Documented in interrupts.py: the third signal exits at once (os._exit), before the
    write here; what it leaves is a lock that expires, never a manifest without chunks."""
    result = _patched(_DURING_WRITE.format(signals=3), "backup", str(db), given=env)
    assert result.returncode == 143, result.stderr
    assert "SIGTERM again: stopping at once without cleaning up" in result.stderr
    assert "error:" not in result.stderr and "Traceback" not in result.stderr
    assert _manifests(env) == []  # the write never started
    assert len(_locks(env)) == 1  # left to its dead process (documented)
    code, _, err = run("prune", "--wait", "30", env=env)  # its holder is gone: no wait
    assert code == 0, err
    code, out, err = run("check", "--read-data", env=env)
    assert code == 0, (out, err)


def test_a_failing_manifest_write_with_a_signal_pending_reports_the_storage_error(
    tmp_path: Path,
    env: dict[str, str],  # noqa: F811
    db: Path,
) -> None:
    patch = """
from strongroom.errors import StorageError
from strongroom.repository.repository import Repository
def write(self, manifest):
    sig()
    raise StorageError("the manifest write failed (injected)")
Repository.write_manifest = write
"""
    result = _patched(patch, "backup", str(db), given=env)
    line = assert_one_error(result.stderr, 6, result.returncode, "injected")
    assert "is complete" not in result.stderr, result.stderr
    assert "interrupted" not in line, line
    assert _manifests(env) == []
    assert _locks(env) == []
    (record,) = _runs(env)  # the failed run is recorded, as for any storage error
    assert '"ok": false' in record.read_text().replace('"ok":false', '"ok": false')


@pytest.mark.parametrize(
    ("where", "patch", "says"),
    [
        (
            "lock-release",  # between marking the lock released and deleting it
            "import strongroom.repository.locks as m\n"
            "real = m._unsettled_writes\n"
            "def unsettled(storage):\n"
            "    if sys._getframe(1).f_code.co_name in ('release', '_release'):\n"
            "        sig()\n"
            "    return real(storage)\n"
            "m._unsettled_writes = unsettled\n",
            "its run record and post_backup hooks did not run",
        ),
        (
            "run-record",  # before the run record is written
            "import strongroom.services.backup as m\n"
            "real = m.record_run\n"
            "def record(storage, rec):\n"
            "    sig(signal.SIGHUP)\n"
            "    real(storage, rec)\n"
            "m.record_run = record\n",
            "its run record and post_backup hooks did not run",
        ),
        (
            "metrics",
            "import strongroom.services.metrics as m\n"
            "real = m.write_metrics_file\n"
            "def write(path, registry):\n"
            "    sig(signal.SIGINT)\n"
            "    real(path, registry)\n"
            "m.write_metrics_file = write\n",
            "its run is recorded",
        ),
        (
            "report",
            "import strongroom.cli.backup_cmd as m\n"
            "real = m._print_report\n"
            "def report(r):\n"
            "    sig()\n"
            "    real(r)\n"
            "m._print_report = report\n",
            "its run is recorded",
        ),
    ],
)
def test_a_signal_after_the_manifest_names_the_backup_and_leaves_no_lock(
    tmp_path: Path,
    env: dict[str, str],  # noqa: F811
    db: Path,
    where: str,
    patch: str,
    says: str,
) -> None:
    metrics = tmp_path / "m.prom"
    result = _patched(patch, "backup", str(db), "--metrics-file", str(metrics), given=env)
    (backup_id,) = _manifests(env)
    signum = {"run-record": 1, "metrics": 2}.get(where, 15)
    line = assert_one_error(result.stderr, 128 + signum, result.returncode, "interrupted by")
    assert f"backup {backup_id} of app is complete; {says}" in line, (where, line)
    assert _locks(env) == [], (where, result.stderr)
    assert len(_runs(env)) == (0 if where in ("lock-release", "run-record") else 1), where
    _all_is_well(env, tmp_path, db)


@pytest.mark.parametrize("during", [False, True], ids=["after-write", "during-write"])
def test_a_signal_after_a_safety_backup_still_says_the_original_is_untouched(
    tmp_path: Path,
    env: dict[str, str],  # noqa: F811
    db: Path,
    during: bool,
) -> None:
    """A restore over an existing database first takes a safety backup (run_backup, whose
    told_complete f343602 added): a signal just after that backup's manifest is written
    stops the restore before anything changed. The one line must say so (the restore's
    own outcome), as it did before f343602."""
    code, _, err = run("backup", str(db), env=env)
    assert code == 0, err
    (backed_up,) = _manifests(env)
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM orders WHERE id > 100")
    patch = f"""
from strongroom.repository.repository import Repository
real = Repository.write_manifest
def write(self, manifest):
    if {during}:
        sig()  # deferred: raised once the write is done
    real(self, manifest)
    sig()
Repository.write_manifest = write
"""
    result = _patched(patch, "restore", backed_up, "--to", str(db), "--yes", given=env)
    assert len(_manifests(env)) == 2  # the safety backup
    line = assert_one_error(result.stderr, 143, result.returncode, "interrupted by SIGTERM")
    assert _locks(env) == []
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT max(id) FROM orders").fetchone() == (100,)
    assert "the original database" in line and "is untouched" in line, line
    assert "is complete" not in line, line  # the safety backup is not the user's command


def test_deferred_and_told_complete_do_nothing_outside_the_main_thread() -> None:
    """The web service's and the scheduler's jobs run backups on worker threads: a deferred
    section there counts nothing (a signal in the main thread still raises at once), and a
    told_complete there notes only an Interrupted raised inside it."""
    from strongroom.repository.manifest import Manifest
    from strongroom.services.backup import told_complete

    interrupts.reset()
    seen: list[object] = []
    inside = threading.Event()
    leave = threading.Event()

    def job() -> None:
        with interrupts.deferred():
            seen.append(interrupts._state.depth)
            inside.set()
            leave.wait(10)
        seen.append(interrupts._state.depth)

    worker = threading.Thread(target=job)
    worker.start()
    assert inside.wait(10)
    with pytest.raises(interrupts.Interrupted) as raised:  # not deferred by the thread
        interrupts.handle(signal.SIGTERM, None)
    leave.set()
    worker.join(10)
    assert seen == [0, 0]
    assert interrupts.pending() is None and raised.value.outcome is None
    interrupts.reset()

    class _M:  # what told_complete reads of a manifest
        backup_id, target = "20261201T000000Z-abcd", "app"

    errors: list[BaseException] = []

    def other() -> None:
        for exc in (RuntimeError("x"), interrupts.Interrupted(signal.SIGTERM)):
            try:
                with told_complete(_M(), "rest"):  # type: ignore[arg-type]
                    raise exc
            except BaseException as caught:
                errors.append(caught)

    thread = threading.Thread(target=other)
    thread.start()
    thread.join(10)
    assert not hasattr(errors[0], "outcome")
    assert isinstance(errors[1], interrupts.Interrupted)
    assert errors[1].outcome == "backup 20261201T000000Z-abcd of app is complete; rest"
    assert Manifest  # imported: the real type told_complete names
    interrupts.reset()


def test_a_signal_from_a_post_backup_hook_says_the_run_is_recorded(
    tmp_path: Path,
    env: dict[str, str],  # noqa: F811
    db: Path,
) -> None:
    """A real hook sends SIGTERM to strongroom (its parent) and would go on for 30 s: the
    command stops the hook, exits 143 naming the backup, its run recorded, the hooks
    stopped; the hook after it never runs; no lock, no hook left running."""
    config = tmp_path / "strongroom.toml"
    config.write_text(
        "\n".join(
            [
                "[repository]",
                f'location = "{tmp_path / "repo"}"',
                f'key_file = "{tmp_path / "repo.key"}"',
                "[targets.shop]",
                f'url = "sqlite://{db}"',
                "[targets.shop.hooks]",
                'post_backup = ["echo $$ > \\"$HOOK_PID\\"; kill -TERM $PPID; sleep 30",'
                ' "touch \\"$HOOK_PID.second\\""]',
            ]
        )
        + "\n"
    )
    pid_file = tmp_path / "hook.pid"
    given = {**env, "HOOK_PID": str(pid_file)}
    code, _, err = run("backup", "--config", str(config), "--target", "shop", env=given)
    (backup_id,) = _manifests(env)
    line = assert_one_error(err, 143, code, "interrupted by SIGTERM")
    expected = f"backup {backup_id} of shop is complete; its run is recorded; its post_backup"
    assert expected in line, line
    assert len(_runs(env)) == 1
    assert _locks(env) == []
    assert not Path(f"{pid_file}.second").exists()
    assert not alive(int(pid_file.read_text()))  # the hook was stopped with the command


def test_a_signal_once_the_command_has_finished_exits_0(
    tmp_path: Path,
    env: dict[str, str],  # noqa: F811
    db: Path,
) -> None:
    """The report is printed and the runner holds signals (interrupts.hold): a SIGTERM then
    is a note, the exit stays 0, no error line."""
    patch = """
from strongroom import interrupts
real = interrupts.hold
def hold():
    real()
    sig()
interrupts.hold = hold
"""
    result = _patched(patch, "backup", str(db), given=env)
    assert result.returncode == 0, result.stderr
    assert "error:" not in result.stderr, result.stderr
    assert "SIGTERM: already finishing" in result.stderr, result.stderr
    (backup_id,) = _manifests(env)
    assert f"backup {backup_id} complete" in result.stdout
    assert len(_runs(env)) == 1 and _locks(env) == []
