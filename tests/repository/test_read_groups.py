"""A restore's reads (ChunkStore.read_many): blobs of one pack are fetched in few ranged
reads even when the stream alternates between packs, as any backup after churn does (on
S3 a churned backup's restore made 8,534 GETs per GB, one per change of pack)."""

import os

import pytest

from strongroom.repository import chunks as chunks_module
from strongroom.repository.keys import KeySource
from strongroom.repository.repository import Repository
from strongroom.storage.memory import MemoryStorage


@pytest.fixture()
def repo(tmp_path):
    storage = MemoryStorage()
    Repository.init(storage, key_file=tmp_path / "k")
    return Repository.open(storage, KeySource(key_file=tmp_path / "k"))


def _store(repo, datas):
    session = repo.chunks.pack_writer()
    ids = []
    for data in datas:
        chunk_id = repo.chunks.name(data)
        session.store(chunk_id, data)
        ids.append(chunk_id)
    session.flush()
    return ids


def _counting(repo, monkeypatch):
    calls = []
    real = repo.storage.get_range

    def get_range(key, offset, length):
        calls.append((key, offset, length))
        return real(key, offset, length)

    monkeypatch.setattr(repo.storage, "get_range", get_range)
    return calls


def test_a_stream_alternating_between_two_packs_reads_each_pack_in_few_ranges(repo, monkeypatch):
    old = [os.urandom(3000) for _ in range(60)]
    new = [os.urandom(3000) for _ in range(60)]
    old_ids, new_ids = _store(repo, old), _store(repo, new)
    order = [x for pair in zip(old_ids, new_ids, strict=True) for x in pair]
    expected = [x for pair in zip(old, new, strict=True) for x in pair]
    calls = _counting(repo, monkeypatch)
    assert list(repo.chunks.read_many(order)) == expected
    assert len({key for key, _, _ in calls}) == 2
    assert len(calls) <= 4  # one read per change of pack was 120


def test_gaps_over_the_limit_split_reads_and_repeats_and_order_hold(repo, monkeypatch):
    monkeypatch.setattr(chunks_module, "MAX_GAP_BYTES", 2500)
    datas = [os.urandom(2000) for _ in range(30)]
    ids = _store(repo, datas)
    wanted = [0, 1, 2, 5, 5, 6, 29, 0, 3]  # a gap of two blobs, one of 22, repeats
    calls = _counting(repo, monkeypatch)
    assert list(repo.chunks.read_many([ids[i] for i in wanted])) == [datas[i] for i in wanted]
    assert len(calls) == 2  # 0-6 (gaps under 2,500 bytes read through) and 29 alone


def test_read_ahead_is_bounded_in_groups(repo, monkeypatch):
    monkeypatch.setattr(chunks_module, "READ_GROUP_BYTES", 10_000)
    monkeypatch.setattr(chunks_module, "READ_AHEAD_BYTES", 20_000)
    datas = [os.urandom(4000) for _ in range(40)]
    ids = _store(repo, datas)
    calls = _counting(repo, monkeypatch)
    reader = repo.chunks.read_many(ids, workers=2)
    assert next(reader) == datas[0]
    # the first group and at most enough groups to fill the read-ahead were requested
    assert sum(length for _, _, length in calls) <= 20_000 + 3 * 4100
    assert list(reader) == datas[1:]
