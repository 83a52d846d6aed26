"""Prune beside running backups: separate processes, many rounds, then every backup restores.

Each round changes the databases, then starts at once, each in its own process: a backup of
``prod`` (grown every round: its new chunks are unreferenced until its manifest is written),
a backup of ``staging`` (reset from one of two seed files in turn: it counts on chunks of
the backup from two rounds ago, which ``forget --keep-last 1`` may make unreferenced while
it runs), and, after a random delay, ``forget --keep-last 1`` followed by ``prune``, beside a
second ``prune``. After each round ``verify --all`` must pass; at the end every listed
backup is restored and its row counts compared with the database at backup time.

Without the locks (shared for backups, exclusive for prune) this fails within a few rounds.
"""

import json
import random
import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

from strongroom.pipeline.chunking import ChunkerParams
from strongroom.repository.repository import Repository
from strongroom.storage.local import LocalStorage
from tests.helpers import make_sqlite_db, run_cli, sqlite_counts

ROUNDS = 12
SMALL_CHUNKS = ChunkerParams(min_size=16 * 1024, avg_size=64 * 1024, max_size=256 * 1024)


def _ok(result, what):
    assert result.returncode == 0, (what, result.stderr.decode(), result.stdout.decode())
    return result.stdout.decode()


def _backup_id(output):
    return re.search(r"backup (\S+) complete", output).group(1)


def test_backups_running_beside_forget_and_prune_all_restore(tmp_path):
    started = time.monotonic()
    repo = tmp_path / "repo"
    key = tmp_path / "repo.key"
    Repository.init(LocalStorage(repo), key_file=key, chunker=SMALL_CHUNKS)
    env = {"STRONGROOM_REPO": str(repo), "STRONGROOM_KEY_FILE": str(key)}
    prod = make_sqlite_db(tmp_path / "prod.db", users=2500, orders=6000)
    seeds = [
        make_sqlite_db(tmp_path / f"seed{n}.db", users=1500, orders=3000, seed=20 + n)
        for n in range(2)
    ]
    staging = tmp_path / "staging.db"
    rng = random.Random(2026)
    expected: dict[str, dict[str, int]] = {}

    def maintenance(delay):
        time.sleep(delay)
        _ok(run_cli("forget", "--keep-last", "1", env=env), "forget")
        return _ok(run_cli("prune", "--wait", "60", env=env), "prune")

    def second_prune(delay):
        time.sleep(delay)
        return _ok(run_cli("prune", "--wait", "60", env=env), "prune")

    with ThreadPoolExecutor(max_workers=4) as pool:
        for round_ in range(ROUNDS):
            make_sqlite_db(prod, users=150, orders=300, seed=100 + round_)
            shutil.copyfile(seeds[round_ % 2], staging)
            counts = {"prod": sqlite_counts(prod), "staging": sqlite_counts(staging)}
            backups = {
                target: pool.submit(
                    run_cli, "backup", str(path), "--target", target, env=env, timeout=120
                )
                for target, path in (("prod", prod), ("staging", staging))
            }
            pruning = [
                pool.submit(maintenance, rng.uniform(0.0, 0.8)),
                pool.submit(second_prune, rng.uniform(0.2, 1.2)),
            ]
            for target, future in backups.items():
                output = _ok(future.result(), f"backup of {target} in round {round_}")
                expected[_backup_id(output)] = counts[target]
            for future in pruning:
                future.result()
            _ok(run_cli("verify", "--all", env=env), f"verify after round {round_}")

    listed = json.loads(_ok(run_cli("list", "--json", env=env), "list"))
    assert {b["target"] for b in listed} == {"prod", "staging"}
    for entry in listed:
        restored = tmp_path / f"restored-{entry['id']}.db"
        _ok(run_cli("restore", entry["id"], "--to", str(restored), "--yes", env=env), "restore")
        assert sqlite_counts(restored) == expected[entry["id"]]
    _ok(run_cli("prune", env=env), "final prune")
    _ok(run_cli("check", "--read-data", env=env), "check")
    assert not list((repo / "locks").glob("*"))
    assert time.monotonic() - started < 90
