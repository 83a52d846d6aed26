"""Issue 14, point 7: every backup and every restore runs its target's hooks, whichever
way it was started; here the command line (``backup``, ``restore``, ``rollback``), as a
user runs it, on a SQLite target and a local repository."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest

from strongroom.repository.keys import KeySource
from strongroom.repository.repository import Repository
from strongroom.storage.local import LocalStorage
from tests.helpers import cli_fails, cli_ok, make_sqlite_db, repository_env, run_cli, sqlite_counts

HOOK_EXIT = 8  # docs/design.md, "Exit codes"


def _config(tmp: Path, db: Path, hooks: dict[str, list[str]]) -> Path:
    """A configuration with target ``shop`` (the SQLite file ``db``) and its hooks."""
    lines = [
        "[repository]",
        f'location = "{tmp / "repo"}"',
        f'key_file = "{tmp / "repo.key"}"',
        "[targets.shop]",
        f'url = "sqlite://{db}"',
        "[targets.shop.hooks]",
        *(f"{name} = {json.dumps(commands)}" for name, commands in hooks.items()),
    ]
    path = tmp / "strongroom.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


# Each hook appends one line: which hook, for which target, with which backup ids. The log
# file's name comes from the environment, as the variables a real hook needs do.
_LINE = 'echo "$STRONGROOM_HOOK $STRONGROOM_TARGET ${STRONGROOM_BACKUP_ID:--}'
RECORDING = {
    "pre_backup": [_LINE + ' $STRONGROOM_ENGINE" >> "$HOOK_LOG"'],
    "post_backup": [_LINE + '" >> "$HOOK_LOG"'],
    "post_restore": [_LINE + ' ${STRONGROOM_SAFETY_BACKUP_ID:--}" >> "$HOOK_LOG"'],
}


@pytest.fixture()
def setup(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    env = {**repository_env(tmp_path), "HOOK_LOG": str(tmp_path / "hooks.log")}
    Repository.init(LocalStorage(tmp_path / "repo"), key_file=tmp_path / "repo.key")
    return tmp_path, env


def _log(tmp: Path) -> list[str]:
    path = tmp / "hooks.log"
    return path.read_text().splitlines() if path.exists() else []


def _backups(tmp: Path) -> list[str]:
    """The backups in the repository (read in-process: one command less per check)."""
    repo = Repository.open(LocalStorage(tmp / "repo"), KeySource(key_file=tmp / "repo.key"))
    return [m.backup_id for m in repo.list_backups()]


def _backup_id(out: str) -> str:
    match = re.search(r"backup (\S+) complete", out)
    assert match, out
    return match.group(1)


def test_backup_restore_and_rollback_run_the_targets_hooks_once(setup):
    tmp, env = setup
    db = make_sqlite_db(tmp / "shop.db", users=200, orders=300)
    config = _config(tmp, db, RECORDING)

    # `backup --config --target shop`: the configured database, its hooks, once each
    backup_id = _backup_id(
        cli_ok(run_cli("backup", "--config", str(config), "--target", "shop", env=env))
    )
    assert _log(tmp) == ["pre_backup shop - sqlite", f"post_backup shop {backup_id}"]

    # a restore into the configured database (found through STRONGROOM_CONFIG) runs
    # post_restore once, after the swap, with the backup restored and the safety backup
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM orders")
    with_config = {**env, "STRONGROOM_CONFIG": str(config)}
    cli_ok(run_cli("restore", backup_id, "--to", f"sqlite://{db}", "--yes", env=with_config))
    assert sqlite_counts(db) == {"users": 200, "orders": 300}
    line = _log(tmp)[2:]
    assert len(line) == 1 and line[0].startswith(f"post_restore shop {backup_id} ")
    safety_id = line[0].rsplit(" ", 1)[1]
    assert safety_id != "-"  # the database was not empty: a safety backup was taken first

    # rollback is a restore too
    cli_ok(run_cli("rollback", "--to", f"sqlite://{db}", "--yes", env=with_config))
    assert len(_log(tmp)) == 4 and _log(tmp)[3].startswith("post_restore shop ")

    # a copy restored elsewhere is no configured target's database: no hooks run there
    copy = tmp / "copy.db"
    cli_ok(run_cli("restore", backup_id, "--to", f"sqlite://{copy}", "--yes", env=with_config))
    assert sqlite_counts(copy) == {"users": 200, "orders": 300}
    assert len(_log(tmp)) == 4


def test_failing_hooks_say_what_happened_and_exit_8(setup):
    tmp, env = setup
    db = make_sqlite_db(tmp / "shop.db", users=100, orders=100)

    # pre_backup fails: no backup is taken, the failed run is recorded
    config = _config(tmp, db, {"pre_backup": ["echo 'maintenance mode refused' >&2; exit 3"]})
    failed = run_cli("backup", "--config", str(config), "--target", "shop", env=env)
    cli_fails(
        failed,
        HOOK_EXIT,
        r"error: pre_backup hook .* exited with status 3 \(last output: maintenance mode refused\)",
    )
    assert _backups(tmp) == []

    # post_backup fails: the backup is complete, kept and listed; the exit code says a hook failed
    config = _config(tmp, db, {"post_backup": ["exit 4"]})
    kept = run_cli("backup", "--config", str(config), "--target", "shop", env=env)
    err = cli_fails(
        kept,
        HOOK_EXIT,
        r"error: backup \S+ of shop is complete and kept; "
        r"then post_backup hook 'exit 4' exited with status 4",
    )
    backup_id = _backup_id(kept.stdout.decode())
    assert backup_id in err
    assert _backups(tmp) == [backup_id]

    # post_restore fails: the restore happened and stays; the message says so
    config = _config(tmp, db, {"post_restore": ["exit 5"]})
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM users")
    restored = run_cli(
        "restore",
        backup_id,
        "--to",
        f"sqlite://{db}",
        "--yes",
        env={**env, "STRONGROOM_CONFIG": str(config)},
    )
    cli_fails(
        restored,
        HOOK_EXIT,
        rf"error: the restore of {backup_id} into .*shop.db completed and verified and stays "
        r"in place; the replaced database is kept as .*; "
        r"then post_restore hook 'exit 5' exited with status 5",
    )
    assert sqlite_counts(db) == {"users": 100, "orders": 100}
