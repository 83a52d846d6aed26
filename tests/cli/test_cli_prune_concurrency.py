"""Prune beside running backups: separate processes, many rounds, then every backup restores.

Every round, each command in its own process, as on separate machines:

* ``staging`` is refreshed from prod's previous state and backed up. Its backup finds every
  chunk already stored (they belong to prod's previous backup) and uploads nothing. It is
  frozen (SIGSTOP) right after it has listed ``chunks/``: case (a), a backup counting on
  chunks it saw, which are about to become unreferenced.
* ``prod`` grows and is backed up; this backup is frozen at a random moment while it
  uploads its new chunks: case (b), stored but not yet referenced by a manifest.
* ``prod`` grows a little more and is backed up again, to the end; then
  ``forget --keep-last 1`` forgets prod's previous backup, so the chunks the frozen
  backups count on are referenced by no manifest.
* ``prune`` starts. Only once it has either finished or is waiting (its lock is there) are
  the frozen backups resumed.

After each round ``check`` must find every chunk of every backup; at the end ``verify --all``
must pass and every listed backup is restored and its row counts compared with the
database when it was backed up. With the locks disabled
(backups take no shared lock, prune no exclusive lock) the first round already fails.
"""

import json
import os
import random
import re
import shutil
import signal
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from strongroom.pipeline.chunking import ChunkerParams
from strongroom.repository.repository import Repository
from strongroom.storage.local import LocalStorage
from tests.helpers import REPO_ROOT, STRONGROOM, make_sqlite_db, run_cli, sqlite_counts

ROUNDS = 8
SMALL_CHUNKS = ChunkerParams(min_size=16 * 1024, avg_size=64 * 1024, max_size=256 * 1024)


def _ok(result, what):
    assert result.returncode == 0, (what, result.stderr.decode(), result.stdout.decode())
    return result.stdout.decode()


def _run(*args, env):
    return run_cli(*args, env=_machine(env))


def _machine(env):
    """``env`` with an index cache of its own (issue 19: ``STRONGROOM_CACHE_DIR``), under
    ``env["CACHES"]`` (the test's folder): each command runs as on a separate machine,
    which does not share the local cache."""
    return {**env, "STRONGROOM_CACHE_DIR": tempfile.mkdtemp(dir=env["CACHES"])}


def _backup_id(output):
    return re.search(r"backup (\S+) complete", output).group(1)


class Cli:
    """One strongroom process started in the background."""

    def __init__(self, *args, env, tmpdir=None):
        full_env = dict(os.environ)
        for name in ("STRONGROOM_PASSPHRASE", "DATABASE_URL"):
            full_env.pop(name, None)
        full_env.update(_machine(env))
        if tmpdir is not None:
            full_env["TMPDIR"] = str(tmpdir)
        self.what = " ".join(args[:2])
        self.process = subprocess.Popen(
            [*STRONGROOM, *args],
            env=full_env,
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def stop(self):
        self.process.send_signal(signal.SIGSTOP)

    def resume(self):
        self.process.send_signal(signal.SIGCONT)

    def running(self):
        return self.process.poll() is None

    def result(self):
        out, err = self.process.communicate(timeout=120)
        assert self.process.returncode == 0, (self.what, err.decode(), out.decode())
        return out.decode()


def _until(condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)


def _freeze_when(cli, condition, delay=0.0):
    """Stop the process once ``condition()`` holds; False if it ended before."""
    _until(lambda: condition() or not cli.running())
    time.sleep(delay)
    if not cli.running():
        return False
    cli.stop()
    return True


def _live_names(root):
    """Names of the files under ``root`` now, while other processes create and remove some.

    ``Path.rglob`` raises FileNotFoundError when a folder it found is removed before it
    reads it (a backup's scratch folder, a chunk's temporary file); ``os.walk`` passes over
    a folder that is gone, which is what a poll of a changing tree needs.
    """
    return {name for _, _, files in os.walk(root) for name in files}


def _live_folders(root):
    return {name for _, folders, _ in os.walk(root) for name in folders}


def _chunk_files(repo):
    """Stored chunk objects: loose ``chunks/`` (version 1) and packs (issue 19: a backup's
    new chunks land in ``packs/``, then its index object, then its manifest)."""
    return _live_names(repo / "chunks") | _live_names(repo / "packs")


def _prune_lock_present(repo):
    for path in (repo / "locks").glob("*.json"):
        try:
            if '"exclusive"' in path.read_text():
                return True
        except FileNotFoundError:
            continue  # released meanwhile
    return False


@pytest.fixture()
def processes():
    """Every background process; none is left stopped or running, also on failure."""
    started: list[Cli] = []
    yield started
    for cli in started:
        if cli.running():
            cli.resume()
            cli.process.kill()
            cli.process.wait()


def test_backups_running_beside_forget_and_prune_all_restore(tmp_path, processes):
    repo = tmp_path / "repo"
    key = tmp_path / "repo.key"
    Repository.init(LocalStorage(repo), key_file=key, chunker=SMALL_CHUNKS)
    (tmp_path / "caches").mkdir()
    env = {
        "STRONGROOM_REPO": str(repo),
        "STRONGROOM_KEY_FILE": str(key),
        "CACHES": str(tmp_path / "caches"),
    }
    prod = make_sqlite_db(tmp_path / "prod.db", users=3000, orders=8000)
    staging = tmp_path / "staging.db"
    following = tmp_path / "following.db"
    rng = random.Random(2026)
    expected: dict[str, dict[str, int]] = {}
    frozen = 0

    def backup(path, target):
        out = _ok(_run("backup", str(path), "--target", target, env=env), "backup")
        expected[_backup_id(out)] = sqlite_counts(path)

    backup(prod, "prod")
    for round_ in range(ROUNDS):
        dirs = {name: tmp_path / f"tmp-{round_}-{name}" for name in ("staging", "prod")}
        for directory in dirs.values():
            directory.mkdir()
        shutil.copyfile(prod, staging)
        counts = {"staging": sqlite_counts(staging)}
        make_sqlite_db(prod, users=200, orders=400, seed=100 + round_)
        counts["prod"] = sqlite_counts(prod)

        running = {
            "staging": Cli("backup", str(staging), "--target", "staging", env=env,
                           tmpdir=dirs["staging"]),
            "prod": Cli("backup", str(prod), "--target", "prod", env=env, tmpdir=dirs["prod"]),
        }  # fmt: skip
        processes.extend(running.values())
        stored = _chunk_files(repo)
        conditions = {
            # its dump has begun, so it has listed chunks/
            "staging": lambda: any(
                name.startswith("strongroom-sqlite-")
                for name in _live_names(dirs["staging"]) | _live_folders(dirs["staging"])
            ),
            # it has stored a new chunk (no other backup runs yet that could)
            "prod": lambda: bool(_chunk_files(repo) - stored),
        }
        delays = {"staging": 0.0, "prod": rng.uniform(0.0, 0.05)}
        with ThreadPoolExecutor(max_workers=2) as pool:
            freezing = {
                name: pool.submit(_freeze_when, cli, conditions[name], delays[name])
                for name, cli in running.items()
            }
            paused = [name for name, future in freezing.items() if future.result()]
        frozen += len(paused)
        # prod's state before this round's change, changed differently: the chunks the
        # frozen prod backup has stored are not part of this backup
        shutil.copyfile(staging, following)
        make_sqlite_db(following, users=200, orders=400, seed=500 + round_)
        backup(following, "prod")  # to the end, beside the frozen ones
        _ok(_run("forget", "--keep-last", "1", env=env), "forget")
        pruning = Cli("prune", "--wait", "60", env=env)
        processes.append(pruning)
        _until(lambda: not pruning.running() or _prune_lock_present(repo))
        time.sleep(0.3)  # a prune that did not wait would be deleting now
        for name in paused:
            running[name].resume()
        for name, cli in running.items():
            expected[_backup_id(cli.result())] = counts[name]
        pruning.result()
        _ok(_run("check", env=env), f"check after round {round_}")  # every chunk is there
        shutil.copyfile(following, prod)

    assert frozen >= ROUNDS  # most rounds froze both backups in their window
    _ok(_run("verify", "--all", env=env), "verify")
    listed = json.loads(_ok(_run("list", "--json", env=env), "list"))
    assert {b["target"] for b in listed} == {"prod", "staging"}
    for entry in listed:
        restored = tmp_path / f"restored-{entry['id']}.db"
        _ok(_run("restore", entry["id"], "--to", str(restored), "--yes", env=env), "restore")
        assert sqlite_counts(restored) == expected[entry["id"]]
    _ok(_run("prune", env=env), "final prune")
    _ok(_run("check", "--read-data", env=env), "check")
    assert not list((repo / "locks").glob("*"))
