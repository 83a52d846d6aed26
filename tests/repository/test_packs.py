"""Pack objects (design.md "Packs"): round trip, tampering, swapped blobs, truncation, and
the by-hand decryption the spec promises (Debian ``age`` and ``zstd`` CLIs + cryptography)."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
import zstandard
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from strongroom.errors import ChunkDamaged
from strongroom.pipeline.compression import ChunkCompressor
from strongroom.pipeline.encryption import AgeSealer, PlainSealer, new_identity
from strongroom.pipeline.hashing import ChunkNamer
from strongroom.repository.keys import KeySource
from strongroom.repository.packs import (
    ENTRY_SIZE,
    PACK_MAGIC,
    PackDamaged,
    PackWriter,
    SealedPack,
    decode_entries,
    open_blob,
    read_pack,
)
from strongroom.repository.repository import Repository
from strongroom.storage.memory import MemoryStorage

NAMER = ChunkNamer(b"k" * 32)
ZSTD = ChunkCompressor()


@pytest.fixture(scope="module")
def identity() -> tuple[str, str]:
    return new_identity()


def _pack(sealer: AgeSealer | PlainSealer, chunks: list[bytes]) -> SealedPack:
    writer = PackWriter(sealer, NAMER.name)
    for data in chunks:
        writer.add(NAMER.name(data), ZSTD.compress(data), len(data))
    return writer.seal()


def _chunks(n: int = 5) -> list[bytes]:
    return [os.urandom(1000 + 37 * i) + bytes(3000) for i in range(n)]


def _open(sealed: SealedPack, index: int) -> bytes:
    entry = sealed.entries[index]
    blob = sealed.data[entry.offset : entry.offset + entry.length]
    return ZSTD.decompress(open_blob(sealed.key, blob, entry.chunk_id, entry.position))


@pytest.mark.parametrize("encrypted", [True, False], ids=["age", "plain"])
def test_round_trip_every_blob_and_the_header(encrypted: bool, identity: tuple[str, str]) -> None:
    secret, public = identity
    sealer = AgeSealer([public], secret) if encrypted else PlainSealer()
    chunks = _chunks()
    sealed = _pack(sealer, chunks)
    assert sealed.data[:4] == PACK_MAGIC and sealed.data[-4:] == PACK_MAGIC
    assert sealed.pack_id == NAMER.name(sealed.data)
    assert (sealed.key is not None) == encrypted
    contents = read_pack(sealed.data, sealer)
    assert contents.key == sealed.key
    assert contents.entries == sealed.entries
    assert [e.chunk_id for e in contents.entries] == [NAMER.name(c) for c in chunks]
    assert [e.raw_length for e in contents.entries] == [len(c) for c in chunks]
    for i, data in enumerate(chunks):
        assert _open(sealed, i) == data
    stanza_length = struct.unpack(">I", sealed.data[5:9])[0]
    assert (stanza_length > 0) == encrypted
    if not encrypted:  # plain: blobs are bare zstd frames and the header is in clear
        first = sealed.entries[0]
        assert sealed.data[first.offset : first.offset + 4] == b"\x28\xb5\x2f\xfd"


def test_a_changed_blob_byte_is_chunk_damaged_naming_the_chunk(identity: tuple[str, str]) -> None:
    secret, public = identity
    sealed = _pack(AgeSealer([public], secret), _chunks())
    entry = sealed.entries[2]
    blob = bytearray(sealed.data[entry.offset : entry.offset + entry.length])
    blob[len(blob) // 2] ^= 0x01
    with pytest.raises(ChunkDamaged, match=f"chunk {entry.chunk_id} is damaged"):
        open_blob(sealed.key, bytes(blob), entry.chunk_id, entry.position)


def test_blobs_swapped_between_chunk_ids_fail_through_the_aad(identity: tuple[str, str]) -> None:
    secret, public = identity
    sealed = _pack(AgeSealer([public], secret), _chunks())
    a, b = sealed.entries[0], sealed.entries[1]
    blob_b = sealed.data[b.offset : b.offset + b.length]
    with pytest.raises(ChunkDamaged, match=a.chunk_id):
        open_blob(sealed.key, blob_b, a.chunk_id, b.position)  # right nonce, wrong id
    with pytest.raises(ChunkDamaged, match=a.chunk_id):
        open_blob(sealed.key, blob_b, a.chunk_id, a.position)
    other = _pack(AgeSealer([public], secret), _chunks())
    with pytest.raises(ChunkDamaged):  # same position in another pack: another key
        open_blob(other.key, blob_b, b.chunk_id, b.position)


def test_a_truncated_or_changed_pack_is_pack_damaged(identity: tuple[str, str]) -> None:
    secret, public = identity
    sealer = AgeSealer([public], secret)
    sealed = _pack(sealer, _chunks())
    for cut in (len(sealed.data) - 1, len(sealed.data) // 2, 12, 0):
        with pytest.raises(PackDamaged, match="pack is damaged"):
            read_pack(sealed.data[:cut], sealer)
    header_end = len(sealed.data) - 8
    changed = bytearray(sealed.data)
    changed[header_end - 3] ^= 0x40  # inside the header's tag
    with pytest.raises(PackDamaged, match="header does not decrypt"):
        read_pack(bytes(changed), sealer)
    with pytest.raises(PackDamaged, match="key stanza"):
        read_pack(sealed.data, AgeSealer([public], new_identity()[0]))
    with pytest.raises(PackDamaged, match="whole number of entries"):
        decode_entries(b"x" * (ENTRY_SIZE + 1))


def test_a_pack_in_a_repository_tampered_on_disk_fails_load_naming_the_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = MemoryStorage()
    Repository.init(storage, key_file=tmp_path / "k")
    monkeypatch.setenv("STRONGROOM_CACHE_DIR", str(tmp_path / "cache"))
    repo = Repository.open(storage, KeySource(key_file=tmp_path / "k"))
    chunks = _chunks(4)
    session = repo.chunks.pack_writer()
    ids = []
    for data in chunks:
        chunk_id = repo.chunks.name(data)
        ids.append(chunk_id)
        session.store(chunk_id, data)
    session.flush()
    assert [repo.chunks.load(i) for i in ids] == chunks
    location = repo.chunks.locate(ids[1])
    assert location is not None
    key = f"packs/{location.pack_id[:2]}/{location.pack_id}"
    data = bytearray(storage.get(key))
    data[location.offset + 5] ^= 0x10
    storage.put(key, bytes(data))
    assert repo.chunks.load(ids[0]) == chunks[0]
    with pytest.raises(ChunkDamaged, match=f"chunk {ids[1]} is damaged"):
        repo.chunks.load(ids[1])
    storage.put(key, bytes(data[: location.offset + 2]))  # truncated before the blob ends
    with pytest.raises(ChunkDamaged, match=f"chunk {ids[1]} is damaged: its pack .* shorter"):
        repo.chunks.load(ids[1])


@pytest.mark.skipif(
    shutil.which("age") is None or shutil.which("zstd") is None, reason="needs age and zstd"
)
def test_a_blob_opens_by_hand_with_age_cryptography_and_zstd(
    tmp_path: Path, identity: tuple[str, str]
) -> None:
    secret, public = identity
    chunks = _chunks(3)
    sealed = _pack(AgeSealer([public], secret), chunks)
    key_file = tmp_path / "key.txt"
    key_file.write_text(secret + "\n")
    data = sealed.data
    # 1. the key stanza (bytes 9 .. 9+K) is a standard age file: `age -d` gives the key
    stanza_length = int.from_bytes(data[5:9], "big")
    (tmp_path / "stanza.age").write_bytes(data[9 : 9 + stanza_length])
    pack_key = subprocess.run(
        ["age", "-d", "-i", str(key_file), str(tmp_path / "stanza.age")],
        check=True,
        capture_output=True,
    ).stdout
    assert len(pack_key) == 32
    # 2. the header: last 8 bytes give H; ChaCha20-Poly1305 with the all-ones nonce
    header_length = int.from_bytes(data[-8:-4], "big")
    header = ChaCha20Poly1305(pack_key).decrypt(
        b"\xff" * 12, data[-8 - header_length : -8], b"SRPK header"
    )
    entries = [struct.unpack(">32sIII", header[i : i + 44]) for i in range(0, len(header), 44)]
    assert len(entries) == 3
    # 3. blob i: nonce = i, aad = the chunk id's raw bytes; then `zstd -d`
    for i, (raw_id, offset, length, raw_length) in enumerate(entries):
        frame = ChaCha20Poly1305(pack_key).decrypt(
            i.to_bytes(12, "big"), data[offset : offset + length], raw_id
        )
        (tmp_path / f"blob{i}.zst").write_bytes(frame)
        plain = subprocess.run(
            ["zstd", "-d", "-c", str(tmp_path / f"blob{i}.zst")], check=True, capture_output=True
        ).stdout
        assert plain == chunks[i]
        assert len(plain) == raw_length
        assert raw_id.hex() == NAMER.name(plain)
    assert zstandard.ZstdDecompressor().decompress(frame) == chunks[2]
