"""Restore selected tables of a ``pg_dump -Fc`` file, in place or into another schema.

The entries are chosen by :mod:`strongroom.engines.postgresql.toc` from the archive's TOC and
its dependency ids (no SQL text is parsed). The selection is restored with
``--single-transaction``, so a failure changes nothing.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from strongroom import tempfiles
from strongroom.engines.base import TableStats, checksum_method
from strongroom.engines.postgresql.connection import PostgresServer
from strongroom.engines.postgresql.connection import server_major as _server_major
from strongroom.engines.postgresql.stats import list_tables, plan_tables, prepare_session, run_plan
from strongroom.engines.postgresql.toc import (
    PG_CLASS,
    Catalog,
    RestorePlan,
    TocEntry,
    parse_table_name,
    parse_toc,
    plan_restore,
)
from strongroom.engines.process import run_tool
from strongroom.engines.tools import exit_description as _exit_description
from strongroom.engines.tools import first_line as _first_line
from strongroom.errors import RestoreFailed, TargetNotEmpty, UsageError, VerificationMismatch

logger = logging.getLogger("strongroom.engines.postgresql.tables")

SCRATCH_PREFIX = "sr_tables_"
_LIST_NAMES_UP_TO = 10


def _run(engine: PostgresServer, command: list[str], what: str) -> str:
    """Run a client tool with the engine's environment; return its stdout."""
    logger.debug("running %s", command[0])
    result = run_tool(command, env=engine.child_env())
    if result.returncode != 0:
        stderr = result.stderr.decode("utf-8", "replace")
        reason = _first_line(stderr, prefer="error") or _exit_description(result.returncode)
        raise RestoreFailed(f"{what}: {engine.redact(reason)}")
    return result.stdout.decode("utf-8", "replace")


def _error(engine: PostgresServer, what: str, exc: BaseException) -> RestoreFailed:
    return RestoreFailed(f"{what}: {engine.redact(_first_line(str(exc)))}")


def _qualified(names: Iterable[tuple[str, str]]) -> list[str]:
    return [f"{schema}.{name}" for schema, name in names]


def _resolve(toc: list[TocEntry], tables: Sequence[str]) -> list[TocEntry]:
    """The TABLE entries named by ``tables``; ``UsageError`` for a name not in the dump."""
    available = [e for e in toc if e.desc == "TABLE" and e.catalog == PG_CLASS]
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


def _existing(catalog: Catalog, names: Iterable[tuple[str, str]]) -> list[str]:
    return _qualified(n for n in names if catalog.relation_exists(*n))


def _refuse(engine: PostgresServer, taken: list[str], hint: str = "") -> TargetNotEmpty:
    verb = "exists" if len(taken) == 1 else "exist"
    return TargetNotEmpty(f"{', '.join(taken)} already {verb} in {engine.where()}{hint}")


def _plan_relations(plan: RestorePlan) -> list[tuple[str, str]]:
    """Tables, sequences and indexes the plan creates."""
    kinds = ("TABLE", "SEQUENCE", "INDEX")
    return [(e.schema, e.name) for e in plan.entries if e.desc in kinds and e.catalog == PG_CLASS]


def restore_tables(
    engine: PostgresServer,
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
    with engine.connect() as conn:
        server_major = _server_major(conn.info.server_version)
    pg_restore, _ = engine.tool("pg_restore", server_major)
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
    engine: PostgresServer,
    pg_restore: Path,
    dump_file: Path,
    entries: list[TocEntry],
    dbname: str | None = None,
) -> None:
    """``pg_restore -L`` the entries into ``dbname`` (default: the target) in one transaction."""
    where = engine.where() if dbname is None else f"database {dbname} at {engine.host_port()}"
    with tempfiles.private_tempdir("tables-") as tmp:
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
                engine.conninfo(dbname=dbname, with_password=False),
                str(dump_file),
            ],
            f"pg_restore failed for {where} (nothing was restored there)",
        )


def _restore_in_place(
    engine: PostgresServer,
    pg_restore: Path,
    dump_file: Path,
    toc: list[TocEntry],
    wanted: list[TocEntry],
) -> list[str]:
    hint = "; restore into another schema (into_schema) or another database"
    with engine.connect() as conn:
        catalog = Catalog(conn)
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


def _create_scratch(engine: PostgresServer) -> str:
    """Create an empty scratch database like the target (encoding, locale); return its name."""
    name = SCRATCH_PREFIX + secrets.token_hex(6)
    try:
        with engine.connect() as conn:
            row = conn.execute(
                "SELECT pg_encoding_to_char(encoding), datcollate, datctype FROM pg_database"
                " WHERE datname = current_database()"
            ).fetchone()
        with engine.maintenance_connect() as conn:
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


def _drop_scratch(engine: PostgresServer, name: str) -> str | None:
    """Drop the scratch database; ``None`` on success, else the reason."""
    problem = engine.drop_database(name)
    if problem is not None:
        logger.error("drop the scratch database %s by hand", name)
    return problem


def _restore_into_schema(
    engine: PostgresServer,
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
    with engine.connect() as conn:
        taken = _existing(Catalog(conn), ((into, e.name) for e in wanted))
    if taken:
        raise _refuse(engine, taken)
    pg_dump, _ = engine.tool("pg_dump", server_major)
    scratch = _create_scratch(engine)
    try:
        with engine.connect(scratch) as conn:
            catalog = Catalog(conn)
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
        with engine.connect() as conn:
            taken = _existing(Catalog(conn), ((into, n) for n in moved.relations))
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


def _move_to_schema(engine: PostgresServer, scratch: str, plan: RestorePlan, into: str) -> _Moved:
    """In the scratch database, move the tables and the sequences their defaults use."""
    try:
        with engine.connect(scratch) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(into)))
            sequences = [
                e for e in plan.created_support if e.desc == "SEQUENCE" and e.catalog == PG_CLASS
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
    engine: PostgresServer,
    pg_dump: Path,
    pg_restore: Path,
    scratch: str,
    into: str,
    relations: list[str],
) -> None:
    """``pg_dump -t`` the relations from the scratch database into the target."""
    with tempfiles.private_tempdir("tables-") as tmp:
        moved_dump = Path(tmp) / "moved.dump"
        command = [str(pg_dump), "-Fc", "-Z0", "--no-password", "-f", str(moved_dump)]
        for name in relations:
            command += ["-t", _pattern(into, name)]
        command += ["-d", engine.conninfo(dbname=scratch, with_password=False)]
        _run(engine, command, f"pg_dump failed for scratch database {scratch}")
        created_schema = False
        try:
            with engine.connect() as conn:
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
                    engine.conninfo(with_password=False),
                    str(moved_dump),
                ],
                f"pg_restore failed for {engine.where()} (nothing was restored there)",
            )
        except BaseException:
            if created_schema:
                try:
                    with engine.connect() as conn:
                        conn.execute(sql.SQL("DROP SCHEMA {}").format(sql.Identifier(into)))
                except Exception:
                    logger.warning("could not drop the schema %s created for the restore", into)
            raise


def verify_tables(
    engine: PostgresServer,
    tables: Sequence[str],
    into_schema: str | None,
    expected: Sequence[TableStats],
) -> list[str]:
    """Compare the restored ``tables`` (as requested, in ``into_schema`` when given; a
    partitioned table through its partitions, which hold its rows) with the backup's
    statistics: rows and the portable checksum, which does not depend on the schema.
    Returns the names checked; raises ``VerificationMismatch`` naming a table that differs.
    A table that row-level security hides from this role is not checked (logged)."""
    recorded = {t.name: t for t in expected}
    checked: list[str] = []
    with engine.connect() as conn:
        prepare_session(conn)
        conn.execute("BEGIN READ ONLY")
        try:
            with conn.cursor() as cur:
                wanted = _restored_leaves(cur, tables, into_schema, recorded)
                infos = [t for t in list_tables(cur) if t.qualified in wanted]
                for hidden in (t for t in infos if t.rls_active):
                    logger.warning("%s not verified: row-level security", hidden.qualified)
                visible = [t for t in infos if not t.rls_active]
                for plan in plan_tables(cur, visible):
                    got = run_plan(cur, plan)
                    want = recorded[wanted[got.name]]
                    same_method = checksum_method(got.checksum or "") == checksum_method(
                        want.checksum or ""
                    )
                    if got.rows != want.rows or (same_method and got.checksum != want.checksum):
                        what = (
                            f"{got.rows} rows, {want.rows} in the backup"
                            if got.rows != want.rows
                            else "the same row count, other contents"
                        )
                        raise VerificationMismatch(
                            f"restored table {got.name} differs from the backup's "
                            f"{want.name} ({what}); it is kept so you can look at it"
                        )
                    checked.append(got.name)
        finally:
            conn.execute("ROLLBACK")
    return checked


_LEAVES_SQL = """
    WITH RECURSIVE tree(oid) AS (
        SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = %s AND c.relname = %s
        UNION SELECT i.inhrelid FROM pg_inherits i JOIN tree ON i.inhparent = tree.oid
    )
    SELECT n.nspname, c.relname FROM tree
    JOIN pg_class c ON c.oid = tree.oid JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind = 'r'
"""


def _restored_leaves(
    cur: psycopg.Cursor[Any],
    tables: Sequence[str],
    into_schema: str | None,
    recorded: dict[str, TableStats],
) -> dict[str, str]:
    """Restored tables that hold rows (a partitioned table's partitions), mapped to their
    names in the backup. A table the backup has no statistics of is logged, not checked."""
    wanted: dict[str, str] = {}
    for text in tables:
        schema, name = parse_table_name(text)
        for leaf_schema, leaf in cur.execute(_LEAVES_SQL, (into_schema or schema, name)):
            restored = f"{leaf_schema}.{leaf}"
            if into_schema is None:
                original = restored
            else:  # moved from their schema: the partition's name, preferring the parent's
                # (names are "schema.table" unquoted: a schema may hold a dot itself)
                same = [n for n in recorded if n.endswith(f".{leaf}")]
                original = (
                    f"{schema}.{leaf}"
                    if f"{schema}.{leaf}" in recorded
                    else (same[0] if len(same) == 1 else "")
                )
            if original in recorded:
                wanted[restored] = original
            else:
                logger.warning("%s not verified: no statistics of it in the backup", restored)
    return wanted
