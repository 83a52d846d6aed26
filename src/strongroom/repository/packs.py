"""Pack objects (format version 2, docs/design.md "Packs"): many chunks in one object.

Layout of ``packs/<first two hex>/<pack id>`` (all integers big-endian unsigned)::

    0        b"SRPK"  version 0x01  K (4 bytes)
    9        key stanza (K bytes): an age file whose plaintext is the 32-byte pack key
    9 + K    blob 0, blob 1, ... blob n-1, back to back
             header (H bytes)
    end - 8  H (4 bytes)  b"SRPK"

Blob ``i`` is ``ChaCha20-Poly1305(pack key, nonce=i as 12 bytes, aad=chunk id's 32 raw
bytes)`` of the chunk's zstd frame; the header is the same cipher (``nonce = 2**96 - 1``,
``aad = b"SRPK header"``) of ``n`` entries of 44 bytes (:data:`ENTRY`: chunk id, blob
offset from the start of the object, stored length, plaintext length). Entry ``i``
describes blob ``i``, so an entry's position is its blob's nonce. Without encryption
(``PlainSealer``) ``K = 0``, blobs are the zstd frames and the header is the entries in
clear (the pack key is ``None`` throughout this module).

What other modules use:

- :class:`PackWriter` (``add`` compressed chunks, ``seal`` -> :class:`SealedPack`);
- :func:`read_pack` (whole pack bytes -> :class:`PackContents`: key and entries; what
  ``check --read-data`` and ``index rebuild`` need);
- :func:`open_blob` (one blob's stored bytes -> its zstd frame, given the pack key, the
  entry's position and the chunk id; what a ranged read needs);
- :func:`encode_entries` / :func:`decode_entries` (the 44-byte entries, as index objects
  carry them).

A pack id is the keyed BLAKE3 of the whole object (``ChunkNamer.name`` of its bytes).
"""

from __future__ import annotations

import io
import secrets
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from strongroom.errors import ChunkDamaged, IntegrityError
from strongroom.pipeline.encryption import DecryptionFailed, Sealer
from strongroom.repository.layout import is_chunk_id

PACK_MAGIC = b"SRPK"
PACK_VERSION = 1
PACK_TARGET_SIZE = 16 * 1024 * 1024  # a pack is sealed once its blobs reach this (bytes)
PACK_KEY_BYTES = 32
PACKS_PREFIX = "packs/"
ENTRY = struct.Struct(">32sIII")  # chunk id, offset, stored length, plaintext length
ENTRY_SIZE = ENTRY.size  # 44
HEADER_NONCE = (2**96 - 1).to_bytes(12, "big")
HEADER_AAD = b"SRPK header"
TAG_BYTES = 16  # Poly1305 tag added to every encrypted blob and header
_PREAMBLE = struct.Struct(">4sBI")  # magic, version, K
_TRAILER = struct.Struct(">I4s")  # H, magic
MAX_PACK_BYTES = 2**32 - 1  # offsets are 4 bytes


class PackDamaged(IntegrityError):
    """A pack object that is not a well-formed pack (truncated, wrong magic or version,
    a header that does not decrypt or whose entries point outside the blobs). Exit 7."""


def pack_key_name(pack_id: str) -> str:
    """Storage key of pack ``pack_id`` (64 lowercase hex); ``ValueError`` otherwise."""
    if not is_chunk_id(pack_id):
        raise ValueError(f"{pack_id[:70]!r} is not a pack id (64 hex characters)")
    return f"{PACKS_PREFIX}{pack_id[:2]}/{pack_id}"


def blob_nonce(position: int) -> bytes:
    """The nonce of blob number ``position`` (0-based): 12 bytes, big-endian."""
    return position.to_bytes(12, "big")


@dataclass(frozen=True)
class PackEntry:
    """One blob of a pack: ``offset``/``length`` in bytes from the start of the pack
    object (the stored, encrypted blob), ``raw_length`` the chunk's plaintext size,
    ``position`` the entry's place in the header (the blob's nonce)."""

    chunk_id: str
    offset: int
    length: int
    raw_length: int
    position: int


def encode_entries(entries: Sequence[PackEntry]) -> bytes:
    """The header entries, 44 bytes each, in position order."""
    return b"".join(
        ENTRY.pack(bytes.fromhex(e.chunk_id), e.offset, e.length, e.raw_length) for e in entries
    )


def decode_entries(data: bytes, where: str = "a pack header") -> list[PackEntry]:
    """Parse 44-byte entries; ``PackDamaged`` (naming ``where``) if the size is not a
    multiple of 44."""
    if len(data) % ENTRY_SIZE:
        raise PackDamaged(f"{where} is damaged: {len(data)} bytes is not a whole number of entries")
    return [
        PackEntry(raw.hex(), offset, length, raw_length, position)
        for position, (raw, offset, length, raw_length) in enumerate(ENTRY.iter_unpack(data))
    ]


@dataclass(frozen=True)
class SealedPack:
    """A finished pack: ``data`` (the whole object), its id, its key (``None`` without
    encryption) and its entries (what the index records)."""

    pack_id: str
    data: bytes
    key: bytes | None
    entries: tuple[PackEntry, ...]

    @property
    def blob_bytes(self) -> int:
        """Sum of the stored blob lengths (bytes)."""
        return sum(e.length for e in self.entries)


class PackWriter:
    """Builds one pack in memory. Not thread-safe (``ChunkStore`` holds a lock).

    ``sealer`` wraps the pack key (``sealer.encrypted`` False: no key, plain blobs);
    ``name`` is the repository's keyed hash (hex) used for the pack id.
    """

    def __init__(self, sealer: Sealer, name: Callable[[bytes], str]) -> None:
        self._name = name
        if sealer.encrypted:
            self._key: bytes | None = secrets.token_bytes(PACK_KEY_BYTES)
            stanza = sealer.seal(self._key)
            self._cipher: ChaCha20Poly1305 | None = ChaCha20Poly1305(self._key)
        else:
            self._key, stanza, self._cipher = None, b"", None
        # one growing buffer whose getvalue() hands it over: the pack is held once (a
        # list of blobs joined at the end held it twice while sealing)
        self._buffer = io.BytesIO()
        self._buffer.write(_PREAMBLE.pack(PACK_MAGIC, PACK_VERSION, len(stanza)))
        self._buffer.write(stanza)
        self._size = _PREAMBLE.size + len(stanza)
        self._entries: list[PackEntry] = []

    @property
    def size(self) -> int:
        """Bytes written so far (preamble, key stanza and blobs)."""
        return self._size

    @property
    def count(self) -> int:
        """Number of blobs added."""
        return len(self._entries)

    def add(self, chunk_id: str, compressed: bytes, raw_length: int) -> int:
        """Append one chunk's zstd frame (encrypted when the pack has a key); return the
        stored blob's length in bytes."""
        position = len(self._entries)
        raw_id = bytes.fromhex(chunk_id)
        if self._cipher is not None:
            blob = self._cipher.encrypt(blob_nonce(position), compressed, raw_id)
        else:
            blob = compressed
        if self._size + len(blob) + TAG_BYTES + (position + 1) * ENTRY_SIZE > MAX_PACK_BYTES:
            raise ValueError("a pack cannot exceed 4 GiB")
        self._entries.append(PackEntry(chunk_id, self._size, len(blob), raw_length, position))
        self._buffer.write(blob)
        self._size += len(blob)
        return len(blob)

    def seal(self) -> SealedPack:
        """Append header and trailer; return the finished pack. The writer is spent."""
        entries = encode_entries(self._entries)
        if self._cipher is not None:
            header = self._cipher.encrypt(HEADER_NONCE, entries, HEADER_AAD)
        else:
            header = entries
        self._buffer.write(header)
        self._buffer.write(_TRAILER.pack(len(header), PACK_MAGIC))
        data = self._buffer.getvalue()
        self._buffer = io.BytesIO()
        return SealedPack(self._name(data), data, self._key, tuple(self._entries))


@dataclass(frozen=True)
class PackContents:
    """What a pack says of itself: its key (``None`` unencrypted) and entries."""

    key: bytes | None
    entries: tuple[PackEntry, ...]


def read_pack(data: bytes, sealer: Sealer, where: str = "pack") -> PackContents:
    """Parse a whole pack object: preamble, key stanza (opened with ``sealer``), header.

    Raises ``PackDamaged`` naming ``where`` (truncated, bad magic/version, a key stanza or
    header that does not decrypt, entries outside the blob area). The blobs themselves
    are not checked here (:func:`open_blob` does, one by one).
    """

    def damaged(reason: str) -> PackDamaged:
        return PackDamaged(f"{where} is damaged: {reason}")

    if len(data) < _PREAMBLE.size + _TRAILER.size:
        raise damaged(f"{len(data)} bytes is too short for a pack")
    magic, version, stanza_length = _PREAMBLE.unpack_from(data, 0)
    header_length, end_magic = _TRAILER.unpack_from(data, len(data) - _TRAILER.size)
    if magic != PACK_MAGIC or end_magic != PACK_MAGIC:
        raise damaged("no SRPK magic at its start and end (truncated or not a pack)")
    if version != PACK_VERSION:
        raise damaged(f"pack version {version} is not one this strongroom reads")
    blobs_start = _PREAMBLE.size + stanza_length
    header_start = len(data) - _TRAILER.size - header_length
    if header_start < blobs_start:
        raise damaged("its key stanza and header lengths do not fit its size (truncated)")
    header = data[header_start : len(data) - _TRAILER.size]
    key, _, entries = open_header(
        data[_PREAMBLE.size : blobs_start], header, header_start, sealer, where, damaged
    )
    return PackContents(key, tuple(entries))


def open_header(
    stanza: bytes,
    header: bytes,
    header_start: int,
    sealer: Sealer,
    where: str,
    damaged: Callable[[str], PackDamaged],
) -> tuple[bytes | None, bytes, list[PackEntry]]:
    """Open a pack's key stanza (``b""`` when it has none) and its header, which begins
    ``header_start`` bytes into the object: (pack key or ``None`` unencrypted, the plain
    header entries, the entries). Raises what ``damaged`` makes, naming the fault."""
    key: bytes | None = None
    if sealer.encrypted:
        if not stanza:
            raise damaged("it has no key stanza but the repository is encrypted")
        try:
            key = sealer.open(stanza)
        except DecryptionFailed as exc:
            raise damaged("its key stanza does not open with the repository's key") from exc
        if len(key) != PACK_KEY_BYTES:
            raise damaged("its key stanza does not hold a 32-byte key")
        try:
            header = ChaCha20Poly1305(key).decrypt(HEADER_NONCE, header, HEADER_AAD)
        except InvalidTag as exc:
            raise damaged("its header does not decrypt (changed or truncated)") from exc
    elif stanza:
        raise damaged("it has a key stanza but the repository is not encrypted")
    entries = decode_entries(header, f"{where}'s header")
    blobs_start = _PREAMBLE.size + len(stanza)
    for entry in entries:
        if entry.offset < blobs_start or entry.offset + entry.length > header_start:
            raise damaged(f"its entry for chunk {entry.chunk_id} points outside its blobs")
    return key, header, entries


def open_blob(key: bytes | None, blob: bytes, chunk_id: str, position: int) -> bytes:
    """The zstd frame in one stored blob (``key`` None: the blob is the frame).

    Raises ``ChunkDamaged`` naming the chunk when the blob does not authenticate (a
    changed byte, a blob of another chunk or position, a wrong key)."""
    if key is None:
        return blob
    try:
        return ChaCha20Poly1305(key).decrypt(blob_nonce(position), blob, bytes.fromhex(chunk_id))
    except InvalidTag as exc:
        raise ChunkDamaged(
            f"chunk {chunk_id} is damaged: its blob in the pack does not decrypt "
            "(changed, truncated or not this chunk's)"
        ) from exc
