"""``check`` with packs (docs/design.md "check with packs"): index objects, packs and the
blobs in them.

:func:`check_packs` lists ``index/`` and ``packs/`` (the caller lists ``chunks/``):

- an index object that does not read (decrypt, decompress, parse) is an ``index`` problem
  naming it (its chunks then count as unknown: ``missing`` problems follow for the ones
  a backup references; ``strongroom index rebuild`` recreates it from the packs);
- a referenced chunk must be in an index entry whose pack exists, or loose: a ``missing``
  problem otherwise, naming the pack that is gone when the index lists one;
- packs no index lists are counted (``unlisted_packs``; prune deletes them);
- with ``read_data`` each pack (or a random share: ``subset``) is read whole: its id must
  be the keyed hash of its bytes and its key stanza and header must open and match the
  index (a ``pack`` problem naming it otherwise), and every referenced blob in it is opened,
  decompressed and re-hashed (a ``damaged`` problem naming the chunk) and its size
  compared with the manifests (``size``). Packs read that way take their entries from
  the index cache: when some read as damaged, the cache is rebuilt privately from
  ``index/`` (once per process) and, if it lists any of them otherwise, the shared file
  lied: it is removed and the check runs again on the rebuilt copy.

Memory: one pack (16 MiB) per worker; the sets of referenced and stored ids the caller
builds (as ``check`` did before packs).
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import zstandard

from strongroom.errors import ChunkDamaged, ObjectNotFound
from strongroom.repository.chunks import list_pack_ids
from strongroom.repository.pack_index import (
    ChunkLocation,
    IndexCache,
    IndexDamaged,
    list_index_ids,
)
from strongroom.repository.pack_index import read_index_object as read_index
from strongroom.repository.packs import PackDamaged, open_blob, pack_key_name, read_pack
from strongroom.repository.repository import Repository

log = logging.getLogger("strongroom.repository")
_MAX_CHUNK = 64 * 1024 * 1024


@dataclass
class PackFinding:
    """One problem (``kind``, subject, message), as ``check.Problem`` takes it."""

    kind: str  # "index", "missing", "pack", "damaged", "size"
    subject: str
    message: str


@dataclass
class PackCheck:
    """What :func:`check_packs` found."""

    stored: set[str] = field(default_factory=set)  # ids readable from a pack that exists
    findings: list[PackFinding] = field(default_factory=list)
    index_objects: int = 0
    packs: int = 0  # listed under packs/
    unlisted_packs: int = 0  # stored, listed by no index object
    packs_read: int = 0
    chunks_read: int = 0  # referenced blobs verified
    bytes_read: int = 0  # their plaintext bytes


def check_packs(
    repo: Repository,
    sizes: dict[str, set[int]],
    *,
    read_data: bool,
    subset: float | None,
    rng: random.Random | None,
    workers: int,
) -> PackCheck:
    """Check index objects and packs; ``sizes`` maps each referenced chunk id to the
    plaintext sizes manifests record for it. Problems are returned, never raised."""
    storage = repo.storage
    result = PackCheck()
    listed_index = list_index_ids(storage)
    result.index_objects = len(listed_index)
    store = repo.chunks
    store.refresh_index()
    index = store.index
    sealer = repo.keyring.sealer(for_reading=True)
    # an index object already cached is read again only with read_data (the cache is a
    # copy of it as it was when first read)
    for index_id in sorted(listed_index if read_data else listed_index - index.index_ids()):
        try:
            read_index(storage, index_id, sealer, store.name)
        except ObjectNotFound:
            continue  # deleted since the listing (prune)
        except IndexDamaged as exc:
            result.findings.append(PackFinding("index", index_id, exc.message))
    listed_packs = set(list_pack_ids(storage))
    result.packs = len(listed_packs)
    indexed = {pack_id for pack_id, _, _ in index.packs()}
    result.unlisted_packs = len(listed_packs - indexed)
    result.stored = set(index.chunk_ids_in(listed_packs))
    for chunk_id in sorted(set(sizes) - result.stored):
        gone = [loc.pack_id for loc in index.locations(chunk_id)]
        if gone:  # the index lists it, in packs that are not there
            message = f"chunk {chunk_id} is missing: its pack {gone[0]} is gone"
            result.findings.append(PackFinding("missing", chunk_id, message))
        # else: loose or missing, the caller looks in chunks/
    if not read_data:
        return result
    chosen = sorted(listed_packs & indexed)
    if subset is not None and subset < 1:
        count = min(len(chosen), math.ceil(subset * len(chosen)))
        chosen = sorted((rng or random.Random()).sample(chosen, count))  # noqa: S311

    def read(pack_id: str) -> tuple[int, int, list[PackFinding]]:
        return _read_pack(repo, pack_id, sizes, index.pack_entries(pack_id))

    suspects: dict[str, list[ChunkLocation]] = {}  # packs with findings: their entries
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sr-check") as pool:
        for pack_id, (chunks, size, findings) in zip(chosen, pool.map(read, chosen), strict=True):
            result.packs_read += 1
            result.chunks_read += chunks
            result.bytes_read += size
            result.findings += findings
            if findings:
                suspects[pack_id] = index.pack_entries(pack_id)
    if suspects and _cache_lied(index, suspects):
        # the packs were read with entries the shared cache got wrong (a bug, a hand
        # edit: damage SQLite does not see); as ChunkStore.load does, the shared file
        # is removed (the next run rebuilds it) and the check runs once more on the
        # private cache rebuilt from index/ (reload_privately: once per process)
        log.warning(
            "the index cache %s placed chunks wrongly (%d pack(s) read as damaged through "
            "it); checked again through a copy rebuilt from index/, and removed it: the "
            "next run rebuilds it",
            index.path,
            len(suspects),
        )
        index.remove_shared()
        return check_packs(
            repo, sizes, read_data=read_data, subset=subset, rng=rng, workers=workers
        )
    return result


def index_lied(repo: Repository, unplaced: set[str]) -> bool:
    """Whether the shared index cache lied about ``unplaced``: referenced chunks it puts
    in no pack that exists (and that are not loose). A cache rebuilt privately from
    ``index/`` (once per process) places any of them otherwise: then the shared file is
    removed with a warning (the next run rebuilds it) and True is returned, for the
    caller to check again on the rebuilt copy."""
    if not unplaced:
        return False
    index = repo.chunks.index
    before = {chunk_id: index.locations(chunk_id) for chunk_id in sorted(unplaced)}
    if not index.reload_privately(f"{len(unplaced)} referenced chunk(s) not found in it"):
        return False
    if all(index.locations(chunk_id) == seen for chunk_id, seen in before.items()):
        return False  # the index objects say the same: missing indeed
    log.warning(
        "the index cache %s placed chunks wrongly (%d referenced chunk(s) were in no pack "
        "through it); checked again through a copy rebuilt from index/, and removed it: "
        "the next run rebuilds it",
        index.path,
        len(unplaced),
    )
    index.remove_shared()
    return True


def _cache_lied(index: IndexCache, suspects: dict[str, list[ChunkLocation]]) -> bool:
    """Whether a cache rebuilt privately from ``index/`` lists any of the packs read as
    damaged otherwise than the shared cache did (False, and no rebuild, when this process
    uses a private cache already)."""
    if not index.reload_privately(f"check found {len(suspects)} damaged pack(s)"):
        return False
    return any(index.pack_entries(pack_id) != seen for pack_id, seen in suspects.items())


def _read_pack(
    repo: Repository,
    pack_id: str,
    sizes: dict[str, set[int]],
    entries: list[ChunkLocation],
) -> tuple[int, int, list[PackFinding]]:
    """Read one pack whole; return (referenced blobs verified, their plaintext bytes,
    problems)."""
    findings: list[PackFinding] = []
    where = f"pack {pack_id}"
    try:
        data = repo.storage.get(pack_key_name(pack_id))
    except ObjectNotFound:
        return 0, 0, []  # deleted since the listing (prune): not a problem
    try:
        contents = read_pack(data, repo.keyring.sealer(for_reading=True), where)
    except PackDamaged as exc:
        findings.append(PackFinding("pack", pack_id, exc.message))
    else:
        header = [(e.chunk_id, e.offset, e.length, e.raw_length) for e in contents.entries]
        listed = [(e.chunk_id, e.offset, e.length, e.raw_length) for e in entries]
        if header != listed:
            message = f"{where} is damaged: its header does not match the index"
            findings.append(PackFinding("pack", pack_id, message))
    verify: Callable[[ChunkLocation], bytes] = _verifier(repo, data)
    chunks = plain = 0
    for entry in entries:
        expected = sizes.get(entry.chunk_id)
        if expected is None:
            continue  # no backup references it
        try:
            size = len(verify(entry))
        except ChunkDamaged as exc:
            findings.append(PackFinding("damaged", entry.chunk_id, exc.message))
            continue
        chunks += 1
        plain += size
        if expected != {size}:
            message = (
                f"chunk {entry.chunk_id} holds {size} bytes, manifests record "
                f"{', '.join(str(s) for s in sorted(expected))}"
            )
            findings.append(PackFinding("size", entry.chunk_id, message))
    if not findings and repo.chunks.name(data) != pack_id:  # a byte no blob check covers
        message = (
            f"{where} is damaged: its bytes do not hash to its name ({len(data)} bytes: "
            "truncated or changed outside its referenced blobs)"
        )
        findings.append(PackFinding("pack", pack_id, message))
    return chunks, plain, findings


def _verifier(repo: Repository, data: bytes) -> Callable[[ChunkLocation], bytes]:
    """A function: one blob of the pack bytes ``data`` -> its verified plaintext
    (``ChunkDamaged`` naming the chunk otherwise)."""
    decompressor = zstandard.ZstdDecompressor()

    def verify(entry: ChunkLocation) -> bytes:
        if entry.offset + entry.length > len(data):
            raise ChunkDamaged(
                f"chunk {entry.chunk_id} is damaged: its pack {entry.pack_id} is shorter "
                "than the index says (truncated)"
            )
        blob = data[entry.offset : entry.offset + entry.length]
        frame = open_blob(entry.key, blob, entry.chunk_id, entry.position)
        try:
            plaintext = decompressor.decompress(frame, max_output_size=_MAX_CHUNK)
        except zstandard.ZstdError as exc:
            raise ChunkDamaged(
                f"chunk {entry.chunk_id} is damaged: it does not decompress"
            ) from exc
        if repo.chunks.name(plaintext) != entry.chunk_id:
            raise ChunkDamaged(
                f"chunk {entry.chunk_id} is damaged: its content does not match its hash"
            )
        return plaintext

    return verify
