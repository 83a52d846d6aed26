"""``strongroom restore-point NAME``: make a named restore point on a cluster and record
it in the repository (``repository/restore_points.py``), so ``restore
--to-restore-point NAME`` can find the base backup before it and check the WAL up to it."""

from __future__ import annotations

import logging
from collections.abc import Callable

from strongroom.engines.postgresql.timelines import format_lsn, parse_lsn
from strongroom.errors import BackupNotFound, UsageError
from strongroom.repository.repository import Repository
from strongroom.repository.restore_points import (
    RestorePoint,
    find_restore_points,
    list_restore_points,
    release_restore_point,
    reserve_restore_point,
    restore_point_key,
    write_restore_point,
)

log = logging.getLogger("strongroom.restore_points")


def make_restore_point(repo: Repository, url: str, name: str) -> RestorePoint:
    """Create restore point ``name`` on the cluster at ``url``, switch WAL so its segment
    is archived now, and record it. ``UsageError`` (exit 2) for a bad name or a name the
    stream has already or whose claim never completed (the name is claimed atomically
    before the server makes the point); ``BackupNotFound`` (exit 3) when the repository
    holds no base backup of the cluster; ``DatabaseError`` (exit 5) when the role lacks
    the rights or the server refuses."""
    # psycopg (the server's side) and services.pitr only for this: restore-point --list,
    # and restore --to-restore-point's lookups, do not import them
    from strongroom.engines.postgresql.recovery_points import create_restore_point
    from strongroom.services.pitr import physical_facts

    def reserve(stream: str) -> Callable[[], None]:
        bases = [m for m in repo.list_backups() if m.is_base_backup]
        if not any(physical_facts(repo, m).get("stream") == stream for m in bases):
            raise BackupNotFound(
                f"the repository holds no base backup of this cluster (stream {stream}): a "
                "restore point could never be recovered to; take one first (strongroom "
                "backup --physical), with archive_command pushing to this repository"
            )
        reserve_restore_point(repo.storage, stream, name)
        return lambda: release_restore_point(repo.storage, stream, name)

    created = create_restore_point(url, name, reserve)
    point = RestorePoint(
        name=created.name,
        lsn=created.lsn,
        time=created.time,
        timeline=created.timeline,
        stream=created.stream,
    )
    write_restore_point(repo.storage, point)
    log.info(
        "restore point %s at %s (timeline %d, %s)", name, point.lsn, point.timeline, point.stream
    )
    return point


def restore_points(repo: Repository, stream: str | None = None) -> list[RestorePoint]:
    """The recorded restore points (of ``stream``), oldest first."""
    return list_restore_points(repo.storage, stream)


def resolve_restore_point(repo: Repository, name: str, stream: str | None) -> RestorePoint:
    """The point named ``name`` (in ``stream`` when given). ``BackupNotFound`` (exit 3)
    when none is recorded; ``UsageError`` when several streams have one and no stream
    says which."""
    if stream is not None:
        restore_point_key(stream, name)  # validates both parts
    found = [p for p in find_restore_points(repo.storage, name) if stream in (None, p.stream)]
    if not found:
        raise BackupNotFound(
            f"no restore point named {name!r} is recorded in the repository "
            "(strongroom restore-point --list shows them)"
        )
    if len(found) > 1:
        streams = ", ".join(p.stream for p in found)
        raise UsageError(
            f"restore point {name!r} exists in several streams ({streams}): name the base "
            "backup to restore (its stream decides)"
        )
    return found[0]


# a restore point's WAL record (header, block header, xl_restore_point) and a page header
# it may straddle: recovery that stopped at the recorded point ends this close before it
_POINT_RECORD_BYTES = 160


def stopped_elsewhere(point: RestorePoint, redo_done: int | None) -> str | None:
    """Why recovery to ``point`` did not stop at it, or ``None`` when it did (or the
    server did not say where it stopped). ``redo_done`` is the LSN of the last record
    replayed; PostgreSQL stops at the first point of the name, and one made outside
    strongroom (``SELECT pg_create_restore_point``) may come before the recorded one."""
    if redo_done is None:
        return None
    if 0 < parse_lsn(point.lsn) - redo_done <= _POINT_RECORD_BYTES:
        return None
    return (
        f"recovery stopped at LSN {format_lsn(redo_done)}, not at restore point {point.name} "
        f"(LSN {point.lsn}): a point of that name made outside strongroom comes first in the "
        f"WAL; recover with --to-lsn {point.lsn} instead"
    )
