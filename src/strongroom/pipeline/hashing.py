"""Keyed chunk names and the whole-stream checksum."""

from __future__ import annotations

import hashlib

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


class StreamChecksum:
    """SHA-256 of the whole raw dump stream, so ``strongroom cat | sha256sum`` can check it."""

    algorithm = "sha256"

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def update(self, data: bytes) -> None:
        self._hash.update(data)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()
