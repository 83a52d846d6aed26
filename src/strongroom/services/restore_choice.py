"""Which target a restore's destination belongs to, which backup ``latest``/``--before``
mean, and what ``rollback`` restores.

* A destination database belongs to one target (its safety backups and restore records
  are filed under it): the configured target whose URL names that database; else the one
  target in the repository whose name, or whose newest regular backup's database, is the
  destination's database name; else its own database name (a copy no target knows).
  Ties are settled by the user's ``--target``, then by the chosen backup's target;
  otherwise the caller is told to choose (one line listing the targets).
* ``latest`` and ``--before`` choose among one target's backups: the one given, else the
  destination's; safety backups (tag ``pre-restore``) only when asked for.
* ``rollback`` restores the safety backup of the last restore into this target *and this
  database* that completed (swapped in), as the restore records say
  (``repository/restores.py``); failed restores changed nothing and are passed over.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from strongroom.engines import open_engine
from strongroom.engines.base import Engine
from strongroom.errors import BackupNotFound, ManifestDamaged, StrongroomError, UsageError
from strongroom.repository.ids import parse_iso
from strongroom.repository.manifest import Manifest
from strongroom.repository.repository import Repository
from strongroom.repository.restores import RestoreRecord, last_completed, restore_history
from strongroom.repository.verifications import last_verifications
from strongroom.retention import PITR_TAG as PITR_TAG
from strongroom.retention import PRE_RESTORE_TAG, is_regular
from strongroom.services.hooks import database_identity

log = logging.getLogger("strongroom.restore")


def is_safety_backup(manifest: Manifest) -> bool:
    """A ``pre-restore`` safety backup (taken by a restore of its target)."""
    return PRE_RESTORE_TAG in manifest.tags


PITR_BASE_TAG = "pitr-base:"  # + the id of the base backup it was recovered from


def is_pitr_dump(manifest: Manifest) -> bool:
    """A dump ``restore --to-time … --database`` took from a throwaway cluster: never
    chosen by ``latest`` or ``--before`` (it is of another moment than its start time)."""
    return PITR_TAG in manifest.tags


def human_time(iso: str) -> str:
    """``2026-11-21T14:00:03.123Z`` -> ``2026-11-21 14:00:03 UTC``."""
    moment = parse_iso(iso)
    if moment.utcoffset() is None:
        moment = moment.replace(tzinfo=UTC)
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


@dataclass(frozen=True)
class DestinationTarget:
    """The target a destination database belongs to, and why (shown in the plan)."""

    name: str
    basis: str


def _listing(names: Iterable[str]) -> str:
    shown = sorted(set(names))
    return ", ".join(shown) if shown else "none"


def destination_fingerprint(repo: Repository, engine: Engine) -> str:
    """A keyed fingerprint (64 hex) of the database ``engine`` names: engine, server and
    database, or a SQLite file's real path (``services.hooks.database_identity``). Restore
    records carry it, so rollback never takes another database's safety backup. Needs the
    repository's key."""
    identity = "\0".join(("strongroom-restore-destination", *database_identity(engine)))
    return repo.chunks.name(identity.encode())


def _configured_matches(engine: Engine, configured: Mapping[str, str]) -> list[str]:
    """Configured targets whose URL names the destination's database: the same server
    and database (``database_identity``) if any does, else the same database name."""
    wanted = database_identity(engine)
    same_name, same_place = [], []
    for name, url in sorted(configured.items()):
        try:
            other = open_engine(url)
        except StrongroomError:
            continue
        if other.kind != engine.kind or other.database_name() != engine.database_name():
            continue
        same_name.append(name)
        if database_identity(other) == wanted:
            same_place.append(name)
    return same_place or same_name


def backup_database_name(repo: Repository, manifest: Manifest) -> str:
    """The name of the database a backup was taken of, as ``Engine.database_name`` says it
    (read from the private section's redacted source URL; needs the key). A damaged
    private section names no database (``""``, with a warning)."""
    try:
        private = repo.private_section(manifest)
    except ManifestDamaged as exc:  # one damaged section must not stop every restore
        log.warning("cannot tell which database backup %s is of: %s", manifest.backup_id, exc)
        return ""
    try:
        return open_engine(private.source).database_name()
    except (StrongroomError, ValueError):
        return private.database


def regular_targets(repo: Repository) -> dict[str, Manifest]:
    """Each target that has a regular backup (not a safety backup, not a ``pitr`` dump:
    that one is of the throwaway cluster's database, whatever the destination was; not a
    base backup: that one is of a whole cluster, whatever database its URL named), with
    its newest one."""
    newest: dict[str, Manifest] = {}
    for m in repo.list_backups():  # oldest first
        if is_regular(m.tags) and not m.is_base_backup:
            newest[m.target] = m
    return newest


def _pick(found: list[str], preferred: Iterable[str | None]) -> str | None:
    if len(found) == 1:
        return found[0]
    return next((p for p in preferred if p is not None and p in found), None)


def destination_target(
    repo: Repository,
    engine: Engine,
    *,
    configured: Mapping[str, str] | None = None,
    given: str | None = None,
    backup: Manifest | None = None,
    option: str = "--target",
) -> DestinationTarget:
    """The target ``engine``'s database belongs to: its safety backups and restore
    records are filed under it.

    The configured target (``configured``: name -> database URL) whose URL names this
    database; else the one target with regular backups whose name, or whose newest
    backup's database, is this database's name; else the database name itself (a database
    no target knows, e.g. a copy). Where several qualify, ``given`` (the user's
    ``--target``) and then ``backup``'s own target settle it; otherwise ``UsageError``,
    one line listing them and naming ``option``. ``WrongKey`` if a backup's private
    section cannot be read.
    """
    database = engine.database_name()
    preferred = (given, backup.target if backup is not None else None)
    matches = _configured_matches(engine, configured or {})
    if matches:
        chosen = _pick(matches, preferred)
        if chosen is None:
            raise UsageError(
                f"cannot tell which target {engine.describe()} belongs to: the configured "
                f"targets {_listing(matches)} all name database {database!r}; give {option}"
            )
        return DestinationTarget(chosen, f"the configured target of database {database!r}")
    newest = regular_targets(repo)
    found = sorted(
        name
        for name, m in newest.items()
        if name == database or backup_database_name(repo, m) == database
    )
    if found:
        chosen = _pick(found, preferred)
        if chosen is None:
            raise UsageError(
                f"cannot tell which target {engine.describe()} belongs to: targets "
                f"{_listing(found)} all have backups of database {database!r}; give {option}"
            )
        return DestinationTarget(chosen, f"its backups are of database {database!r}")
    return DestinationTarget(database, "no target has backups of this database: its name")


def source_target(
    repo: Repository,
    engine: Engine,
    *,
    configured: Mapping[str, str] | None = None,
    given: str | None = None,
    option: str = "--target",
) -> str:
    """Whose backups ``latest``/``--before`` choose from: ``given``, else the target
    the destination belongs to (:func:`destination_target`) when it is configured or has
    backups, else the only target with backups (restoring into a new copy). Raises
    ``UsageError`` (one line listing the targets) when the destination belongs to several
    targets, or to none and several have backups."""
    if given is not None and given.strip():
        return given.strip()
    target = destination_target(repo, engine, configured=configured, option=option)
    known = regular_targets(repo)
    if target.name not in known and target.name not in (configured or {}):
        if repo.list_backups(target.name):  # only safety backups left: still its own
            return target.name
        everything = set(known) | set(configured or {})
        if len(everything) == 1:
            return everything.pop()
        raise UsageError(
            f"no target's backups are of database {engine.database_name()!r}: give {option} "
            f"to say whose backups to restore into {engine.describe()} "
            f"(targets: {_listing(everything)})"
        )
    return target.name


def latest_of(repo: Repository, target: str, *, include_safety: bool = False) -> Manifest:
    """The newest dump of ``target`` (base backups and dumps of a point in time are
    passed over); safety backups only when ``include_safety``.
    Raises ``BackupNotFound``, or ``ManifestDamaged`` (exit 7) when the only backups of
    ``target`` are damaged ones (damaged newer ones are passed over, with a warning)."""
    backups = [
        m
        for m in repo.list_backups(target)
        if (include_safety or not is_safety_backup(m))
        and not m.is_base_backup
        and not is_pitr_dump(m)
    ]
    if not backups:
        left_out = "" if include_safety else " (safety backups left out: --include-safety)"
        repo.raise_if_only_damaged(target, f"there is no readable backup of target {target!r}")
        raise BackupNotFound(
            f"there is no backup of target {target!r} in {repo.storage.describe()}{left_out}"
        )
    return backups[-1]


def newest_good_before(
    repository: Repository, when: str, target: str | None, *, include_safety: bool = False
) -> Manifest:
    """The newest backup of ``target`` (all targets when ``None``) started before ``when``
    (ISO 8601; local time unless it names an offset) whose last verification did not fail;
    safety backups only when ``include_safety``. Raises ``UsageError`` for a time that does
    not parse, ``BackupNotFound`` when no backup qualifies."""
    try:
        instant = datetime.fromisoformat(when.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise UsageError(f'--before {when!r} is not a time like "2026-11-20 14:00"') from exc
    if instant.tzinfo is None:
        instant = instant.astimezone()  # the machine's local time zone
    verdicts = last_verifications(repository.storage)
    candidates = [
        m
        for m in repository.list_backups(target)
        if parse_iso(m.started_at) < instant
        and (include_safety or not is_safety_backup(m))
        and not m.is_base_backup
        and not is_pitr_dump(m)
        and not (m.backup_id in verdicts and not verdicts[m.backup_id].ok)
    ]
    if not candidates:
        of = f" of target {target!r}" if target is not None else ""
        raise BackupNotFound(f"no good backup{of} started before {instant.isoformat()}")
    return max(candidates, key=lambda m: m.started_at)


@dataclass(frozen=True)
class RollbackChoice:
    """What ``rollback`` restores: ``manifest`` (a safety backup) and the restore it undoes
    (``None`` for a safety backup taken before restores were recorded)."""

    manifest: Manifest
    target: str
    undoes: RestoreRecord | None
    notes: tuple[str, ...] = ()

    def describe(self) -> str:
        """One line for the plan, e.g. ``undoes the restore of backup X at T, returning
        to the state of T0 (safety backup S)``."""
        state = f"the state of {human_time(self.manifest.started_at)}"
        if self.undoes is None:
            return (
                f"restores the newest safety backup of {self.target} ({state}); it was taken "
                "by an older strongroom, which did not record the restore it protects"
            )
        what = "rollback" if self.undoes.kind == "rollback" else "restore"
        return (
            f"undoes the {what} of backup {self.undoes.backup_id} at "
            f"{human_time(self.undoes.started_at)}, returning to {state} "
            f"(safety backup {self.manifest.backup_id})"
        )


def find_rollback(
    repo: Repository, target: str, destination: str, legacy_targets: Iterable[str] = ()
) -> RollbackChoice:
    """The safety backup that returns the database (``destination``: its fingerprint, see
    :func:`destination_fingerprint`) of ``target`` to its state before the last restore
    into it that completed. When no recorded restore into it completed (restores by an
    older version, which kept no records), the newest safety backup of ``target`` or of
    ``legacy_targets`` (where older versions filed them: the database name) that no record
    claims. Raises ``UsageError`` (one line) when there is nothing to roll back to."""
    history = restore_history(repo.storage, target, destination)
    if not history:
        return _legacy_rollback(repo, target, legacy_targets)
    last = last_completed(history)
    later = history[history.index(last) + 1 :] if last is not None else history
    unknown = [r for r in later if r.swap_unknown]
    if unknown:
        # killed during its swap: the next command completed or undid it, and which is not
        # recorded; going back to ``last`` would silently skip it (and lose what was
        # written between the two restores), so say what to restore instead
        newest = unknown[-1]
        before = (
            f"restore its safety backup: strongroom restore {newest.safety_backup_id} "
            "--to <the database>"
            if newest.safety_backup_id
            else "it took no safety backup"
        )
        raise UsageError(
            f"the restore of backup {newest.backup_id} into target {target!r} at "
            f"{human_time(newest.started_at)} was interrupted during its swap, which a later "
            "command completed or undid (the record cannot tell which): rollback will not "
            f"guess; to return to the state just before that restore, {before}"
        )
    notes = tuple(
        f"the restore of backup {r.backup_id} at {human_time(r.started_at)} was interrupted; "
        f"if it changed the database, its safety backup {r.safety_backup_id or '(none)'} "
        "holds the state before it"
        for r in later
        if r.interrupted
    )
    failed = sum(1 for r in later if not r.interrupted)
    if failed:
        notes += (f"{failed} later restore(s) failed before the swap: they changed nothing",)
    if last is None:
        try:  # a restore by an older version may still be the one to undo
            older = _legacy_rollback(repo, target, legacy_targets)
        except UsageError:
            raise UsageError(
                f"no restore into target {target!r} has completed, so there is nothing to "
                f"roll back ({len(history)} restore(s) recorded, none swapped in)"
            ) from None
        return RollbackChoice(older.manifest, target, None, notes)
    when = human_time(last.started_at)
    if last.safety_backup_id is None:
        raise UsageError(
            f"the last restore into target {target!r} (backup {last.backup_id} at {when}) "
            "took no safety backup (--no-safety-backup, or the database was empty or new): "
            "there is nothing to roll back to"
        )
    try:
        manifest = repo.load_manifest(last.safety_backup_id)
    except BackupNotFound:
        raise UsageError(
            f"the safety backup {last.safety_backup_id} of the last restore into target "
            f"{target!r} (backup {last.backup_id} at {when}) has been forgotten: there is "
            "nothing to roll back to"
        ) from None
    return RollbackChoice(manifest, target, last, notes)


def _legacy_rollback(
    repo: Repository, target: str, legacy_targets: Iterable[str]
) -> RollbackChoice:
    names = [target, *(n for n in legacy_targets if n != target)]
    recorded = {r.safety_backup_id for r in restore_history(repo.storage)}
    candidates = [
        m
        for name in names
        for m in repo.list_backups(name)
        if is_safety_backup(m) and m.backup_id not in recorded  # older versions' only
    ]
    if not candidates:
        raise UsageError(
            f"there is no restore of target {target!r} to roll back (no {PRE_RESTORE_TAG} "
            "safety backup)"
        )
    newest = max(candidates, key=lambda m: (m.started_at, m.backup_id))
    return RollbackChoice(newest, target, None)
