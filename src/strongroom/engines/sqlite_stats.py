"""What a SQLite backup records about its tables and a restore compares: the row count and
content checksum of every table stored in the file.

Virtual tables (``CREATE VIRTUAL TABLE … USING module``) are never read themselves. A
virtual table's rows are either kept in ordinary tables of the file, its *shadow tables*
(FTS5: ``x_data``, ``x_idx``, ``x_content``, ``x_docsize``, ``x_config``; R*Tree:
``x_node``, ``x_parent``, ``x_rowid``), which are checked like any other table, or they are
not in the file at all (computed, as ``dbstat``, or read from elsewhere, as a CSV module).
Reading the virtual table as well would count the same rows twice, and needs the module:
a database made with an extension (SpatiaLite, sqlean, sqlite-vec…) on a machine without it
cannot open its virtual tables, although its pages copy and restore all the same. So each
virtual table is reported instead: checked through its shadow tables, or not checked and
why ("virtual table v: module nosuchmodule is not available here").
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from blake3 import blake3

from strongroom.engines.base import TableStats

# The key of the SQLite engine state (``DumpResult.state``) that lists the virtual tables.
# Backups taken before it existed recorded statistics of the virtual tables themselves.
VIRTUAL_TABLES = "virtual_tables"

_CHECKSUM_MODULUS = 1 << 64

# A name as SQLite's tokenizer reads it: "quoted", `quoted`, [quoted], 'quoted' or bare.
_NAME = r"""(?:"(?:[^"]|"")*"|`(?:[^`]|``)*`|\[[^\]]*\]|'(?:[^']|'')*'|[^\s(.;"'`\[]+)"""
_GAP = r"(?:\s|/\*.*?\*/|--[^\n]*(?:\n|$))*"  # white space and comments
_USING = re.compile(
    rf"^\s*CREATE{_GAP}VIRTUAL{_GAP}TABLE{_GAP}(?:IF{_GAP}NOT{_GAP}EXISTS{_GAP})?"
    rf"(?:{_NAME}{_GAP}\.{_GAP})?{_NAME}{_GAP}USING{_GAP}({_NAME})",
    re.IGNORECASE | re.DOTALL,
)
_VIRTUAL = re.compile(rf"^\s*CREATE{_GAP}VIRTUAL{_GAP}TABLE\b", re.IGNORECASE | re.DOTALL)
_NO_SUCH_MODULE = re.compile(r"no such module: (.+)$")


def quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _unquote(token: str) -> str:
    if len(token) >= 2 and token[0] + token[-1] in ('""', "``", "[]", "''"):
        inner = token[1:-1]
        return inner if token[0] == "[" else inner.replace(token[0] * 2, token[0])
    return token


def module_of(sql: str) -> str | None:
    """The module a ``CREATE VIRTUAL TABLE`` statement names (``None`` if unreadable)."""
    match = _USING.match(sql)
    return _unquote(match.group(1)) if match else None


def table_stats(connection: sqlite3.Connection, name: str) -> TableStats:
    """Row count and an order-independent checksum: the sum, modulo 2**64, of a 64-bit
    BLAKE3 hash of each row's values."""
    rows = 0
    total = 0
    for row in connection.execute(f"SELECT * FROM {quote(name)}"):
        rows += 1
        digest = blake3(repr(row).encode()).digest(length=8)
        total = (total + int.from_bytes(digest, "big")) % _CHECKSUM_MODULUS
    return TableStats(name, rows, f"b3sum64:{total:016x}")


@dataclass(frozen=True)
class VirtualTable:
    """A virtual table of the file and what verification does with it."""

    name: str
    module: str | None  # as its CREATE VIRTUAL TABLE names it
    shadow_tables: tuple[str, ...]  # ordinary tables holding its rows, checked directly
    problem: str | None = None  # why it cannot be opened here; None if it can

    @property
    def reason(self) -> str | None:
        """Why the virtual table is not checked (``None``: checked through its shadow
        tables)."""
        if self.problem is not None:
            return self.problem
        if self.shadow_tables:
            return None
        return (
            f"module {self.module or '?'} keeps no tables in the database file "
            "(its rows are computed or stored elsewhere)"
        )

    def note(self) -> str:
        """One line for the user: how this virtual table is verified, or that it is not."""
        if self.reason is not None:
            return f"virtual table {self.name}: {self.reason}"
        return (
            f"virtual table {self.name} ({self.module}): checked through its tables "
            f"{', '.join(self.shadow_tables)}"
        )

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "name": self.name,
            "module": self.module,
            "shadow_tables": list(self.shadow_tables),
        }
        if self.reason is not None:
            document["not_checked"] = self.reason
        return document


@dataclass(frozen=True)
class Survey:
    """The statistics of a database's tables and its virtual tables."""

    tables: list[TableStats]
    virtual: list[VirtualTable]

    @property
    def unchecked(self) -> list[str]:
        """``virtual table v: why`` for each virtual table verification does not check."""
        return [v.note() for v in self.virtual if v.reason is not None]

    def state(self) -> dict[str, Any]:
        """What goes into the backup's engine state (the manifest's private section)."""
        return {VIRTUAL_TABLES: [v.to_dict() for v in self.virtual]}


def _problem(connection: sqlite3.Connection, name: str, module: str | None) -> str | None:
    """Why the virtual table ``name`` cannot be opened on this machine, if it cannot."""
    try:
        connection.execute(f"SELECT * FROM {quote(name)} LIMIT 0").fetchall()
    except sqlite3.Error as exc:
        missing = _NO_SUCH_MODULE.search(str(exc))
        if missing:
            return f"module {missing.group(1)} is not available here"
        return f"module {module or '?'} cannot open it here ({exc})"
    return None


def _shadow_types(connection: sqlite3.Connection) -> dict[str, str] | None:
    """``PRAGMA table_list``'s type of each table (``shadow`` for the shadow tables of a
    virtual table whose module is loaded), or ``None`` before SQLite 3.37."""
    try:
        rows = connection.execute("SELECT name, type FROM pragma_table_list WHERE schema = 'main'")
        return {str(name): str(kind) for name, kind in rows}
    except sqlite3.Error:
        return None


def survey(connection: sqlite3.Connection, *, read_virtual: bool = False) -> Survey:
    """Statistics of every ordinary table (shadow tables included), by name, and what
    becomes of each virtual table. ``read_virtual``: also read the virtual tables that open
    here, as backups taken before virtual tables were reported did (to compare with them)."""
    schema = connection.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "ORDER BY name"
    ).fetchall()
    ordinary: list[str] = []
    declared: list[tuple[str, str | None]] = []
    for name, sql in schema:
        if sql is not None and _VIRTUAL.match(str(sql)):
            declared.append((str(name), module_of(str(sql))))
        else:
            ordinary.append(str(name))
    types = _shadow_types(connection) if declared else None
    virtual: list[VirtualTable] = []
    for name, module in declared:
        problem = _problem(connection, name, module)
        prefix = f"{name}_".lower()
        shadows = tuple(
            t
            for t in ordinary
            if t.lower().startswith(prefix)
            # with the module loaded, SQLite knows its shadow tables; else go by the name
            and (types is None or problem is not None or types.get(t) == "shadow")
        )
        virtual.append(VirtualTable(name, module, shadows, problem))
    readable = [v.name for v in virtual if read_virtual and v.problem is None]
    names = sorted([*ordinary, *readable])
    return Survey([table_stats(connection, name) for name in names], virtual)


def available_modules() -> set[str] | None:
    """The virtual table modules this machine's SQLite has (lower case), or ``None`` when
    it cannot tell (``PRAGMA module_list`` is missing)."""
    try:
        connection = sqlite3.connect(":memory:")
    except sqlite3.Error:
        return None
    try:
        rows = connection.execute("PRAGMA module_list").fetchall()
    except sqlite3.Error:
        return None
    finally:
        connection.close()
    return {str(row[0]).lower() for row in rows} or None


def planned_notes(state: Mapping[str, Any] | None) -> list[str]:
    """For a restore plan: the virtual tables a backup with engine ``state`` holds that
    the restore's verification will not check here, and why."""
    recorded = (state or {}).get(VIRTUAL_TABLES)
    if not isinstance(recorded, list):
        return []
    here = available_modules()
    notes: list[str] = []
    for entry in recorded:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            continue
        name = entry["name"]
        module = entry.get("module") if isinstance(entry.get("module"), str) else None
        reason: object
        if here is None:  # cannot tell: as the backup found it
            reason = entry.get("not_checked")
        elif module is None or module.lower() not in here:
            reason = f"module {module or '?'} is not available here"
        else:
            shadows = tuple(str(t) for t in entry.get("shadow_tables") or ())
            reason = VirtualTable(name, module, shadows).reason
        if isinstance(reason, str):
            notes.append(f"not checked: virtual table {name}: {reason}")
    return notes
