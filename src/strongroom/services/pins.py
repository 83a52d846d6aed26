"""Pin and unpin backups: a pinned backup is never forgotten by any retention policy."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from strongroom.errors import BackupNotFound
from strongroom.repository.ids import is_backup_id, utc_now_iso
from strongroom.repository.locks import owner_name
from strongroom.repository.pins import Pin, is_pinned, remove_pin, write_pin
from strongroom.repository.repository import Repository

log = logging.getLogger("strongroom.audit")


@dataclass(frozen=True)
class PinChange:
    backup_id: str
    target: str | None  # None when the backup itself is already gone
    changed: bool  # False: it already was (un)pinned


def pin_backup(repo: Repository, reference: str) -> PinChange:
    """Pin a backup (id, unique prefix, or ``latest``); pinning twice is harmless."""
    manifest = repo.resolve(reference)
    if is_pinned(repo.storage, manifest.backup_id):
        return PinChange(manifest.backup_id, manifest.target, False)
    write_pin(repo.storage, Pin(manifest.backup_id, utc_now_iso(), owner_name()))
    log.info("pinned backup %s of %s", manifest.backup_id, manifest.target)
    return PinChange(manifest.backup_id, manifest.target, True)


def unpin_backup(repo: Repository, reference: str) -> PinChange:
    """Remove a pin; a full id also unpins a backup whose manifest is already gone."""
    try:
        manifest = repo.resolve(reference)
        backup_id, target = manifest.backup_id, manifest.target
    except BackupNotFound:
        if not (is_backup_id(reference) and is_pinned(repo.storage, reference)):
            raise
        backup_id, target = reference, None
    if not is_pinned(repo.storage, backup_id):
        return PinChange(backup_id, target, False)
    remove_pin(repo.storage, backup_id)
    log.info("unpinned backup %s of %s", backup_id, target or "(forgotten backup)")
    return PinChange(backup_id, target, True)
