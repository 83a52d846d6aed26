"""The manifest index: a cache of every backup's clear fields in the service database.

Listing an S3 repository means one GET per manifest; the index keeps what the list pages
need (sizes, times, tags, pin, last verification) so pages read one table. It is only a
cache: ``sync`` brings it in line with the repository (new manifests read, forgotten ones
removed, pins and verifications refreshed) and ``strongroom reindex`` rebuilds it whole.
A manifest that cannot be read (damaged, or of a newer version) is left out of the index
with one warning, and kept in :meth:`ManifestIndex.damaged`; it never stops the others.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from sqlalchemy import delete, select

from strongroom.errors import BackupNotFound, RepositoryError
from strongroom.repository.manifest import Manifest
from strongroom.repository.repository import DamagedBackup, Repository
from strongroom.services import records
from strongroom.web.db import ServiceDatabase
from strongroom.web.models import IndexedBackup

log = logging.getLogger("strongroom.web.index")

DEFAULT_MAX_AGE = 30.0  # seconds an index may be stale before a page triggers a sync


@dataclass(frozen=True)
class SyncReport:
    """One sync: backups added to and removed from the index, readable backups in it
    (``total``), and manifests left out because they cannot be read (``damaged``)."""

    added: int
    removed: int
    total: int
    damaged: int = 0


def _row(manifest: Manifest) -> IndexedBackup:
    return IndexedBackup(
        backup_id=manifest.backup_id,
        target=manifest.target,
        engine=manifest.engine,
        engine_version=manifest.engine_version[:64],
        dump_format=manifest.dump_format,
        started_at=manifest.started_at,
        finished_at=manifest.finished_at,
        duration_seconds=manifest.duration_seconds,
        tags=",".join(manifest.tags),
        status=manifest.status,
        created_by=manifest.created_by[:200],
        raw_size=manifest.raw_size,
        stored_new_bytes=manifest.stored_new_bytes,
        chunk_count=manifest.chunk_count,
        new_chunk_count=manifest.new_chunk_count,
        pinned=False,
    )


class ManifestIndex:
    """Reads and refreshes the ``backup_index`` table."""

    def __init__(self, db: ServiceDatabase, max_age: float = DEFAULT_MAX_AGE) -> None:
        self._db = db
        self._max_age = max_age
        self._synced_at: float | None = None
        self._lock = threading.Lock()
        self._damaged: dict[str, DamagedBackup] = {}  # by backup id, as of the last sync

    def sync(self, repo: Repository) -> SyncReport:
        """One listing of manifests, pins and verifications; read only new manifests.

        A manifest that cannot be read is left out (a warning the first time) and read
        again at the next sync. Raises ``StrongroomError`` when the repository cannot be
        listed."""
        with self._lock:
            ids = set(repo.backup_ids())
            damaged: dict[str, DamagedBackup] = {}
            pins = records.pinned_ids(repo)
            verified = records.last_verifications(repo)
            with self._db.session() as session:
                known = set(session.scalars(select(IndexedBackup.backup_id)))
                gone = known - ids
                if gone:
                    session.execute(delete(IndexedBackup).where(IndexedBackup.backup_id.in_(gone)))
                added = 0
                for backup_id in sorted(ids - known):
                    try:
                        session.add(_row(repo.load_manifest(backup_id)))
                        added += 1
                    except BackupNotFound:  # forgotten meanwhile
                        continue
                    except RepositoryError as exc:  # damaged, or of a newer version
                        damaged[backup_id] = DamagedBackup(backup_id, exc.message)
                session.flush()
                for row in session.scalars(select(IndexedBackup)):
                    row.pinned = row.backup_id in pins
                    record = verified.get(row.backup_id)
                    row.verified_at = record.verified_at if record else None
                    row.verified_kind = record.kind if record else None
                    row.verified_ok = record.ok if record else None
                    row.verified_problem = (record.problem or "")[:400] if record else None
                total = len(ids) - len(damaged)
            new_damage = sorted(damaged.keys() - self._damaged.keys())
            self._damaged = damaged
            self._synced_at = time.monotonic()
        for backup_id in new_damage:
            log.warning("index: left out backup %s: %s", backup_id, damaged[backup_id].reason)
        if added or gone:
            log.info("index: %d backups added, %d removed", added, len(gone))
        return SyncReport(added, len(gone), total, len(damaged))

    def damaged(self) -> list[DamagedBackup]:
        """The manifests the last sync could not read (left out of the index), by id."""
        with self._lock:
            return [self._damaged[k] for k in sorted(self._damaged)]

    def rebuild(self, repo: Repository) -> SyncReport:
        """Empty the index, then read every manifest again."""
        with self._db.session() as session:
            session.execute(delete(IndexedBackup))
        return self.sync(repo)

    def fresh(self, repo: Repository) -> None:
        """Sync when the last sync is older than the index's maximum age."""
        if self._synced_at is None or time.monotonic() - self._synced_at > self._max_age:
            self.sync(repo)

    def invalidate(self) -> None:
        self._synced_at = None

    def backups(
        self,
        *,
        target: str | None = None,
        tag: str | None = None,
        verified: str | None = None,
        pinned: bool | None = None,
        limit: int = 500,
        offset: int = 0,
    ) -> list[IndexedBackup]:
        """Newest first, filtered."""
        query = select(IndexedBackup).order_by(
            IndexedBackup.finished_at.desc(), IndexedBackup.backup_id.desc()
        )
        if target:
            query = query.where(IndexedBackup.target == target)
        if pinned is not None:
            query = query.where(IndexedBackup.pinned == pinned)
        if verified == "ok":
            query = query.where(IndexedBackup.verified_ok.is_(True))
        elif verified == "failed":
            query = query.where(IndexedBackup.verified_ok.is_(False))
        elif verified == "never":
            query = query.where(IndexedBackup.verified_at.is_(None))
        with self._db.session() as session:
            rows = list(session.scalars(query))
        if tag:
            rows = [r for r in rows if tag in r.tags.split(",")]
        return rows[offset : offset + limit]

    def get(self, backup_id: str) -> IndexedBackup | None:
        with self._db.session() as session:
            return session.get(IndexedBackup, backup_id)

    def targets(self) -> list[str]:
        with self._db.session() as session:
            return sorted(set(session.scalars(select(IndexedBackup.target).distinct())))
