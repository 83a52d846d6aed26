"""Index objects (docs/design.md "Packs"): ``index/<first two hex>/<index id>``, the
bytes ``seal(zstd(JSON))`` (see ``pack_index``'s docstring for the JSON). Encoding,
decoding, writing (``INDEX_MAX_PACKS`` packs per object), reading and listing them.
``pack_index`` re-exports every name here."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import zstandard

from strongroom.errors import IntegrityError
from strongroom.pipeline.encryption import DecryptionFailed, Sealer
from strongroom.repository.layout import is_chunk_id
from strongroom.repository.packs import ENTRY_SIZE, PackDamaged, PackEntry, decode_entries
from strongroom.storage.base import Storage

INDEX_PREFIX = "index/"
INDEX_FORMAT = "strongroom-index"
INDEX_VERSION = 1
INDEX_MAX_PACKS = 64  # packs per index object (1 GiB of 16 MiB packs)
_MAX_INDEX_BYTES = 512 * 1024 * 1024  # decompressed JSON of one index object


class IndexDamaged(IntegrityError):
    """An index object that cannot be read (does not decrypt, decompress or parse)."""


def index_key(index_id: str) -> str:
    """Storage key of index object ``index_id`` (64 lowercase hex)."""
    if not is_chunk_id(index_id):
        raise ValueError(f"{index_id[:70]!r} is not an index id (64 hex characters)")
    return f"{INDEX_PREFIX}{index_id[:2]}/{index_id}"


def index_id_of_key(key: str) -> str | None:
    """The index id of a key under ``index/``, ``None`` for anything else (stray files)."""
    name = key.rsplit("/", 1)[-1]
    return name if key.startswith(INDEX_PREFIX) and is_chunk_id(name) else None


@dataclass(frozen=True)
class IndexedPack:
    """One pack as an index object lists it: id, size (bytes), key (``None`` without
    encryption) and ``chunks``, its header entries as stored (44 bytes each, in blob
    order: an entry's position is its blob's nonce). Kept packed, so a backup holds 44
    bytes per new chunk until it writes its index; ``entries`` decodes them."""

    pack_id: str
    size: int
    key: bytes | None
    chunks: bytes

    @property
    def entries(self) -> list[PackEntry]:
        """The decoded entries (``PackDamaged`` if ``chunks`` is not whole entries)."""
        return decode_entries(self.chunks)


@dataclass(frozen=True)
class IndexObject:
    """A decoded index object."""

    packs: tuple[IndexedPack, ...]
    supersedes: tuple[str, ...] = ()


def encode_index(index: IndexObject, sealer: Sealer, level: int = 3) -> bytes:
    """The stored bytes of an index object: ``seal(zstd(JSON))``."""
    document: dict[str, Any] = {
        "format": INDEX_FORMAT,
        "version": INDEX_VERSION,
        "packs": [
            {
                "id": p.pack_id,
                "size": p.size,
                "key": None if p.key is None else base64.b64encode(p.key).decode(),
                "chunks": base64.b64encode(p.chunks).decode(),
            }
            for p in index.packs
        ],
        "supersedes": list(index.supersedes),
    }
    raw = json.dumps(document, separators=(",", ":")).encode()
    return sealer.seal(zstandard.ZstdCompressor(level=level, write_content_size=True).compress(raw))


def decode_index(data: bytes, sealer: Sealer, where: str = "an index object") -> IndexObject:
    """Parse stored index bytes; ``IndexDamaged`` naming ``where`` on any problem."""

    def damaged(reason: str) -> IndexDamaged:
        return IndexDamaged(f"{where} is damaged: {reason}")

    try:
        frame = sealer.open(data)
    except DecryptionFailed as exc:
        raise damaged("it does not decrypt") from exc
    try:
        raw = zstandard.ZstdDecompressor().decompress(frame, max_output_size=_MAX_INDEX_BYTES)
        document = json.loads(raw)
    except (zstandard.ZstdError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise damaged("it does not decompress to JSON") from exc
    if not isinstance(document, dict) or document.get("format") != INDEX_FORMAT:
        raise damaged("it is not a strongroom index")
    if document.get("version") != INDEX_VERSION:
        raise damaged(f"index version {str(document.get('version'))[:20]} is not supported")
    packs, supersedes = document.get("packs"), document.get("supersedes", [])
    if not isinstance(packs, list) or not isinstance(supersedes, list):
        raise damaged("packs or supersedes is not a list")
    if not all(isinstance(s, str) and is_chunk_id(s) for s in supersedes):
        raise damaged("supersedes holds something not an index id")
    found = []
    for item in packs:
        try:
            found.append(_pack_of(item, where))
        except (KeyError, TypeError, ValueError, binascii.Error, PackDamaged) as exc:
            raise damaged(f"a pack entry is malformed ({str(exc)[:80]})") from exc
    return IndexObject(tuple(found), tuple(supersedes))


def _pack_of(item: Any, where: str) -> IndexedPack:
    pack_id, size, key = item["id"], item["size"], item["key"]
    if not isinstance(pack_id, str) or not is_chunk_id(pack_id):
        raise ValueError("id is not a pack id")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError("size is not a byte count")
    pack_key = None if key is None else base64.b64decode(str(key), validate=True)
    chunks = base64.b64decode(str(item["chunks"]), validate=True)
    if len(chunks) % ENTRY_SIZE:
        raise PackDamaged(f"{where}: the entries of pack {pack_id} are not whole entries")
    return IndexedPack(pack_id, size, pack_key, chunks)


def write_index_objects(
    storage: Storage,
    packs: Sequence[IndexedPack],
    sealer: Sealer,
    name: Callable[[bytes], str],
    supersedes: Sequence[str] = (),
) -> list[str]:
    """Store ``packs`` as index objects of at most ``INDEX_MAX_PACKS`` each (none for no
    packs); ``name`` is the repository's keyed hash. Returns the index ids written. The
    caller syncs the storage before anything refers to them (the manifest)."""
    written = []
    for start in range(0, len(packs), INDEX_MAX_PACKS):
        group = IndexObject(tuple(packs[start : start + INDEX_MAX_PACKS]), tuple(supersedes))
        data = encode_index(group, sealer)
        index_id = name(data)
        storage.put(index_key(index_id), data)
        written.append(index_id)
    return written


def read_index_object(
    storage: Storage,
    index_id: str,
    sealer: Sealer,
    name: Callable[[bytes], str] | None = None,
) -> IndexObject:
    """Get and decode one index object (``ObjectNotFound`` if gone, ``IndexDamaged``).

    With ``name`` (the repository's keyed hash, which named the object when it was
    written), bytes whose hash is not ``index_id`` are damage too: another index object's
    bytes copied under this name decode as a valid index, so a cache would hold the wrong
    listing and ``check`` would pass it (found by the fault campaign, damage-index)."""
    key = index_key(index_id)
    data = storage.get(key)
    if name is not None and name(data) != index_id:
        raise IndexDamaged(f"{key} is damaged: its content does not match its name")
    return decode_index(data, sealer, key)


def list_index_ids(storage: Storage) -> set[str]:
    """The ids of every index object stored (one listing of ``index/``)."""
    return {i for i in map(index_id_of_key, storage.list(INDEX_PREFIX)) if i is not None}
