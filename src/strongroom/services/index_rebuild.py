"""``strongroom index rebuild``: index objects recreated from the packs alone (docs/design.md
"Packs": the index holds nothing a pack does not hold too).

For each object under ``packs/`` it reads the preamble, the key stanza and the trailer and
header with ranged reads (``9 + K + 8 + H`` bytes, not the blobs), opens the key stanza with
the repository's key and the header with the pack key, and lists the pack. Index objects
of ``INDEX_MAX_PACKS`` packs are written with ``supersedes`` naming every index object
found at the start, then (once durable) those are deleted. It runs under the exclusive
lock, as prune does, so no backup is between its packs and its index meanwhile.

A pack that cannot be read (truncated, bad magic, a stanza or header that does not open)
keeps the listing an old index object that still reads holds for it (its blobs may all
read through it: the index holds the pack key and the entries); without one it is left out
and named in the report, its chunks unknown (``check`` reports the referenced ones). A
storage error stops the rebuild before any old index object is deleted. Memory: the
entries of at most ``INDEX_MAX_PACKS`` packs at a time.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from strongroom.errors import ObjectNotFound
from strongroom.pipeline.encryption import Sealer
from strongroom.repository.chunks import list_pack_ids
from strongroom.repository.locks import DEFAULT_TTL, PRUNE_WAIT, acquire_exclusive
from strongroom.repository.pack_index import (
    INDEX_MAX_PACKS,
    IndexDamaged,
    IndexedPack,
    index_key,
    list_index_ids,
    read_index_object,
    write_index_objects,
)
from strongroom.repository.packs import (
    ENTRY_SIZE,
    PACK_MAGIC,
    PACK_VERSION,
    PackDamaged,
    open_header,
    pack_key_name,
)
from strongroom.repository.repository import Repository
from strongroom.storage.base import Storage

log = logging.getLogger("strongroom.audit")

_PREAMBLE = struct.Struct(">4sBI")  # magic, version, key stanza length K (the format)
_TRAILER = struct.Struct(">I4s")  # header length H, magic


@dataclass
class RebuildReport:
    packs: int = 0  # listed in the new index objects
    chunks: int = 0  # entries they list
    index_written: int = 0
    index_deleted: int = 0  # old index objects replaced
    skipped: list[str] = field(default_factory=list)  # one line per pack left out


def read_pack_listing(storage: Storage, sealer: Sealer, pack_id: str) -> IndexedPack:
    """A pack as an index lists it, from its preamble, key stanza and header only (ranged
    reads). Raises ``PackDamaged`` naming the pack, ``ObjectNotFound`` when gone."""
    key = pack_key_name(pack_id)
    where = f"pack {pack_id}"

    def damaged(reason: str) -> PackDamaged:
        return PackDamaged(f"{where} is damaged: {reason}")

    size = storage.size(key)
    if size < _PREAMBLE.size + _TRAILER.size:
        raise damaged(f"{size} bytes is too short for a pack")
    magic, version, stanza_length = _PREAMBLE.unpack(storage.get_range(key, 0, _PREAMBLE.size))
    header_length, end_magic = _TRAILER.unpack(
        storage.get_range(key, size - _TRAILER.size, _TRAILER.size)
    )
    if magic != PACK_MAGIC or end_magic != PACK_MAGIC:
        raise damaged("no SRPK magic at its start and end (truncated or not a pack)")
    if version != PACK_VERSION:
        raise damaged(f"pack version {version} is not one this strongroom reads")
    header_start = size - _TRAILER.size - header_length
    if header_start < _PREAMBLE.size + stanza_length:
        raise damaged("its key stanza and header lengths do not fit its size (truncated)")
    header = storage.get_range(key, header_start, header_length)
    stanza = storage.get_range(key, _PREAMBLE.size, stanza_length) if stanza_length else b""
    pack_key, header, _ = open_header(stanza, header, header_start, sealer, where, damaged)
    return IndexedPack(pack_id, size, pack_key, header)


def _old_listings(
    storage: Storage,
    sealer: Sealer,
    name: Callable[[bytes], str],
    index_ids: tuple[str, ...],
    wanted: Callable[[str], bool],
) -> Iterator[IndexedPack]:
    """The listings of the packs ``wanted`` accepts in the index objects ``index_ids``
    that still read (one object in memory at a time)."""
    for index_id in index_ids:
        try:
            index = read_index_object(storage, index_id, sealer, name)
        except (ObjectNotFound, IndexDamaged):
            continue
        yield from (pack for pack in index.packs if wanted(pack.pack_id))


def rebuild_index(
    repo: Repository, *, wait: float = PRUNE_WAIT, ttl: float = DEFAULT_TTL
) -> RebuildReport:
    """Rewrite the whole index from ``packs/`` (module docstring). Raises
    ``RepositoryBusy`` when backups hold the repository longer than ``wait`` seconds,
    ``LockLost``, storage errors."""
    storage = repo.storage
    sealer = repo.keyring.sealer(for_reading=True)
    report = RebuildReport()
    lock = acquire_exclusive(storage, "index rebuild", wait=wait, ttl=ttl)
    try:
        old = tuple(sorted(list_index_ids(storage)))
        group: list[IndexedPack] = []
        written: list[str] = []

        def flush() -> None:
            lock.ensure_held()
            written.extend(
                write_index_objects(storage, group, sealer, repo.chunks.name, supersedes=old)
            )
            group.clear()

        def add(pack: IndexedPack) -> None:
            group.append(pack)
            report.packs += 1
            report.chunks += len(pack.chunks) // ENTRY_SIZE
            if len(group) >= INDEX_MAX_PACKS:
                flush()

        unread: dict[str, str] = {}  # pack id -> why its own header does not read
        listed = set(list_pack_ids(storage))
        for pack_id in sorted(listed):
            try:
                pack = read_pack_listing(storage, sealer, pack_id)
            except ObjectNotFound:
                continue
            except PackDamaged as exc:  # a StorageError stops the rebuild: run it again
                unread[pack_id] = exc.message
                continue
            add(pack)
        # a pack whose key stanza or header does not read may still read through the
        # listing an old index object holds (its key and entries): keep that listing; a
        # pack the old index lists that the listing of packs/ left out is looked up by
        # itself (a listing that silently misses keys must not drop the only copy of a key)
        seen: set[str] = set()
        for pack in _old_listings(
            storage, sealer, repo.chunks.name, old, lambda p: p in unread or p not in listed
        ):
            if pack.pack_id in seen:
                continue
            seen.add(pack.pack_id)
            if pack.pack_id not in unread:
                if not storage.exists(pack_key_name(pack.pack_id)):
                    continue  # gone
                try:
                    add(read_pack_listing(storage, sealer, pack.pack_id))
                    continue
                except PackDamaged as exc:
                    unread[pack.pack_id] = exc.message
            del unread[pack.pack_id]
            log.warning(
                "index rebuild keeps the old index's listing of pack %s (its own key "
                "stanza or header does not read: `check --read-data` names it)",
                pack.pack_id,
            )
            add(pack)
        for message in unread.values():
            report.skipped.append(message)
            log.warning("index rebuild leaves out %s", message)
        if group:
            flush()
        storage.sync()
        report.index_written = len(written)
        for index_id in old:
            if index_id in written:
                continue  # the same bytes written again (nothing changed)
            lock.ensure_held()
            storage.delete(index_key(index_id))
            report.index_deleted += 1
        storage.sync()
    finally:
        lock.release()
    repo.chunks.refresh_index()
    log.info(
        "index rebuilt: %d packs, %d chunks in %d index objects (%d replaced, %d packs left out)",
        report.packs,
        report.chunks,
        report.index_written,
        report.index_deleted,
        len(report.skipped),
    )
    return report
