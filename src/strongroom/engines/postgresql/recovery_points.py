"""Named restore points of a PostgreSQL cluster: ``pg_create_restore_point`` on the server,
then ``pg_switch_wal()`` so the segment holding the point is archived at once (not at the
next ``archive_timeout``). docs/design.md, "WAL archive and base backups"."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg

from strongroom.engines.postgresql.connection import PostgresServer
from strongroom.engines.postgresql.wal import stream_name
from strongroom.engines.tools import first_line
from strongroom.errors import DatabaseError, UsageError

# PostgreSQL keeps restore point names up to MAXFNAMELEN - 1 = 63 bytes; strongroom also
# files them as repository keys, so: letters, digits, ``._-``, starting with a letter/digit
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def check_restore_point_name(name: str) -> str:
    """``name`` when it can name a restore point (1-63 of ``A-Za-z0-9._-``, starting
    with a letter or digit); ``UsageError`` (exit 2) otherwise."""
    if _NAME.fullmatch(name) is None:
        shown = name if len(name) <= 70 else name[:70] + "…"
        raise UsageError(
            f"{shown!r} is not a restore point name (1 to 63 letters, digits, '.', '_' or "
            "'-', starting with a letter or digit)"
        )
    return name


@dataclass(frozen=True)
class CreatedRestorePoint:
    """What the server said: the point's LSN (``X/Y``), its timeline, the cluster's
    stream, when it was made (UTC ISO 8601) and the segment switched to archive it."""

    name: str
    lsn: str
    timeline: int
    stream: str
    time: str
    switched_segment: str


def create_restore_point(
    url: str, name: str, refuse: Callable[[str], None] | None = None
) -> CreatedRestorePoint:
    """Create restore point ``name`` on the cluster at ``url`` (a superuser, or a role
    granted ``pg_create_restore_point``/``pg_switch_wal``) and switch WAL. ``refuse`` is
    called with the cluster's stream before the point is made (it raises to stop). Raises
    ``UsageError`` for a bad name or a cluster that does not archive, ``DatabaseError``
    (exit 5) when the server refuses."""
    check_restore_point_name(name)
    server = PostgresServer(url)
    try:
        with server.connect() as conn:
            row = conn.execute(
                "SELECT current_setting('archive_mode'), current_setting('wal_level'),"
                " system_identifier FROM pg_control_system()"
            ).fetchone()
            if row is None or row[0] == "off" or row[1] == "minimal":
                raise UsageError(
                    f"the cluster at {server.host_port()} does not archive WAL: a restore "
                    "point could never be recovered to"
                )
            system_identifier = int(row[2])
            if refuse is not None:
                refuse(stream_name(system_identifier))
            made = conn.execute(
                "SELECT pg_create_restore_point(%s)::text, clock_timestamp()",
                (name,),
            ).fetchone()
            switched = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
    except psycopg.Error as exc:
        reason = server.redact(first_line(str(exc)))
        raise DatabaseError(
            f"cannot create restore point {name!r} at {server.describe()}: {reason}"
        ) from None
    assert made is not None and switched is not None
    at: datetime = made[1]
    timeline = int(str(switched[0])[:8], 16)
    return CreatedRestorePoint(
        name=name,
        lsn=str(made[0]),
        timeline=timeline,
        stream=stream_name(system_identifier),
        time=at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        switched_segment=str(switched[0]),
    )
