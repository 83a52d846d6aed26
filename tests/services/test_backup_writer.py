"""The backup's chunk writer (services/backup.py ``_ChunkWriter``): batches, bounded
memory, stream order, dedup inside one backup."""

import os

import pytest

from strongroom.repository.keys import KeySource
from strongroom.repository.repository import Repository
from strongroom.services import backup
from strongroom.storage.memory import MemoryStorage


@pytest.fixture()
def repo(tmp_path):
    storage = MemoryStorage()
    Repository.init(storage, key_file=tmp_path / "k")
    return Repository.open(storage, KeySource(key_file=tmp_path / "k"))


class _CountingPool:
    """Wraps the writer's pool: counts tasks and the most futures held at once."""

    def __init__(self, writer):
        self.writer = writer
        self.pool = writer._pool
        self.tasks = 0
        self.most_pending = 0

    def submit(self, fn, *args):
        self.tasks += 1
        self.most_pending = max(self.most_pending, len(self.writer._pending))
        return self.pool.submit(fn, *args)

    def shutdown(self, **kwargs):
        self.pool.shutdown(**kwargs)


def test_chunks_go_to_the_workers_in_batches_and_finished_ones_are_not_kept(repo):
    repo.chunks.prepare_known()
    writer = backup._ChunkWriter(repo, workers=2)
    counting = writer._pool = _CountingPool(writer)
    chunks = [os.urandom(200) for _ in range(5000)] + [b"same" * 50] * 100
    try:
        for data in chunks:
            writer.submit(data)
        outcomes = writer.results()
        writer.finish()
    finally:
        writer.close()
    # a task per chunk kept a future (and its result) per chunk until the end: ~1.2 KB
    # each, 780 MB for a 10 GB database at 16 KiB chunks
    assert counting.tasks <= len(chunks) // backup.BATCH_CHUNKS + 2
    assert counting.most_pending < 2 * 2  # the window: 2 x workers batches
    refs = list(outcomes.refs.build())
    assert [ref.size for ref in refs] == [len(c) for c in chunks]
    assert [ref.chunk_id for ref in refs] == [repo.chunks.name(c) for c in chunks]
    assert outcomes.new_count == 5001  # the repeated chunk is stored once
    assert outcomes.new_plain_bytes == 5000 * 200 + 200
    for index in [*range(0, len(refs), 500), len(refs) - 1]:
        assert repo.chunks.load(refs[index].chunk_id) == chunks[index]


def test_a_batch_ends_at_its_byte_limit(repo):
    repo.chunks.prepare_known()
    writer = backup._ChunkWriter(repo, workers=2)
    counting = writer._pool = _CountingPool(writer)
    big = backup.BATCH_BYTES // 4 + 1
    try:
        for index in range(8):
            writer.submit(bytes([index]) * big)
        assert counting.tasks == 2  # 4 chunks pass the byte limit: a batch each time
        outcomes = writer.results()
        writer.finish()
    finally:
        writer.close()
    assert outcomes.new_count == 8


def test_a_failing_store_stops_the_backup_with_that_error(repo, monkeypatch):
    repo.chunks.prepare_known()
    writer = backup._ChunkWriter(repo, workers=2)

    def broken(*args, **kwargs):
        raise OSError("disk on fire")

    monkeypatch.setattr(writer._packs, "store", broken)
    with pytest.raises(OSError, match="disk on fire"):
        try:
            for _ in range(50):
                for data in (os.urandom(100) for _ in range(backup.BATCH_CHUNKS)):
                    writer.submit(data)
            writer.results()
        finally:
            writer.close()
