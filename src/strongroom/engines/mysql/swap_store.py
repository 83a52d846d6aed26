"""The MySQL/MariaDB swap journal on the server and its lock (recovery: ``swap_recovery``).

The journal (``engines.swap_journal``) is the one row of a table
``strongroom_swap_journal`` inside the swap's old database ``<name>_old_<UTC time>``,
which the swap creates before anything of the target changes; every entry is committed
(autocommit, InnoDB: durable) before its step runs. It carries what settling needs and
the server cannot give back any more (:class:`Details`): the target's and the incoming
(restored, already retargeted) objects as captured, the character sets, whether the swap
created the target, and the swap session's connection id. The swap lock is
``GET_LOCK('strongroom-swap:<hash of target>')`` held by the swap's session: the server
releases it when that session ends, and a session ends only after the statement it was
running (maybe still waiting for a metadata lock when its client died) has finished.
docs/design.md, "Swap journal" (MySQL), has the rules; ``swap`` has the steps.

``swap_recovery.recover`` finds every journal on the server, takes its lock (a dead client's
session still holding it is ended with ``KILL`` when the journal says it was written by a
process of this host that no longer exists; else it waits up to ``LOCK_WAIT`` and reports
``busy``) and settles it from the tables it finds (``swap_recovery.settle``).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import logging
import re
from dataclasses import dataclass
from typing import Any

import pymysql

from strongroom.engines import swap_journal
from strongroom.engines.mysql.objects import Definition, SchemaObjects
from strongroom.engines.mysql.stats import quote_ident
from strongroom.engines.swap_journal import JournalEntry, JournalUnreadable

logger = logging.getLogger("strongroom.engines.mysql")

KIND = "mysql"
TABLE = "strongroom_swap_journal"
LOCK_WAIT = 10  # seconds a swap or a recovery waits for a live swap of the same target
_STAGED_NAME = re.compile(r".*_sr_[0-9a-f]{8}\Z", re.DOTALL)
_OLD_NAME = re.compile(r".*_old_[0-9]{8}T[0-9]{9}\Z", re.DOTALL)


# --- the journal's details ---------------------------------------------------------------
def _definition_json(item: Definition) -> dict[str, Any]:
    out = dataclasses.asdict(item)
    out["statement"] = base64.b64encode(item.statement).decode("ascii")
    return out


def _objects_json(objects: SchemaObjects) -> dict[str, Any]:
    lists = {k: getattr(objects, k) for k in ("triggers", "views", "routines", "events")}
    return {"tables": list(objects.tables)} | {
        k: [_definition_json(d) for d in v] for k, v in lists.items()
    }


def _objects_of(document: Any) -> SchemaObjects:
    """Raises ``JournalUnreadable`` for anything but :func:`_objects_json`'s shape."""
    try:
        tables = [str(t) for t in document["tables"]]
        lists = []
        for key in ("triggers", "views", "routines", "events"):
            items = []
            for d in document[key]:
                fields = dict(d)
                fields["statement"] = base64.b64decode(fields["statement"], validate=True)
                items.append(Definition(**fields))
            lists.append(items)
    except (KeyError, TypeError, ValueError) as exc:
        raise JournalUnreadable(f"swap journal objects: {exc}") from None
    return SchemaObjects(tables, *lists)


@dataclass(frozen=True)
class Details:
    """The MySQL part of a journal entry (``JournalEntry.details``): the target's own
    objects (``current``) and the restored ones as they go into the target
    (``incoming``), the target's and the staged database's default character set and
    collation (``was``, ``shape``), whether the swap created the target
    (``created``) and the swap session's ``CONNECTION_ID()``."""

    current: SchemaObjects
    incoming: SchemaObjects
    shape: tuple[str, str] | None
    was: tuple[str, str] | None
    created: bool
    connection_id: int

    def as_json(self) -> dict[str, Any]:
        return {
            "current": _objects_json(self.current),
            "incoming": _objects_json(self.incoming),
            "shape": list(self.shape) if self.shape else None,
            "was": list(self.was) if self.was else None,
            "created": self.created,
            "connection_id": self.connection_id,
        }

    @classmethod
    def of(cls, entry: JournalEntry) -> Details:
        """Raises ``JournalUnreadable`` for details that are not MySQL's."""
        d = entry.details
        if entry.engine != KIND or entry.old is None:
            raise JournalUnreadable("swap journal details are not MySQL's")
        try:
            shape, was = d["shape"], d["was"]
            created, conn_id = d["created"], d["connection_id"]
            if not isinstance(created, bool) or not isinstance(conn_id, int):
                raise TypeError("created/connection_id")
            return cls(
                _objects_of(d["current"]),
                _objects_of(d["incoming"]),
                (str(shape[0]), str(shape[1])) if shape else None,
                (str(was[0]), str(was[1])) if was else None,
                created,
                conn_id,
            )
        except (KeyError, TypeError, IndexError) as exc:
            raise JournalUnreadable(f"swap journal details: {exc}") from None


# --- the journal table and the lock --------------------------------------------------------
def create_journal(cur: Any, entry: JournalEntry) -> None:
    """Create the journal table in ``entry.old`` (which must exist) holding ``entry``,
    then the test hook. Raises ``pymysql.Error``."""
    cur.execute(
        f"CREATE TABLE {quote_ident(entry.old or '')}.{TABLE} (id TINYINT PRIMARY KEY,"
        " entry LONGTEXT CHARACTER SET utf8mb4 NOT NULL) ENGINE=InnoDB"
    )
    write(cur, entry)


def write(cur: Any, entry: JournalEntry) -> None:
    """Replace the journal's row with ``entry`` (committed: autocommit), then the test
    hook (``swap_journal.kill_point``). Raises ``pymysql.Error``."""
    cur.execute(
        f"REPLACE INTO {quote_ident(entry.old or '')}.{TABLE} (id, entry) VALUES (1, %s)",
        (swap_journal.encode(entry),),
    )
    swap_journal.kill_point(entry.step)


def clear(cur: Any, old: str) -> None:
    """Drop the journal table of ``old`` (missing is fine). Raises ``pymysql.Error``."""
    cur.execute(f"DROP TABLE IF EXISTS {quote_ident(old)}.{TABLE}")


def read(cur: Any, old: str) -> JournalEntry | None:
    """The journal in database ``old``, ``None`` if it has none. Raises
    ``JournalUnreadable`` or ``pymysql.Error``."""
    try:
        cur.execute(f"SELECT entry FROM {quote_ident(old)}.{TABLE} WHERE id = 1")
    except pymysql.Error as exc:
        if exc.args and exc.args[0] in (1049, 1146):  # no such database / table
            return None
        raise
    row = cur.fetchone()
    if row is None:
        return None
    raw = row[0]
    return swap_journal.decode(raw.decode() if isinstance(raw, bytes) else str(raw))


def lock_key(target: str) -> str:
    """The ``GET_LOCK`` name of swaps into ``target`` (hashed: names are limited to 64)."""
    return "strongroom-swap:" + hashlib.sha256(target.encode()).hexdigest()[:40]


def lock(cur: Any, target: str, wait: int) -> bool:
    """Take ``target``'s swap lock on this session, waiting up to ``wait`` seconds."""
    cur.execute("SELECT GET_LOCK(%s, %s)", (lock_key(target), wait))
    row = cur.fetchone()
    return bool(row and row[0] == 1)


def unlock(cur: Any, target: str) -> None:
    """Release ``target``'s swap lock held by this session; never raises."""
    try:
        cur.execute("SELECT RELEASE_LOCK(%s)", (lock_key(target),))
        cur.fetchall()
    except pymysql.Error:
        pass
