"""kill -9 of a real `strongroom prune` at each step of a repack (issue 19): every
backup still verifies and restores, and the next prune finishes the cleanup.

The repository holds three targets (``Shop``, ``OtherDb``, ``Scratch``); ``Shop`` shrank,
and its first backup is forgotten, so its first pack is mostly garbage: prune repacks it;
``Scratch``'s only backup is forgotten: its pack goes whole. The
test hook ``$STRONGROOM_TEST_KILL_AT`` (``services/repack.py``) SIGKILLs the prune right
after a step; the test also kills one with a plain SIGKILL from outside, after it has
written its first new pack (seen in ``packs/``).
"""

import contextlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import time

import pytest

from strongroom.repository.keys import KeySource
from strongroom.repository.pack_index import list_index_ids, read_index_object
from strongroom.repository.repository import Repository
from strongroom.services.repack import KILL_POINTS, TEST_KILL_ENV
from strongroom.storage.local import LocalStorage
from tests.helpers import REPO_ROOT, STRONGROOM, make_sqlite_db, run_cli, sqlite_counts
from tests.helpers import cli_ok as _ok


def _packs(repo):
    return {p.name for p in (repo / "packs").rglob("*") if p.is_file() and len(p.name) == 64}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A repository (built once) and what each of its backups holds."""
    root = tmp_path_factory.mktemp("prune-kill")
    env = {
        "STRONGROOM_REPO": str(root / "repo"),
        "STRONGROOM_KEY_FILE": str(root / "repo.key"),
        "STRONGROOM_CACHE_DIR": str(root / "cache"),
    }
    shop = make_sqlite_db(root / "Shop.db", users=1500, orders=4000)
    other = make_sqlite_db(root / "OtherDb.db", users=1500, orders=4000, seed=3)
    _ok(run_cli("init", env=env))  # 4/16/64 KiB chunks
    expected = {}

    def backup(path, target):
        out = _ok(run_cli("backup", str(path), "--target", target, env=env))
        expected[re.search(r"backup (\S+) complete", out).group(1)] = sqlite_counts(path)

    backup(shop, "Shop")
    backup(other, "OtherDb")
    with contextlib.closing(sqlite3.connect(shop)) as conn:
        conn.execute("DELETE FROM orders WHERE id > 1000")
        conn.execute("DELETE FROM users WHERE id > 400")
        conn.commit()
        conn.execute("VACUUM")
    backup(shop, "Shop")
    scratch = make_sqlite_db(root / "Scratch.db", users=300, orders=300, seed=9)
    backup(scratch, "Scratch")
    _ok(run_cli("forget", "--target", "Shop", "--keep-last", "1", env=env))
    gone = list(expected)[-1]  # Scratch's only backup, forgotten whole
    (root / "repo" / "backups" / f"{gone}.json").unlink()
    listed = json.loads(_ok(run_cli("list", "--json", env=env)))
    kept = {b["id"]: expected[b["id"]] for b in listed}
    assert len(kept) == 2
    dry = json.loads(_ok(run_cli("prune", "--dry-run", "--json", env=env)))
    assert (dry["packs_repacked"], dry["packs_deleted"]) == (1, 2), dry
    return root, kept


@pytest.fixture()
def copy(built, tmp_path):
    """A fresh copy of the built repository (and key, cache) for one test."""
    root, kept = built
    shutil.copytree(root / "repo", tmp_path / "repo")
    shutil.copy2(root / "repo.key", tmp_path / "repo.key")
    env = {
        "STRONGROOM_REPO": str(tmp_path / "repo"),
        "STRONGROOM_KEY_FILE": str(tmp_path / "repo.key"),
        "STRONGROOM_CACHE_DIR": str(tmp_path / "cache"),
    }
    return tmp_path, env, kept


def _everything_restores(tmp_path, env, kept, label):
    _ok(run_cli("verify", "--all", env=env))
    for backup_id, counts in kept.items():
        restored = tmp_path / f"restored-{label}-{backup_id}.db"
        _ok(run_cli("restore", backup_id, "--to", str(restored), "--yes", env=env))
        assert sqlite_counts(restored) == counts


def _clean(tmp_path):
    """After a finished prune: no index object names another that exists, every pack is
    listed by an index object and every listed pack exists."""
    key = KeySource(key_file=tmp_path / "repo.key")
    repo = Repository.open(LocalStorage(tmp_path / "repo"), key)
    sealer = repo.keyring.sealer(for_reading=True)
    ids = list_index_ids(repo.storage)
    listed = set()
    for index_id in ids:
        index = read_index_object(repo.storage, index_id, sealer)
        assert not set(index.supersedes) & ids
        listed |= {p.pack_id for p in index.packs}
    assert listed == _packs(tmp_path / "repo")


@pytest.mark.parametrize("step", KILL_POINTS)
def test_prune_killed_at_each_step_loses_nothing(copy, step):
    tmp_path, env, kept = copy
    before = _packs(tmp_path / "repo")
    killed = run_cli("prune", env={**env, TEST_KILL_ENV: step})
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    after_kill = _packs(tmp_path / "repo")
    if step == KILL_POINTS[0]:
        assert after_kill > before  # a new pack, no old one deleted yet
    elif step == KILL_POINTS[3]:
        assert len(before - after_kill) == 1
    else:
        assert before < after_kill
    _everything_restores(tmp_path, env, kept, "killed")
    out = _ok(run_cli("prune", env=env))
    assert "packs: deleted" in out
    _clean(tmp_path)
    assert len(_packs(tmp_path / "repo")) == len(before) - 1  # one repacked, one deleted
    assert "no problems found" in _ok(run_cli("check", "--read-data", env=env))
    _everything_restores(tmp_path, env, kept, "after")
    assert "packs: " not in _ok(run_cli("prune", env=env))  # nothing left to do


def test_prune_killed_from_outside_after_its_first_new_pack(copy):
    tmp_path, env, kept = copy
    before = _packs(tmp_path / "repo")
    full_env = {**os.environ, **env}
    process = subprocess.Popen(
        [*STRONGROOM, "prune"], env=full_env, cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not _packs(tmp_path / "repo") - before and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.001)
    process.send_signal(signal.SIGKILL)
    process.wait()
    _everything_restores(tmp_path, env, kept, "killed")
    _ok(run_cli("prune", env=env))
    _clean(tmp_path)
    assert "no problems found" in _ok(run_cli("check", "--read-data", env=env))
    _everything_restores(tmp_path, env, kept, "after")
