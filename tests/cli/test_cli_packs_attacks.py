"""Hostile end-to-end cases against format version 2 (issue 19), through the real command
line: prunes killed with kill -9, commands sharing one cache file at once, a cache that is
damaged, unwritable or stale (another machine pruned), packs renamed, swapped or copied
from another repository, and backups of a real PostgreSQL killed while writing packs.
Every failure: one ``error:`` line naming the object, a documented exit code, no
traceback, no exit 70; every retained backup restores afterwards."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.cli.test_cli_prune_kill import _clean, _everything_restores, _packs
from tests.cli.test_cli_prune_kill import built as built
from tests.cli.test_cli_prune_kill import copy as copy
from tests.helpers import (
    REPO_ROOT,
    STRONGROOM,
    cli_fails,
    cli_ok,
    make_sqlite_db,
    repository_env,
    run_cli,
    sqlite_counts,
)

ID = "[0-9a-f]{64}"


def _no_crash(result: subprocess.CompletedProcess[bytes]) -> str:
    err = result.stderr.decode()
    assert "Traceback" not in err and result.returncode != 70, err
    return err


def test_a_killed_prune_leaves_no_private_cache_behind(copy):
    tmp_path, env, kept = copy
    killed = run_cli("prune", env={**env, "STRONGROOM_TEST_KILL_AT": "prune-index-written"})
    assert killed.returncode == -signal.SIGKILL
    leftovers = list((tmp_path / "cache").glob("*/prune-*"))
    assert len(leftovers) == 1, "the killed prune's own index cache"
    cli_ok(run_cli("prune", env=env))
    assert list((tmp_path / "cache").glob("*/prune-*")) == []
    _clean(tmp_path)
    _everything_restores(tmp_path, env, kept, "after")


def _pack_path(repo: Path, pack_id: str) -> Path:
    return repo / "packs" / pack_id[:2] / pack_id


def _kept_pack_ids(tmp_path: Path) -> list[str]:
    """Packs a retained backup reads from (after a prune that finished)."""
    return sorted(_packs(tmp_path / "repo"))


@pytest.mark.parametrize("attack", ["renamed", "swapped", "foreign"])
def test_packs_renamed_swapped_or_from_another_repository(copy, attack, tmp_path_factory):
    tmp_path, env, kept = copy
    cli_ok(run_cli("prune", env=env))
    repo = tmp_path / "repo"
    first, second = _kept_pack_ids(tmp_path)[:2]
    a, b = _pack_path(repo, first), _pack_path(repo, second)
    if attack == "renamed":
        target = _pack_path(repo, "ab" * 32)
        target.parent.mkdir(exist_ok=True)
        a.rename(target)
        err = cli_fails(run_cli("check", env=env), 7, f"its pack {first} is gone")
        pruned = cli_ok(run_cli("prune", env=env))
        assert "index rebuild" in pruned + _no_crash(run_cli("prune", env=env))
        assert target.exists(), "prune deleted the renamed pack: its chunks are needed"
        cli_ok(run_cli("index", "rebuild", env=env))
    elif attack == "swapped":
        data_a, data_b = a.read_bytes(), b.read_bytes()
        a.write_bytes(data_b)
        b.write_bytes(data_a)
        err = cli_fails(
            run_cli("check", "--read-data", env=env), 7, f"error: check found .*pack {ID}"
        )
        _no_crash(run_cli("prune", env=env))
        assert a.exists() and b.exists(), "prune deleted a swapped pack"
        a.write_bytes(data_a)
        b.write_bytes(data_b)
    else:  # a pack of another repository (another key) copied in
        other = tmp_path_factory.mktemp("other")
        other_env = repository_env(other)
        cli_ok(run_cli("init", env=other_env))
        db = make_sqlite_db(other / "x.db", users=200, orders=200)
        cli_ok(run_cli("backup", str(db), "--target", "X", env=other_env))
        (foreign,) = _packs(other / "repo")
        target = _pack_path(repo, foreign)
        target.parent.mkdir(exist_ok=True)
        shutil.copy(_pack_path(other / "repo", foreign), target)
        assert "no problems found" in cli_ok(run_cli("check", "--read-data", env=env))
        rebuilt = run_cli("index", "rebuild", env=env)
        cli_ok(rebuilt)
        assert f"left out: pack {foreign} is damaged: its key stanza" in rebuilt.stderr.decode()
        cli_ok(run_cli("prune", env=env))
        assert not target.exists()
        err = ""
    assert "Traceback" not in err
    shutil.rmtree(tmp_path / "cache")  # and a machine with no cache
    cli_ok(run_cli("prune", env=env))
    if attack == "renamed":  # its content is whole, its name is not its hash: check says so
        cli_fails(
            run_cli("check", "--read-data", env=env), 7, f"pack {'ab' * 32} is damaged: its bytes"
        )
    else:
        assert "no problems found" in cli_ok(run_cli("check", "--read-data", env=env))
    _everything_restores(tmp_path, env, kept, attack)


# --- the cache -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_targets(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache-attacks")
    env = repository_env(root)
    cli_ok(run_cli("init", env=env))
    dbs = {
        "Shop": make_sqlite_db(root / "Shop.db", users=1500, orders=4000),
        "Other Db": make_sqlite_db(root / "Other.db", users=1500, orders=4000, seed=3),
    }
    for target, db in dbs.items():
        cli_ok(run_cli("backup", str(db), "--target", target, env=env))
    return root, dbs


@pytest.fixture()
def scene(two_targets, tmp_path):
    root, dbs = two_targets
    for name in ("repo", "cache", "config"):
        if (root / name).exists():
            shutil.copytree(root / name, tmp_path / name)
    shutil.copy2(root / "repo.key", tmp_path / "repo.key")
    return tmp_path, repository_env(tmp_path), dbs


def _start(*args, env):
    return subprocess.Popen(
        [*STRONGROOM, *args], env={**os.environ, **env}, cwd=REPO_ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def test_backups_and_readers_sharing_one_cache_at_once_never_exit_70(scene):
    _, env, dbs = scene
    for round_ in range(3):
        for db in dbs.values():  # a little change each round: new chunks, new index
            with sqlite3.connect(db) as conn:
                conn.execute(
                    "UPDATE users SET email = email || ? WHERE id % 50 = 0", (str(round_),)
                )
        running = [_start("backup", str(db), "--target", t, env=env) for t, db in dbs.items()]
        running += [_start("check", env=env), _start("list", env=env), _start("stats", env=env)]
        for process in running:
            _, err = process.communicate(timeout=300)
            assert process.returncode == 0, (process.args, err.decode())
            assert "Traceback" not in err.decode()
    assert "no problems found" in cli_ok(run_cli("check", "--read-data", env=env))


def _immutable(path: Path, flag: str) -> bool:
    """``chattr +i``/``-i`` when running as root (a no-op otherwise)."""
    if os.geteuid() != 0:
        return True
    done = subprocess.run(["chattr", flag, str(path)], capture_output=True, check=False)
    return done.returncode == 0


def _damage_cache(tmp_path: Path, env: dict[str, str], how: str) -> dict[str, str]:
    cache = tmp_path / "cache"
    (path,) = cache.glob("*/index.sqlite")
    if how == "garbage":
        data = bytearray(path.read_bytes())
        for at in range(len(data) // 3, len(data), 499):
            data[at] ^= 0x5A
        path.write_bytes(bytes(data))
    elif how == "truncated":
        with open(path, "r+b") as file:
            file.truncate(path.stat().st_size // 2)
    elif how == "deleted":
        shutil.rmtree(cache)
    elif how == "read-only file":  # as root: immutable (root writes read-only files)
        for suffix in ("", "-wal", "-shm"):
            if Path(f"{path}{suffix}").exists():
                Path(f"{path}{suffix}").chmod(0o400)
                _immutable(Path(f"{path}{suffix}"), "+i")
    elif how == "read-only folder":
        path.parent.chmod(0o500)
        _immutable(path.parent, "+i")
    elif how == "cache dir is a file":
        shutil.rmtree(cache)
        cache.write_text("not a folder")
    elif how == "cache dir does not exist":
        return {**env, "STRONGROOM_CACHE_DIR": str(tmp_path / "no" / "such" / "dir")}
    elif how == "a folder where the file goes":
        path.unlink()
        path.mkdir()
    return env


CACHE_DAMAGE = [
    "garbage",
    "truncated",
    "deleted",
    "read-only file",
    "read-only folder",
    "cache dir is a file",
    "cache dir does not exist",
    "a folder where the file goes",
]


@pytest.mark.parametrize("how", CACHE_DAMAGE)
def test_a_damaged_or_unwritable_cache_is_only_slower(scene, how):
    tmp_path, env, dbs = scene
    if os.geteuid() == 0 and how.startswith("read-only") and not _immutable(tmp_path, "-i"):
        pytest.skip("root writes read-only files, and chattr is not available")
    env = _damage_cache(tmp_path, env, how)
    try:
        with sqlite3.connect(dbs["Shop"]) as conn:
            conn.execute("UPDATE users SET email = email || 'x' WHERE id % 40 = 0")
        for args in (
            ("list",),
            ("backup", str(dbs["Shop"]), "--target", "Shop"),
            ("verify", "--all"),
            ("check", "--read-data"),
            ("prune",),
            ("stats",),
        ):
            result = run_cli(*args, env=env)
            _no_crash(result)
            assert result.returncode == 0, (args, result.stderr.decode())
        backup_id = json.loads(cli_ok(run_cli("list", "--json", env=env)))[0]["id"]
        restored = tmp_path / "restored.db"
        cli_ok(run_cli("restore", backup_id, "--to", str(restored), "--yes", env=env))
        assert sqlite_counts(restored)
    finally:
        for item in (tmp_path / "cache").glob("*/*"):
            _immutable(item, "-i")
        for folder in (tmp_path / "cache").glob("*"):
            _immutable(folder, "-i")
            if folder.is_dir():
                folder.chmod(0o700)


def test_a_stale_cache_from_before_another_machines_prune(scene):
    tmp_path, env, dbs = scene
    other = {**env, "STRONGROOM_CACHE_DIR": str(tmp_path / "cache-other-machine")}
    with sqlite3.connect(dbs["Shop"]) as conn:
        conn.execute("DELETE FROM orders WHERE id > 1000")
        conn.execute("DELETE FROM users WHERE id > 400")
    with sqlite3.connect(dbs["Shop"]) as conn:
        conn.execute("VACUUM")
    cli_ok(run_cli("backup", str(dbs["Shop"]), "--target", "Shop", env=other))
    cli_ok(run_cli("forget", "--target", "Shop", "--keep-last", "1", env=other))
    report = json.loads(cli_ok(run_cli("prune", "--json", env=other)))
    assert report["packs_deleted"] >= 1
    # this machine's cache still lists the packs the other machine's prune removed
    kept = json.loads(cli_ok(run_cli("list", "--json", env=env)))
    assert len(kept) == 2
    cli_ok(run_cli("verify", "--all", env=env))
    cli_ok(run_cli("backup", str(dbs["Other Db"]), "--target", "Other Db", env=env))
    assert "no problems found" in cli_ok(run_cli("check", "--read-data", env=env))
    assert "no problems found" in cli_ok(run_cli("check", "--read-data", env=other))
    for item in json.loads(cli_ok(run_cli("list", "--json", env=other))):
        restored = tmp_path / f"r-{item['id']}.db"
        cli_ok(run_cli("restore", item["id"], "--to", str(restored), "--yes", env=other))


# --- PostgreSQL: a backup killed while it writes packs --------------------------------------
def test_postgres_backups_killed_while_writing_packs_then_prune(pg_server, pg_db, tmp_path):
    from tests.engines.postgresql.dump_shape import users_shape_database
    from tests.fixtures.postgres import unique_db_name

    counts = 'SELECT (SELECT count(*) FROM "Customers"), (SELECT count(*) FROM "OrderLines")'
    env = repository_env(tmp_path)
    name = pg_db.rsplit("/", 1)[1]
    users_shape_database(pg_server, name)
    cli_ok(run_cli("init", env=env))
    out = cli_ok(run_cli("backup", pg_db, "--target", "Shop", env=env))
    first = re.search(r"backup (\S+) complete", out).group(1)
    expected = {first: pg_server.query(name, counts)[0]}
    pg_server.psql(name, 'DELETE FROM "OrderLines" WHERE "Id" % 3 = 0;')
    outcomes = []
    for delay in (0.3, 0.8, 1.5, 2.5, 4.0):
        process = _start("backup", pg_db, "--target", "Shop", env=env)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.communicate()
        outcomes.append(process.returncode)
    listed = json.loads(cli_ok(run_cli("list", "--json", env=env)))
    for item in listed:  # a backup that finished before its kill counts too
        expected.setdefault(item["id"], pg_server.query(name, counts)[0])
    assert {item["id"] for item in listed} == set(expected)
    err = _no_crash(run_cli("prune", env=env))
    assert "error:" not in err
    assert "no problems found" in cli_ok(run_cli("check", "--read-data", env=env))
    made = []
    try:
        for backup_id, rows in expected.items():
            target = unique_db_name("restored")
            made.append(target)
            cli_ok(run_cli("restore", backup_id, "--to", pg_server.url(target), "--yes", env=env))
            assert pg_server.query(target, counts)[0] == rows
    finally:
        for target in made:
            pg_server.drop_database(target)
    again = json.loads(cli_ok(run_cli("prune", "--json", env=env)))
    assert again["packs_deleted"] == 0 and again["orphan_packs"] == 0, (outcomes, again)


def test_two_prunes_at_once_and_a_prune_beside_a_backup(copy):
    tmp_path, env, kept = copy
    for round_ in range(3):
        first, second = _start("prune", env=env), _start("prune", env=env)
        for process in (first, second):
            _, err = process.communicate(timeout=300)
            text = err.decode()
            assert "Traceback" not in text and process.returncode in (0, 3), text
            if process.returncode == 3:  # the documented 'busy' exit, one error line
                assert len([x for x in text.splitlines() if x.startswith("error:")]) == 1
        _everything_restores(tmp_path, env, kept, f"two-{round_}")
    big = make_sqlite_db(tmp_path / "Big.db", users=20000, orders=60000, seed=5)
    backup = _start("backup", str(big), "--target", "Big", env=env)
    time.sleep(0.3)
    pruned = run_cli("prune", "--wait", "1", env=env)
    _no_crash(pruned)
    assert pruned.returncode in (0, 3), pruned.stderr.decode()
    out, err = backup.communicate(timeout=300)
    assert backup.returncode == 0, err.decode()
    kept[re.search(rb"backup (\S+) complete", out).group(1).decode()] = sqlite_counts(big)
    cli_ok(run_cli("prune", env=env))
    _clean(tmp_path)
    assert "no problems found" in cli_ok(run_cli("check", "--read-data", env=env))
    _everything_restores(tmp_path, env, kept, "after")
