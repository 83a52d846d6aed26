"""check: missing chunks, damaged chunks with read_data, and reading a subset."""

import json
import math
import random

import pytest

from strongroom.engines.sqlite import SqliteEngine
from strongroom.errors import UsageError
from strongroom.pipeline.chunking import ChunkerParams
from strongroom.repository.chunks import PackSession, list_pack_ids
from strongroom.repository.keys import KeySource
from strongroom.repository.layout import chunk_key
from strongroom.repository.repository import Repository
from strongroom.services.backup import run_backup
from strongroom.services.check import check_repository, parse_subset
from strongroom.storage.memory import MemoryStorage
from tests.helpers import delete_chunk_pack, flip_chunk_byte, make_sqlite_db

SMALL_CHUNKS = ChunkerParams(min_size=8 * 1024, avg_size=32 * 1024, max_size=128 * 1024)


@pytest.fixture()
def repo(tmp_path):
    storage = MemoryStorage()
    Repository.init(storage, key_file=tmp_path / "k", chunker=SMALL_CHUNKS)
    return Repository.open(storage, KeySource(key_file=tmp_path / "k"))


@pytest.fixture()
def backups(repo, tmp_path):
    db = make_sqlite_db(tmp_path / "shop.db", users=1500, orders=4000)
    first = run_backup(repo, SqliteEngine(str(db)), target="a").manifest
    second = run_backup(repo, SqliteEngine(str(db)), target="b").manifest
    return first, second


def test_a_healthy_repository_passes(repo, backups):
    report = check_repository(repo, read_data=True)
    assert report.ok and report.backups == 2
    assert report.referenced_chunks == len(backups[0].unique_chunk_ids)
    assert report.chunks_read == report.referenced_chunks
    assert report.bytes_read == sum({r.chunk_id: r.size for r in backups[0].chunks}.values())


def test_a_missing_chunk_is_found_without_reading_data(repo, backups):
    victim = backups[0].chunks[3].chunk_id
    held = delete_chunk_pack(repo, victim)  # chunks live in packs since issue 19
    report = check_repository(repo)
    assert not report.ok and report.chunks_read == 0
    assert {p.subject for p in report.problems} == held & backups[0].unique_chunk_ids
    problem = next(p for p in report.problems if p.subject == victim)
    assert all(p.kind == "missing" for p in report.problems)
    assert set(problem.backups) == {backups[0].backup_id, backups[1].backup_id}


def test_a_damaged_chunk_is_found_only_by_reading_data(repo, backups):
    victim = backups[0].chunks[2].chunk_id
    flip_chunk_byte(repo, victim, at=-5)  # its blob in its pack (issue 19)
    assert check_repository(repo).ok
    report = check_repository(repo, read_data=True)
    (problem,) = report.problems
    assert problem.kind == "damaged" and victim in problem.message


def test_unreferenced_chunks_and_unreadable_manifests(repo, backups):
    repo.storage.put(chunk_key("ee" * 32), b"leftover")
    repo.storage.put("backups/20261121T000000Z-00000000.json", b"{broken")
    report = check_repository(repo)
    assert report.unreferenced_chunks == 1
    (problem,) = report.problems
    assert problem.kind == "manifest" and "not valid JSON" in problem.message


def test_subset_reads_about_that_share_of_the_packs(repo, tmp_path):
    store = repo.chunks
    store.pack_writer = lambda: PackSession(store, 24 * 1024)  # many small packs
    db = make_sqlite_db(tmp_path / "shop.db", users=1500, orders=4000)
    run_backup(repo, SqliteEngine(str(db)), target="a")
    total = len(set(list_pack_ids(repo.storage)))
    assert total >= 10
    for share in (0.1, 0.25, 0.5):
        report = check_repository(repo, read_data=True, subset=share, rng=random.Random(1))
        assert report.packs_read == math.ceil(share * total) and report.ok
        assert 0 < report.chunks_read < report.referenced_chunks
    picks = [
        check_repository(repo, read_data=True, subset=0.1, rng=random.Random(seed)).bytes_read
        for seed in range(3)
    ]
    assert len(set(picks)) > 1  # a different sample each time
    whole = check_repository(repo, read_data=True)
    assert whole.packs_read == total and whole.chunks_read == whole.referenced_chunks


def test_parse_subset():
    assert parse_subset("10%") == pytest.approx(0.1)
    assert parse_subset(" 2.5% ") == pytest.approx(0.025)
    assert parse_subset("100%") == 1.0
    for bad in ("0%", "101%", "10", "ten%", "-5%", ""):
        with pytest.raises(UsageError, match="--subset"):
            parse_subset(bad)


def test_read_data_finds_chunks_swapped_in_a_manifest(repo, backups):
    victim = backups[1]
    key = f"backups/{victim.backup_id}.json"
    document = json.loads(repo.storage.get(key))
    chunks = document["chunks"]
    chunks[0], chunks[1] = chunks[1], chunks[0]
    repo.storage.put(key, json.dumps(document).encode())
    fresh = Repository.open(repo.storage, KeySource(key_file=repo.keyring._source.key_file))
    assert check_repository(fresh).ok  # every chunk is there
    report = check_repository(fresh, read_data=True)
    (problem,) = report.problems  # every chunk is intact too: the order is what is wrong
    assert problem.kind == "order" and problem.subject == victim.backup_id
    assert "list of chunks is not the one recorded" in problem.message


def test_objects_in_chunks_that_are_not_chunks_are_not_counted_as_chunks(repo, backups):
    repo.storage.put("chunks/ab/README", b"not a chunk")
    report = check_repository(repo)
    assert report.ok and report.stored_chunks == report.referenced_chunks


def test_read_data_finds_a_manifest_whose_private_section_is_damaged(repo, backups):
    """The fault campaign (seed 2030, damage-manifest #2) flipped a character of backup
    B's private section: check --read-data passed (exit 0) and only a restore, which needs
    the section's table statistics to verify, would have noticed."""
    from strongroom.repository.layout import manifest_key

    key = manifest_key(backups[1].backup_id)
    doc = json.loads(repo.storage.get(key))
    data = doc["private"]["data"]
    middle = len(data) // 2
    doc["private"]["data"] = (
        data[:middle] + ("A" if data[middle] != "A" else "B") + data[middle + 1 :]
    )
    repo.storage.put(key, json.dumps(doc).encode())
    report = check_repository(repo, read_data=True)
    assert not report.ok
    assert [(p.kind, p.subject) for p in report.problems] == [("manifest", backups[1].backup_id)]
    assert "private section" in report.problems[0].message
    assert check_repository(repo).ok  # without --read-data only chunks are listed
