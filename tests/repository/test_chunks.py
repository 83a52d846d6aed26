import pytest

from strongroom.errors import ChunkDamaged, ChunkMissing
from strongroom.repository.keys import KeySource
from strongroom.repository.layout import chunk_key
from strongroom.repository.repository import Repository
from strongroom.storage.memory import MemoryStorage


@pytest.fixture()
def repo(tmp_path):
    storage = MemoryStorage()
    Repository.init(storage, key_file=tmp_path / "k")
    return Repository.open(storage, KeySource(key_file=tmp_path / "k"))


def test_chunks_round_trip_encrypted_and_are_named_by_keyed_hash(repo):
    data = b"row data " * 1000
    chunk_id = repo.chunks.name(data)
    stored = repo.chunks.store(chunk_id, data)
    blob = repo.storage.get(chunk_key(chunk_id))
    assert blob.startswith(b"age-encryption.org/v1")
    assert stored == len(blob) < len(data)
    assert repo.chunks.load(chunk_id) == data
    assert chunk_id in repo.chunks.known_ids()


def test_a_flipped_byte_is_detected_and_names_the_chunk(repo):
    data = bytes(range(256)) * 100
    chunk_id = repo.chunks.name(data)
    repo.chunks.store(chunk_id, data)
    blob = bytearray(repo.storage.get(chunk_key(chunk_id)))
    blob[len(blob) // 2] ^= 0x01
    repo.storage.put(chunk_key(chunk_id), bytes(blob))
    with pytest.raises(ChunkDamaged, match=chunk_id):
        repo.chunks.load(chunk_id)


def test_a_chunk_swapped_for_another_valid_chunk_is_detected(repo):
    a, b = b"a" * 5000, b"b" * 5000
    id_a, id_b = repo.chunks.name(a), repo.chunks.name(b)
    repo.chunks.store(id_a, a)
    repo.chunks.store(id_b, b)
    repo.storage.put(chunk_key(id_a), repo.storage.get(chunk_key(id_b)))
    with pytest.raises(ChunkDamaged, match="does not match its hash"):
        repo.chunks.load(id_a)


def test_a_missing_chunk_is_reported(repo):
    with pytest.raises(ChunkMissing, match="ab" * 32):
        repo.chunks.load("ab" * 32)
