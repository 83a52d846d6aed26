"""Restore selected tables of a ``pg_dump -Fc`` file, in place or into another schema.

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

The selection is restored with ``--single-transaction``, so a failure changes nothing.
"""

from __future__ import annotations

import logging
import re
import secrets
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from strongroom.engines.postgres import (
    PostgresEngine,
    _server_major,
)
from strongroom.engines.tools import exit_description as _exit_description
from strongroom.engines.tools import first_line as _first_line
from strongroom.errors import RestoreFailed, TargetNotEmpty, UsageError

logger = logging.getLogger("strongroom.engines.postgres_tables")

SCRATCH_PREFIX = "sr_tables_"
_LIST_NAMES_UP_TO = 10

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

_PG_CLASS = 1259  # catalog oid of pg_class: TABLE, SEQUENCE and INDEX entries carry it

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
        return entry.desc == "TABLE" and entry.catalog == _PG_CLASS

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
        if entry.desc == "SEQUENCE" and entry.catalog == _PG_CLASS:
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
                elif dep.catalog == _PG_CLASS:
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


class _Catalog:
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


def _run(engine: PostgresEngine, command: list[str], what: str) -> str:
    """Run a client tool with the engine's environment; return its stdout."""
    logger.debug("running %s", command[0])
    result = subprocess.run(
        command,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        env=engine._child_env(),
        check=False,
    )
    if result.returncode != 0:
        reason = _first_line(result.stderr, prefer="error") or _exit_description(result.returncode)
        raise RestoreFailed(f"{what}: {engine.redact(reason)}")
    return result.stdout


def _error(engine: PostgresEngine, what: str, exc: BaseException) -> RestoreFailed:
    return RestoreFailed(f"{what}: {engine.redact(_first_line(str(exc)))}")


def _qualified(names: Iterable[tuple[str, str]]) -> list[str]:
    return [f"{schema}.{name}" for schema, name in names]


def _resolve(toc: list[TocEntry], tables: Sequence[str]) -> list[TocEntry]:
    """The TABLE entries named by ``tables``; ``UsageError`` for a name not in the dump."""
    available = [e for e in toc if e.desc == "TABLE" and e.catalog == _PG_CLASS]
    wanted: list[TocEntry] = []
    for text in tables:
        schema, name = parse_table_name(text)
        found = [e for e in available if e.qualified_text == f"{schema} {name}"]
        if not found:
            if len(available) <= _LIST_NAMES_UP_TO:
                has = ", ".join(e.label() for e in available) or "no tables"
            else:
                has = f"{len(available)} tables"
            raise UsageError(f"table {schema}.{name} is not in the dump (it has {has})")
        if found[0] not in wanted:
            wanted.append(found[0])
    if not wanted:
        raise UsageError("no tables to restore were given")
    return wanted


def _existing(catalog: _Catalog, names: Iterable[tuple[str, str]]) -> list[str]:
    return _qualified(n for n in names if catalog.relation_exists(*n))


def _refuse(engine: PostgresEngine, taken: list[str], hint: str = "") -> TargetNotEmpty:
    verb = "exists" if len(taken) == 1 else "exist"
    return TargetNotEmpty(f"{', '.join(taken)} already {verb} in {engine.where()}{hint}")


def _plan_relations(plan: RestorePlan) -> list[tuple[str, str]]:
    """Tables, sequences and indexes the plan creates."""
    kinds = ("TABLE", "SEQUENCE", "INDEX")
    return [(e.schema, e.name) for e in plan.entries if e.desc in kinds and e.catalog == _PG_CLASS]


def restore_tables(
    engine: PostgresEngine,
    dump_file: Path,
    tables: Sequence[str],
    into_schema: str | None = None,
) -> list[str]:
    """Restore ``tables`` ("schema.table"; bare names are in ``public``) from a ``pg_dump -Fc``
    file into the engine's database, with their data, keys, indexes, triggers and sequences.

    Without ``into_schema`` they keep their schemas and must not exist in the target
    (``TargetNotEmpty``). With it, they land in that schema next to the live data (through a
    scratch database, always dropped). Returns the qualified names restored.
    """
    dump_file = Path(dump_file)
    if not dump_file.is_file():
        raise UsageError(f"dump file {dump_file} not found")
    if into_schema is not None and (
        not into_schema or into_schema.startswith("pg_") or into_schema == "information_schema"
    ):
        raise UsageError(f"cannot restore into schema {into_schema!r}")
    with engine._connect() as conn:
        server_major = _server_major(conn.info.server_version)
    pg_restore, _ = engine._tool("pg_restore", server_major)
    listing = _run(
        engine,
        [str(pg_restore), "--list", "--verbose", str(dump_file)],
        f"pg_restore cannot read {dump_file}",
    )
    toc = parse_toc(listing)
    wanted = _resolve(toc, tables)
    if into_schema is None:
        return _restore_in_place(engine, pg_restore, dump_file, toc, wanted)
    return _restore_into_schema(
        engine, pg_restore, server_major, dump_file, toc, wanted, into_schema
    )


def _restore_list(
    engine: PostgresEngine,
    pg_restore: Path,
    dump_file: Path,
    entries: list[TocEntry],
    dbname: str | None = None,
) -> None:
    """``pg_restore -L`` the entries into ``dbname`` (default: the target) in one transaction."""
    where = engine.where() if dbname is None else f"database {dbname} at {engine.host_port()}"
    with tempfile.TemporaryDirectory(prefix="strongroom-tables-") as tmp:
        list_file = Path(tmp) / "restore.list"
        list_file.write_text("".join(e.line + "\n" for e in entries), encoding="utf-8")
        _run(
            engine,
            [
                str(pg_restore),
                "--no-owner",
                "--exit-on-error",
                "--single-transaction",
                "--no-password",
                "-L",
                str(list_file),
                "-d",
                engine._conninfo(dbname=dbname, with_password=False),
                str(dump_file),
            ],
            f"pg_restore failed for {where} (nothing was restored there)",
        )


def _restore_in_place(
    engine: PostgresEngine,
    pg_restore: Path,
    dump_file: Path,
    toc: list[TocEntry],
    wanted: list[TocEntry],
) -> list[str]:
    hint = "; restore into another schema (into_schema) or another database"
    with engine._connect() as conn:
        catalog = _Catalog(conn)
        taken = _existing(catalog, ((e.schema, e.name) for e in wanted))
        if taken:
            raise _refuse(engine, taken, hint)
        plan = plan_restore(toc, wanted, catalog.exists, catalog.relation_exists)
        taken = _existing(catalog, _plan_relations(plan))
        if taken:
            raise _refuse(engine, taken, hint)
    logger.info("restoring %s into %s", ", ".join(e.label() for e in plan.tables), engine.where())
    _restore_list(engine, pg_restore, dump_file, plan.entries)
    return _qualified((e.schema, e.name) for e in plan.tables)


def _create_scratch(engine: PostgresEngine) -> str:
    """Create an empty scratch database like the target (encoding, locale); return its name."""
    name = SCRATCH_PREFIX + secrets.token_hex(6)
    try:
        with engine._connect() as conn:
            row = conn.execute(
                "SELECT pg_encoding_to_char(encoding), datcollate, datctype FROM pg_database"
                " WHERE datname = current_database()"
            ).fetchone()
        with engine._maintenance_connect() as conn:
            query = sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name))
            if row is not None:
                query = sql.SQL("{} ENCODING {} LC_COLLATE {} LC_CTYPE {}").format(
                    query, sql.Literal(row[0]), sql.Literal(row[1]), sql.Literal(row[2])
                )
            logger.info("creating scratch database %s at %s", name, engine.host_port())
            conn.execute(query)
    except psycopg.Error as exc:
        raise _error(
            engine,
            f"cannot create a scratch database at {engine.host_port()} (needs CREATEDB)",
            exc,
        ) from None
    return name


def _drop_scratch(engine: PostgresEngine, name: str) -> str | None:
    """Drop the scratch database; ``None`` on success, else the reason."""
    try:
        with engine._maintenance_connect() as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            drop = sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name))
            if conn.info.server_version >= 130000:
                drop = sql.SQL("{} WITH (FORCE)").format(drop)
            conn.execute(drop)
    except Exception as exc:
        reason = engine.redact(_first_line(str(exc)))
        logger.error("could not drop scratch database %s: %s; drop it by hand", name, reason)
        return reason
    logger.info("dropped scratch database %s", name)
    return None


def _restore_into_schema(
    engine: PostgresEngine,
    pg_restore: Path,
    server_major: int,
    dump_file: Path,
    toc: list[TocEntry],
    wanted: list[TocEntry],
    into: str,
) -> list[str]:
    # pg_restore cannot rename schemas: restore into a scratch database, move the tables
    # (their indexes, constraints and owned sequences follow) into ``into`` there, dump
    # just those relations and restore them into the target in one transaction.
    with engine._connect() as conn:
        taken = _existing(_Catalog(conn), ((into, e.name) for e in wanted))
    if taken:
        raise _refuse(engine, taken)
    pg_dump, _ = engine._tool("pg_dump", server_major)
    scratch = _create_scratch(engine)
    try:
        with engine._connect(scratch) as conn:
            catalog = _Catalog(conn)
            plan = plan_restore(toc, wanted, catalog.exists, catalog.relation_exists)
        names = [e.name for e in plan.tables]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise UsageError(
                f"tables from different schemas share the name(s) {', '.join(duplicates)}; "
                f"they cannot all go into schema {into}"
            )
        _restore_list(engine, pg_restore, dump_file, plan.entries, scratch)
        moved = _move_to_schema(engine, scratch, plan, into)
        with engine._connect() as conn:
            taken = _existing(_Catalog(conn), ((into, n) for n in moved.relations))
        if taken:
            raise _refuse(engine, taken)
        _copy_relations(engine, pg_dump, pg_restore, scratch, into, moved.dumped)
    except BaseException as exc:
        problem = _drop_scratch(engine, scratch)
        if problem is not None:
            exc.add_note(f"the scratch database {scratch} could not be dropped: {problem}")
        raise
    _drop_scratch(engine, scratch)
    logger.info(
        "restored %s into schema %s of %s",
        ", ".join(e.label() for e in plan.tables),
        into,
        engine.where(),
    )
    return _qualified((into, n) for n in names)


@dataclass
class _Moved:
    relations: list[str]  # every relation now in the schema (tables, sequences, indexes)
    dumped: list[str]  # tables and sequences to dump (indexes and the rest come with them)


def _move_to_schema(engine: PostgresEngine, scratch: str, plan: RestorePlan, into: str) -> _Moved:
    """In the scratch database, move the tables and the sequences their defaults use."""
    try:
        with engine._connect(scratch) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(into)))
            sequences = [
                e for e in plan.created_support if e.desc == "SEQUENCE" and e.catalog == _PG_CLASS
            ]
            for entry, kind in [(t, "TABLE") for t in plan.tables] + [
                (s, "SEQUENCE") for s in sequences
            ]:
                if entry.schema == into:
                    continue
                # Owned (serial, identity) sequences, indexes and constraints move along.
                conn.execute(
                    sql.SQL("ALTER {} {}.{} SET SCHEMA {}").format(
                        sql.SQL(kind),
                        sql.Identifier(entry.schema),
                        sql.Identifier(entry.name),
                        sql.Identifier(into),
                    )
                )
            rows = conn.execute(
                "SELECT c.relname, c.relkind IN ('r', 'p', 'S') FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'S', 'i', 'I')"
                " ORDER BY 1",
                (into,),
            ).fetchall()
    except psycopg.Error as exc:
        raise _error(engine, f"cannot move the tables into schema {into}", exc) from None
    return _Moved(relations=[str(r[0]) for r in rows], dumped=[str(r[0]) for r in rows if r[1]])


def _pattern(schema: str, name: str) -> str:
    """A pg_dump ``-t`` pattern matching exactly schema.name (quoted: no wildcards)."""
    return '"{}"."{}"'.format(schema.replace('"', '""'), name.replace('"', '""'))


def _copy_relations(
    engine: PostgresEngine,
    pg_dump: Path,
    pg_restore: Path,
    scratch: str,
    into: str,
    relations: list[str],
) -> None:
    """``pg_dump -t`` the relations from the scratch database into the target."""
    with tempfile.TemporaryDirectory(prefix="strongroom-tables-") as tmp:
        moved_dump = Path(tmp) / "moved.dump"
        command = [str(pg_dump), "-Fc", "-Z0", "--no-password", "-f", str(moved_dump)]
        for name in relations:
            command += ["-t", _pattern(into, name)]
        command += ["-d", engine._conninfo(dbname=scratch, with_password=False)]
        _run(engine, command, f"pg_dump failed for scratch database {scratch}")
        created_schema = False
        try:
            with engine._connect() as conn:
                found = conn.execute(
                    "SELECT 1 FROM pg_namespace WHERE nspname = %s", (into,)
                ).fetchone()
                if found is None:
                    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(into)))
                    created_schema = True
        except psycopg.Error as exc:
            raise _error(engine, f"cannot create schema {into} in {engine.where()}", exc) from None
        try:
            _run(
                engine,
                [
                    str(pg_restore),
                    "--no-owner",
                    "--exit-on-error",
                    "--single-transaction",
                    "--no-password",
                    "-d",
                    engine._conninfo(with_password=False),
                    str(moved_dump),
                ],
                f"pg_restore failed for {engine.where()} (nothing was restored there)",
            )
        except BaseException:
            if created_schema:
                try:
                    with engine._connect() as conn:
                        conn.execute(sql.SQL("DROP SCHEMA {}").format(sql.Identifier(into)))
                except Exception:
                    logger.warning("could not drop the schema %s created for the restore", into)
            raise
