"""Restoring a plain SQL dump through the ``mariadb``/``mysql`` client, and the databases
it goes into: whether one exists and what it holds, creating and dropping it.

A restore goes into a new database (created here, with the default character set and
collation the backup recorded, else those of ``create_like`` if given) or an empty one; if
it fails, a database created here is dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pymysql

from strongroom.engines.mysql.connection import MysqlConnection
from strongroom.engines.mysql.stats import quote_ident
from strongroom.engines.mysql.tools import CLIENT_TOOLS, error_text
from strongroom.engines.process import pipe_into
from strongroom.engines.tools import exit_description, first_line
from strongroom.errors import DatabaseAuthFailed, DatabaseUnreachable, RestoreFailed, TargetNotEmpty

logger = logging.getLogger("strongroom.engines.mysql")


def schema_shape(cur: Any, name: str) -> tuple[str, str] | None:
    """(character set, collation) of a database, or ``None`` if it does not exist."""
    cur.execute(
        "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME"
        " FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s",
        (name,),
    )
    row = cur.fetchone()
    return (str(row[0]), str(row[1])) if row else None


def contents(db: MysqlConnection) -> tuple[bool, int, int, int | None]:
    """(exists, tables, other objects, size in bytes) of the database of ``db``."""
    name = db.database_name()
    with db.connect() as conn, conn.cursor() as cur:
        if schema_shape(cur, name) is None:
            return False, 0, 0, None
        cur.execute(
            "SELECT SUM(TABLE_TYPE <> 'VIEW'), SUM(TABLE_TYPE = 'VIEW'),"
            " SUM(DATA_LENGTH + INDEX_LENGTH) FROM information_schema.TABLES"
            " WHERE TABLE_SCHEMA = %s",
            (name,),
        )
        tables, views, size = cur.fetchone() or (0, 0, 0)
        others = int(views or 0)
        for query in (
            "SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = %s",
            "SELECT COUNT(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = %s",
            "SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = %s",
        ):
            cur.execute(query, (name,))
            row = cur.fetchone()
            others += int(row[0]) if row else 0
    return True, int(tables or 0), others, int(size) if size is not None else None


def target_exists(db: MysqlConnection) -> bool:
    """Whether the target exists; raise ``TargetNotEmpty`` if it holds anything."""
    exists, tables, others, _ = contents(db)
    if exists and (tables or others):
        what = f"{tables} tables" + (f", {others} other objects" if others else "")
        raise TargetNotEmpty(
            f"{db.where()} is not empty ({what}); restore into a new database or "
            "replace it with restore (which swaps a verified copy in)"
        )
    return exists


def create_database(
    db: MysqlConnection, like: str | None = None, *, shape: tuple[str, str] | None = None
) -> None:
    """Create the database of ``db`` with the default character set and collation
    ``shape`` (as ``staging.recorded_shape`` checked them: plain names), else those of
    ``like`` if it exists, else the server's."""
    name = db.database_name()
    try:
        with db.connect() as conn, conn.cursor() as cur:
            shape = shape or (schema_shape(cur, like) if like else None)
            options = f" CHARACTER SET {shape[0]} COLLATE {shape[1]}" if shape else ""
            logger.info("creating database %s at %s", name, db.host_port())
            cur.execute(f"CREATE DATABASE {quote_ident(name)}{options}")
    except pymysql.Error as exc:
        base = like or name
        raise RestoreFailed(
            f"cannot create {db.where()}: {db.redact(error_text(exc))}; "
            f"restores are staged in new databases named {base}_…, so the user needs CREATE, "
            f"DROP and ALTER there (e.g. GRANT ALL ON `{base}\\_%`.*)"
        ) from None


def alter_shape(cur: Any, name: str, shape: tuple[str, str]) -> None:
    """Give database ``name`` the default character set and collation ``shape`` (names as
    ``information_schema`` gives them). Raises ``pymysql.Error``."""
    cur.execute(f"ALTER DATABASE {quote_ident(name)} CHARACTER SET {shape[0]} COLLATE {shape[1]}")


def drop_database(db: MysqlConnection, name: str | None = None) -> str | None:
    """Drop a database (default: that of ``db``); ``None`` on success, else the reason."""
    name = name or db.database_name()
    try:
        with db.connect() as conn, conn.cursor() as cur:
            if schema_shape(cur, name) is None:  # IF EXISTS still needs DROP rights
                return None
            logger.info("dropping database %s at %s", name, db.host_port())
            cur.execute(f"DROP DATABASE {quote_ident(name)}")
    except (pymysql.Error, DatabaseAuthFailed, DatabaseUnreachable) as exc:
        reason = db.redact(error_text(exc))
        logger.error("could not drop database %s: %s", name, reason)
        return reason
    return None


def run_client(
    db: MysqlConnection, client: Path, source: Iterable[bytes], database: str
) -> tuple[int, str]:
    """Pipe ``source`` into the ``mariadb``/``mysql`` client; (exit status, stderr).

    ``--comments``: without it the client strips ``--``, ``#`` and ``/* */`` comments from
    what it sends, routine, trigger and event bodies included, so the restored
    definitions would differ from the backed-up ones."""
    logger.info("restoring into database %s with %s", database, client)
    with db.option_file() as options:
        command = [
            str(client),
            f"--defaults-file={options.path}",  # must come first
            f"--database={database}",
            "--batch",
            "--binary-mode",
            "--comments",
            "--default-character-set=utf8mb4",
            "--max-allowed-packet=1G",
        ]
        return pipe_into(command, source, pass_fds=options.pass_fds)


def restore_dump(
    db: MysqlConnection,
    source: Iterable[bytes],
    *,
    create_like: str | None,
    shape: tuple[str, str] | None = None,
) -> None:
    """Feed a plain SQL dump into the client, into a new (created here, with the default
    character set and collation ``shape`` the backup recorded, else those of
    ``create_like``) or empty database; a failure drops the database if it was created
    here."""
    exists = target_exists(db)
    client, _ = db.tool(CLIENT_TOOLS)
    if not exists:
        create_database(db, like=create_like, shape=shape)
    where = db.where()
    try:
        returncode, stderr = run_client(db, client, source, db.database_name())
    except BaseException as exc:
        outcome = _after_failure(db, not exists)
        exc.add_note(f"restore into {where} stopped; {outcome}")
        logger.info("restore into %s stopped; %s", where, outcome)
        raise
    if returncode != 0:
        reason = first_line(stderr, prefer="error") or exit_description(returncode)
        outcome = _after_failure(db, not exists)
        if reason.startswith("ERROR 1227"):  # a DEFINER this account may not set
            outcome += (
                "; the backup holds objects whose definer this account cannot set: restore "
                "as an account with SET USER, or with --rewrite-definers"
            )
        raise RestoreFailed(f"{client.name} failed for {where}: {db.redact(reason)}; {outcome}")
    logger.info("restored %s", where)


def _after_failure(db: MysqlConnection, created: bool) -> str:
    if not created:
        return "the database existed before and was left as it is (partially restored)"
    problem = drop_database(db)
    if problem is None:
        return "the new database was dropped"
    return f"the new database could not be dropped ({problem})"
