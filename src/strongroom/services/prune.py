"""The prune use case: delete the chunks no manifest references, safely beside backups.

Prune takes the repository's exclusive lock (``repository.locks``), which waits until no
backup holds a shared lock and makes new backups wait. Under it no backup is between
listing ``chunks/`` and writing its manifest, so every chunk some backup counts on is
referenced by a manifest that exists. See docs/design.md, "Locks and prune".

Prune also removes the partial files (``.tmp-*``) that processes killed in the middle of a
write leave in a local repository, once they are older than ``PARTIAL_FILE_AGE`` (and at
least twice the lock TTL): a write renames its temp file within one call, and no backup
runs while prune holds its exclusive lock, so no running operation can still own one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from strongroom.errors import BackupNotFound, ObjectNotFound
from strongroom.repository.chunks import has_packs
from strongroom.repository.ids import is_backup_id
from strongroom.repository.layout import (
    CHUNKS_PREFIX,
    PINS_PREFIX,
    chunk_id_of_key,
    chunk_key,
    is_chunk_id,
)
from strongroom.repository.locks import (
    DEFAULT_TTL,
    PRUNE_WAIT,
    SHARED,
    LockObserver,
    RepositoryLock,
    acquire_exclusive,
)
from strongroom.repository.repository import Repository
from strongroom.repository.verifications import VERIFICATIONS_PREFIX
from strongroom.services.repack import PackOutcome, PackPlan, describe, plan_packs, run_pack_plan
from strongroom.services.wal_retention import WalRetention, delete_wal, plan_wal_retention
from strongroom.storage.base import LeavesPartialFiles, Storage

log = logging.getLogger("strongroom.audit")

DEFAULT_WORKERS = 8
PARTIAL_FILE_AGE = 3600.0  # seconds: temp files older than this belong to no live write


@dataclass(frozen=True)
class WalPruneLine:
    """What prune did (dry run: would do) with one WAL stream."""

    stream: str
    files: int  # deleted (dry run: to delete)
    first: str | None  # the first and last names among them
    last: str | None
    kept: int  # archived files left
    kept_whole: str | None  # why nothing of it was deleted


@dataclass(frozen=True)
class PruneReport:
    dry_run: bool
    backups: int  # manifests read
    stored_chunks: int  # chunk objects found
    referenced_chunks: int
    unreferenced_chunks: int
    unreferenced_bytes: int  # what prune frees (or would free, on a dry run)
    deleted_chunks: int  # 0 on a dry run
    orphan_records: int  # pins and verification records of forgotten backups
    running_backups: int  # dry run only: live backup locks (their new chunks count above)
    partial_files: int = 0  # temp files of killed writes removed (dry run: found)
    wal_files: int = 0  # WAL objects deleted (dry run: that would be)
    wal: tuple[WalPruneLine, ...] = ()  # per stream with archived WAL
    # packs (format version 2, services/repack.py); on a dry run: what would be done
    packs_deleted: int = 0  # nothing referenced, repacked, or listed by no index
    packs_repacked: int = 0  # below REPACK_THRESHOLD live: rewritten into new packs
    packs_written: int = 0  # new packs the repack wrote (0 on a dry run)
    orphan_packs: int = 0  # of packs_deleted: listed by no index (killed backups/prunes)
    index_objects_deleted: int = 0  # old index objects replaced by a rewritten index
    pack_bytes_freed: int = 0  # pack bytes deleted less new pack bytes (dry run: estimate)
    packs_note: str | None = None  # why the pack work was skipped (another prune runs)
    packed: bool = False  # the repository holds packs (the pack fields apply)
    kept_in_packs: int = 0  # unreferenced blobs left in packs at least REPACK_THRESHOLD live
    kept_in_packs_bytes: int = 0


def referenced_chunks(repo: Repository) -> tuple[int, set[str]]:
    """Manifests read and the chunk ids they reference. A manifest that cannot be read
    stops prune (it may reference anything); one deleted meanwhile (forget) is skipped."""
    referenced: set[str] = set()
    read: set[str] = set()
    # ``backups/`` is listed twice and every id either listing shows is read: a listing
    # that silently leaves a key out (a store's bug, a page lost) would otherwise let prune
    # delete the chunks of a backup it did not see. One more LIST is cheap beside that.
    for _listing in range(2):
        for backup_id in repo.backup_ids():
            if backup_id in read:
                continue
            read.add(backup_id)
            try:
                manifest = repo.load_manifest(backup_id)
            except BackupNotFound:
                continue
            referenced |= manifest.unique_chunk_ids
    count = len(read)
    return count, referenced


def _sizes(
    storage: Storage,
    chunk_ids: Iterable[str],
    workers: int,
    before: Callable[[], None] = lambda: None,
    delete: bool = False,
) -> dict[str, int]:
    """Size of each chunk object (0 if gone); with ``delete``, delete it after sizing."""

    def one(chunk_id: str) -> tuple[str, int]:
        before()
        key = chunk_key(chunk_id)
        try:
            size = storage.size(key)
        except ObjectNotFound:
            return chunk_id, 0
        if delete:
            storage.delete(key)
            log.debug("deleted unreferenced chunk %s (%d bytes)", chunk_id, size)
        return chunk_id, size

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sr-prune") as pool:
        return dict(pool.map(one, sorted(chunk_ids)))


def _orphans(storage: Storage, existing: set[str]) -> list[str]:
    """Pin and verification keys whose backup's manifest is gone."""
    keys = []
    for key in storage.list(PINS_PREFIX):
        backup_id = key[len(PINS_PREFIX) :].removesuffix(".json")
        if is_backup_id(backup_id) and backup_id not in existing:
            keys.append(key)
    for key in storage.list(VERIFICATIONS_PREFIX):
        backup_id = key[len(VERIFICATIONS_PREFIX) :].split("/", 1)[0]
        if is_backup_id(backup_id) and backup_id not in existing:
            keys.append(key)
    return keys


def prune(
    repo: Repository,
    *,
    dry_run: bool = False,
    wait: float = PRUNE_WAIT,
    ttl: float = DEFAULT_TTL,
    workers: int = DEFAULT_WORKERS,
    partial_file_age: float = PARTIAL_FILE_AGE,
) -> PruneReport:
    """Delete every unreferenced chunk and old partial file (or, on a dry run, only count
    them; no lock)."""
    storage = repo.storage
    old_enough = max(partial_file_age, 2 * ttl)
    if dry_run:
        live = LockObserver().live_locks(storage, remove_stale=False)
        running = sum(1 for lock in live if lock.kind in (SHARED, None))
        return _run(repo, None, workers, running, old_enough)
    lock = acquire_exclusive(storage, "prune", wait=wait, ttl=ttl)
    try:
        return _run(repo, lock, workers, 0, old_enough)
    finally:
        lock.release()


def _partial_files(storage: Storage, older_than: float, remove: bool) -> int:
    if not isinstance(storage, LeavesPartialFiles):
        return 0  # S3 and memory write whole objects: nothing is left half-written
    count = storage.sweep_partial_files(older_than, remove=remove)
    if count and remove:
        log.info("prune removed %d partial files left by interrupted writes", count)
    return count


def _run(
    repo: Repository,
    lock: RepositoryLock | None,
    workers: int,
    running: int,
    partial_file_age: float,
) -> PruneReport:
    storage = repo.storage
    # Chunks are listed before manifests: a manifest committed between the two listings
    # still protects its chunks (defence in depth; the lock is what makes prune safe).
    listed = (chunk_id_of_key(key) for key in storage.list(CHUNKS_PREFIX))
    stored = {name for name in listed if is_chunk_id(name)}  # a stray file is no chunk: kept
    backups, referenced = referenced_chunks(repo)
    unreferenced = stored - referenced
    loose_referenced = len(stored) - len(unreferenced)
    plan: PackPlan | None = None
    if has_packs(storage):  # needs the key (index objects are encrypted)
        plan = plan_packs(repo, referenced, stored, lock)  # consumes ``referenced``
        log.info("prune: %s", describe(plan, None))
    del referenced
    try:
        return _carry_out(repo, lock, workers, running, partial_file_age, stored, backups,
                          loose_referenced, unreferenced, plan)  # fmt: skip
    finally:
        if plan is not None:
            plan.close()  # its private index cache


def _carry_out(
    repo: Repository,
    lock: RepositoryLock | None,
    workers: int,
    running: int,
    partial_file_age: float,
    stored: set[str],
    backups: int,
    loose_referenced: int,
    unreferenced: set[str],
    plan: PackPlan | None,
) -> PruneReport:
    storage = repo.storage
    if lock is None:
        sizes = _sizes(storage, unreferenced, workers)
        orphans = _orphans(storage, set(repo.backup_ids()))
        wal = plan_wal_retention(repo)
        return _report(
            True, backups, stored, loose_referenced, sizes, 0, len(orphans), running,
            _partial_files(storage, partial_file_age, remove=False), wal.to_delete, wal,
            plan, None,
        )  # fmt: skip
    lock.ensure_held()
    sizes = _sizes(storage, unreferenced, workers, before=lock.ensure_held, delete=True)
    outcome = run_pack_plan(repo, plan, lock) if plan is not None else None
    if plan is not None:
        log.info("prune: %s", describe(plan, outcome))
    orphans = _orphans(storage, set(repo.backup_ids()))
    for key in orphans:
        storage.delete(key)
    lock.ensure_held()
    partial = _partial_files(storage, partial_file_age, remove=True)
    # WAL no retained base backup needs (services/wal_retention.py); under the exclusive
    # lock no base backup is running, so the retained ones are all there are
    wal = plan_wal_retention(repo)
    lock.ensure_held()
    wal_deleted = delete_wal(repo, wal, before=lock.ensure_held, workers=workers)
    deleted = sum(1 for size in sizes.values() if size)
    report = _report(
        False, backups, stored, loose_referenced, sizes, deleted, len(orphans), 0, partial,
        wal_deleted, wal, plan, outcome,
    )  # fmt: skip
    log.info(
        "prune deleted %d unreferenced chunks, %d packs (%d repacked), %d bytes freed, "
        "and %d orphan records; %d backups reference %d chunks",
        deleted,
        report.packs_deleted,
        report.packs_repacked,
        report.unreferenced_bytes,
        len(orphans),
        backups,
        report.referenced_chunks,
    )
    return report


def _report(
    dry_run: bool,
    backups: int,
    loose: set[str],
    loose_referenced: int,
    sizes: dict[str, int],
    deleted: int,
    orphans: int,
    running: int,
    partial: int,
    wal_files: int,
    wal: WalRetention,
    plan: PackPlan | None,
    outcome: PackOutcome | None,
) -> PruneReport:
    """The report: loose chunks (``sizes``: the unreferenced ones) and, with ``plan``,
    packs (``outcome`` after a real prune, else what the plan would do)."""
    loose_freed = sum(sizes.values())
    if plan is None:
        return PruneReport(
            dry_run, backups, len(loose), loose_referenced, len(sizes), loose_freed, deleted,
            orphans, running, partial, wal_files, _wal_lines(wal),
        )  # fmt: skip
    stored = len(loose) + plan.packed_chunks
    referenced = loose_referenced + plan.claimed
    if outcome is None:
        doomed = len(plan.delete) + len(plan.orphans) + len(plan.repack)
        counts = (0, 0, 0, 0) if plan.skip else (doomed, len(plan.repack), 0, len(plan.orphans))
        index_deleted = len(plan.index_ids) if plan.rewrite and not plan.skip else 0
        pack_freed = 0 if plan.skip else plan.bytes_to_free
    else:
        counts = (
            outcome.packs_deleted,
            outcome.packs_repacked,
            outcome.packs_written,
            0 if plan.skip else len(plan.orphans),
        )
        index_deleted = outcome.index_deleted
        pack_freed = outcome.bytes_deleted - outcome.bytes_written
    note = plan.note
    return PruneReport(
        dry_run, backups, stored, referenced, max(0, stored - referenced),
        loose_freed + pack_freed, deleted, orphans, running, partial, wal_files,
        _wal_lines(wal), *counts, index_deleted, pack_freed, note, True,
        plan.garbage_kept, plan.garbage_kept_bytes,
    )  # fmt: skip


def _wal_lines(plan: WalRetention) -> tuple[WalPruneLine, ...]:
    return tuple(
        WalPruneLine(s.stream, len(s.delete), s.first_deleted, s.last_deleted, s.kept, s.kept_whole)
        for s in plan.streams
    )
