"""The stats use case: sizes, deduplication and age of the backups, per target.

``raw`` is the sum of the backups' dump sizes; ``unique`` the plaintext bytes of the
distinct chunks they reference; ``stored`` the bytes those chunks occupy (compressed and
encrypted): with packs, the blob lengths the index records (one pass over the index, one
SQLite query per pack; no request per chunk), for loose version 1 chunks their object
sizes. A chunk shared by two targets counts in each target's row and once in the total.

``objects`` counts what storage holds (packs, index objects, loose chunks) and
``pack_bytes`` the packs' sizes, so that a benchmark can report objects per GB.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from strongroom.errors import ObjectNotFound
from strongroom.repository.chunks import has_packs, list_pack_ids
from strongroom.repository.layout import CHUNKS_PREFIX, chunk_id_of_key, chunk_key, is_chunk_id
from strongroom.repository.manifest import Manifest
from strongroom.repository.pack_index import list_index_ids
from strongroom.repository.packs import pack_key_name
from strongroom.repository.repository import Repository
from strongroom.storage.base import Storage

DEFAULT_WORKERS = 8


@dataclass(frozen=True)
class Totals:
    target: str  # "" for the total over all shown targets
    backups: int
    raw_bytes: int
    unique_bytes: int
    stored_bytes: int
    chunks: int
    oldest: str | None  # finished_at
    newest: str | None

    @property
    def dedup_ratio(self) -> float:
        """Raw bytes per byte of distinct data (1.0 = nothing shared)."""
        return self.raw_bytes / self.unique_bytes if self.unique_bytes else 0.0

    @property
    def reduction_ratio(self) -> float:
        """Raw bytes per stored byte (deduplication and compression together)."""
        return self.raw_bytes / self.stored_bytes if self.stored_bytes else 0.0


@dataclass(frozen=True)
class RepositoryStats:
    targets: list[Totals]
    total: Totals
    all_chunks: int | None  # every chunk object, referenced or not (None with a target)
    all_chunk_bytes: int | None
    packs: int = 0  # objects under packs/
    pack_bytes: int = 0  # their sizes (bytes; the index's record, else the object's)
    index_objects: int = 0  # objects under index/
    loose_chunks: int = 0  # version 1 objects under chunks/

    @property
    def objects(self) -> int:
        """Objects the repository's chunk data takes: packs, index objects, loose chunks."""
        return self.packs + self.index_objects + self.loose_chunks


def _totals(name: str, backups: list[Manifest], stored: dict[str, int]) -> Totals:
    plain: dict[str, int] = {}
    for m in backups:
        for ref in m.chunks:
            plain[ref.chunk_id] = ref.size
    return Totals(
        target=name,
        backups=len(backups),
        raw_bytes=sum(m.raw_size for m in backups),
        unique_bytes=sum(plain.values()),
        stored_bytes=sum(stored.get(chunk_id, 0) for chunk_id in plain),
        chunks=len(plain),
        oldest=min((m.finished_at for m in backups), default=None),
        newest=max((m.finished_at for m in backups), default=None),
    )


def _object_sizes(storage: Storage, chunk_ids: set[str], workers: int) -> dict[str, int]:
    """Stored bytes per loose chunk: its object's size (0 when gone)."""

    def one(chunk_id: str) -> tuple[str, int]:
        try:
            return chunk_id, storage.size(chunk_key(chunk_id))
        except ObjectNotFound:
            return chunk_id, 0  # missing: `strongroom check` reports it

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sr-stats") as pool:
        return dict(pool.map(one, sorted(chunk_ids)))


def _packed_sizes(repo: Repository, wanted: set[str] | None) -> tuple[dict[str, int], int, int]:
    """Blob length of each chunk in a pack that exists (its first copy by pack id), only
    for ``wanted`` ids unless it is ``None``; plus the number of packs and their bytes.
    One listing of ``packs/`` and one SQLite query per pack."""
    store = repo.chunks
    store.refresh_index()
    index = store.index
    recorded = {pack_id: size for pack_id, _, size in index.packs()}
    sizes: dict[str, int] = {}
    packs = pack_bytes = 0
    for pack_id in sorted(set(list_pack_ids(repo.storage))):
        packs += 1
        if pack_id not in recorded:
            try:
                pack_bytes += repo.storage.size(pack_key_name(pack_id))
            except ObjectNotFound:
                packs -= 1
            continue
        pack_bytes += recorded[pack_id]
        for entry in index.pack_entries(pack_id):
            if (wanted is None or entry.chunk_id in wanted) and entry.chunk_id not in sizes:
                sizes[entry.chunk_id] = entry.length
    return sizes, packs, pack_bytes


def repository_stats(
    repo: Repository, target: str | None = None, workers: int = DEFAULT_WORKERS
) -> RepositoryStats:
    backups = repo.list_backups(target)
    by_target: dict[str, list[Manifest]] = {}
    for m in backups:
        by_target.setdefault(m.target, []).append(m)
    wanted = {ref.chunk_id for m in backups for ref in m.chunks}
    listed = (chunk_id_of_key(key) for key in repo.storage.list(CHUNKS_PREFIX))
    loose = {name for name in listed if is_chunk_id(name)}  # not stray files
    stored: dict[str, int] = {}
    packs = pack_bytes = index_objects = 0
    if has_packs(repo.storage):  # then sizes come from the index (needs the key)
        stored, packs, pack_bytes = _packed_sizes(repo, None if target is None else wanted)
        index_objects = len(list_index_ids(repo.storage))
    need = (wanted if target is not None else wanted | loose) - stored.keys()
    stored.update(_object_sizes(repo.storage, need & loose, workers))
    everything: set[str] = loose | stored.keys() if target is None else set()
    return RepositoryStats(
        targets=[_totals(name, ms, stored) for name, ms in sorted(by_target.items())],
        total=_totals("", backups, stored),
        all_chunks=None if target is not None else len(everything),
        all_chunk_bytes=None if target is not None else sum(stored.get(c, 0) for c in everything),
        packs=packs,
        pack_bytes=pack_bytes,
        index_objects=index_objects,
        loose_chunks=len(loose),
    )
