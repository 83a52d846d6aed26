"""A pack found gone (a prune since this process read index/) is not read again for a
while, and the index is synced once per pack found gone, not once per chunk of it; a
long-lived process (the web service) tries the pack again after GONE_MEMORY seconds."""

import os

import pytest

from strongroom.errors import ChunkMissing
from strongroom.repository import chunks as chunks_module
from strongroom.repository.keys import KeySource
from strongroom.repository.packs import pack_key_name
from strongroom.repository.repository import Repository
from strongroom.storage.memory import MemoryStorage


@pytest.fixture()
def repo(tmp_path):
    storage = MemoryStorage()
    Repository.init(storage, key_file=tmp_path / "k")
    return Repository.open(storage, KeySource(key_file=tmp_path / "k"))


def _store(repo, datas):
    session = repo.chunks.pack_writer()
    ids = [repo.chunks.name(d) for d in datas]
    for chunk_id, data in zip(ids, datas, strict=True):
        session.store(chunk_id, data)
    session.flush()
    return ids


def _counting(repo, monkeypatch):
    calls = {"list": 0, "get_range": 0}
    storage = repo.storage
    real_list, real_range = storage.list, storage.get_range

    def listing(prefix):
        calls["list"] += 1
        return real_list(prefix)

    def ranged(key, offset, length):
        calls["get_range"] += 1
        return real_range(key, offset, length)

    monkeypatch.setattr(storage, "list", listing)
    monkeypatch.setattr(storage, "get_range", ranged)
    return calls


def test_a_lost_pack_costs_one_sync_and_one_read_not_one_per_chunk(repo, monkeypatch):
    datas = [os.urandom(400) for _ in range(100)]
    ids = _store(repo, datas)
    pack = pack_key_name(repo.chunks.locate(ids[0]).pack_id)
    saved = repo.storage.get(pack)
    repo.storage.delete(pack)  # lost, and no prune moved it: the index still lists it
    calls = _counting(repo, monkeypatch)
    for chunk_id in ids:
        with pytest.raises(ChunkMissing, match="is gone"):
            repo.chunks.load(chunk_id)
    assert calls["get_range"] == 1, calls  # one failed read of the pack
    assert calls["list"] <= 3, calls  # one sync of index/ (and packs/), not 100

    repo.storage.put(pack, saved)  # back (restored by hand): read again after a while
    assert not _readable(repo, ids[0])
    monkeypatch.setattr(chunks_module, "GONE_MEMORY", 0.0)
    assert _readable(repo, ids[0])


def _readable(repo, chunk_id):
    try:
        repo.chunks.load(chunk_id)
    except ChunkMissing:
        return False
    return True
