"""Point-in-time recovery of a PostgreSQL cluster: choose the base backup, lay it down,
configure recovery from the WAL archive, and (optionally) run it.

docs/design.md, "WAL archive and base backups"."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from strongroom.engines.postgresql.physical import (
    PHYSICAL_FORMAT,
    RecoveryOutcome,
    RecoveryTarget,
    configure_recovery,
    find_pg_ctl,
    lay_down,
    prepare_datadir,
    start_recovery,
)
from strongroom.engines.postgresql.timelines import format_lsn
from strongroom.engines.postgresql.timelines import parse_lsn as parse_lsn
from strongroom.errors import BackupNotFound, UsageError
from strongroom.repository.ids import parse_iso
from strongroom.repository.manifest import Manifest
from strongroom.repository.repository import Repository

log = logging.getLogger("strongroom.pitr")


def parse_target_time(text: str) -> datetime:
    """``--to-time``: ISO 8601, local time unless it names an offset; ``UsageError``."""
    try:
        instant = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        if instant.tzinfo is None:
            instant = instant.astimezone()
        return instant.astimezone(UTC)
    except (ValueError, OverflowError) as exc:  # overflow: year 1 or 9999 shifted to UTC
        raise UsageError(f'--to-time {text!r} is not a time like "2026-11-30 14:03:12+01"') from exc


def refuse_datadir_inside(datadir: Path, repository: str | None) -> None:
    """``UsageError`` (exit 2) when ``datadir`` (absolute) is inside another cluster's data
    directory (a folder above it holds ``global/pg_control`` and ``pg_wal/``: the copy
    would land in that cluster, its base backups and its disk) or inside the local
    repository folder ``repository`` (a location without ``://``)."""
    for folder in datadir.parents:
        try:
            found = (folder / "global/pg_control").is_file() and (folder / "pg_wal").is_dir()
        except OSError:
            found = False
        if found:
            raise UsageError(
                f"{datadir} is inside the data directory of a PostgreSQL cluster ({folder}): "
                "restore into a folder of its own"
            )
    if repository and "://" not in repository:
        where = Path(repository).expanduser().resolve()
        if datadir == where or where in datadir.parents:
            raise UsageError(f"{datadir} is inside the repository ({where}): restore elsewhere")


def physical_facts(repo: Repository, manifest: Manifest) -> dict[str, Any]:
    """What the base backup recorded (private section): start/stop LSN, timeline, stop
    time, system identifier, stream, server version, databases."""
    state = repo.private_section(manifest).engine_state or {}
    facts = state.get("physical")
    if not isinstance(facts, dict):
        raise UsageError(f"backup {manifest.backup_id} is not a base backup")
    return facts


def choose_base_backup(
    repo: Repository,
    reference: str | None,
    target: str | None,
    when: datetime | None,
    lsn: int | None,
    *,
    xid: int | None = None,
    stream: str | None = None,
) -> Manifest:
    """The base backup to recover from: the one ``reference`` names, else the newest
    one (of ``target``, of log stream ``stream``) that ended before ``when`` / ``lsn``,
    or began before transaction ``xid`` started (any, for the latest). ``BackupNotFound``
    names the window when none qualifies; ``UsageError`` when base backups of several
    clusters qualify and neither ``target`` nor ``stream`` says which."""
    if reference is not None and reference != "latest":
        manifest = repo.resolve(reference)
        if manifest.dump_format != PHYSICAL_FORMAT:
            raise UsageError(
                f"backup {manifest.backup_id} is a logical dump, not a base backup: restore "
                "it with --to DATABASE_URL"
            )
        facts = physical_facts(repo, manifest)
        late = (when is not None and parse_iso(str(facts["stop_time"])) > when) or (
            lsn is not None and parse_lsn(str(facts["stop_lsn"])) > lsn
        )
        next_xid = facts.get("next_xid")
        if xid is not None and not (_begins_before(next_xid, xid) and _reachable(next_xid, xid)):
            raise BackupNotFound(
                f"base backup {manifest.backup_id} cannot recover to transaction {xid} (its "
                f"first transaction is {next_xid}): name another one, or none"
            )
        if late:
            raise BackupNotFound(
                f"base backup {manifest.backup_id} ended after the target ({facts['stop_time']}"
                f", LSN {facts['stop_lsn']}): name an older one, or none"
            )
        return manifest
    candidates = [m for m in repo.list_backups(target) if m.dump_format == PHYSICAL_FORMAT]
    if not candidates:
        where = f" of target {target!r}" if target else ""
        raise BackupNotFound(f"there is no base backup{where} (strongroom backup --physical)")
    usable = []
    for manifest in candidates:
        facts = physical_facts(repo, manifest)
        if when is not None and parse_iso(str(facts["stop_time"])) > when:
            continue
        if lsn is not None and parse_lsn(str(facts["stop_lsn"])) > lsn:
            continue
        if stream is not None and facts.get("stream") != stream:
            continue
        if xid is not None and not _begins_before(facts.get("next_xid"), xid):
            continue
        if xid is not None and not _reachable(facts.get("next_xid"), xid):
            continue
        usable.append(manifest)
    if stream is None and target is None:
        _refuse_several_clusters(repo, usable or candidates)
    if not usable:
        oldest = physical_facts(repo, candidates[0])
        if xid is not None and xid >= 1 << 32 and _begins_before(oldest.get("next_xid"), xid):
            raise BackupNotFound(
                f"transaction {xid} (epoch {xid >> 32}, id {xid & 0xFFFFFFFF}) is 2^31 or more "
                "transactions after every base backup's first: no cluster can have reached it "
                f"(PostgreSQL would stop at id {xid & 0xFFFFFFFF} of an earlier epoch)"
            )
        if xid is not None:
            raise BackupNotFound(
                f"transaction {xid} is before the oldest base backup (its first transaction "
                f"is {oldest.get('next_xid', 'not recorded')}): nothing to recover from"
            )
        asked = when.isoformat() if when is not None else f"LSN {format_lsn(lsn or 0)}"
        raise BackupNotFound(
            f"{asked} is before the oldest base backup's end ({oldest['stop_time']}, LSN "
            f"{oldest['stop_lsn']}): nothing to recover from"
        )
    return usable[-1]


def _begins_before(next_xid: object, xid: int) -> bool:
    """Whether a base backup whose first later transaction is ``next_xid`` (64-bit, with
    its epoch) can recover to ``xid`` (64-bit, or the 32-bit id ``xmin`` shows). A backup
    that did not record it (made before strongroom recorded it) is used."""
    if not isinstance(next_xid, int):
        return True
    if xid < 1 << 32:
        return (next_xid & 0xFFFFFFFF) <= xid
    return next_xid <= xid


def _reachable(next_xid: object, xid: int) -> bool:
    """Whether PostgreSQL, which matches only the low 32 bits of ``recovery_target_xid``,
    meets the 64-bit ``xid`` itself recovering from a backup whose first later
    transaction is ``next_xid``: fewer than 2^31 transactions on (wraparound protection
    keeps a cluster within that), else it would stop at an older transaction."""
    if not isinstance(next_xid, int) or xid < 1 << 32:
        return True
    return xid - next_xid < 1 << 31


def _refuse_several_clusters(repo: Repository, manifests: list[Manifest]) -> None:
    """``UsageError`` (exit 2) when ``manifests`` are base backups of more than one
    cluster (log stream) and nothing said which: the newest of any would recover another
    cluster than meant."""
    streams = {str(physical_facts(repo, m).get("stream")): m.target for m in manifests}
    if len(streams) > 1:
        targets = ", ".join(sorted({str(t) for t in streams.values()}))
        raise UsageError(
            f"the repository holds base backups of {len(streams)} clusters (targets "
            f"{targets}): say which with --target NAME or name the base backup"
        )


@dataclass(frozen=True)
class PhysicalRestoreReport:
    manifest: Manifest
    datadir: Path
    members: int  # files and folders laid down
    target: RecoveryTarget
    seconds: float


def restore_physical(
    repo: Repository,
    manifest: Manifest,
    datadir: Path,
    *,
    target: RecoveryTarget,
    restore_command: str,
    port: int | None = None,
) -> PhysicalRestoreReport:
    """Lay ``manifest`` down in ``datadir`` (new or empty) and configure recovery to
    ``target`` with ``restore_command`` (``run_recovery`` starts it). A failure while
    laying down leaves the folder for the user to inspect."""
    clock = time.monotonic()
    prepare_datadir(datadir)
    members = lay_down(repo.read_stream(manifest), datadir)
    configure_recovery(datadir, restore_command, target, port)
    log.info("laid down base backup %s in %s (%d members)", manifest.backup_id, datadir, members)
    return PhysicalRestoreReport(manifest, datadir, members, target, time.monotonic() - clock)


def run_recovery(server_version: str, datadir: Path) -> RecoveryOutcome:
    """Start the laid-down cluster with its version's ``pg_ctl`` and wait until recovery
    ends (``RestoreFailed`` with the server's reason when it stops instead)."""
    return start_recovery(datadir, find_pg_ctl(server_version))
