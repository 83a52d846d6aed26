"""Putting a restored PostgreSQL database in the target's place, so that a crash at any
moment leaves a state the next strongroom command settles (docs/design.md, "Swap journal").

The staged database (``<name>_sr_<8 hex>``) was restored and verified beside the target.
:func:`swap_into_place` checks the role may replace the target (it owns it, with CREATEDB,
or is a superuser), then, on one maintenance connection holding the target's *swap lock*
(a session advisory lock on ``strongroom-swap:<target>``, released by the server when the
session ends, however the process ended), runs these steps (``swap_journal.SwapStep``):

=============  =========================================================================
close          ``ALTER DATABASE target WITH ALLOW_CONNECTIONS false``
rename_away    end the target's sessions, rename it ``<name>_old_<UTC time>`` (retried
               while sessions linger)
reopen_old     the old database accepts connections again (as the target did)
rename_in      rename the staged database to the target's name: the commit point
drop_old       only without ``keep_old``: drop the old database
finish         both databases get their own comments back, which clears the journal
=============  =========================================================================

(Without a target only ``rename_in`` and ``finish`` run.) Before each step the journal
entry naming it is written as the COMMENT of the staged database (``COMMENT ON DATABASE``,
committed with ``synchronous_commit`` on, so it is durable and precedes the step in the
server's WAL); at ``close`` the target gets it too, as an *anchor*: a recovery renames,
reopens or drops only a database that carries the journal, so a forged one can make
strongroom do only what its writer, who owns every database it sits on, could do. The
comments both databases must end up with travel in the entry (``swap_store.Details``).
The journal lives on the server because every later command touching the server reaches
it, from any host; it dies with the staged database.

:func:`recover` finds every journal on the server, takes its swap lock (waiting up to
``LOCK_WAIT`` for a live swap) and settles it from what it sees, by OID (names change):
if the staged database already has the target's name the swap is *completed* (old
database reopened and its comment back, or dropped when it was not to be kept; the
restored one's comment back), otherwise it is *undone* (original renamed back, reopened
if it was open, its comment back; staged database dropped, which drops the journal). A
swap that fails in-process is settled the same way on the spot.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import asdict
from typing import Any

import psycopg

from strongroom import errors
from strongroom.engines.base import SwapOutcome, SwapRecovery
from strongroom.engines.postgresql.connection import PostgresServer
from strongroom.engines.postgresql.swap_store import (
    KIND,
    Details,
    Found,
    allow,
    anchored,
    by_name,
    by_oid,
    comment,
    comment_of,
    drop,
    holder,
    journal_of,
    journals,
    limit_name,
    lock,
    rename,
    rename_ending_sessions,
    session,
    unlock,
    write,
)
from strongroom.engines.swap_journal import JournalEntry, SwapStep
from strongroom.engines.tools import first_line as _first_line
from strongroom.errors import DatabaseUnreachable, RestoreFailed, StrongroomError

logger = logging.getLogger("strongroom.engines.postgres")

LOCK_WAIT = 30.0  # seconds a swap or a recovery waits for a live swap of the same target


class SwapInterrupted(errors.SwapInterrupted):
    """A swap stopped half-way and could not be settled on the spot; its journal stays on
    the server for the next command (or ``strongroom recover``)."""


class _Unsettled(Exception):
    """Why a journal cannot be settled now (shown to the user)."""


# --- settling a journal ------------------------------------------------------------------
def settle(
    server: PostgresServer, conn: psycopg.Connection[Any], entry: JournalEntry
) -> tuple[SwapOutcome, str]:
    """Complete or undo the swap ``entry`` describes, from what the server shows (the
    caller holds the swap lock; docs/design.md, "Swap journal", has the rules). Returns
    ("completed" or "undone", the one-line report). Idempotent: every action on the
    original is guarded by its carrying the journal, whose removal is the last one.
    Raises ``psycopg.Error`` or ``_Unsettled``; the journal then stays."""
    details = Details.of(entry)
    where = f"database {entry.target} at {server.host_port()}"
    staged = by_oid(conn, details.staged_oid)
    original = by_oid(conn, details.target_oid)
    carries = original is not None and anchored(conn, original.oid, entry)
    if staged is not None and staged.name == entry.target:
        fate = ""
        if original is not None and entry.keep_old:
            if carries:
                if details.allow_connections and not original.allow_connections:
                    allow(conn, original.name, True)
                comment(conn, original.name, details.original_comment)
            fate = f"; the replaced database is kept as {original.name}"
        elif original is not None and carries:
            drop(conn, original.name)
            fate = "; the replaced database was dropped (--drop-old)"
        comment(conn, entry.target, details.final_comment)
        return "completed", (
            f"completed the interrupted swap into {where} (stopped at step {entry.step}): "
            f"the restored database is in place{fate}"
        )
    back = "there was no database before and there is none now"
    if details.target_oid is not None:
        if original is None:
            kept = f" (the restored copy is {staged.name})" if staged else ""
            raise _Unsettled(
                f"the original database (OID {details.target_oid}) no longer exists{kept}"
            )
        if carries:
            if original.name != entry.target:
                if by_name(conn, entry.target) is not None:
                    raise _Unsettled(
                        f"another database is named {entry.target}; the original is {original.name}"
                    )
                rename_ending_sessions(conn, original.name, entry.target)
            if details.allow_connections and not original.allow_connections:
                allow(conn, entry.target, True)
            comment(conn, entry.target, details.original_comment)
        elif original.name != entry.target:
            raise _Unsettled(
                f"the original database is {original.name} and does not carry this swap's "
                "journal: left as it is"
            )
        back = "the original database is back, open to connections"
        if not details.allow_connections:
            back = "the original database is back (connections disallowed, as before)"
    copy = "the restored copy was dropped"
    if staged is not None:
        try:
            drop(conn, staged.name)  # its journal goes with it
        except psycopg.Error as exc:
            comment(conn, staged.name, details.final_comment)  # clears the journal
            copy = f"the restored copy is kept as {staged.name} ({_first_line(str(exc))})"
    return "undone", (
        f"undid the interrupted swap into {where} (stopped at step {entry.step}): {back}; {copy}"
    )


def _recover_one(
    server: PostgresServer, conn: psycopg.Connection[Any], found: Found
) -> SwapRecovery | None:
    hp = server.host_port()
    if found.entry is None:
        return SwapRecovery(
            found.carrier.name,
            "failed",
            f"the swap journal on database {found.carrier.name} at {hp} cannot be read "
            f"({found.problem}); left alone",
        )
    entry = found.entry
    where = f"database {entry.target} at {hp}"
    if not lock(conn, entry.target, LOCK_WAIT):
        pid = holder(conn, entry.target)
        who = f"server process {pid}" if pid else "another session"
        return SwapRecovery(
            entry.target,
            "busy",
            f"a swap into {where} is in progress ({who} holds its lock): left alone; if "
            f"no strongroom runs it any more, end that session (pg_terminate_backend) and run "
            f"strongroom recover",
        )
    try:
        fresh = journal_of(conn, found.carrier.oid)
        if fresh is None:
            return None  # settled meanwhile, by its own swap or another recovery
        outcome, line = settle(server, conn, fresh)
        return SwapRecovery(entry.target, outcome, line)
    except (psycopg.Error, _Unsettled) as exc:
        reason = server.redact(_first_line(str(exc)))
        return SwapRecovery(
            entry.target,
            "failed",
            f"could not settle the interrupted swap into {where} (stopped at step "
            f"{entry.step}): {reason}; run strongroom recover --to <its URL> as its owner "
            "or a superuser",
        )
    finally:
        unlock(conn, entry.target)


def recover(server: PostgresServer) -> list[SwapRecovery]:
    """Settle every interrupted swap on ``server``'s server (``Engine.recover_swaps``).
    Raises ``DatabaseUnreachable``/``DatabaseAuthFailed`` when it cannot look."""
    try:
        with session(server) as conn:
            found = list(journals(conn))
            results = [_recover_one(server, conn, f) for f in found]
    except psycopg.Error as exc:
        raise DatabaseUnreachable(
            f"cannot look for interrupted swaps at {server.host_port()}: "
            f"{server.redact(_first_line(str(exc)))}"
        ) from None
    return [r for r in results if r is not None]


# --- the swap ------------------------------------------------------------------------------
def swap_into_place(
    target: PostgresServer, staged: str, *, keep_old: bool = True
) -> tuple[bool, str | None]:
    """Put database ``staged`` in the place of ``target``'s database (module docstring).
    Returns (whether a database was replaced, the name it is kept under: ``None`` when
    there was none or it was dropped). Raises ``RestoreFailed`` with the original
    database unchanged, or ``SwapInterrupted`` when the swap stopped half-way and could
    not be settled (the next command on the server does it)."""
    name = target.database_name()
    with session(target) as conn:
        if not lock(conn, name, LOCK_WAIT):
            raise RestoreFailed(
                f"another swap into {target.where()} is in progress; the original database "
                "is unchanged"
            )
        try:
            _settle_earlier(target, conn)
            return _swap(target, conn, staged, keep_old)
        except (psycopg.Error, _Unsettled) as exc:  # raised before the first step
            raise RestoreFailed(
                f"could not swap the restored database into {target.where()}: "
                f"{target.redact(_first_line(str(exc)))}; the original database is unchanged"
            ) from None
        finally:
            unlock(conn, name)


def _settle_earlier(target: PostgresServer, conn: psycopg.Connection[Any]) -> None:
    """Settle a killed swap into the same target first (the caller holds its lock)."""
    name = target.database_name()
    for found in list(journals(conn)):
        if found.entry is None or found.entry.target != name:
            continue
        try:
            logger.warning("%s", settle(target, conn, found.entry)[1])
        except (psycopg.Error, _Unsettled) as exc:
            raise RestoreFailed(
                f"an interrupted earlier swap into {target.where()} could not be settled: "
                f"{target.redact(_first_line(str(exc)))}; the restored copy was not swapped "
                "in (strongroom recover --to <its URL> as its owner or a superuser)"
            ) from None


def _old_name(conn: psycopg.Connection[Any], name: str) -> str:
    old = limit_name(name, f"_old_{time.strftime('%Y%m%d_%H%M%S', time.gmtime())}")
    if by_name(conn, old) is not None:  # two swaps within one second
        old = limit_name(old, f"_{secrets.token_hex(2)}")
    return old


def _swap(
    target: PostgresServer, conn: psycopg.Connection[Any], staged: str, keep_old: bool
) -> tuple[bool, str | None]:
    name = target.database_name()
    original = by_name(conn, name)
    incoming = by_name(conn, staged)
    if incoming is None:
        raise _Unsettled(f"the restored database {staged} does not exist")
    if original is not None:
        check_may_rename(target, conn, name)
    details = Details(
        target_oid=original.oid if original else None,
        staged_oid=incoming.oid,
        allow_connections=original.allow_connections if original else True,
        final_comment=comment_of(conn, incoming.oid),
        original_comment=comment_of(conn, original.oid) if original else None,
    )
    old = _old_name(conn, name) if original else None
    entry = JournalEntry(
        engine=KIND,
        target=name,
        staged=staged,
        old=old,
        keep_old=keep_old,
        step=SwapStep.CLOSE if original else SwapStep.RENAME_IN,
        details=asdict(details),
    )
    try:
        if original is not None and old is not None:
            entry = entry.at(SwapStep.CLOSE)
            write(conn, entry, staged, name)  # the target carries it too, second
            allow(conn, name, False)
            entry = entry.at(SwapStep.RENAME_AWAY)
            write(conn, entry, staged)
            rename_ending_sessions(conn, name, old)
            entry = entry.at(SwapStep.REOPEN_OLD)
            write(conn, entry, staged)
            if details.allow_connections:
                allow(conn, old, True)
        entry = entry.at(SwapStep.RENAME_IN)
        write(conn, entry, staged)
        rename(conn, staged, name)
    except BaseException as exc:
        if _settle_after_failure(target, conn, entry, exc) != "completed":
            raise
        if not isinstance(exc, Exception):
            raise
        return original is not None, old if keep_old else None
    # Committed: the restored database has the target's name.
    kept = old if keep_old else None
    try:
        if original is not None and old is not None and not keep_old:
            entry = entry.at(SwapStep.DROP_OLD)
            write(conn, entry, name)
            drop(conn, old)
        entry = entry.at(SwapStep.FINISH)
        write(conn, entry, name)
        if original is not None and old is not None and keep_old:
            comment(conn, old, details.original_comment)
        comment(conn, name, details.final_comment)
    except psycopg.Error as exc:
        logger.warning(
            "the restored database is in place as %s, but finishing the swap failed at step "
            "%s (%s); the next strongroom command on this server finishes it",
            target.where(),
            entry.step,
            target.redact(_first_line(str(exc))),
        )
    return original is not None, kept


def _settle_after_failure(
    target: PostgresServer,
    conn: psycopg.Connection[Any],
    entry: JournalEntry,
    exc: BaseException,
) -> SwapOutcome:
    """A step of this process's swap failed: settle it now (undo, or complete when the
    commit point turned out to have taken effect, e.g. the reply to the rename was lost),
    on ``conn`` if it still works, else on a new session. Raises ``RestoreFailed`` (the
    original is back) for a database error, ``SwapInterrupted`` when it cannot be settled
    now; returns the outcome otherwise (the caller re-raises a non-database exception)."""
    reason = target.redact(_first_line(str(exc))) if isinstance(exc, psycopg.Error) else repr(exc)
    try:
        if not (conn.broken or conn.closed):
            outcome, line = settle(target, conn, entry)
        else:
            outcome, line = _settle_fresh(target, entry)
    except (psycopg.Error, _Unsettled, StrongroomError) as problem:
        raise SwapInterrupted(
            f"the swap into {target.where()} stopped at step {entry.step} ({reason}) and "
            f"could not be settled now ({target.redact(_first_line(str(problem)))}); the next "
            "strongroom command on this server, or strongroom recover --to <its URL>, "
            "completes or undoes it"
        ) from None
    logger.warning("%s", line)
    if outcome == "completed" or not isinstance(exc, psycopg.Error):
        return outcome
    if entry.step is SwapStep.RENAME_IN:
        raise RestoreFailed(
            f"could not rename the restored database into place: {reason}; the original "
            f"{entry.target} is unchanged"
        ) from None
    raise RestoreFailed(
        f"could not take {target.where()} out of service: {reason}; the original database "
        "is unchanged"
    ) from None


def _settle_fresh(target: PostgresServer, entry: JournalEntry) -> tuple[SwapOutcome, str]:
    with session(target) as conn:
        if not lock(conn, entry.target, LOCK_WAIT):
            raise _Unsettled("its lock is still held")
        try:
            fresh = journal_of(conn, Details.of(entry).staged_oid)
            if fresh is None:
                raise _Unsettled("its journal is gone")
            return settle(target, conn, fresh)
        finally:
            unlock(conn, entry.target)


# --- who may swap ----------------------------------------------------------------------
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
