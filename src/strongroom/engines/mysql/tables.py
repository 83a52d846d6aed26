"""Restore selected tables of a MySQL/MariaDB dump, in place or into another database.

A ``mysqldump`` of one database is a sequence of sections, each opened by a comment line
the tool always writes (``-- Table structure for table `t```, ``-- Temporary table
structure for view …``, ``-- Dumping routines …``, ``-- Final view structure …``); a table's
section holds its ``CREATE TABLE``, its rows and its triggers. Data lines cannot start with
``--`` (strings are escaped, one statement or row per line), so the sections are found by
those lines alone. The header (session settings) and footer are always kept.

The chosen sections go into a scratch database ``<target>_tables_<hex>``; their row counts and
checksums must match the backup's; then, in the scratch database, their triggers are
captured and dropped and their foreign keys dropped; one ``RENAME TABLE`` moves them into
the destination (the target database, or ``into_schema``: another database on the same
server, created if missing) and fails as a whole if any name is taken; the triggers are
re-created and the foreign keys re-added (without re-checking rows, as a dump restore does)
where the referenced table exists there. The scratch database is always dropped.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pymysql

from strongroom.engines.base import TableStats, checksum_method
from strongroom.engines.mysql.connection import MysqlConnection
from strongroom.engines.mysql.restore import create_database, drop_database, run_client
from strongroom.engines.mysql.stats import quote_ident, snapshot_stats
from strongroom.engines.mysql.swap import capture, create, drop, rename_statement, schema_charset
from strongroom.engines.mysql.tools import CLIENT_TOOLS, error_text, limit_name
from strongroom.engines.tools import exit_description, first_line
from strongroom.errors import RestoreFailed, TargetNotEmpty, UsageError, VerificationMismatch

logger = logging.getLogger("strongroom.engines.mysql_tables")

SCRATCH_INFIX = "_tables_"
_SECTION = re.compile(
    rb"^-- (Table structure for table|Temporary table structure for view|Temporary view "
    rb"structure for view|Final view structure for view|Sequence structure for|Dumping "
    rb"events for database|Dumping routines for database) (.*?)\s*$"
)
_FOOTER = b"/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;"
_FOREIGN_KEY = re.compile(r"^\s*(CONSTRAINT\s+`((?:[^`]|``)+)`\s+FOREIGN KEY\s.*?),?\s*$")
_REFERENCES = re.compile(r"REFERENCES\s+(`(?:[^`]|``)+`(?:\.`(?:[^`]|``)+`)?)")


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] == "`":
        return text[1:-1].replace("``", "`")
    return text


def iter_lines(source: Iterable[bytes]) -> Iterator[bytes]:
    """The lines of a byte stream, each with its ``\\n`` (the last one maybe without)."""
    pending: list[bytes] = []
    for data in source:
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                if start < len(data):
                    pending.append(data[start:])
                break
            pending.append(data[start : end + 1])
            yield b"".join(pending)
            pending = []
            start = end + 1
    if pending:
        yield b"".join(pending)


@dataclass
class SectionFilter:
    """Passes the header, the sections of ``wanted`` tables and the footer of a dump."""

    wanted: set[str]
    tables: list[str] = field(default_factory=list)  # every table section seen
    views: list[str] = field(default_factory=list)

    def filter(self, source: Iterable[bytes]) -> Iterator[bytes]:
        keep = True  # the header
        for line in iter_lines(source):
            if line.startswith(b"-- "):
                match = _SECTION.match(line)
                if match is not None:
                    kind, name = match.group(1), _unquote(match.group(2).decode("utf-8", "replace"))
                    if kind == b"Table structure for table":
                        self.tables.append(name)
                        keep = name in self.wanted
                    else:
                        if kind.startswith(b"Temporary"):
                            self.views.append(name)
                        keep = False
            elif line.startswith(_FOOTER):
                keep = True
            if keep:
                yield line


def _resolve(names: Sequence[str], databases: Sequence[str | None]) -> list[str]:
    """Table names from ``table`` or ``database.table`` (the dumped or target database)."""
    resolved: list[str] = []
    for text in names:
        name = text.strip()
        prefix = next((f"{d}." for d in databases if d and name.startswith(f"{d}.")), "")
        name = name[len(prefix) :]
        name = _unquote(name)
        if not name:
            raise UsageError(f"cannot read table name {text!r}")
        if name not in resolved:
            resolved.append(name)
    if not resolved:
        raise UsageError("no tables to restore were given")
    return resolved


@dataclass
class _ForeignKey:
    table: str
    name: str
    clause: str  # "CONSTRAINT `fk` FOREIGN KEY (...) REFERENCES `t` (...) ..."
    referenced: str  # "t" (same database) or "db.t"


def _foreign_keys(cur: Any, database: str, table: str) -> list[_ForeignKey]:
    cur.execute(f"SHOW CREATE TABLE {quote_ident(database)}.{quote_ident(table)}")
    row = cur.fetchone()
    keys = []
    for line in str(row[1] if row else "").splitlines():
        match = _FOREIGN_KEY.match(line)
        ref = _REFERENCES.search(line)
        if match and ref:
            parts = [_unquote(p) for p in re.findall(r"`(?:[^`]|``)+`", ref.group(1))]
            keys.append(
                _ForeignKey(table, _unquote(f"`{match.group(2)}`"), match.group(1), ".".join(parts))
            )
    return keys


def restore_tables(
    db: MysqlConnection,
    source: Iterable[bytes],
    tables: Sequence[str],
    into_schema: str | None = None,
    *,
    expected: Sequence[TableStats] = (),
    source_database: str | None = None,
) -> list[str]:
    """Restore ``tables`` from the dump stream ``source`` (module docstring); return the
    ``database.table`` names restored. ``expected``: the backup's statistics to verify."""
    wanted = _resolve(tables, (source_database, db.database_name()))
    dest = into_schema if into_schema is not None else db.database_name()
    if not dest or dest.lower() in ("mysql", "information_schema", "performance_schema", "sys"):
        raise UsageError(f"cannot restore into database {dest!r}")
    with db.connect() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s", (dest,)
        )
        taken = sorted({str(r[0]) for r in cur.fetchall()} & set(wanted))
    if taken:
        raise _refuse(db, dest, taken, into_schema is None)
    client, _ = db.tool(CLIENT_TOOLS)
    scratch = db.sibling(limit_name(db.database_name(), f"{SCRATCH_INFIX}{secrets.token_hex(4)}"))
    create_database(scratch, like=db.database_name())
    try:
        selector = SectionFilter(set(wanted))
        returncode, stderr = run_client(
            db, client, selector.filter(source), scratch.database_name()
        )
        if returncode != 0:
            reason = first_line(stderr, prefer="error") or exit_description(returncode)
            raise RestoreFailed(
                f"{client.name} failed restoring {', '.join(wanted)}: {db.redact(reason)}"
            )
        _check_found(wanted, selector)
        _verify(scratch, wanted, expected)
        notes = _move(
            db, scratch.database_name(), dest, wanted, create_dest=into_schema is not None
        )
    finally:
        drop_database(scratch)
    for note in notes:
        logger.warning("%s", note)
    return [f"{dest}.{t}" for t in wanted]


def _refuse(db: MysqlConnection, dest: str, taken: list[str], in_place: bool) -> TargetNotEmpty:
    verb = "exists" if len(taken) == 1 else "exist"
    hint = "; restore into another database with --into-schema" if in_place else ""
    return TargetNotEmpty(
        f"{', '.join(taken)} already {verb} in database {dest} at {db.host_port()}{hint}"
    )


def _check_found(wanted: list[str], selector: SectionFilter) -> None:
    for name in wanted:
        if name in selector.tables:
            continue
        if name in selector.views:
            raise UsageError(f"{name} is a view; only tables can be restored one by one")
        available = selector.tables
        has = ", ".join(available) if len(available) <= 10 else f"{len(available)} tables"
        raise UsageError(f"table {name} is not in the dump (it has {has or 'no tables'})")


def _verify(scratch: MysqlConnection, wanted: list[str], expected: Sequence[TableStats]) -> None:
    recorded = {t.name: t for t in expected}
    if not recorded:
        return
    actual = {t.name: t for t in snapshot_stats(scratch)}
    for name in wanted:
        want, got = recorded.get(name), actual.get(name)
        if want is None or got is None:
            continue
        same_checksum = (
            want.checksum is None
            or got.checksum is None
            or checksum_method(want.checksum) != checksum_method(got.checksum)
            or want.checksum == got.checksum
        )
        if want.rows != got.rows or not same_checksum:
            raise VerificationMismatch(
                f"table {name} restored from the dump differs from the backup's record "
                f"({got.rows} rows, {want.rows} recorded); nothing was changed"
            )


def _move(
    db: MysqlConnection, scratch: str, dest: str, wanted: list[str], *, create_dest: bool
) -> list[str]:
    """Triggers and foreign keys off, one RENAME into ``dest``, both back on; notes."""
    notes: list[str] = []
    with db.connect() as conn, conn.cursor() as cur:
        try:
            objects = capture(cur, scratch)
            keys = [fk for t in wanted for fk in _foreign_keys(cur, scratch, t)]
            for fk in keys:
                cur.execute(
                    f"ALTER TABLE {quote_ident(scratch)}.{quote_ident(fk.table)}"
                    f" DROP FOREIGN KEY {quote_ident(fk.name)}"
                )
            for trigger in objects.triggers:
                drop(cur, scratch, trigger)
            if create_dest:
                charset = schema_charset(cur, db.database_name())
                cur.execute(
                    f"CREATE DATABASE IF NOT EXISTS {quote_ident(dest)} CHARACTER SET {charset}"
                )
            cur.execute(rename_statement((t, scratch, dest) for t in wanted))
        except pymysql.Error as exc:
            if exc.args and exc.args[0] == 1050:
                raise TargetNotEmpty(
                    f"a table to restore already exists in database {dest}: "
                    f"{db.redact(error_text(exc))}"
                ) from None
            raise RestoreFailed(
                f"could not move {', '.join(wanted)} into database {dest}: "
                f"{db.redact(error_text(exc))}; nothing was changed there"
            ) from None
        for trigger in objects.triggers:
            try:
                create(cur, dest, trigger)
            except pymysql.Error as exc:
                notes.append(f"trigger {trigger.name} was not re-created: {error_text(exc)}")
        cur.execute("SET SESSION foreign_key_checks = 0")
        cur.execute(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s", (dest,)
        )
        present = {str(r[0]) for r in cur.fetchall()}
        for fk in keys:
            if "." not in fk.referenced and fk.referenced not in present:
                notes.append(
                    f"foreign key {fk.name} of {fk.table} was left out: the table it "
                    f"references, {fk.referenced}, is not in database {dest}"
                )
                continue
            try:
                cur.execute(
                    f"ALTER TABLE {quote_ident(dest)}.{quote_ident(fk.table)} ADD {fk.clause}"
                )
            except pymysql.Error as exc:
                notes.append(
                    f"foreign key {fk.name} of {fk.table} was not re-added: {error_text(exc)}"
                )
        cur.execute("SET SESSION foreign_key_checks = 1")
    return notes
