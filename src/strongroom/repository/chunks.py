"""The chunk store: each chunk is zstd-compressed, then age-encrypted, under its keyed hash."""

from __future__ import annotations

import zstandard

from strongroom.errors import ChunkDamaged, ChunkMissing, ObjectNotFound
from strongroom.pipeline.compression import ChunkCompressor
from strongroom.pipeline.encryption import DecryptionFailed, Sealer
from strongroom.pipeline.hashing import ChunkNamer
from strongroom.repository.layout import CHUNKS_PREFIX, chunk_id_of_key, chunk_key, is_chunk_id
from strongroom.storage.base import Storage


class ChunkStore:
    """Writes and reads chunks; every read is checked against the chunk's name."""

    def __init__(
        self, storage: Storage, namer: ChunkNamer, compressor: ChunkCompressor, sealer: Sealer
    ) -> None:
        self._storage = storage
        self._namer = namer
        self._compressor = compressor
        self._sealer = sealer

    def name(self, plaintext: bytes) -> str:
        return self._namer.name(plaintext)

    def known_ids(self) -> set[str]:
        """The ids of every chunk stored now (used to skip uploading known chunks); objects
        under ``chunks/`` whose name is not a chunk id are not chunks."""
        ids = (chunk_id_of_key(key) for key in self._storage.list(CHUNKS_PREFIX))
        return {chunk_id for chunk_id in ids if is_chunk_id(chunk_id)}

    def store(self, chunk_id: str, plaintext: bytes, *, fast: bool = False) -> int:
        """Compress, encrypt and upload one chunk; return its stored size in bytes."""
        blob = self._sealer.seal(self._compressor.compress(plaintext, fast=fast))
        self._storage.put(chunk_key(chunk_id), blob)
        return len(blob)

    def load(self, chunk_id: str) -> bytes:
        """Download, decrypt, decompress and check one chunk; raise on any damage."""
        try:
            blob = self._storage.get(chunk_key(chunk_id))
        except ObjectNotFound as exc:
            raise ChunkMissing(f"chunk {chunk_id} is missing from the repository") from exc
        try:
            plaintext = self._compressor.decompress(self._sealer.open(blob))
        except DecryptionFailed as exc:
            raise ChunkDamaged(f"chunk {chunk_id} is damaged: it does not decrypt") from exc
        except zstandard.ZstdError as exc:
            raise ChunkDamaged(f"chunk {chunk_id} is damaged: it does not decompress") from exc
        if self._namer.name(plaintext) != chunk_id:
            raise ChunkDamaged(f"chunk {chunk_id} is damaged: its content does not match its hash")
        return plaintext
