"""Choosing the TOC entries of a ``pg_dump -Fc`` archive that restore selected tables.

How the entries are chosen: ``pg_restore --list --verbose`` prints every TOC entry with the
dump ids it depends on (``;\tdepends on: 216 215``). pg_dump records those dependencies from
``pg_depend``, so they say exactly which table an index, constraint, trigger, default, owned
or identity sequence, comment or grant belongs to — the TOC line itself only names the index
(``INDEX public users_name_idx``) or a "table constraint" pair that is ambiguous when names
hold spaces. Following the dependency ids avoids parsing SQL text altogether:

* the requested ``TABLE`` entries, plus the partitions attached to them (``TABLE ATTACH``);
* sequences that depend on a chosen table (pg_dump makes serial and identity sequences
  depend on their owning table) with their ``SEQUENCE OWNED BY`` / ``SEQUENCE SET``;
* entries attached to chosen objects (data, defaults, constraints, indexes, triggers,
  policies, rules, statistics, comments, grants…) whose every dependency is either chosen
  or a supporting object — so a foreign key is kept only when its referenced table's key
  is chosen too;
* supporting objects the chosen ones need (schemas, functions, types, domains, extensions,
  collations, sequences used by defaults) unless they already exist in the target; those
  that exist are used as they are (a live sequence's value is never reset).

:mod:`strongroom.engines.postgresql.tables` restores the selection.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from strongroom.errors import UsageError

# TOC descriptions that contain spaces, longest first (so "TABLE DATA" wins over "TABLE").
_MULTIWORD_DESCS = sorted(
    [
        "TABLE DATA",
        "TABLE ATTACH",
        "SEQUENCE OWNED BY",
        "SEQUENCE SET",
        "FK CONSTRAINT",
        "CHECK CONSTRAINT",
        "MATERIALIZED VIEW",
        "MATERIALIZED VIEW DATA",
        "LARGE OBJECT",
        "BLOB METADATA",
        "INDEX ATTACH",
        "ROW SECURITY",
        "DEFAULT ACL",
        "SHELL TYPE",
        "TEXT SEARCH CONFIGURATION",
        "TEXT SEARCH DICTIONARY",
        "TEXT SEARCH PARSER",
        "TEXT SEARCH TEMPLATE",
        "FOREIGN TABLE",
        "FOREIGN DATA WRAPPER",
        "FOREIGN SERVER",
        "USER MAPPING",
        "PUBLICATION TABLE",
        "PUBLICATION TABLES IN SCHEMA",
        "SUBSCRIPTION TABLE",
        "EVENT TRIGGER",
        "SECURITY LABEL",
        "OPERATOR CLASS",
        "OPERATOR FAMILY",
        "PROCEDURAL LANGUAGE",
        "ACCESS METHOD",
        "STATISTICS DATA",
    ],
    key=len,
    reverse=True,
)

PG_CLASS = 1259  # catalog oid of pg_class: TABLE, SEQUENCE and INDEX entries carry it

# Objects a chosen table may need that are not tables: restored only if the target lacks them.
_SUPPORT_KINDS = frozenset(
    {
        "SCHEMA",
        "EXTENSION",
        "FUNCTION",
        "PROCEDURE",
        "AGGREGATE",
        "TYPE",
        "SHELL TYPE",
        "DOMAIN",
        "SEQUENCE",
        "COLLATION",
        "CONVERSION",
        "OPERATOR",
        "OPERATOR CLASS",
        "OPERATOR FAMILY",
        "TEXT SEARCH CONFIGURATION",
        "TEXT SEARCH DICTIONARY",
        "TEXT SEARCH PARSER",
        "TEXT SEARCH TEMPLATE",
    }
)

# Entries that belong to other objects and are restored with them.
_ATTACHED_KINDS = frozenset(
    {
        "TABLE DATA",
        "DEFAULT",
        "CONSTRAINT",
        "CHECK CONSTRAINT",
        "FK CONSTRAINT",
        "INDEX",
        "INDEX ATTACH",
        "TRIGGER",
        "RULE",
        "POLICY",
        "ROW SECURITY",
        "STATISTICS",
        "STATISTICS DATA",
        "COMMENT",
        "ACL",
        "SECURITY LABEL",
        "SEQUENCE SET",
        "SEQUENCE OWNED BY",
    }
)
# Attached kinds that may also hang off a schema or an extension we create.
_DECORATION_KINDS = frozenset({"COMMENT", "ACL", "SECURITY LABEL"})

_TOC_LINE = re.compile(r"^(\d+); (\d+) (\d+) (.*)$")
_DEPENDS_LINE = re.compile(r"^;\s*depends on:(.*)$")


@dataclass
class TocEntry:
    """One line of ``pg_restore --list``."""

    dump_id: int
    catalog: int  # oid of the system catalog the object lives in (0 for data entries)
    desc: str  # "TABLE", "TABLE DATA", "INDEX"…
    schema: str  # "-" when the object has none
    name: str
    qualified_text: str  # "schema name" exactly as printed (names may hold spaces)
    line: str
    deps: list[int] = field(default_factory=list)

    def label(self) -> str:
        return f"{self.schema}.{self.name}" if self.schema != "-" else self.name


def parse_toc(text: str) -> list[TocEntry]:
    """Entries of ``pg_restore --list --verbose`` output, with their dependencies."""
    entries: list[TocEntry] = []
    for raw in text.splitlines():
        match = _TOC_LINE.match(raw)
        if match is None:
            deps = _DEPENDS_LINE.match(raw)
            if deps is not None and entries:
                entries[-1].deps.extend(int(d) for d in deps.group(1).split())
            continue
        rest = match.group(4)
        desc = next((d for d in _MULTIWORD_DESCS if rest.startswith(d + " ")), None)
        if desc is None:
            desc = rest.partition(" ")[0]
        # "<schema> <name> <owner>": the owner is the last word; the schema is split off
        # below (it is one word unless the dump creates a schema whose name has spaces).
        tail = rest[len(desc) + 1 :]
        qualified_text = tail.rpartition(" ")[0] if " " in tail else tail
        schema, _, name = qualified_text.partition(" ")
        entries.append(
            TocEntry(
                dump_id=int(match.group(1)),
                catalog=int(match.group(2)),
                desc=desc,
                schema=schema,
                name=name,
                qualified_text=qualified_text,
                line=raw,
            )
        )
    schemas = sorted(
        {e.name for e in entries if e.desc == "SCHEMA" and " " in e.name}, key=len, reverse=True
    )
    for entry in entries:
        spaced = next((n for n in schemas if entry.qualified_text.startswith(n + " ")), None)
        if spaced is not None:
            entry.schema, entry.name = spaced, entry.qualified_text[len(spaced) + 1 :]
    return entries


def parse_table_name(text: str) -> tuple[str, str]:
    """``"schema.table"`` -> (schema, table); a bare name is in ``public``.

    Names are taken as stored (no case folding); the first dot separates schema and table
    unless double quotes say otherwise: ``'"my.schema"."Orders 2024"'``.
    """
    text = text.strip()
    quoted = r'"((?:[^"]|"")*)"'
    match = re.fullmatch(rf'{quoted}\.{quoted}|{quoted}\.([^"]+)|([^".]+)\.{quoted}|{quoted}', text)
    if match is not None:
        groups = [g.replace('""', '"') if g is not None else None for g in match.groups()]
        schema = next((g for g in (groups[0], groups[2], groups[4]) if g is not None), "public")
        table = next(g for g in (groups[1], groups[3], groups[5], groups[6]) if g is not None)
    elif '"' in text:
        raise UsageError(f"cannot read table name {text!r}; write schema.table")
    else:
        schema, dot, table = text.partition(".")
        if not dot:
            schema, table = "public", text
    if not schema or not table:
        raise UsageError(f"cannot read table name {text!r}; write schema.table")
    return schema, table


@dataclass
class RestorePlan:
    """The TOC entries to restore."""

    tables: list[TocEntry]  # the wanted tables, then the partitions they brought along
    entries: list[TocEntry]  # every entry to restore, in TOC order
    created_support: list[TocEntry]  # supporting objects the target lacked


def plan_restore(
    toc: list[TocEntry],
    wanted: Sequence[TocEntry],
    exists: Callable[[TocEntry], bool],
    relation_exists: Callable[[str, str], bool],
) -> RestorePlan:
    """Choose the entries restoring ``wanted`` (see the module docstring).

    ``exists`` says whether a supporting object is already in the target; ``relation_exists``
    whether a table a chosen object requires (an inheritance parent, a row type) is there.
    """
    by_id = {e.dump_id: e for e in toc}
    chosen: set[int] = {e.dump_id for e in wanted}
    created: set[int] = set()
    present: set[int] = set()

    def deps_of(entry: TocEntry) -> list[TocEntry]:
        return [by_id[d] for d in entry.deps if d in by_id]

    def is_table(entry: TocEntry) -> bool:
        return entry.desc == "TABLE" and entry.catalog == PG_CLASS

    # Partitions are dumped as standalone tables plus a TABLE ATTACH entry, so a partition's
    # dependency on its parent is soft; an inheritance child's (CREATE TABLE … INHERITS) isn't.
    attached_pairs: set[tuple[int, int]] = set()
    for entry in toc:
        if entry.desc == "TABLE ATTACH":
            for child in deps_of(entry):
                attached_pairs.update((child.dump_id, p) for p in entry.deps if p in child.deps)

    def wanted_with(entry: TocEntry, deps: list[TocEntry]) -> bool:
        """Whether an entry comes along with what is chosen so far."""
        if entry.desc == "TABLE ATTACH":
            # Partitions of a chosen table come with it: the entry depends on the child and
            # the parent, and the child's TABLE entry itself depends on the parent.
            tables = [d for d in deps if is_table(d)]
            take = False
            for child in tables:
                parents = [p for p in tables if p is not child and p.dump_id in child.deps]
                if parents and all(p.dump_id in chosen for p in parents):
                    chosen.add(child.dump_id)
                    take = True
            return take
        if entry.desc == "SEQUENCE" and entry.catalog == PG_CLASS:
            # Serial and identity sequences depend on the table owning them.
            return any(is_table(d) and d.dump_id in chosen for d in deps)
        if entry.desc == "SEQUENCE OWNED BY":  # only for sequences owned by a chosen table
            return bool(deps) and all(d.dump_id in chosen for d in deps)
        if entry.desc not in _ATTACHED_KINDS:
            return False
        anchored = any(
            (d.dump_id in chosen or d.dump_id in created)
            and (entry.desc in _DECORATION_KINDS or d.desc not in ("SCHEMA", "EXTENSION"))
            for d in deps
        )
        return anchored and all(
            d.dump_id in chosen
            or d.dump_id in created
            or d.dump_id in present
            or d.desc in _SUPPORT_KINDS  # resolved below
            for d in deps
        )

    def resolve_support() -> bool:
        """Sort what the chosen entries need into present and created; True if any created."""
        grew = False
        pending = [by_id[i] for i in chosen | created]
        while pending:
            entry = pending.pop()
            for dep in deps_of(entry):
                if dep.dump_id in chosen or dep.dump_id in created or dep.dump_id in present:
                    continue
                if dep.desc in _SUPPORT_KINDS:
                    if exists(dep):
                        present.add(dep.dump_id)
                    else:
                        created.add(dep.dump_id)
                        pending.append(dep)
                        grew = True
                elif (
                    entry.desc in _ATTACHED_KINDS
                    or (entry.desc == "SEQUENCE" and is_table(dep))
                    or (entry.dump_id, dep.dump_id) in attached_pairs
                ):
                    continue  # attached entries were checked above; these dependencies are soft
                elif dep.catalog == PG_CLASS:
                    if not relation_exists(dep.schema, dep.name):
                        raise UsageError(
                            f"{entry.label()} needs {dep.label()}, which is neither among "
                            "the tables to restore nor in the target; add it to the tables"
                        )
                    present.add(dep.dump_id)
        return grew

    # Tables (with partitions) and owned sequences are settled by the first pass; supporting
    # objects created later only bring their own comments, grants and sequence values.
    while True:
        changed = True
        while changed:
            changed = False
            for entry in toc:
                if entry.dump_id in chosen or entry.dump_id in created:
                    continue
                if wanted_with(entry, deps_of(entry)):
                    chosen.add(entry.dump_id)
                    changed = True
        if not resolve_support():
            break

    extra = [e for e in toc if e.dump_id in chosen and is_table(e) and e not in wanted]
    tables = [*wanted, *extra]
    entries = [e for e in toc if e.dump_id in chosen or e.dump_id in created]
    created_support = [e for e in toc if e.dump_id in created]
    return RestorePlan(tables=tables, entries=entries, created_support=created_support)


class Catalog:
    """Existence checks against one database."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def _one(self, query: str, params: Sequence[Any]) -> bool:
        return self._conn.execute(query, params).fetchone() is not None

    def relation_exists(self, schema: str, name: str) -> bool:
        return self._one(
            "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relname = %s",
            (schema, name),
        )

    def exists(self, entry: TocEntry) -> bool:
        """Whether a supporting object is in the database (``False`` if it cannot tell)."""
        desc, schema, name = entry.desc, entry.schema, entry.name
        if desc == "SCHEMA":  # "SCHEMA - billing owner"
            return self._one("SELECT 1 FROM pg_namespace WHERE nspname = %s", (name,))
        if desc == "EXTENSION":
            return self._one("SELECT 1 FROM pg_extension WHERE extname = %s", (name,))
        if desc in ("TYPE", "SHELL TYPE", "DOMAIN"):
            return self._one(
                "SELECT 1 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace"
                " WHERE n.nspname = %s AND t.typname = %s",
                (schema, name),
            )
        if desc == "SEQUENCE":
            return self.relation_exists(schema, name)
        if desc == "COLLATION":
            return self._one(
                "SELECT 1 FROM pg_collation c JOIN pg_namespace n ON n.oid = c.collnamespace"
                " WHERE n.nspname = %s AND c.collname = %s",
                (schema, name),
            )
        if desc in ("FUNCTION", "PROCEDURE", "AGGREGATE"):
            function, paren, args = name.partition("(")
            try:  # the tag is "name(argument types)"
                row = self._conn.execute(
                    "SELECT to_regprocedure(format('%%I.%%I', %s::text, %s::text) || %s)",
                    (schema, function, paren + args),
                ).fetchone()
                return row is not None and row[0] is not None
            except psycopg.Error:  # unreadable signature: any function of that name
                return self._one(
                    "SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
                    " WHERE n.nspname = %s AND p.proname = %s",
                    (schema, function),
                )
        return False
