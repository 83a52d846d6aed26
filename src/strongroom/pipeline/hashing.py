"""Keyed chunk names and the whole-stream checksum."""

from __future__ import annotations

from blake3 import blake3

HASH_KEY_BYTES = 32


class ChunkNamer:
    """Names a chunk by the keyed BLAKE3 hash of its plaintext (64 hex characters).

    The key is secret to the repository, so a chunk's name reveals nothing about its
    content to someone who can only read the bucket.
    """

    def __init__(self, key: bytes) -> None:
        if len(key) != HASH_KEY_BYTES:
            raise ValueError("the chunk hash key must be 32 bytes")
        self._key = key

    def name(self, plaintext: bytes) -> str:
        return blake3(plaintext, key=self._key).hexdigest()

    def hasher(self) -> blake3:
        """The same keyed hash, to be fed in pieces (``update``; ``hexdigest``)."""
        return blake3(key=self._key)


class StreamChecksum:
    """Unkeyed BLAKE3 of the whole raw dump stream (``strongroom cat ID | b3sum`` checks it).

    BLAKE3 rather than SHA-256: it runs on the backup's critical path, at 2x the speed."""

    algorithm = "blake3"

    def __init__(self) -> None:
        self._hash = blake3()

    def update(self, data: bytes) -> None:
        self._hash.update(data)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()
