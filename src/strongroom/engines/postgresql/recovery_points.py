"""Named restore points of a PostgreSQL cluster: ``pg_create_restore_point`` on the server,
then ``pg_switch_wal()`` so the segment holding the point is archived at once (not at the
next ``archive_timeout``). docs/design.md, "WAL archive and base backups"."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

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


def _check_rights(conn: psycopg.Connection[Any], server: PostgresServer) -> None:
    """``DatabaseError`` (exit 5) naming what to grant when the role may not run both
    functions: checked first, so a point is never made that could not be switched out
    and recorded (a retry would put a second point of that name in the WAL)."""
    row = conn.execute(
        "SELECT current_user, has_function_privilege('pg_create_restore_point(text)', "
        "'EXECUTE'), has_function_privilege('pg_switch_wal()', 'EXECUTE')"
    ).fetchone()
    if row is None or (row[1] and row[2]):
        return
    missing = [
        f
        for f, ok in (("pg_create_restore_point(text)", row[1]), ("pg_switch_wal()", row[2]))
        if not ok
    ]
    raise DatabaseError(
        f"role {row[0]} at {server.host_port()} may not make restore points: connect as a "
        f"superuser, or GRANT EXECUTE ON FUNCTION {', '.join(missing)} TO {row[0]}"
    )


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
    url: str, name: str, reserve: Callable[[str], Callable[[], None]] | None = None
) -> CreatedRestorePoint:
    """Create restore point ``name`` on the cluster at ``url`` (a superuser, or a role
    granted ``pg_create_restore_point``/``pg_switch_wal``) and switch WAL. ``reserve`` is
    called with the cluster's stream once the role is known to may do both, before the
    point is made (it raises to stop); it returns what undoes the reservation, called
    when the point could not be made. Raises ``UsageError`` for a bad name or a cluster
    that does not archive, ``DatabaseError`` (exit 5) when the role lacks the rights or
    the server refuses."""
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
            _check_rights(conn, server)
            undo = reserve(stream_name(system_identifier)) if reserve is not None else None
            try:
                made = conn.execute(
                    "SELECT pg_create_restore_point(%s)::text, clock_timestamp()",
                    (name,),
                ).fetchone()
            except BaseException:
                if undo is not None:
                    undo()
                raise
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
