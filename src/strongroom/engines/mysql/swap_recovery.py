"""Recovery of a MySQL/MariaDB swap killed at any step, from its journal (``swap_store``).

:func:`recover` finds every journal on the server, takes its lock (a dead client's
session still holding it is ended with ``KILL`` when the journal says it was written by a
process of this host that no longer exists; else it waits up to ``LOCK_WAIT`` and reports
``busy``) and settles it from the tables it finds (:func:`settle`): complete when the
one ``RENAME TABLE`` took effect, else undo. docs/design.md, "Swap journal" (MySQL).
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

import pymysql

from strongroom.engines.base import SwapOutcome, SwapRecovery
from strongroom.engines.mysql import swap as ops
from strongroom.engines.mysql.connection import MysqlConnection
from strongroom.engines.mysql.objects import SchemaObjects, names
from strongroom.engines.mysql.restore import alter_shape, schema_shape
from strongroom.engines.mysql.stats import quote_ident
from strongroom.engines.mysql.swap_store import (
    _OLD_NAME,
    _STAGED_NAME,
    LOCK_WAIT,
    TABLE,
    Details,
    clear,
    lock,
    lock_key,
    read,
    unlock,
)
from strongroom.engines.mysql.tools import error_text
from strongroom.engines.swap_journal import JournalEntry, JournalUnreadable, SwapStep
from strongroom.errors import DatabaseUnreachable

logger = logging.getLogger("strongroom.engines.mysql")


def _holder(cur: Any, target: str) -> int | None:
    cur.execute("SELECT IS_USED_LOCK(%s)", (lock_key(target),))
    row = cur.fetchone()
    return int(row[0]) if row and row[0] is not None else None


def _writer_is_gone(entry: JournalEntry) -> bool:
    """Whether the process that wrote ``entry`` ran on this host and no longer exists."""
    if entry.host != socket.gethostname():
        return False
    try:
        os.kill(entry.pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def _take_lock(cur: Any, entry: JournalEntry, details: Details) -> bool:
    """Take the swap lock of ``entry``'s target. The session of a killed swap holds it
    until the statement it was running ends (a DDL waiting for a metadata lock may run
    much later): when that session is the journal's and its writer is gone, it is ended
    (``KILL``), so its statement never runs."""
    if lock(cur, entry.target, 0):
        return True
    holder = _holder(cur, entry.target)
    if holder is not None and holder == details.connection_id and _writer_is_gone(entry):
        try:
            cur.execute(f"KILL CONNECTION {int(holder)}")
            logger.info("ended session %s of the killed swap into %s", holder, entry.target)
        except pymysql.Error as exc:
            logger.info("could not end session %s: %s", holder, error_text(exc))
    return lock(cur, entry.target, LOCK_WAIT)


# --- settling ----------------------------------------------------------------------------
def _tables(cur: Any, database: str) -> set[str]:
    rows = names(
        cur,
        "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s"
        " AND TABLE_TYPE <> 'VIEW'",
        database,
    )
    return {row[0] for row in rows}


def committed(cur: Any, entry: JournalEntry, details: Details) -> bool:
    """Whether the swap's commit point (the one ``RENAME TABLE``) took effect: the
    restored tables are in the target and no longer staged, the target's own are in the
    old database. With no table either side, whether the journal got past it."""
    incoming, current = set(details.incoming.tables), set(details.current.tables)
    if not incoming and not current:
        return entry.step in (SwapStep.FINISH, SwapStep.DROP_OLD)
    moved_in = not incoming or (
        incoming <= _tables(cur, entry.target) and not incoming & _tables(cur, entry.staged)
    )
    moved_away = not current or current <= _tables(cur, entry.old or "")
    return moved_in and moved_away


def _drop(cur: Any, name: str) -> None:
    if schema_shape(cur, name) is not None:
        cur.execute(f"DROP DATABASE {quote_ident(name)}")


def settle(cur: Any, entry: JournalEntry, where: str) -> tuple[SwapOutcome, str]:
    """Complete or undo the swap ``entry`` describes, from the tables the server shows
    (the caller holds its lock). Completing: every object in the target is dropped and the
    restored ones created (character set first), the target's own re-created beside its
    tables in the old database when kept, else that database is dropped; the staged one
    is dropped. Undoing: the target's triggers are re-created if any is missing, the old
    database (holding nothing but the journal) and the staged one are dropped (and the
    target, when the swap created it and it is still empty). The journal goes last, so a
    recovery killed half-way is done again. Returns (outcome, the one-line report).
    Raises ``pymysql.Error`` or ``JournalUnreadable``; the journal then stays."""
    details = Details.of(entry)
    old, target = entry.old or "", entry.target
    head = f"the interrupted swap into {where} (stopped at step {entry.step})"
    if committed(cur, entry, details):
        current, incoming = details.current, details.incoming
        ops.drop_objects(cur, target)
        if details.shape is not None and schema_shape(cur, target) != details.shape:
            alter_shape(cur, target, details.shape)
        ops.complete(cur, target, SchemaObjects(), incoming, None)
        _drop(cur, entry.staged)
        if entry.keep_old and not current.empty:
            ops.drop_objects(cur, old)
            ops.keep_old_objects(cur, target, old, current)
            clear(cur, old)
            fate = f"; the replaced database is kept as {old}"
        else:
            _drop(cur, old)
            fate = "" if current.empty else "; the replaced database was dropped"
        return "completed", f"completed {head}: the restored database is in place{fate}"
    leftover = _tables(cur, old) - {TABLE}
    if leftover:
        raise JournalUnreadable(f"the old database {old} holds tables: left as it is")
    present = {row[0] for row in names(cur, _TRIGGERS, target)}
    if any(t.name not in present for t in details.current.triggers):
        for trigger in details.current.triggers:
            ops.drop(cur, target, trigger)
        for trigger in details.current.triggers:
            ops.create(cur, target, trigger)
    _drop(cur, entry.staged)
    if details.created and not _tables(cur, target):
        _drop(cur, target)
        back = "there was no database before and there is none now"
    else:
        back = "the original database is back as it was"
    _drop(cur, old)
    return "undone", f"undid {head}: {back}; the restored copy was dropped"


_TRIGGERS = "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = %s"
_JOURNALS = (
    "SELECT TABLE_SCHEMA FROM information_schema.TABLES WHERE TABLE_NAME = %s"
    " AND TABLE_SCHEMA LIKE '%%\\_old\\_%%' ORDER BY TABLE_SCHEMA"
)


def _recover_one(db: MysqlConnection, cur: Any, carrier: str) -> SwapRecovery | None:
    hp = db.host_port()
    try:
        entry = read(cur, carrier)
        if entry is None:
            return None
        details = Details.of(entry)
        if (
            entry.old != carrier
            or not _OLD_NAME.match(carrier)
            or not _STAGED_NAME.match(entry.staged)
        ):
            raise JournalUnreadable(f"it names other databases ({entry.target}, {entry.staged})")
    except JournalUnreadable as exc:
        return SwapRecovery(
            carrier,
            "failed",
            f"the swap journal in database {carrier} at {hp} cannot be used ({exc.message}); "
            "left alone",
        )
    where = f"database {entry.target} at {hp}"
    if not _take_lock(cur, entry, details):
        return SwapRecovery(
            entry.target,
            "busy",
            f"a swap into {where} is in progress (connection {_holder(cur, entry.target)} "
            "holds its lock): left alone; if no strongroom runs it any more, KILL that "
            "connection and run strongroom recover",
        )
    try:
        fresh = read(cur, carrier)
        if fresh is None:
            return None  # settled meanwhile
        outcome, line = settle(cur, fresh, where)
        return SwapRecovery(entry.target, outcome, line)
    except (pymysql.Error, JournalUnreadable) as exc:
        reason = db.redact(exc.message if isinstance(exc, JournalUnreadable) else error_text(exc))
        return SwapRecovery(
            entry.target,
            "failed",
            f"could not settle the interrupted swap into {where} (stopped at step "
            f"{entry.step}): {reason}; run strongroom recover --to <its URL> as a user with "
            "rights on its databases",
        )
    finally:
        unlock(cur, entry.target)


def recover(db: MysqlConnection) -> list[SwapRecovery]:
    """Settle every interrupted swap on ``db``'s server (``Engine.recover_swaps``): one
    query when there is none. Raises ``DatabaseUnreachable``/``DatabaseAuthFailed`` when
    it cannot look."""
    with db.connect() as conn, conn.cursor() as cur:
        try:
            cur.execute(_JOURNALS, (TABLE,))
            carriers = [str(row[0]) for row in cur.fetchall()]
            results = [_recover_one(db, cur, c) for c in carriers]
        except pymysql.Error as exc:
            raise DatabaseUnreachable(
                f"cannot look for interrupted swaps at {db.host_port()}: "
                f"{db.redact(error_text(exc))}"
            ) from None
    return [r for r in results if r is not None]
