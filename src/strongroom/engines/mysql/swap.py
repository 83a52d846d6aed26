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
   has changed yet; a failure here drops the databases this step created and leaves the
   target as it was);
3. drops the target's triggers and runs ONE ``RENAME TABLE`` that moves every target table
   to the old database, then every staged table into the target. If it fails (missing
   privilege, a table locked past ``lock_wait_timeout``) the target's triggers are
   re-created and the target is as it was;
4. gives the target the staged database's default character set and collation if they
   differ (the backup's, see ``staging``; an object takes the database's collation when
   it is created, so this comes first), re-creates the staged triggers, views (``CREATE
   OR REPLACE``), routines and events in the target, replacing the target's own, each
   event with the status it was backed up with (it was loaded disabled: ``staging``);
   with ``keep_old`` the target's own objects are re-created in the old database (its
   events disabled), else the old database is dropped; the staged database, now without
   tables, is dropped. If any of it fails, the step is
   undone (``_undo``): every object now in the target is dropped, one ``RENAME TABLE``
   moves the restored tables back to the staged database and the target's own back into
   the target, its character set and collation are put back, the target's captured
   objects are re-created and the empty old database dropped, so the target is as it was
   (all or nothing).

Definitions captured from the staged database are re-created in the target with every
qualifier naming the staged database rewritten to the target's (``retarget``): the server
prints a view's text from its stored, fully qualified form, and drops the qualifier only
where it can resolve the view (a view whose definer has no rights on the staged database,
e.g. an application user granted ``ALL ON `shop`.*`` only, comes out as
```shop_sr_…`.`products`.`id```).

The staging filter (``staging``) may have re-pointed a qualifier of a trigger's, routine's
or event's own name (``CREATE TRIGGER shop.t … ON shop.orders``) at the staged database,
quoted as it was: ``retarget`` rewrites those too (a name token that is the staged name,
followed by a dot, is just as exact), so an in-place restore gives back the text as it was
written.

Given the backed-up (``source``) database's name, definitions are also re-pointed from it
(``requalify_all``, rules in ``qualifiers``): the server keeps trigger, routine and event
bodies as written, so a ``shop.audit`` in them would still name the original after a
restore as ``shop_copy`` (writing into it, or failing once it is gone). Every qualifier
naming the source is rewritten to name the target; strings and comments are kept; a
definition where that cannot be done with certainty makes the swap refuse before anything
changed. In the same way the target's own objects kept in the old database
(``keep_old``) have their qualifiers naming the target re-pointed at the old database, so
the kept copy never writes into the restored one (an object that cannot be rewritten is
left out, with a warning).

Crash safety (docs/design.md, "Swap journal", MySQL): the swap holds the target's swap
lock and writes a journal entry into a table of the old database before each step
(``close``: step 2's drops, ``rename_away``: the target's triggers dropped, ``rename_in``:
the RENAME, the commit point, ``finish``: step 4 and the staged database dropped,
``drop_old``); ``swap_recovery.recover`` completes or undoes a swap killed at any of them.

Between steps 3 and 4 the target's tables are in place but, for a few milliseconds, without
triggers: stop writers around a restore.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pymysql

from strongroom.engines.mysql import qualifiers, staging, swap_store
from strongroom.engines.mysql.connection import MysqlConnection
from strongroom.engines.mysql.definers import as_current_user
from strongroom.engines.mysql.objects import Definition as Definition
from strongroom.engines.mysql.objects import SchemaObjects as SchemaObjects
from strongroom.engines.mysql.objects import capture as capture
from strongroom.engines.mysql.objects import names, text
from strongroom.engines.mysql.restore import (
    alter_shape,
    create_database,
    drop_database,
    schema_shape,
)
from strongroom.engines.mysql.stats import quote_ident
from strongroom.engines.mysql.tools import error_code, error_text
from strongroom.engines.swap_journal import JournalEntry, SwapStep
from strongroom.errors import RestoreFailed

logger = logging.getLogger("strongroom.engines.mysql")

_NO_SUCH_TABLE = 1146
_NO_SET_USER = 1227  # "you need (at least one of) the SUPER, SET USER privilege(s)"
_VIEW_ROUNDS = 20


def create(cur: Any, database: str, definition: Definition, *, replace: bool = False) -> None:
    """Run a captured ``CREATE`` inside ``database`` with its original session settings."""
    statement = definition.statement
    if replace and statement[:7].upper() == b"CREATE " and definition.kind == "VIEW":
        statement = b"CREATE OR REPLACE " + statement[7:]
    cur.execute(f"USE {quote_ident(database)}")
    cur.execute("SELECT @@SESSION.sql_mode")
    row = cur.fetchone()
    saved_mode = text(row[0]) if row else ""
    try:
        if definition.sql_mode is not None:
            cur.execute("SET SESSION sql_mode = %s", (definition.sql_mode,))
        if definition.time_zone is not None:
            cur.execute("SET SESSION time_zone = %s", (definition.time_zone,))
        cur.execute(
            f"SET character_set_client = {definition.charset_client},"
            f" collation_connection = {definition.collation_connection}"
        )
        try:
            cur.execute(statement)
        except pymysql.Error as exc:
            # Only the target's own objects can hit this (the staged ones were created by
            # this account): the plan refused unless the user chose --rewrite-definers.
            rewritten = as_current_user(statement) if error_code(exc) == _NO_SET_USER else None
            if rewritten is None:
                raise
            logger.warning(
                "re-creating %s %s with the restoring account as definer: %s",
                definition.kind.lower(),
                definition.name,
                error_text(exc),
            )
            cur.execute(rewritten)
    finally:
        cur.execute("SET NAMES utf8mb4")
        cur.execute("SET SESSION sql_mode = %s, time_zone = '+00:00'", (saved_mode,))


def drop(cur: Any, database: str, definition: Definition) -> None:
    kind = definition.kind
    cur.execute(f"DROP {kind} IF EXISTS {quote_ident(database)}.{quote_ident(definition.name)}")


def retarget(
    definition: Definition, staged: str, target: str, keywords: frozenset[str] | None = None
) -> Definition:
    """``definition`` with every qualifier naming ``staged`` naming ``target`` instead
    (``qualifiers.retarget_statement``: exact, only what the server or the staging filter
    wrote; ``keywords``: the server's, to know when the target needs quotes)."""
    statement = qualifiers.retarget_statement(
        definition.statement,
        definition.charset_client,
        staged,
        target,
        keywords=keywords,
        sql_mode=definition.sql_mode,
    )
    return dataclasses.replace(definition, statement=statement)


def _each(objects: SchemaObjects, change: Callable[[Definition], Definition]) -> SchemaObjects:
    lists = (objects.triggers, objects.views, objects.routines, objects.events)
    return SchemaObjects(list(objects.tables), *([change(d) for d in items] for items in lists))


def retarget_all(
    objects: SchemaObjects, staged: str, target: str, keywords: frozenset[str] | None = None
) -> SchemaObjects:
    """``objects`` of the staged database, ready to be created in ``target``."""

    def move(item: Definition) -> Definition:
        moved = retarget(item, staged, target, keywords)
        if staged.encode() in moved.statement:
            raise RestoreFailed(
                f"the definition of {item.kind.lower()} {item.name} names the staged "
                f"database {staged}, which strongroom cannot rewrite"
            )
        return moved

    return _each(objects, move)


def requalify(item: Definition, source: str, target: str, scope: qualifiers.Scope) -> Definition:
    """``item`` with its qualifiers naming ``source`` naming ``target``; raises
    ``qualifiers.Unrewritable``."""
    statement = qualifiers.requalify_statement(
        item.statement,
        charset=item.charset_client,
        sql_mode=item.sql_mode,
        source=source,
        target=target,
        scope=scope,
    )
    return dataclasses.replace(item, statement=statement)


def requalify_all(
    objects: SchemaObjects, source: str, target: str, scope: qualifiers.Scope
) -> SchemaObjects:
    """``requalify`` on every definition; ``RestoreFailed`` names one that cannot be."""

    def move(item: Definition) -> Definition:
        try:
            return requalify(item, source, target, scope)
        except qualifiers.Unrewritable as exc:
            raise RestoreFailed(
                f"the definition of {item.kind.lower()} {item.name} {exc}; restore it under "
                f"its own name ({source})"
            ) from None

    return _each(objects, move)


def with_statuses(objects: SchemaObjects, statuses: Mapping[str, str]) -> SchemaObjects:
    """``objects`` whose events have the status ``statuses`` gives them (case-folded event
    name -> ``ENABLED``/``DISABLED``/``SLAVESIDE_DISABLED``): the staged copy was loaded
    with every event disabled (``staging``). An event not named there is kept as it is."""

    def give(item: Definition) -> Definition:
        status = statuses.get(item.name.casefold())
        if item.kind != "EVENT" or status is None:
            return item
        statement = staging.with_status(
            item.statement, charset=item.charset_client, sql_mode=item.sql_mode, status=status
        )
        return dataclasses.replace(item, statement=statement)

    return _each(objects, give)


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


def swap_databases(
    db: MysqlConnection,
    staged: str,
    old: str,
    *,
    keep_old: bool,
    source: str | None = None,
    events: Mapping[str, str] | None = None,
) -> str | None:
    """Swap ``staged`` into the database of ``db`` (module docstring); the old name or None.
    ``source``: the backed-up database's name (``None``: its qualifiers are kept).
    ``events``: case-folded event name -> the status to give it (``staging``; ``None``:
    as in the staged database). Holds the target's swap lock throughout and writes the
    journal before each step (``swap_store``). Raises ``RestoreFailed`` (the target as it
    was, unless the message says otherwise)."""
    with db.connect() as conn, conn.cursor() as cur:
        if not swap_store.lock(cur, db.database_name(), swap_store.LOCK_WAIT):
            raise RestoreFailed(
                f"another swap into {db.where()} is in progress; the original database is unchanged"
            )
        try:
            return _swap(db, cur, staged, old, keep_old, source, events)
        finally:
            swap_store.unlock(cur, db.database_name())


def _swap(
    db: MysqlConnection,
    cur: Any,
    staged: str,
    old: str,
    keep_old: bool,
    source: str | None,
    events: Mapping[str, str] | None,
) -> str | None:
    target = db.database_name()
    made: list[str] = []  # databases step 2 created, dropped again if it fails
    try:
        scope = qualifiers.load_scope(cur, staged)
        incoming = retarget_all(capture(cur, staged), staged, target, scope.keywords)
        if source is not None:
            incoming = requalify_all(incoming, source, target, scope)
        if events is not None:
            incoming = with_statuses(incoming, events)
        shape, was = schema_shape(cur, staged), schema_shape(cur, target)
        exists = was is not None
        current = capture(cur, target) if exists else SchemaObjects()
        if not exists:
            create_database(db, like=staged)
            made.append(target)
        # The old database always: it holds the journal (swap_store).
        cur.execute(
            f"CREATE DATABASE {quote_ident(old)} CHARACTER SET {schema_charset(cur, target)}"
        )
        made.append(old)
        cur.execute("SELECT CONNECTION_ID()")
        details = swap_store.Details(current, incoming, shape, was, not exists, cur.fetchone()[0])
        entry = JournalEntry(
            engine=swap_store.KIND,
            target=target,
            staged=staged,
            old=old,
            keep_old=keep_old,
            step=SwapStep.CLOSE,
            details=details.as_json(),
        )
        swap_store.create_journal(cur, entry)
        for trigger in incoming.triggers:
            drop(cur, staged, trigger)
    except pymysql.Error as exc:
        for name in made:
            drop_database(db, name)
        raise RestoreFailed(
            f"cannot prepare the swap into {db.where()}: "
            f"{db.redact(error_text(exc))}; the original database is unchanged"
        ) from None
    except RestoreFailed as exc:
        for name in made:
            drop_database(db, name)
        raise RestoreFailed(f"{exc.message}; the original database is unchanged") from None
    reshape = (shape, was) if exists and shape is not None and shape != was else None
    try:
        _move_tables(db, cur, current, incoming, staged, entry)
    except RestoreFailed:
        if not exists:  # created above, still empty
            drop_database(db, target)
        raise
    try:
        swap_store.write(cur, entry.at(SwapStep.FINISH))
        complete(cur, target, current, incoming, reshape[0] if reshape else None)
    except (_StepFailed, pymysql.Error) as failed:
        state = _undo(db, cur, current, incoming, staged, old, created=not exists, reshape=reshape)
        reason = str(failed) if isinstance(failed, _StepFailed) else error_text(failed)
        raise RestoreFailed(
            f"could not re-create the restored objects in {db.where()}: "
            f"{db.redact(reason)}; {state}"
        ) from None
    if not current.empty and keep_old:
        keep_old_objects(cur, target, old, current)
    logger.info("swapped the restored database into %s", db.where())
    drop_database(db, staged)
    if not current.empty and keep_old:
        try:
            swap_store.clear(cur, old)
        except pymysql.Error as exc:
            logger.warning("could not remove the swap journal from %s: %s", old, exc)
        return old
    if not current.empty:
        try:
            swap_store.write(cur, entry.at(SwapStep.DROP_OLD))
        except pymysql.Error as exc:
            logger.warning("could not write the swap journal in %s: %s", old, exc)
    problem = drop_database(db, old)
    if problem is not None:
        logger.warning("the replaced database is kept as %s: %s", old, problem)
        return None if current.empty else old
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
    entry: JournalEntry,
) -> None:
    """Drop the target's triggers and move all tables in one RENAME (step 3), each
    preceded by its journal entry."""
    target, old = db.database_name(), entry.old or ""
    moves = [(t, target, old) for t in current.tables] + [
        (t, staged, target) for t in incoming.tables
    ]
    dropped: list[Definition] = []
    try:
        swap_store.write(cur, entry.at(SwapStep.RENAME_AWAY))
        for trigger in current.triggers:
            drop(cur, target, trigger)
            dropped.append(trigger)
        swap_store.write(cur, entry.at(SwapStep.RENAME_IN))
        if moves:
            cur.execute(rename_statement(moves))
    except pymysql.Error as exc:
        reason = db.redact(error_text(exc))
        lost = _put_back(cur, target, dropped)
        with_old = drop_database(db, old)  # and the journal with it
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


def complete(
    cur: Any,
    target: str,
    current: SchemaObjects,
    incoming: SchemaObjects,
    shape: tuple[str, str] | None,
) -> None:
    """Step 4 in the target: its default character set and collation made the staged
    database's (``shape``; ``None``: they are the same), its objects replaced by the
    staged ones; stops at the first failure (``_StepFailed``), which the caller undoes."""

    def attempt(what: str, action: Any) -> None:
        try:
            action()
        except pymysql.Error as exc:
            raise _StepFailed(f"{what} failed ({error_text(exc)})") from exc

    if shape is not None:  # first: an object takes the database's collation when created
        attempt("changing the database's character set", lambda: alter_shape(cur, target, shape))

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


def drop_objects(cur: Any, database: str) -> None:
    """Drop every trigger, view, routine and event of ``database`` (its tables stay)."""
    queries = (
        "SELECT 'TRIGGER', TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = %s",
        "SELECT 'VIEW', TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s"
        " AND TABLE_TYPE = 'VIEW'",
        "SELECT ROUTINE_TYPE, ROUTINE_NAME FROM information_schema.ROUTINES"
        " WHERE ROUTINE_SCHEMA = %s",
        "SELECT 'EVENT', EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = %s",
    )
    for kind, name in [row for query in queries for row in names(cur, query, database)]:
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
    reshape: tuple[tuple[str, str], tuple[str, str] | None] | None = None,
) -> str:
    """Undo steps 3 and 4 after a failure in step 4; what state the target is left in.
    ``reshape``: (the staged, the target's) default character set and collation when step
    4 began by changing the target's; the target's is put back.

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
        drop_objects(cur, target)
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
    lost = []
    if reshape is not None and reshape[1] is not None:  # before the objects, as in step 4
        try:
            alter_shape(cur, target, reshape[1])
        except pymysql.Error as exc:
            logger.error("could not put back the character set of %s: %s", db.where(), exc)
            lost.append("its default character set and collation")
    lost += _put_back(cur, target, current.triggers)

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
    problem = drop_database(db, old)  # and the journal with it
    if problem is not None:
        logger.warning("the empty database %s is left behind: %s", old, problem)
    if lost:
        return f"the original tables are back but these are lost: {', '.join(lost)}"
    return "the original database is unchanged"


def keep_old_objects(cur: Any, target: str, old: str, current: SchemaObjects) -> None:
    """Re-create the replaced database's objects beside its tables (events disabled), their
    qualifiers naming the target re-pointed at ``old`` (module docstring)."""
    try:
        names = [d.name for d in (*current.triggers, *current.views, *current.routines)]
        scope = qualifiers.load_scope(cur, old, also=names)

        def kept(items: list[Definition]) -> list[Definition]:
            out = []
            for item in items:
                try:
                    out.append(requalify(item, target, old, scope))
                except qualifiers.Unrewritable as exc:
                    what = f"{item.kind.lower()} {item.name}"
                    logger.warning("%s is not kept in %s: its definition %s", what, old, exc)
            return out

        for trigger in kept(current.triggers):
            create(cur, old, trigger)
        for item in kept(current.routines):  # before the views, which may call them
            create(cur, old, item)
        create_views(cur, old, kept(current.views))
        for event in kept(current.events):
            create(cur, old, event)
            cur.execute(f"ALTER EVENT {quote_ident(old)}.{quote_ident(event.name)} DISABLE")
    except pymysql.Error as exc:
        logger.warning("the replaced database %s lacks some of its objects: %s", old, exc)
