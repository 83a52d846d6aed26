"""Putting a restored PostgreSQL database in the target's place.

The staged database (``<name>_sr_<8 hex>``) was restored and verified beside the target. The
swap: check the role may replace the target (it owns it, with CREATEDB, or is a superuser),
close the target to new sessions, end its sessions, rename it ``<name>_old_<UTC time>``
(retried while sessions linger), re-open the old one to connections, rename the staged
database to the target's name. If that last rename fails, the old name is put back.
"""

from __future__ import annotations

import logging
import secrets
import time
from contextlib import suppress
from typing import Any

import psycopg
from psycopg import sql

from strongroom.engines.postgresql.connection import PostgresServer
from strongroom.engines.tools import first_line as _first_line
from strongroom.errors import RestoreFailed

logger = logging.getLogger("strongroom.engines.postgres")


def limit_name(base: str, suffix: str) -> str:
    """``base + suffix`` cut to PostgreSQL's 63-byte identifier limit (suffix kept)."""
    room = 63 - len(suffix.encode())
    encoded = base.encode()[:room].decode("utf-8", "ignore")
    return encoded + suffix


def rename(conn: psycopg.Connection[Any], old: str, new: str) -> None:
    conn.execute(
        sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new))
    )


def swap_into_place(target: PostgresServer, staged: str) -> tuple[bool, str]:
    """Rename ``target``'s database away (if it exists) and ``staged`` into its name.
    Returns (whether a database was replaced, the name it was kept under). Raises
    ``RestoreFailed`` with the original database unchanged."""
    name = target.database_name()
    old_name = limit_name(name, f"_old_{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}")
    with target.maintenance_connect() as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists:
            check_may_rename(target, conn, name)
            taken = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (old_name,)
            ).fetchone()
            if taken:  # two swaps within one second
                old_name = limit_name(old_name, f"_{secrets.token_hex(2)}")
            rename_away(target, conn, name, old_name)
        try:
            rename(conn, staged, name)
        except psycopg.Error as exc:
            if exists:
                with suppress(psycopg.Error):
                    rename(conn, old_name, name)
            raise RestoreFailed(
                f"could not rename the restored database into place: "
                f"{target.redact(_first_line(str(exc)))}; the original {name} is unchanged"
            ) from None
    return bool(exists), old_name


def check_may_replace(target: PostgresServer) -> None:
    """Raise ``RestoreFailed`` now, before any work, if the target exists and this role
    could not swap a restored copy into its place."""
    with target.maintenance_connect() as conn:
        if conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (target.database_name(),)
        ).fetchone():
            check_may_rename(target, conn, target.database_name())


def check_may_rename(target: PostgresServer, conn: psycopg.Connection[Any], name: str) -> None:
    row = conn.execute(
        "SELECT r.rolsuper OR pg_has_role(current_user, d.datdba, 'MEMBER'), r.rolcreatedb"
        " FROM pg_database d, pg_roles r WHERE d.datname = %s AND r.rolname = current_user",
        (name,),
    ).fetchone()
    if not row or not row[0] or not (row[1] or row[0]):
        raise RestoreFailed(
            f"user {target.user()} may not replace {target.where()}: it must own the database "
            "(with CREATEDB) or be a superuser; the original database is unchanged"
        )


def rename_away(
    target: PostgresServer, conn: psycopg.Connection[Any], name: str, old_name: str
) -> None:
    """Close the target to new sessions, end the current ones, rename it."""
    conn.execute(
        sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(sql.Identifier(name))
    )
    try:
        for attempt in range(10):
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            try:
                rename(conn, name, old_name)
                break
            except psycopg.errors.ObjectInUse:
                if attempt == 9:
                    raise
                time.sleep(0.2)
    except psycopg.Error as exc:
        with suppress(psycopg.Error):
            conn.execute(
                sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(
                    sql.Identifier(name)
                )
            )
        raise RestoreFailed(
            f"could not take {target.where()} out of service: "
            f"{target.redact(_first_line(str(exc)))}; the original database is unchanged"
        ) from None
    conn.execute(
        sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(sql.Identifier(old_name))
    )
