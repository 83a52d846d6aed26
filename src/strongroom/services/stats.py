"""The stats use case: sizes, deduplication and age of the backups, per target.

``raw`` is the sum of the backups' dump sizes; ``unique`` the plaintext bytes of the
distinct chunks they reference; ``stored`` the bytes those chunk objects occupy
(compressed and encrypted). A chunk shared by two targets counts in each target's row
and once in the total.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from strongroom.errors import ObjectNotFound
from strongroom.repository.chunks import has_packs
from strongroom.repository.layout import CHUNKS_PREFIX, chunk_id_of_key, chunk_key, is_chunk_id
from strongroom.repository.manifest import Manifest
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


def _object_sizes(
    storage: Storage, chunk_ids: set[str], workers: int, repo: Repository | None = None
) -> dict[str, int]:
    """Stored bytes per chunk: its loose object's size, or with ``repo`` (a repository
    holding packs) its blob's length in its pack (``ChunkStore.stored_size``)."""

    def one(chunk_id: str) -> tuple[str, int]:
        if repo is not None:
            return chunk_id, repo.chunks.stored_size(chunk_id)
        try:
            return chunk_id, storage.size(chunk_key(chunk_id))
        except ObjectNotFound:
            return chunk_id, 0  # missing: `strongroom check` reports it

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sr-stats") as pool:
        return dict(pool.map(one, sorted(chunk_ids)))


def repository_stats(
    repo: Repository, target: str | None = None, workers: int = DEFAULT_WORKERS
) -> RepositoryStats:
    backups = repo.list_backups(target)
    by_target: dict[str, list[Manifest]] = {}
    for m in backups:
        by_target.setdefault(m.target, []).append(m)
    wanted = {ref.chunk_id for m in backups for ref in m.chunks}
    everything = None
    packed = has_packs(repo.storage)  # then sizes come from the index (needs the key)
    if target is None:
        if packed:
            everything = repo.chunks.stored_ids()
        else:
            listed = (chunk_id_of_key(key) for key in repo.storage.list(CHUNKS_PREFIX))
            everything = {name for name in listed if is_chunk_id(name)}  # not stray files
    stored = _object_sizes(
        repo.storage, wanted | (everything or set()), workers, repo if packed else None
    )
    return RepositoryStats(
        targets=[_totals(name, ms, stored) for name, ms in sorted(by_target.items())],
        total=_totals("", backups, stored),
        all_chunks=None if everything is None else len(everything),
        all_chunk_bytes=None if everything is None else sum(stored[c] for c in everything),
    )
