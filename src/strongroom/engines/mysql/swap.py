"""Moving a database's contents to another database on the same MySQL/MariaDB server.

MySQL has no ``RENAME DATABASE``. ``RENAME TABLE a.t TO b.t`` moves a table (its rows,
indexes and foreign keys: InnoDB re-points foreign keys between tables renamed together)
atomically, and one statement may move many tables, all or none. It refuses a table
with triggers ("Trigger in wrong schema") and cannot move views; routines and events
belong to their database. So the swap (``swap_databases``):

1. captures every trigger, view, routine and event of the staged and of the target
   database with ``SHOW CREATE …`` run inside that database (names of objects in the same
   database come out unqualified) in the original client character set, with the
   ``sql_mode`` (and the event's ``time_zone``) they were created under;
2. creates ``<name>_old_<UTC time>`` and drops the staged triggers (nothing of the target
   has changed yet; a failure here leaves it as it was);
3. drops the target's triggers and runs ONE ``RENAME TABLE`` that moves every target table
   to the old database, then every staged table into the target. If it fails (missing
   privilege, a table locked past ``lock_wait_timeout``) the target's triggers are
   re-created and the target is as it was;
4. re-creates the staged triggers, views (``CREATE OR REPLACE``), routines and events in
   the target, replacing the target's own; with ``keep_old`` the target's own objects are
   re-created in the old database (its events disabled), else the old database is dropped;
   the staged database, now without tables, is dropped. If any of it fails, the step is
   undone (``_undo``): every object now in the target is dropped, one ``RENAME TABLE``
   moves the restored tables back to the staged database and the target's own back into
   the target, the target's captured objects are re-created and the empty old database
   dropped, so the target is as it was (all or nothing).

Definitions captured from the staged database are re-created in the target with every
qualifier naming the staged database rewritten to the target's (``retarget``): the server
prints a view's text from its stored, fully qualified form, and drops the qualifier only
where it can resolve the view (a view whose definer has no rights on the staged database,
e.g. an application user granted ``ALL ON `shop`.*`` only, comes out as
```shop_sr_…`.`products`.`id```).

Between steps 3 and 4 the target's tables are in place but, for a few milliseconds, without
triggers: stop writers around a restore.
"""

from __future__ import annotations

import codecs
import dataclasses
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pymysql

from strongroom.engines.mysql.connection import MysqlConnection
from strongroom.engines.mysql.restore import create_database, drop_database
from strongroom.engines.mysql.stats import MOVABLE_TYPES, quote_ident
from strongroom.engines.mysql.tools import error_text
from strongroom.errors import RestoreFailed

logger = logging.getLogger("strongroom.engines.mysql")

_NO_SUCH_TABLE = 1146
_VIEW_ROUNDS = 20


@dataclass(frozen=True)
class Definition:
    """One stored object, as ``SHOW CREATE`` gave it (bytes in its client charset)."""

    kind: str  # TRIGGER, VIEW, PROCEDURE, FUNCTION, EVENT
    name: str
    statement: bytes
    sql_mode: str | None
    charset_client: str
    collation_connection: str
    time_zone: str | None = None


@dataclass
class SchemaObjects:
    """Everything in one database that ``RENAME TABLE`` does not carry across."""

    tables: list[str] = field(default_factory=list)
    triggers: list[Definition] = field(default_factory=list)
    views: list[Definition] = field(default_factory=list)
    routines: list[Definition] = field(default_factory=list)
    events: list[Definition] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.tables or self.triggers or self.views or self.routines or self.events)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _names(cur: Any, query: str, database: str) -> list[tuple[str, ...]]:
    cur.execute(query, (database,))
    return [tuple(_text(v) for v in row) for row in cur.fetchall()]


def _show(cur: Any, kind: str, name: str, database: str) -> Definition:
    """``SHOW CREATE kind name`` as raw bytes (character_set_results = binary)."""
    cur.execute(f"SHOW CREATE {kind} {quote_ident(name)}")
    row = cur.fetchone()
    columns = [d[0] for d in cur.description or ()]
    values = dict(zip(columns, row or (), strict=False))
    key = {
        "TRIGGER": "SQL Original Statement",
        "VIEW": "Create View",
        "PROCEDURE": "Create Procedure",
        "FUNCTION": "Create Function",
        "EVENT": "Create Event",
    }[kind]
    statement = values.get(key)
    if not statement:
        raise RestoreFailed(
            f"cannot read the definition of {kind.lower()} {name} in database {database}: "
            "the user needs to own it or be allowed to read mysql.proc (SHOW CREATE ROUTINE)"
        )
    mode = values.get("sql_mode")
    zone = values.get("time_zone")
    return Definition(
        kind=kind,
        name=name,
        statement=statement if isinstance(statement, bytes) else str(statement).encode(),
        sql_mode=_text(mode) if mode is not None else None,
        charset_client=_text(values.get("character_set_client", "utf8mb4")),
        collation_connection=_text(values.get("collation_connection", "utf8mb4_general_ci")),
        time_zone=_text(zone) if zone is not None else None,
    )


def capture(cur: Any, database: str) -> SchemaObjects:
    """Tables and the definitions of every trigger, view, routine and event of ``database``."""
    found = SchemaObjects()
    tables = _names(
        cur,
        "SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s",
        database,
    )
    found.tables = sorted(name for name, kind in tables if kind in MOVABLE_TYPES)
    views = sorted(name for name, kind in tables if kind == "VIEW")
    triggers = _names(
        cur,
        "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = %s"
        " ORDER BY EVENT_OBJECT_TABLE, EVENT_MANIPULATION, ACTION_TIMING, ACTION_ORDER",
        database,
    )
    routines = _names(
        cur,
        "SELECT ROUTINE_NAME, ROUTINE_TYPE FROM information_schema.ROUTINES"
        " WHERE ROUTINE_SCHEMA = %s ORDER BY ROUTINE_TYPE, ROUTINE_NAME",
        database,
    )
    events = _names(
        cur,
        "SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = %s"
        " ORDER BY EVENT_NAME",
        database,
    )
    unsupported = [
        f"{kind.lower()} {name}" for name, kind in routines if kind not in ("PROCEDURE", "FUNCTION")
    ]
    if unsupported:
        raise RestoreFailed(
            f"database {database} holds {', '.join(unsupported)}, which strongroom cannot "
            "move between databases"
        )
    cur.execute(f"USE {quote_ident(database)}")
    cur.execute("SET SESSION character_set_results = binary")
    try:
        found.triggers = [_show(cur, "TRIGGER", n, database) for (n,) in triggers]
        found.views = [_show(cur, "VIEW", n, database) for n in views]
        found.routines = [_show(cur, kind, n, database) for n, kind in routines]
        found.events = [_show(cur, "EVENT", n, database) for (n,) in events]
    finally:
        cur.execute("SET NAMES utf8mb4")
    return found


def create(cur: Any, database: str, definition: Definition, *, replace: bool = False) -> None:
    """Run a captured ``CREATE`` inside ``database`` with its original session settings."""
    statement = definition.statement
    if replace and statement[:7].upper() == b"CREATE " and definition.kind == "VIEW":
        statement = b"CREATE OR REPLACE " + statement[7:]
    cur.execute(f"USE {quote_ident(database)}")
    cur.execute("SELECT @@SESSION.sql_mode")
    row = cur.fetchone()
    saved_mode = _text(row[0]) if row else ""
    try:
        if definition.sql_mode is not None:
            cur.execute("SET SESSION sql_mode = %s", (definition.sql_mode,))
        if definition.time_zone is not None:
            cur.execute("SET SESSION time_zone = %s", (definition.time_zone,))
        cur.execute(
            f"SET character_set_client = {definition.charset_client},"
            f" collation_connection = {definition.collation_connection}"
        )
        cur.execute(statement)
    finally:
        cur.execute("SET NAMES utf8mb4")
        cur.execute("SET SESSION sql_mode = %s, time_zone = '+00:00'", (saved_mode,))


def drop(cur: Any, database: str, definition: Definition) -> None:
    kind = definition.kind
    cur.execute(f"DROP {kind} IF EXISTS {quote_ident(database)}.{quote_ident(definition.name)}")


def _encodings(charset: str) -> list[str]:
    """Python codecs a name may be written in inside a statement of ``charset``."""
    names = ["utf-8"]  # identifiers are kept in the server's system charset (utf8)
    python = {"latin1": "cp1252", "utf8mb3": "utf-8", "utf8": "utf-8", "utf8mb4": "utf-8"}
    try:
        extra = codecs.lookup(python.get(charset.lower(), charset)).name
    except LookupError:
        return names
    return names if extra in ("utf-8", "utf_8") else [*names, extra]


def retarget(definition: Definition, staged: str, target: str) -> Definition:
    """``definition`` with every qualifier naming ``staged`` naming ``target`` instead.

    Only the server's own quoted qualifier is replaced: the backquoted name followed by a
    dot, ```shop_sr_1a2b3c4d`.``, or with double quotes where ``ANSI_QUOTES`` made the
    server print them, ``"shop_sr_1a2b3c4d".``, each with its quote character doubled
    inside the name exactly as the server writes it. This is exact, never a match inside
    user text: the staged name ends in 8 random hex digits chosen for this restore, after
    the dump was written, so no text that came from the dump (a routine's body, a string
    literal, a comment, another identifier) can hold it; every occurrence was written by
    the server, which qualifies names with the database the object lives in. Replacing
    that database by the target is what the server would have printed had the object
    been created in the target, where the tables will be. Trigger, routine and event
    texts are kept as written (their ``shop``.x stays ``shop``.x), so for them this is a
    no-op today; it is applied to every kind so that no definition created in the target
    can ever name the staged database. ``swap_databases`` refuses to start (before
    anything changes) if the staged name is still in a definition afterwards.
    """
    statement = definition.statement
    for quote in ("`", '"'):
        was = quote + staged.replace(quote, quote * 2) + quote + "."
        now = quote + target.replace(quote, quote * 2) + quote + "."
        for encoding in _encodings(definition.charset_client):
            try:
                statement = statement.replace(was.encode(encoding), now.encode(encoding))
            except UnicodeEncodeError:
                continue
    return dataclasses.replace(definition, statement=statement)


def retarget_all(objects: SchemaObjects, staged: str, target: str) -> SchemaObjects:
    """``objects`` of the staged database, ready to be created in ``target``."""

    def move(items: list[Definition]) -> list[Definition]:
        moved = [retarget(d, staged, target) for d in items]
        for item in moved:
            if staged.encode() in item.statement:
                raise RestoreFailed(
                    f"the definition of {item.kind.lower()} {item.name} names the staged "
                    f"database {staged}, which strongroom cannot rewrite"
                )
        return moved

    return SchemaObjects(
        tables=list(objects.tables),
        triggers=move(objects.triggers),
        views=move(objects.views),
        routines=move(objects.routines),
        events=move(objects.events),
    )


def create_views(cur: Any, database: str, views: Iterable[Definition]) -> None:
    """Create views, retrying those that select from views not created yet."""
    pending = list(views)
    for _round in range(_VIEW_ROUNDS):
        failed: list[tuple[Definition, pymysql.Error]] = []
        for view in pending:
            try:
                create(cur, database, view, replace=True)
            except pymysql.Error as exc:
                if exc.args and exc.args[0] == _NO_SUCH_TABLE:
                    failed.append((view, exc))
                    continue
                raise
        if not failed or len(failed) == len(pending):
            if failed:
                raise failed[0][1]
            return
        pending = [view for view, _ in failed]


def rename_statement(moves: Iterable[tuple[str, str, str]]) -> str:
    """One ``RENAME TABLE`` for (table, from database, to database) triples, in order."""
    parts = [
        f"{quote_ident(src)}.{quote_ident(t)} TO {quote_ident(dst)}.{quote_ident(t)}"
        for t, src, dst in moves
    ]
    return "RENAME TABLE " + ", ".join(parts)


def _put_back(cur: Any, database: str, triggers: list[Definition]) -> list[str]:
    """Re-create dropped triggers; return those that could not be."""
    lost = []
    for trigger in triggers:
        try:
            create(cur, database, trigger)
        except pymysql.Error as exc:
            logger.error("could not re-create trigger %s.%s: %s", database, trigger.name, exc)
            lost.append(trigger.name)
    return lost


def swap_databases(db: MysqlConnection, staged: str, old: str, *, keep_old: bool) -> str | None:
    """Swap ``staged`` into the database of ``db`` (module docstring); the old name or None."""
    target = db.database_name()
    with db.connect() as conn, conn.cursor() as cur:
        try:
            incoming = retarget_all(capture(cur, staged), staged, target)
            cur.execute(
                "SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (target,)
            )
            exists = cur.fetchone() is not None
            current = capture(cur, target) if exists else SchemaObjects()
            if not exists:
                create_database(db, like=staged)
            if not current.empty:
                cur.execute(
                    f"CREATE DATABASE {quote_ident(old)} CHARACTER SET"
                    f" {schema_charset(cur, target)}"
                )
            for trigger in incoming.triggers:
                drop(cur, staged, trigger)
        except pymysql.Error as exc:
            raise RestoreFailed(
                f"cannot prepare the swap into {db.where()}: "
                f"{db.redact(error_text(exc))}; the original database is unchanged"
            ) from None
        except RestoreFailed as exc:
            raise RestoreFailed(f"{exc.message}; the original database is unchanged") from None
        try:
            _move_tables(db, cur, current, incoming, staged, old)
        except RestoreFailed:
            if not exists:  # created above, still empty
                drop_database(db, target)
            raise
        try:
            _complete(cur, target, current, incoming)
        except _StepFailed as failed:
            state = _undo(db, cur, current, incoming, staged, old, created=not exists)
            raise RestoreFailed(
                f"could not re-create the restored objects in {db.where()}: "
                f"{db.redact(str(failed))}; {state}"
            ) from None
        if not current.empty and keep_old:
            _keep_old_objects(cur, old, current)
    logger.warning("swapped the restored database into %s", db.where())
    drop_database(db, staged)
    if current.empty:
        return None
    if keep_old:
        return old
    problem = drop_database(db, old)
    if problem is not None:
        logger.warning("the replaced database is kept as %s: %s", old, problem)
        return old
    return None


def schema_charset(cur: Any, database: str) -> str:
    """``<charset> COLLATE <collation>`` of a database (for ``CREATE DATABASE``)."""
    cur.execute(
        "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA"
        " WHERE SCHEMA_NAME = %s",
        (database,),
    )
    row = cur.fetchone()
    return f"{row[0]} COLLATE {row[1]}" if row else "utf8mb4"


def _move_tables(
    db: MysqlConnection,
    cur: Any,
    current: SchemaObjects,
    incoming: SchemaObjects,
    staged: str,
    old: str,
) -> None:
    """Drop the target's triggers and move all tables in one RENAME (step 3)."""
    target = db.database_name()
    moves = [(t, target, old) for t in current.tables] + [
        (t, staged, target) for t in incoming.tables
    ]
    dropped: list[Definition] = []
    try:
        for trigger in current.triggers:
            drop(cur, target, trigger)
            dropped.append(trigger)
        if moves:
            cur.execute(rename_statement(moves))
    except pymysql.Error as exc:
        reason = db.redact(error_text(exc))
        lost = _put_back(cur, target, dropped)
        if not current.empty:
            with_old = drop_database(db, old)
            if with_old is not None:
                logger.warning("the empty database %s is left behind: %s", old, with_old)
        state = (
            "the original database is unchanged"
            if not lost
            else f"the original tables are unchanged but triggers {', '.join(lost)} are lost"
        )
        raise RestoreFailed(
            f"could not move the restored tables into {db.where()}: {reason}; {state}"
        ) from None


class _StepFailed(Exception):
    """One action of step 4 failed (its description and the server's message)."""


def _complete(cur: Any, target: str, current: SchemaObjects, incoming: SchemaObjects) -> None:
    """Step 4 in the target: its objects replaced by the staged ones; stops at the first
    failure (``_StepFailed``), which the caller undoes."""

    def attempt(what: str, action: Any) -> None:
        try:
            action()
        except pymysql.Error as exc:
            raise _StepFailed(f"{what} failed ({error_text(exc)})") from exc

    for trigger in incoming.triggers:
        attempt(f"creating trigger {trigger.name}", lambda t=trigger: create(cur, target, t))
    restored_views = {v.name for v in incoming.views}
    for view in current.views:
        if view.name not in restored_views:
            attempt(f"dropping view {view.name}", lambda v=view: drop(cur, target, v))
    for kind_objects in (current.routines, current.events):
        for item in kind_objects:
            attempt(
                f"dropping {item.kind.lower()} {item.name}", lambda i=item: drop(cur, target, i)
            )
    # Routines before views: CREATE VIEW checks that the functions it calls exist.
    for item in incoming.routines:
        attempt(f"creating {item.kind.lower()} {item.name}", lambda i=item: create(cur, target, i))
    attempt("creating the views", lambda: create_views(cur, target, incoming.views))
    for item in incoming.events:
        attempt(f"creating {item.kind.lower()} {item.name}", lambda i=item: create(cur, target, i))


def _drop_objects(cur: Any, database: str) -> None:
    """Drop every trigger, view, routine and event of ``database`` (its tables stay)."""
    found = [
        ("TRIGGER", n)
        for (n,) in _names(
            cur,
            "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = %s",
            database,
        )
    ]
    found += [
        ("VIEW", n)
        for (n,) in _names(
            cur,
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s"
            " AND TABLE_TYPE = 'VIEW'",
            database,
        )
    ]
    found += [
        (kind, n)
        for n, kind in _names(
            cur,
            "SELECT ROUTINE_NAME, ROUTINE_TYPE FROM information_schema.ROUTINES"
            " WHERE ROUTINE_SCHEMA = %s",
            database,
        )
    ]
    found += [
        ("EVENT", n)
        for (n,) in _names(
            cur,
            "SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = %s",
            database,
        )
    ]
    for kind, name in found:
        cur.execute(f"DROP {kind} IF EXISTS {quote_ident(database)}.{quote_ident(name)}")


def _undo(
    db: MysqlConnection,
    cur: Any,
    current: SchemaObjects,
    incoming: SchemaObjects,
    staged: str,
    old: str,
    *,
    created: bool,
) -> str:
    """Undo steps 3 and 4 after a failure in step 4; what state the target is left in.

    Every object in the target now is either a restored one step 4 created or one of the
    target's own it had not dropped yet; all are dropped (triggers must go before their
    tables can be renamed), one ``RENAME TABLE`` moves the restored tables back to the
    staged database and the target's own back from the old one (InnoDB re-points foreign
    keys as on the way in), and the target's captured triggers, views, routines and events
    are re-created as they were. The old database, empty again, is dropped (or the target
    itself, if the swap created it). The staged database is the caller's to drop.
    """
    target = db.database_name()
    try:
        _drop_objects(cur, target)
        moves = [(t, target, staged) for t in incoming.tables] + [
            (t, old, target) for t in current.tables
        ]
        if moves:
            cur.execute(rename_statement(moves))
    except pymysql.Error as exc:
        reason = db.redact(error_text(exc))
        logger.error("could not undo the swap into %s: %s", db.where(), reason)
        where = f"; the original tables are in {old}" if not current.empty else ""
        return f"putting the original back failed too ({reason}){where}"
    lost = _put_back(cur, target, current.triggers)

    def put_back(item: Definition) -> None:
        try:
            create(cur, target, item)
        except pymysql.Error as exc:
            logger.error("could not re-create %s %s: %s", item.kind.lower(), item.name, exc)
            lost.append(f"{item.kind.lower()} {item.name}")

    for item in current.routines:  # before the views, which may call them
        put_back(item)
    try:
        create_views(cur, target, current.views)
    except pymysql.Error as exc:
        logger.error("could not re-create the views of %s: %s", db.where(), exc)
        lost.append("the views")
    for item in current.events:
        put_back(item)
    if created:
        drop_database(db, target)
    elif not current.empty:
        problem = drop_database(db, old)
        if problem is not None:
            logger.warning("the empty database %s is left behind: %s", old, problem)
    if lost:
        return f"the original tables are back but these are lost: {', '.join(lost)}"
    return "the original database is unchanged"


def _keep_old_objects(cur: Any, old: str, current: SchemaObjects) -> None:
    """Re-create the replaced database's objects beside its tables (events disabled)."""
    try:
        for trigger in current.triggers:
            create(cur, old, trigger)
        for item in current.routines:  # before the views, which may call them
            create(cur, old, item)
        create_views(cur, old, current.views)
        for event in current.events:
            create(cur, old, event)
            cur.execute(f"ALTER EVENT {quote_ident(old)}.{quote_ident(event.name)} DISABLE")
    except pymysql.Error as exc:
        logger.warning("the replaced database %s lacks some of its objects: %s", old, exc)
