"""The forget use case: decide with :func:`strongroom.retention.decide`, delete what goes.

Forgetting deletes a backup's manifest (the backup no longer exists), then its verification
records and pin. Chunks stay until ``prune``. Forget needs no lock: a running backup never
reads manifests, and a prune that loses a manifest midway only frees more.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from strongroom.errors import UsageError
from strongroom.repository.layout import manifest_key
from strongroom.repository.manifest import Manifest
from strongroom.repository.pins import is_pinned, pinned_ids, remove_pin
from strongroom.repository.repository import DamagedBackup, Repository
from strongroom.repository.restores import restore_history, rollback_points
from strongroom.repository.verifications import VERIFICATIONS_PREFIX, verification_statuses
from strongroom.retention import (
    RETENTION_DAYS_VARIABLE,
    BackupInfo,
    Decision,
    RetentionPolicy,
    decide,
)
from strongroom.storage.base import Storage

log = logging.getLogger("strongroom.audit")

SOURCE_OPTIONS = "options"
SOURCE_ENVIRONMENT = RETENTION_DAYS_VARIABLE
SOURCE_CONFIGURATION = "configuration"
SOURCE_DEFAULT = "default"


def choose_policy(
    given: RetentionPolicy | None,
    env: Mapping[str, str],
    configured: RetentionPolicy | None = None,
    timezone: str = "UTC",
) -> tuple[RetentionPolicy, str]:
    """The policy to apply and where it came from.

    Command-line options win, then the configured policy (``config.Settings``), then
    ``BACKUP_RETENTION_DAYS`` (keep within N days), then the default (7 daily, 4 weekly,
    12 monthly) -- the order ``Settings.retention_for`` uses too.
    """
    if given is not None and not given.is_empty():
        return given, SOURCE_OPTIONS
    if configured is not None and not configured.is_empty():
        return configured, SOURCE_CONFIGURATION
    try:
        from_env = RetentionPolicy.from_environment(env)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if from_env is not None:
        return replace(from_env, timezone=timezone), SOURCE_ENVIRONMENT
    return replace(RetentionPolicy.default(), timezone=timezone), SOURCE_DEFAULT


@dataclass(frozen=True)
class ForgetEntry:
    manifest: Manifest
    decision: Decision

    @property
    def keep(self) -> bool:
        return self.decision.keep


@dataclass(frozen=True)
class ForgetResult:
    policy: RetentionPolicy
    policy_source: str
    dry_run: bool
    entries: list[ForgetEntry]  # oldest first
    forgotten: list[str]  # ids deleted (none on a dry run)
    spared: list[str]  # pinned after the decision was made, so not deleted
    damaged: list[DamagedBackup] = field(default_factory=list)  # unreadable: kept

    @property
    def kept(self) -> list[ForgetEntry]:
        return [e for e in self.entries if e.keep]

    @property
    def to_forget(self) -> list[ForgetEntry]:
        return [e for e in self.entries if not e.keep]


def plan(
    repo: Repository, policy: RetentionPolicy, target: str | None, now: datetime
) -> list[ForgetEntry]:
    """Every backup (of ``target``) with its keep/forget decision; reads, deletes nothing.
    Safety backups are decided by the policy's safety rule; the one ``rollback`` would
    restore into each database (from the restore records) is always kept."""
    return _decide(repo, repo.list_backups(target), policy, target, now)


def _decide(
    repo: Repository,
    manifests: list[Manifest],
    policy: RetentionPolicy,
    target: str | None,
    now: datetime,
) -> list[ForgetEntry]:
    pins = pinned_ids(repo.storage)
    points = rollback_points(restore_history(repo.storage, target))
    verified = verification_statuses(repo.storage)
    infos = []
    for m in manifests:
        status = verified.get(m.backup_id)
        good = status is not None and status.verified_good  # a passed restore drill only
        infos.append(BackupInfo.from_manifest(m, m.backup_id in pins, good, m.backup_id in points))
    decisions = decide(infos, policy, now)
    return [ForgetEntry(m, d) for m, d in zip(manifests, decisions, strict=True)]


def forget(
    repo: Repository,
    policy: RetentionPolicy,
    *,
    source: str = SOURCE_OPTIONS,
    target: str | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
) -> ForgetResult:
    """Apply ``policy``; unless ``dry_run``, delete the backups it does not keep.

    A backup whose manifest cannot be read is kept (``ForgetResult.damaged``, with a
    warning): retention cannot date it, and prune stops at it until it is repaired or
    deleted by hand, so nothing it may need is lost."""
    listing = repo.scan_backups(target)
    for found in listing.damaged:
        log.warning(
            "kept backup %s, whose manifest cannot be read: %s", found.backup_id, found.reason
        )
    entries = _decide(repo, listing.backups, policy, target, now or datetime.now(UTC))
    forgotten: list[str] = []
    spared: list[str] = []
    if not dry_run:
        for entry in entries:
            if entry.keep:
                continue
            m = entry.manifest
            if is_pinned(repo.storage, m.backup_id):  # pinned since we looked
                spared.append(m.backup_id)
                continue
            delete_backup(repo.storage, m.backup_id)
            forgotten.append(m.backup_id)
            log.info(
                "forgot backup %s of %s (finished %s; policy: %s)",
                m.backup_id,
                m.target,
                m.finished_at,
                policy.describe(),
            )
    return ForgetResult(policy, source, dry_run, entries, forgotten, spared, listing.damaged)


def delete_backup(storage: Storage, backup_id: str) -> None:
    """Delete the manifest first (the backup is gone), then what only described it."""
    storage.delete(manifest_key(backup_id))
    for key in list(storage.list(f"{VERIFICATIONS_PREFIX}{backup_id}/")):
        storage.delete(key)
    remove_pin(storage, backup_id)
