"""prune / check / stats as a user runs them (SQLite, local repository)."""

import json
import os
import time
from pathlib import Path

import pytest

from tests.helpers import cli_fails as _fails
from tests.helpers import cli_ok as _ok
from tests.helpers import make_sqlite_db, repository_env, run_cli


@pytest.fixture()
def env(tmp_path):
    return repository_env(tmp_path)


def _pack_files(repo: Path):
    return {p.name: p.stat().st_size for p in (repo / "packs").rglob("*") if len(p.name) == 64}


def _manifests(repo: Path):
    return [json.loads(p.read_text()) for p in sorted((repo / "backups").glob("*.json"))]


@pytest.fixture()
def populated(tmp_path, env):
    shop = make_sqlite_db(tmp_path / "shop.db", users=1500, orders=3000)
    crm = make_sqlite_db(tmp_path / "crm.db", users=300, orders=300, seed=5)
    _ok(run_cli("init", env=env))
    _ok(run_cli("backup", str(shop), env=env))
    make_sqlite_db(shop, users=300, orders=300, seed=11)  # changes most pages
    _ok(run_cli("backup", str(shop), env=env))
    _ok(run_cli("backup", str(crm), env=env))
    return tmp_path / "repo"


def test_prune_dry_run_reports_and_prune_frees_the_unreferenced(env, populated):
    _ok(run_cli("forget", "--keep-last", "1", env=env))
    crm = next(m["id"] for m in _manifests(populated) if m["target"] == "crm")
    (populated / "backups" / f"{crm}.json").unlink()  # its target forgotten whole
    before = _pack_files(populated)
    dry = json.loads(_ok(run_cli("prune", "--dry-run", "--json", env=env)))
    assert dry["packs_deleted"] >= 1 and dry["pack_bytes_freed"] > 0
    assert dry["unreferenced_bytes"] == dry["pack_bytes_freed"]
    assert dry["packs_written"] == 0 and _pack_files(populated) == before
    out = _ok(run_cli("prune", "--dry-run", env=env))
    assert f"({dry['unreferenced_bytes']} bytes); nothing was deleted" in out
    assert "packs: would delete" in out

    report = json.loads(_ok(run_cli("prune", "--json", env=env)))
    assert report["packs_deleted"] == dry["packs_deleted"]
    assert report["packs_repacked"] == dry["packs_repacked"]
    gone = set(before) - set(_pack_files(populated))
    assert len(gone) == report["packs_deleted"]
    assert report["pack_bytes_freed"] == sum(before[p] for p in gone) - sum(
        size for name, size in _pack_files(populated).items() if name not in before
    )
    assert not list((populated / "locks").glob("*"))
    _ok(run_cli("verify", "--all", env=env))
    assert "no problems found" in _ok(run_cli("check", "--read-data", env=env))
    out = _ok(run_cli("prune", env=env))
    assert "packs:" not in out  # nothing left to do


def _location(env, chunk_id):
    from strongroom.repository.keys import KeySource
    from strongroom.repository.repository import Repository
    from strongroom.storage.local import LocalStorage

    os.environ["STRONGROOM_CACHE_DIR"] = env["STRONGROOM_CACHE_DIR"]
    try:
        source = KeySource(key_file=Path(env["STRONGROOM_KEY_FILE"]))
        repo = Repository.open(LocalStorage(Path(env["STRONGROOM_REPO"])), source)
        found = repo.chunks.locate(chunk_id)
    finally:
        del os.environ["STRONGROOM_CACHE_DIR"]
    assert found is not None
    return Path(env["STRONGROOM_REPO"]) / "packs" / found.pack_id[:2] / found.pack_id, found


def test_check_finds_a_missing_and_a_damaged_chunk(env, populated):
    out = _ok(run_cli("check", env=env))
    assert "3 backups reference" in out and "no problems found" in out
    manifests = _manifests(populated)
    damaged_id = manifests[0]["chunks"][0][0]
    missing_id = manifests[-1]["chunks"][-1][0]
    path, found = _location(env, damaged_id)
    data = bytearray(path.read_bytes())
    data[found.offset + found.length // 2] ^= 0x10
    path.write_bytes(bytes(data))
    assert "no problems found" in _ok(run_cli("check", env=env))  # data not read

    missing_pack, _ = _location(env, missing_id)
    assert missing_pack != path
    missing_pack.unlink()
    err = _fails(run_cli("check", env=env), 7, f"its pack {missing_pack.name} is gone")
    assert (
        f"MISSING  chunk {missing_id} is missing: its pack {missing_pack.name} is gone "
        f"(needed by 1: {manifests[-1]['id']})" in err
    )
    err = _fails(run_cli("check", "--read-data", env=env), 7, "problem")
    assert damaged_id in err and "DAMAGED" in err
    report = json.loads(run_cli("check", "--read-data", "--json", env=env).stdout)
    assert not report["ok"]
    assert {p["kind"] for p in report["problems"]} == {"missing", "damaged"}


def test_check_subset_reads_about_that_share(env, populated):
    report = json.loads(_ok(run_cli("check", "--read-data", "--subset", "50%", "--json", env=env)))
    assert report["packs_read"] == -(-len(_pack_files(populated)) // 2)  # ceil
    assert "50% sample" in _ok(run_cli("check", "--read-data", "--subset", "50%", env=env))
    _fails(run_cli("check", "--subset", "10%", env=env), 2, "--read-data")
    _fails(run_cli("check", "--read-data", "--subset", "0%", env=env), 2, "--subset")


def test_stats_equal_the_sums(env, populated):
    manifests = _manifests(populated)
    ids = {c[0] for m in manifests for c in m["chunks"]}
    files = {c: _location(env, c)[1].length for c in ids}  # blob lengths (issue 19: packs)
    document = json.loads(_ok(run_cli("stats", "--json", env=env)))
    for row in document["targets"]:
        mine = [m for m in manifests if m["target"] == row["target"]]
        plain = {c[0]: c[1] for m in mine for c in m["chunks"]}
        assert row["backups"] == len(mine)
        assert row["raw_bytes"] == sum(m["raw_size"] for m in mine)
        assert row["unique_bytes"] == sum(plain.values())
        assert row["stored_bytes"] == sum(files[c] for c in plain)
        assert row["oldest"] == min(m["finished_at"] for m in mine)
        assert row["newest"] == max(m["finished_at"] for m in mine)
        assert row["dedup_ratio"] == round(row["raw_bytes"] / row["unique_bytes"], 3)
    assert [r["target"] for r in document["targets"]] == ["crm", "shop"]
    assert document["total"]["raw_bytes"] == sum(m["raw_size"] for m in manifests)
    assert document["all_chunk_bytes"] == sum(files.values())
    packs = _pack_files(populated)
    index = [p for p in (populated / "index").rglob("*") if len(p.name) == 64]
    assert (document["packs"], document["pack_bytes"]) == (len(packs), sum(packs.values()))
    assert document["index_objects"] == len(index) and document["loose_chunks"] == 0
    assert document["objects"] == len(packs) + len(index)
    out = _ok(run_cli("stats", env=env))
    assert "(all)" in out and "DEDUP" in out
    assert f"objects: {len(packs)} packs" in out
    out = _ok(run_cli("stats", "--target", "crm", env=env))
    assert "crm" in out and "shop" not in out and "(all)" not in out
    assert "no backups of target 'x'" in _ok(run_cli("stats", "--target", "x", env=env))


def test_stats_skips_stray_files_under_chunks(env, populated):
    """A file under chunks/ that is not a chunk (an editor's backup, a .DS_Store) is not
    a chunk id: stats counts the chunks and does not fail on it."""
    before = json.loads(_ok(run_cli("stats", "--json", env=env)))
    stray = populated / "chunks" / "ab" / "notes.txt"
    stray.parent.mkdir(parents=True)
    stray.write_text("left here by hand")
    document = json.loads(_ok(run_cli("stats", "--json", env=env)))
    assert document["all_chunk_bytes"] == before["all_chunk_bytes"]
    assert document["all_chunks"] == before["all_chunks"] and document["loose_chunks"] == 0
    partial = stray.parent / ".tmp-killed-write"  # what a killed backup leaves
    partial.write_bytes(b"half a chunk")
    os.utime(partial, (time.time() - 7200, time.time() - 7200))
    _ok(run_cli("forget", "--keep-last", "1", env=env))
    out = _ok(run_cli("prune", env=env))  # the stray file is no chunk: kept, no failure
    assert stray.read_text() == "left here by hand"
    assert "removed 1 partial file left by interrupted writes" in out and not partial.exists()


def test_prune_waits_for_a_live_backup_lock_then_fails_clearly(env, populated):
    lock = {
        "format": "strongroom-lock", "version": 1, "lock_id": "x", "kind": "shared",
        "purpose": "backup of shop", "owner": "ci@elsewhere", "pid": 1,
        "created": "2026-01-01T00:00:00.000Z", "refreshed": "2026-01-01T00:00:00.000Z",
        "expires": "2999-01-01T00:00:00.000Z", "ttl_seconds": 300.0, "sequence": 0,
    }  # fmt: skip
    (populated / "locks").mkdir(exist_ok=True)
    (populated / "locks" / "x.json").write_text(json.dumps(lock))
    _fails(run_cli("prune", "--wait", "1", env=env), 3, "busy.*backup of shop by ci@elsewhere")
    dry = json.loads(_ok(run_cli("prune", "--dry-run", "--json", env=env)))
    assert dry["running_backups"] == 1
    lock["expires"] = "2020-01-01T00:00:00.000Z"  # the backup was killed long ago
    (populated / "locks" / "x.json").write_text(json.dumps(lock))
    _ok(run_cli("prune", "--wait", "1", env=env))
    assert not list((populated / "locks").glob("*"))
