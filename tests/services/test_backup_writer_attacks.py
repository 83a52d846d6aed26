"""Attacks on the backup's batched chunk writer (services/backup.py ``_ChunkWriter``):
stream order and sizes across batch edges, duplicates inside and across batches, empty
streams, one chunk bigger than a batch, a failing batch, an interrupt while waiting.
In-process only (MemoryStorage, SQLite)."""

import os
import signal
import threading
import time

import pytest

from strongroom.engines.sqlite import SqliteEngine
from strongroom.errors import StorageError
from strongroom.repository.keys import KeySource
from strongroom.repository.repository import Repository
from strongroom.services import backup
from strongroom.services.backup import run_backup
from strongroom.storage.memory import MemoryStorage
from tests.helpers import make_sqlite_db


@pytest.fixture()
def repo(tmp_path):
    storage = MemoryStorage()
    Repository.init(storage, key_file=tmp_path / "k")
    return Repository.open(storage, KeySource(key_file=tmp_path / "k"))


def _write(repo, chunks, workers=2):
    repo.chunks.prepare_known()
    writer = backup._ChunkWriter(repo, workers=workers)
    try:
        for data in chunks:
            writer.submit(data)
        outcomes = writer.results()
        writer.finish()
    finally:
        writer.close()
    return outcomes


def _sr_threads():
    return [t for t in threading.enumerate() if t.name.startswith(("sr-chunk", "sr-pack"))]


@pytest.fixture
def sigint():
    """Send the main thread a real SIGINT (as a user's ^C: it also wakes a blocked wait,
    which ``_thread.interrupt_main`` does not), with Python's own handler in place."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield lambda: signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
    signal.signal(signal.SIGINT, previous)


def _index_entries(repo):
    repo.chunks.refresh_index()
    return repo.chunks.index


@pytest.mark.parametrize("batch_chunks,batch_bytes", [(1, 1), (3, 1000), (7, 10**9), (64, 4096)])
def test_order_and_sizes_hold_across_every_batch_edge(repo, monkeypatch, batch_chunks, batch_bytes):
    monkeypatch.setattr(backup, "BATCH_CHUNKS", batch_chunks)
    monkeypatch.setattr(backup, "BATCH_BYTES", batch_bytes)
    sizes = [1, 2, 999, 1000, 1001, 4095, 4096, 4097, 3, 50_000, 1, 7] * 5
    chunks = [os.urandom(n) for n in sizes]
    outcomes = _write(repo, chunks, workers=3)
    refs = list(outcomes.refs.build())
    assert [r.size for r in refs] == sizes
    assert [r.chunk_id for r in refs] == [repo.chunks.name(c) for c in chunks]
    assert outcomes.new_count == len(set(chunks))  # random 1-byte chunks may repeat
    assert list(repo.chunks.read_many([r.chunk_id for r in refs])) == chunks


def test_the_same_chunk_in_one_batch_and_across_batches_is_stored_once(repo, monkeypatch):
    monkeypatch.setattr(backup, "BATCH_CHUNKS", 5)
    same = b"z" * 3000
    other = [os.urandom(100) for _ in range(20)]
    chunks = [same] * 12 + [x for o in other for x in (o, same)] + [same] * 9
    outcomes = _write(repo, chunks, workers=4)
    assert outcomes.new_count == 21
    assert outcomes.new_plain_bytes == 3000 + 20 * 100
    refs = list(outcomes.refs.build())
    assert [r.chunk_id for r in refs] == [repo.chunks.name(c) for c in chunks]
    index = _index_entries(repo)
    assert len(index.locations(repo.chunks.name(same))) == 1  # one blob, not one per batch


def test_an_empty_stream_gives_no_refs_no_index_and_no_threads(repo):
    before = len(_sr_threads())
    outcomes = _write(repo, [])
    assert len(outcomes.refs.build()) == 0
    assert outcomes.new_count == 0 and outcomes.stored_bytes == 0
    assert list(repo.storage.list("index/")) == []
    assert list(repo.storage.list("packs/")) == []
    assert len(_sr_threads()) == before


def test_a_chunk_bigger_than_a_batch_goes_alone_in_order(repo):
    big = os.urandom(backup.BATCH_BYTES * 2 + 3)
    chunks = [b"a", big, b"b", big, b"c"]
    outcomes = _write(repo, chunks)
    refs = list(outcomes.refs.build())
    assert [r.size for r in refs] == [1, len(big), 1, len(big), 1]
    assert outcomes.new_count == 4
    assert list(repo.chunks.read_many([r.chunk_id for r in refs])) == chunks


def test_a_failing_batch_raises_its_error_promptly_and_leaves_no_index(repo, monkeypatch):
    monkeypatch.setattr(backup, "BATCH_CHUNKS", 2)
    repo.chunks.prepare_known()
    writer = backup._ChunkWriter(repo, workers=2)
    real = writer._packs.store
    calls = []

    def store(chunk_id, data, *, fast=False):
        calls.append(chunk_id)
        if len(calls) == 5:  # the third batch
            raise StorageError("put packs/x failed: connection reset")
        return real(chunk_id, data, fast=fast)

    monkeypatch.setattr(writer._packs, "store", store)
    submitted = 0
    with pytest.raises(StorageError, match="connection reset"):
        try:
            for _ in range(10_000):
                writer.submit(os.urandom(64))
                submitted += 1
            writer.results()
        finally:
            writer.close()
    assert submitted < 100  # stopped within the window, not after the whole stream
    assert list(repo.storage.list("index/")) == []
    assert not [t for t in _sr_threads() if t.is_alive()]


def test_a_backup_whose_worker_fails_writes_no_manifest(repo, tmp_path, monkeypatch):
    shop = make_sqlite_db(tmp_path / "shop.db", users=2000, orders=8000)
    real = repo.chunks.pack_writer

    def pack_writer():
        session = real()
        inner = session.store
        count = [0]

        def store(chunk_id, data, *, fast=False):
            count[0] += 1
            if count[0] == 3:
                raise StorageError("disk full")
            return inner(chunk_id, data, fast=fast)

        session.store = store
        return session

    monkeypatch.setattr(repo.chunks, "pack_writer", pack_writer)
    with pytest.raises(StorageError, match="disk full"):
        run_backup(repo, SqliteEngine(str(shop)), workers=2)
    assert repo.list_backups() == []
    assert list(repo.storage.list("index/")) == []


def test_a_keyboard_interrupt_while_waiting_stops_the_workers_and_writes_no_index(
    repo, monkeypatch, sigint
):
    monkeypatch.setattr(backup, "BATCH_CHUNKS", 1)
    repo.chunks.prepare_known()
    writer = backup._ChunkWriter(repo, workers=2)
    real = writer._packs.store
    fired, landed = threading.Event(), threading.Event()

    def store(chunk_id, data, *, fast=False):
        if not fired.is_set():
            fired.set()
            sigint()  # the user's ^C lands in the reading thread
            landed.wait(5)  # so it lands while the main thread still submits or waits
        return real(chunk_id, data, fast=fast)

    monkeypatch.setattr(writer._packs, "store", store)
    with pytest.raises(KeyboardInterrupt):
        try:
            for _ in range(200):
                writer.submit(os.urandom(100))
                time.sleep(0.001)
            writer.results()
            writer.finish()
        except KeyboardInterrupt:
            landed.set()
            raise
        finally:
            writer.close()
    assert landed.is_set()
    assert list(repo.storage.list("index/")) == []
    assert not [t for t in _sr_threads() if t.is_alive()]


def test_a_keyboard_interrupt_during_close_still_waits_for_the_workers(repo, monkeypatch, sigint):
    """A second ^C while close() waits for a worker must not leave the worker writing:
    close waits for it, then raises the interrupt."""
    monkeypatch.setattr(backup, "BATCH_CHUNKS", 1)
    repo.chunks.prepare_known()
    writer = backup._ChunkWriter(repo, workers=2)
    real = writer._packs.store
    started, release = threading.Event(), threading.Event()

    def store(chunk_id, data, *, fast=False):
        started.set()
        release.wait(5)
        return real(chunk_id, data, fast=fast)

    monkeypatch.setattr(writer._packs, "store", store)
    writer.submit(b"y" * 10)
    assert started.wait(5)

    def interrupt_then_release():
        time.sleep(0.1)
        sigint()
        time.sleep(0.3)
        release.set()

    helper = threading.Thread(target=interrupt_then_release)
    helper.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            writer.close()
        assert release.is_set()  # close returned only after the worker was let go
        assert not [t for t in _sr_threads() if t.is_alive()]
    finally:
        release.set()
        helper.join()
    assert list(repo.storage.list("index/")) == []


def test_a_keyboard_interrupt_raised_in_a_worker_reaches_the_caller(repo, monkeypatch):
    repo.chunks.prepare_known()
    writer = backup._ChunkWriter(repo, workers=2)

    def store(chunk_id, data, *, fast=False):
        raise KeyboardInterrupt

    monkeypatch.setattr(writer._packs, "store", store)
    with pytest.raises(KeyboardInterrupt):
        try:
            writer.submit(b"x" * 10)
            writer.results()
        finally:
            writer.close()
    assert list(repo.storage.list("index/")) == []
