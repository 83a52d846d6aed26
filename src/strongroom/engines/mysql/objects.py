"""The objects of a MySQL/MariaDB database that ``RENAME TABLE`` does not carry across
(triggers, views, routines, events), captured as ``SHOW CREATE`` gives them, for the swap
(``swap``) and single-table restores (``tables``) to re-create elsewhere."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from strongroom.engines.mysql.stats import MOVABLE_TYPES, quote_ident
from strongroom.errors import RestoreFailed


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


def text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def names(cur: Any, query: str, database: str) -> list[tuple[str, ...]]:
    cur.execute(query, (database,))
    return [tuple(text(v) for v in row) for row in cur.fetchall()]


def show(cur: Any, kind: str, name: str, database: str) -> Definition:
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
        sql_mode=text(mode) if mode is not None else None,
        charset_client=text(values.get("character_set_client", "utf8mb4")),
        collation_connection=text(values.get("collation_connection", "utf8mb4_general_ci")),
        time_zone=text(zone) if zone is not None else None,
    )


def capture(cur: Any, database: str) -> SchemaObjects:
    """Tables and the definitions of every trigger, view, routine and event of ``database``."""
    found = SchemaObjects()
    tables = names(
        cur,
        "SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s",
        database,
    )
    found.tables = sorted(name for name, kind in tables if kind in MOVABLE_TYPES)
    views = sorted(name for name, kind in tables if kind == "VIEW")
    triggers = names(
        cur,
        "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = %s"
        " ORDER BY EVENT_OBJECT_TABLE, EVENT_MANIPULATION, ACTION_TIMING, ACTION_ORDER",
        database,
    )
    routines = names(
        cur,
        "SELECT ROUTINE_NAME, ROUTINE_TYPE FROM information_schema.ROUTINES"
        " WHERE ROUTINE_SCHEMA = %s ORDER BY ROUTINE_TYPE, ROUTINE_NAME",
        database,
    )
    events = names(
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
        found.triggers = [show(cur, "TRIGGER", n, database) for (n,) in triggers]
        found.views = [show(cur, "VIEW", n, database) for n in views]
        found.routines = [show(cur, kind, n, database) for n, kind in routines]
        found.events = [show(cur, "EVENT", n, database) for (n,) in events]
    finally:
        cur.execute("SET NAMES utf8mb4")
    return found
