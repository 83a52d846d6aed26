"""Hostile and newcomer attacks on issue 14 (restore choice, restore records, rollback,
safety backups, swap journal and recovery, signals, hooks), mostly on SQLite files
through the real command line."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from strongroom.engines import swap_journal
from strongroom.repository.keys import KeySource
from strongroom.repository.repository import Repository
from strongroom.storage.local import LocalStorage
from tests.helpers import (
    REPO_ROOT,
    STRONGROOM,
    cli_fails,
    cli_ok,
    make_sqlite_db,
    repository_env,
    run_cli,
)


@pytest.fixture()
def env(tmp_path: Path) -> dict[str, str]:
    e = repository_env(tmp_path)
    cli_ok(run_cli("init", env=e))
    return e


def _db(path: Path, users: int = 10, seed: int = 7) -> str:
    make_sqlite_db(path, users=users, orders=users, seed=seed)
    return f"sqlite://{path}"


def _notes(path: Path) -> list[str]:
    db = sqlite3.connect(path)
    try:
        db.execute("CREATE TABLE IF NOT EXISTS notes (v TEXT)")
        return [r[0] for r in db.execute("SELECT v FROM notes ORDER BY rowid")]
    finally:
        db.close()


def _note(path: Path, value: str) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE IF NOT EXISTS notes (v TEXT)")
    db.execute("INSERT INTO notes VALUES (?)", (value,))
    db.commit()
    db.close()


def _repo(tmp: Path) -> Repository:
    return Repository.open(LocalStorage(tmp / "repo"), KeySource(key_file=tmp / "repo.key"))


# --- point 2 / 4: a restore killed after its swap's commit point -------------------------


def _rollback_names_the_safety_backup(url: str, env: dict[str, str]) -> str:
    """``rollback`` after a restore killed during its swap: refused (it cannot tell whether
    the swap was completed or undone), naming the safety backup that returns to the state
    just before that restore; that backup's id."""
    err = cli_fails(
        run_cli("rollback", "--to", url, "--yes", "--drop-old", env=env),
        2,
        r"interrupted during its swap.*strongroom restore \S+ --to",
    )
    match = re.search(r"strongroom restore (\S+) --to", err)
    assert match is not None, err
    return match.group(1)


def test_rollback_after_a_killed_swap_that_recovery_completed(
    tmp_path: Path, env: dict[str, str]
) -> None:
    shop = tmp_path / "shop.db"
    url = _db(shop)
    _note(shop, "backed-up")
    cli_ok(run_cli("backup", url, "--target", "shop", env=env))
    _note(shop, "precious")
    killed = run_cli(
        "restore",
        "latest",
        "--to",
        url,
        "--yes",
        env={**env, swap_journal.TEST_KILL_ENV: "finish"},
    )
    assert killed.returncode == -signal.SIGKILL
    out = cli_ok(run_cli("recover", "--to", url, env=env))
    assert "completed the interrupted swap" in out
    assert _notes(shop) == ["backed-up"]  # the restore is in place
    safety = _rollback_names_the_safety_backup(url, env)
    assert _notes(shop) == ["backed-up"]  # the refusal changed nothing
    cli_ok(run_cli("restore", safety, "--to", url, "--yes", "--drop-old", env=env))
    assert _notes(shop) == ["backed-up", "precious"]


def test_rollback_after_a_killed_swap_does_not_go_two_steps_back(
    tmp_path: Path, env: dict[str, str]
) -> None:
    shop = tmp_path / "shop.db"
    url = _db(shop)
    _note(shop, "v1")
    cli_ok(run_cli("backup", url, "--target", "shop", env=env))
    _note(shop, "v2")
    cli_ok(run_cli("restore", "latest", "--to", url, "--yes", "--drop-old", env=env))
    assert _notes(shop) == ["v1"]
    _note(shop, "v3-precious")
    killed = run_cli(
        "restore", "latest", "--to", url, "--yes", env={**env, swap_journal.TEST_KILL_ENV: "finish"}
    )
    assert killed.returncode == -signal.SIGKILL
    cli_ok(run_cli("recover", "--to", url, env=env))
    assert _notes(shop) == ["v1"]
    # never v1+v2 (two steps back): refused, naming the backup that holds v3-precious
    safety = _rollback_names_the_safety_backup(url, env)
    assert _notes(shop) == ["v1"]
    cli_ok(run_cli("restore", safety, "--to", url, "--yes", "--drop-old", env=env))
    assert _notes(shop) == ["v1", "v3-precious"]


# --- point 1: same database name in two places, new databases, odd names ---------------


def test_same_named_files_in_two_folders_are_not_confused(
    tmp_path: Path, env: dict[str, str]
) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    x, y = tmp_path / "x" / "app.db", tmp_path / "y" / "app.db"
    xurl, yurl = _db(x, 10), _db(y, 20, seed=3)
    _note(x, "x")
    _note(y, "y")
    cli_ok(run_cli("backup", xurl, "--target", "xapp", env=env))
    cli_ok(run_cli("backup", yurl, "--target", "yapp", env=env))
    # both are database 'app': latest is refused, listing both targets; nothing changes
    err = cli_fails(run_cli("restore", "latest", "--to", yurl, "--yes", env=env), 2, "--target")
    assert "xapp" in err and "yapp" in err
    assert _notes(y) == ["y"]


def test_restoring_another_targets_backup_warns_and_rollback_finds_it(
    tmp_path: Path, env: dict[str, str]
) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    x, y = tmp_path / "x" / "app.db", tmp_path / "y" / "app.db"
    xurl, yurl = _db(x, 10), _db(y, 20, seed=3)
    _note(x, "x")
    _note(y, "y")
    cli_ok(run_cli("backup", xurl, "--target", "xapp", env=env))
    cli_ok(run_cli("backup", yurl, "--target", "yapp", env=env))
    xid = _repo(tmp_path).list_backups("xapp")[-1].backup_id
    out = cli_ok(run_cli("restore", xid, "--to", yurl, "--yes", "--target", "yapp", env=env))
    assert "WARNING" in out or "warning" in out.lower(), out
    assert _notes(y) == ["x"]
    safety = [m for m in _repo(tmp_path).list_backups() if "pre-restore" in m.tags]
    assert [m.target for m in safety] == ["yapp"]
    cli_ok(run_cli("rollback", "--to", yurl, "--target", "yapp", "--yes", env=env))
    assert _notes(y) == ["y"]


def test_restore_latest_into_a_brand_new_file(tmp_path: Path, env: dict[str, str]) -> None:
    shop = tmp_path / "shop.db"
    url = _db(shop)
    _note(shop, "s")
    cli_ok(run_cli("backup", url, "--target", "shop", env=env))
    new = tmp_path / "brand-new.db"
    out = cli_ok(run_cli("restore", "latest", "--to", f"sqlite://{new}", "--yes", env=env))
    assert "target shop" in out
    assert _notes(new) == ["s"]
    # nothing existed: no safety backup, and rollback says there is nothing to undo
    assert not [m for m in _repo(tmp_path).list_backups() if "pre-restore" in m.tags]
    cli_fails(run_cli("rollback", "--to", f"sqlite://{new}", "--yes", env=env), 2, "nothing")
    assert _notes(new) == ["s"]


@pytest.mark.parametrize(
    "name",
    [
        "../../etc/evil",
        "shop/../x",
        "a b\tc",
        "ünï ☃",
        "-dash",
    ],
)
def test_odd_target_names_round_trip(tmp_path: Path, env: dict[str, str], name: str) -> None:
    shop = tmp_path / "shop.db"
    url = _db(shop)
    _note(shop, "odd")
    res = run_cli("backup", url, "--target", name, env=env)
    if res.returncode != 0:  # refused: one clean error line, and no backup stored
        cli_fails(res, 2, "target")
        assert _repo(tmp_path).list_backups() == []
        return
    assert not (tmp_path / "etc").exists() and not Path("/etc/evil").exists()
    _note(shop, "later")
    cli_ok(
        run_cli("restore", "latest", "--to", url, "--target", name, "--yes", "--drop-old", env=env)
    )
    assert _notes(shop) == ["odd"]
    cli_ok(run_cli("rollback", "--to", url, "--target", name, "--yes", "--drop-old", env=env))
    assert _notes(shop) == ["odd", "later"]
    for path in (tmp_path / "repo").rglob("*"):
        assert path.resolve().is_relative_to((tmp_path / "repo").resolve())


def test_before_with_only_safety_backups_needs_and_honours_include_safety(
    tmp_path: Path, env: dict[str, str]
) -> None:
    shop = tmp_path / "shop.db"
    url = _db(shop)
    _note(shop, "v1")
    cli_ok(run_cli("backup", url, "--target", "shop", env=env))
    _note(shop, "v2")
    cli_ok(run_cli("restore", "latest", "--to", url, "--yes", "--drop-old", env=env))
    cli_ok(
        run_cli(
            "forget", "--target", "shop", "--keep-tag", "none-has-it", "--keep-safety", "5", env=env
        )
    )
    kinds = [m.tags for m in _repo(tmp_path).list_backups("shop")]
    assert kinds == [("pre-restore",)], kinds
    _note(shop, "v3")
    res = run_cli("restore", "--before", "2999-01-01 00:00", "--to", url, "--yes", env=env)
    assert res.returncode != 0, res.stdout.decode()
    assert "Traceback" not in res.stderr.decode()
    assert _notes(shop) == ["v1", "v3"]
    cli_ok(
        run_cli(
            "restore",
            "--before",
            "2999-01-01 00:00",
            "--include-safety",
            "--to",
            url,
            "--yes",
            "--drop-old",
            env=env,
        )
    )
    assert _notes(shop) == ["v1", "v2"]


# --- point 4: recover and forged journals ------------------------------------------------


def test_recover_on_a_url_with_no_swap_changes_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "nothing-here.db"
    out = cli_ok(run_cli("recover", "--to", f"sqlite://{missing}"))
    assert "no interrupted swap" in out
    assert not missing.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_forged_journal_cannot_make_recovery_remove_or_move_another_file(
    tmp_path: Path, env: dict[str, str]
) -> None:
    shop = tmp_path / "shop.db"
    url = _db(shop)
    _note(shop, "mine")
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    journal = tmp_path / ".shop.db.strongroom-swap"
    journal.write_text(
        json.dumps(
            {
                "format": swap_journal.FORMAT,
                "version": 1,
                "step": "rename_in",
                "target": str(shop),
                "staged": str(victim),
                "old": "/etc/passwd",
                "details": {"target_id": [1, 2], "staged_id": [3, 4]},
            }
        )
    )
    journal.chmod(0o600)
    res = run_cli("backup", url, "--target", "shop", env=env)
    assert "Traceback" not in res.stderr.decode()
    assert victim.read_text() == "keep me"
    assert _notes(shop) == ["mine"]
    assert Path("/etc/passwd").exists()


def test_two_restores_into_one_file_at_once_leave_one_whole_database(
    tmp_path: Path, env: dict[str, str]
) -> None:
    shop = tmp_path / "shop.db"
    url = _db(shop, users=300)
    _note(shop, "v1")
    cli_ok(run_cli("backup", url, "--target", "shop", env=env))
    _note(shop, "v2")
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    full_env.update(env)
    args = [*STRONGROOM, "restore", "latest", "--to", url, "--yes", "--drop-old"]
    procs = [
        subprocess.Popen(
            args, env=full_env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    results = [(p.wait(timeout=120), p.stderr.read().decode()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    assert any(code == 0 for code, _ in results), results
    for code, err in results:
        assert "Traceback" not in err, err
    assert _notes(shop) == ["v1"]
    assert sqlite3.connect(shop).execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert not (tmp_path / ".shop.db.strongroom-swap").exists()
    assert not list(tmp_path.glob("shop.db.*"))  # no staged or old copy left behind
    # rollback returns to v1+v2 (the state before the first restore that completed)
    cli_ok(run_cli("rollback", "--to", url, "--yes", "--drop-old", env=env))
    assert _notes(shop)[:2] == ["v1", "v2"] or _notes(shop) == ["v1"]


# --- point 7: hooks that hang or print secrets -------------------------------------------


def test_hook_output_with_a_password_is_redacted_and_a_hanging_hook_is_stopped(
    tmp_path: Path, env: dict[str, str]
) -> None:
    shop = tmp_path / "shop.db"
    _db(shop)
    config = tmp_path / "strongroom.toml"
    config.write_text(
        "\n".join(
            [
                "[repository]",
                f'location = "{tmp_path / "repo"}"',
                f'key_file = "{tmp_path / "repo.key"}"',
                "[targets.shop]",
                f'url = "sqlite://{shop}"',
                "[targets.shop.hooks]",
                "timeout_seconds = 1",
                'pre_backup = ["echo postgresql://app:hunter2secret@db/x; sleep 30"]',
            ]
        )
        + "\n"
    )
    start = time.monotonic()
    res = run_cli("-v", "backup", "--config", str(config), "--target", "shop", env=env)
    assert time.monotonic() - start < 15
    err = cli_fails(res, 8, "did not finish")
    assert "hunter2secret" not in err + res.stdout.decode()
    assert _repo(tmp_path).list_backups() == []
