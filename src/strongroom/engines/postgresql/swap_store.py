"""The PostgreSQL swap journal on the server, and what the swap and its recovery share.

The journal (``engines.swap_journal``) is the comment of the staged database (and, from
the first step on, of the target too: an *anchor*, see :func:`anchored`); the swap lock is
a session advisory lock on ``strongroom-swap:<target>`` in the maintenance database; the
statements are the few a swap and a recovery run (rename, connections, drop, comment).
``postgresql.swap`` uses them; docs/design.md, "Swap journal", has the rules.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from strongroom.engines import swap_journal
from strongroom.engines.postgresql.connection import PostgresServer
from strongroom.engines.swap_journal import JournalEntry, JournalUnreadable
from strongroom.errors import StrongroomError

logger = logging.getLogger("strongroom.engines.postgres")

KIND = "postgresql"
RENAME_ATTEMPTS = 10

_JOURNALS_SQL = """
    SELECT d.oid, d.datname, c.description FROM pg_database d
      JOIN pg_shdescription c ON c.objoid = d.oid AND c.classoid = 'pg_database'::regclass
     WHERE strpos(c.description, %s) = 1
     ORDER BY d.oid
"""


@dataclass(frozen=True)
class Database:
    """One row of ``pg_database``: what a swap and a recovery look at."""

    oid: int
    name: str
    allow_connections: bool


@dataclass(frozen=True)
class Details:
    """The PostgreSQL part of a journal entry (``JournalEntry.details``)."""

    target_oid: int | None  # the database being replaced, None when there was none
    staged_oid: int  # the restored database; it carries the journal
    allow_connections: bool  # the target's datallowconn before the swap
    final_comment: str | None  # the comment the restored database ends up with
    original_comment: str | None = None  # the target's own, while it carries the journal

    @classmethod
    def of(cls, entry: JournalEntry) -> Details:
        """Raises ``JournalUnreadable`` for details that are not PostgreSQL's."""
        d = entry.details
        target, staged = d.get("target_oid"), d.get("staged_oid")
        allow, comment = d.get("allow_connections"), d.get("final_comment")
        own = d.get("original_comment")
        if (
            entry.engine != KIND
            or not (target is None or (isinstance(target, int) and not isinstance(target, bool)))
            or not isinstance(staged, int)
            or isinstance(staged, bool)
            or not isinstance(allow, bool)
            or not all(c is None or isinstance(c, str) for c in (comment, own))
        ):
            raise JournalUnreadable("swap journal details are not PostgreSQL's")
        return cls(target, staged, allow, comment, own)


# --- names and small statements --------------------------------------------------------
def limit_name(base: str, suffix: str) -> str:
    """``base + suffix`` cut to PostgreSQL's 63-byte identifier limit (suffix kept)."""
    room = 63 - len(suffix.encode())
    encoded = base.encode()[:room].decode("utf-8", "ignore")
    return encoded + suffix


def rename(conn: psycopg.Connection[Any], old: str, new: str) -> None:
    """``ALTER DATABASE old RENAME TO new``; raises ``psycopg.Error`` (``ObjectInUse``
    while ``old`` has sessions)."""
    conn.execute(
        sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new))
    )


def allow(conn: psycopg.Connection[Any], name: str, allowed: bool) -> None:
    """``ALTER DATABASE name WITH ALLOW_CONNECTIONS allowed``."""
    conn.execute(
        sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(
            sql.Identifier(name), sql.SQL("true" if allowed else "false")
        )
    )


def comment(conn: psycopg.Connection[Any], name: str, text: str | None) -> None:
    """``COMMENT ON DATABASE name IS text`` (``None``: no comment); needs ownership."""
    conn.execute(
        sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(name), sql.Literal(text))
    )


def end_sessions(conn: psycopg.Connection[Any], name: str) -> None:
    """Signal every other session on database ``name`` to end (it does not wait)."""
    conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = %s AND pid <> pg_backend_pid()",
        (name,),
    )


def rename_ending_sessions(conn: psycopg.Connection[Any], old: str, new: str) -> None:
    """Rename ``old`` to ``new``, ending ``old``'s sessions first (retried while they
    linger: ``pg_terminate_backend`` only signals)."""
    for attempt in range(RENAME_ATTEMPTS):
        end_sessions(conn, old)
        try:
            rename(conn, old, new)
            return
        except psycopg.errors.ObjectInUse:
            if attempt == RENAME_ATTEMPTS - 1:
                raise
            time.sleep(0.2)


def drop(conn: psycopg.Connection[Any], name: str) -> None:
    """Drop database ``name`` (missing is fine), ending its sessions."""
    end_sessions(conn, name)
    statement = sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name))
    if conn.info.server_version >= 130000:
        statement = sql.SQL("{} WITH (FORCE)").format(statement)
    conn.execute(statement)


def by_oid(conn: psycopg.Connection[Any], oid: int | None) -> Database | None:
    """The database with this OID now (names change during a swap, OIDs do not)."""
    if oid is None:
        return None
    row = conn.execute(
        "SELECT oid, datname, datallowconn FROM pg_database WHERE oid = %s", (oid,)
    ).fetchone()
    return Database(int(row[0]), str(row[1]), bool(row[2])) if row else None


def by_name(conn: psycopg.Connection[Any], name: str) -> Database | None:
    """The database named ``name`` now, if any."""
    row = conn.execute(
        "SELECT oid, datname, datallowconn FROM pg_database WHERE datname = %s", (name,)
    ).fetchone()
    return Database(int(row[0]), str(row[1]), bool(row[2])) if row else None


# --- the swap lock -----------------------------------------------------------------------
def lock_key(target: str) -> str:
    """The advisory-lock key (text, hashed by the server) of swaps into ``target``."""
    return f"strongroom-swap:{target}"


def lock(conn: psycopg.Connection[Any], target: str, wait: float) -> bool:
    """Take ``target``'s swap lock on ``conn``, waiting up to ``wait`` seconds."""
    key = lock_key(target)
    if wait <= 0:
        row = conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (key,))
        got = row.fetchone()
        return bool(got and got[0])
    conn.execute("SELECT set_config('lock_timeout', %s, false)", (f"{int(wait * 1000)}ms",))
    try:
        conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (key,))
        return True
    except psycopg.errors.LockNotAvailable:
        return False
    finally:
        conn.execute("SELECT set_config('lock_timeout', '0', false)")


def unlock(conn: psycopg.Connection[Any], target: str) -> None:
    """Release ``target``'s swap lock taken on ``conn``; never raises."""
    if conn.broken or conn.closed:
        return  # the server released it with the session
    with suppress(psycopg.Error):
        conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (lock_key(target),))


def holder(conn: psycopg.Connection[Any], target: str) -> int | None:
    """The server process id holding ``target``'s swap lock, if any."""
    with suppress(psycopg.Error):
        row = conn.execute(
            "SELECT l.pid FROM pg_locks l, (SELECT hashtextextended(%s, 0) AS k) h"
            " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
            "   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            "   AND l.classid::bigint = (h.k >> 32) & 4294967295"
            "   AND l.objid::bigint = h.k & 4294967295",
            (lock_key(target),),
        ).fetchone()
        return int(row[0]) if row else None
    return None


# --- the journal on the server -----------------------------------------------------------
def write(conn: psycopg.Connection[Any], entry: JournalEntry, *carriers: str) -> None:
    """Write ``entry`` as the comment of each of ``carriers``, in order (each committed:
    autocommit), then the test hook (``swap_journal.kill_point``)."""
    for carrier in carriers:
        comment(conn, carrier, swap_journal.encode(entry))
    swap_journal.kill_point(entry.step)


def anchored(conn: psycopg.Connection[Any], oid: int, entry: JournalEntry) -> bool:
    """Whether database ``oid`` carries ``entry``'s swap's journal too. Only a database
    that does is ever renamed, reopened or dropped by a recovery: commenting on a database
    takes its owner, so a journal makes strongroom do only what its writer could do."""
    text = comment_of(conn, oid)
    if text is None or not swap_journal.is_journal(text):
        return False
    try:
        return swap_journal.decode(text).swap_id == entry.swap_id
    except JournalUnreadable:
        return False


@dataclass(frozen=True)
class Found:
    """A journal found on the server: the database carrying it and the entry."""

    carrier: Database
    entry: JournalEntry | None  # None: unreadable (problem says why)
    problem: str | None = None


def journals(conn: psycopg.Connection[Any]) -> Iterator[Found]:
    """Every journal on the server. A journal copied onto another database (its
    ``staged_oid`` is not the database's own) is not one: logged and skipped."""
    for oid, name, text in conn.execute(_JOURNALS_SQL, (swap_journal.PREFIX,)).fetchall():
        carrier = Database(int(oid), str(name), True)
        try:
            entry = swap_journal.decode(str(text))
            details = Details.of(entry)
        except JournalUnreadable as exc:
            yield Found(carrier, None, exc.message)
            continue
        if details.staged_oid != carrier.oid:
            logger.info("database %s carries a copy of another swap's journal; ignored", name)
            continue
        yield Found(carrier, entry)


def journal_of(conn: psycopg.Connection[Any], oid: int) -> JournalEntry | None:
    """The journal database ``oid`` carries now (re-read under the lock)."""
    return next((f.entry for f in journals(conn) if f.carrier.oid == oid), None)


def carries_journal(server: PostgresServer, name: str) -> bool:
    """Whether database ``name`` carries a swap journal (then only a recovery may drop
    it). ``False`` when that cannot be told (the caller's drop then reports)."""
    try:
        with server.maintenance_connect() as conn:
            return any(f.carrier.name == name for f in journals(conn))
    except (psycopg.Error, StrongroomError):
        return False


def comment_of(conn: psycopg.Connection[Any], oid: int) -> str | None:
    """The comment of database ``oid`` (``pg_shdescription``), ``None`` if it has none."""
    row = conn.execute("SELECT shobj_description(%s, 'pg_database')", (oid,)).fetchone()
    return None if not row or row[0] is None else str(row[0])


@contextmanager
def session(server: PostgresServer) -> Iterator[psycopg.Connection[Any]]:
    """A maintenance connection whose commits are durable before the next statement."""
    with server.maintenance_connect() as conn:
        conn.execute("SELECT set_config('synchronous_commit', 'on', false)")
        yield conn
