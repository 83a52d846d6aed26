"""Putting a PostgreSQL backup's recorded state back: checks, roles, the database object.

The order in a restore (see ``docs/design.md``, "PostgreSQL fidelity"):

1. :func:`restore_checks` compares the backup's :class:`DatabaseState` with the server
   restored into, before anything is created: roles the backup names that the server lacks,
   owners the restoring role cannot give objects to, objects only a superuser can create.
   :func:`refusal` turns what the user has not decided about into one line.
2. :func:`create_database_sql` creates the staged database from ``template0`` with the
   backup's encoding and locale; with ``--create-roles`` :func:`create_roles` adds the
   missing roles (``NOLOGIN``, no password) first.
3. ``pg_restore`` runs without ``--no-owner``; :func:`classify_errors` accepts only the
   errors the user agreed to (a skipped role, a pre-existing extension the restoring role
   does not own, a superuser-only object left out) and fails on any other.
4. After verification and just before the swap, :func:`apply_database_state` sets the
   database's owner, connection limit, comment, ACL and settings on the staged database;
   they follow it through the rename.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from strongroom.engines.base import RestoreOptions
from strongroom.engines.postgresql.state import PUBLIC, DatabaseState, RestoreChecks

logger = logging.getLogger("strongroom.engines.postgresql")

# Settings whose stored value is already a list of quoted identifiers (pg_dump's list in
# src/bin/pg_dump/dumputils.c, variable_is_guc_list_quote): written back verbatim.
_LIST_QUOTE_SETTINGS = frozenset(
    {
        "local_preload_libraries",
        "search_path",
        "session_preload_libraries",
        "shared_preload_libraries",
        "temp_tablespaces",
        "unix_socket_directories",
    }
)


def restore_checks(conn: psycopg.Connection[Any], state: DatabaseState) -> RestoreChecks:
    """What restoring ``state``'s backup through ``conn`` (any database of the server
    restored into, as the restoring role) needs that the server lacks. Changes nothing."""
    me, is_super, createrole = conn.execute(
        "SELECT current_user, rolsuper, rolcreaterole FROM pg_roles WHERE rolname = current_user"
    ).fetchone() or ("", False, False)
    # Predefined roles (pg_database_owner, pg_read_all_data…) exist on every server of a
    # version and cannot be created; pg_database_owner is held by the database's owner.
    names = [r.name for r in state.roles if not r.name.startswith("pg_")]
    existing = {
        str(r[0])
        for r in conn.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (names,))
    }
    missing = tuple(n for n in names if n not in existing)
    unassignable: list[str] = []
    if not is_super:
        for role in state.roles:
            if role.owns_objects and role.name in existing and role.name != me:
                # The database's owner: the restoring role creates the staged database and
                # gives it to that owner only at the swap (see apply_database_state).
                row = conn.execute(
                    "SELECT pg_has_role(current_user, %s, 'MEMBER')", (role.name,)
                ).fetchone()
                if not (row and row[0]):
                    unassignable.append(role.name)
    superuser_objects: list[str] = []
    unavailable: list[str] = []
    for ext in state.extensions:
        row = conn.execute(
            "SELECT superuser, trusted FROM pg_available_extension_versions"
            " WHERE name = %s ORDER BY version = %s DESC LIMIT 1",
            (ext.name, ext.version),
        ).fetchone()
        if row is None:
            unavailable.append(ext.name)
        elif row[0] and not row[1] and not is_super:
            superuser_objects.append(f"extension {ext.name}")
    if not is_super:
        superuser_objects += [f"event trigger {name}" for name in state.event_triggers]
    return RestoreChecks(
        missing_roles=missing,
        unassignable_owners=tuple(unassignable),
        superuser_objects=tuple(superuser_objects),
        unavailable_extensions=tuple(unavailable),
        restoring_role=str(me),
        restoring_superuser=bool(is_super),
        can_create_roles=bool(is_super or createrole),
    )


def refusal(checks: RestoreChecks, options: RestoreOptions, where: str) -> str | None:
    """One line saying what blocks the restore and what to do, or ``None``."""
    if checks.unavailable_extensions:
        names = ", ".join(checks.unavailable_extensions)
        return (
            f"the backup uses extensions that the server at {where} does not have: {names}; "
            "install their packages on that server first"
        )
    if checks.missing_roles:
        names = ", ".join(checks.missing_roles)
        if options.missing_roles == "refuse":
            return (
                f"the backup refers to roles that do not exist at {where}: {names}; add "
                "--create-roles to create them (NOLOGIN, no password) or --skip-missing-roles "
                "to restore without their ownership and privileges"
            )
        if options.missing_roles == "create" and not checks.can_create_roles:
            return (
                f"--create-roles: {checks.restoring_role} may not create roles at {where} "
                f"(needs CREATEROLE); create {names} first or use --skip-missing-roles"
            )
    if checks.unassignable_owners and options.missing_roles != "skip":
        names = ", ".join(checks.unassignable_owners)
        return (
            f"{checks.restoring_role} cannot give objects to their owners {names} at {where} "
            f"(it is not a member of those roles); restore as a superuser, GRANT {names} TO "
            f"{checks.restoring_role}, or add --skip-missing-roles to keep "
            f"{checks.restoring_role} as their owner"
        )
    if checks.superuser_objects and not options.skip_superuser_objects:
        names = ", ".join(checks.superuser_objects)
        return (
            f"only a superuser can create {names} at {where}; restore as a superuser or add "
            "--skip-superuser-objects to restore without them"
        )
    return None


def skipped_roles(checks: RestoreChecks, options: RestoreOptions) -> frozenset[str]:
    """Roles whose ownership and privileges the restore leaves out."""
    if options.missing_roles != "skip":
        return frozenset()
    return frozenset(checks.missing_roles) | frozenset(checks.unassignable_owners)


def create_database_sql(name: str, state: DatabaseState | None) -> sql.Composed:
    """``CREATE DATABASE`` for a staged restore: from ``template0`` (nothing the server's
    ``template1`` holds gets in the way) with the backup's encoding and locale."""
    statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if state is None:
        return statement
    parts = [
        statement,
        sql.SQL("TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}").format(
            sql.Literal(state.encoding), sql.Literal(state.collate), sql.Literal(state.ctype)
        ),
    ]
    if state.locale_provider == "icu" and state.icu_locale:
        parts.append(
            sql.SQL("LOCALE_PROVIDER icu ICU_LOCALE {}").format(sql.Literal(state.icu_locale))
        )
    return sql.SQL(" ").join(parts)


# The comment a role created by a restore carries until that restore is done (swapped in,
# or its temporary roles retired). A role still carrying it belongs to a restore that was
# killed; the next restore on the server removes it (clean_leftover_roles).
ROLE_MARKER = "strongroom: created for the restore staged in database "
_STAGED_NAME = re.compile(r"(_sr_|^strongroom_(verify|drill)_)[0-9a-f]{8}$")


def create_roles(
    conn: psycopg.Connection[Any],
    state: DatabaseState,
    names: Iterable[str],
    staged: str,
    created: list[str],
) -> None:
    """Create the missing roles ``names`` as ``NOLOGIN`` roles without password (keeping
    ``INHERIT``), each marked with :data:`ROLE_MARKER` and the ``staged`` database's name
    in the same transaction, then their recorded memberships in roles that exist. Each
    role is appended to ``created`` as soon as it exists (so a failure half-way can be
    undone). Raises ``psycopg.Error``."""
    for name in names:
        record = state.role(name)
        inherit = sql.SQL("INHERIT" if record is None or record.inherit else "NOINHERIT")
        with conn.transaction():
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN {}").format(sql.Identifier(name), inherit))
            conn.execute(
                sql.SQL("COMMENT ON ROLE {} IS {}").format(
                    sql.Identifier(name), sql.Literal(ROLE_MARKER + staged)
                )
            )
        created.append(name)
    for name in created:
        record = state.role(name)
        for parent in record.member_of if record else ():
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (parent,))
            if exists.fetchone():
                conn.execute(
                    sql.SQL("GRANT {} TO {}").format(sql.Identifier(parent), sql.Identifier(name))
                )


def unmark_roles(conn: psycopg.Connection[Any], names: Iterable[str]) -> None:
    """The restore that created ``names`` is done: they stay, without the marker."""
    for name in names:
        conn.execute(sql.SQL("COMMENT ON ROLE {} IS NULL").format(sql.Identifier(name)))


def restore_guard_key(staged: str) -> str:
    """The advisory-lock key (text; hashed by the server) a restore holds, on a connection
    of its own, from creating roles for ``staged`` until they are unmarked, retired or
    dropped: a killed restore's lock goes with its connection."""
    return f"strongroom-restore:{staged}"


def hold_restore_guard(conn: psycopg.Connection[Any], staged: str) -> None:
    """Take the restore's advisory lock on ``conn`` (kept open by the caller)."""
    conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (restore_guard_key(staged),))


def clean_leftover_roles(conn: psycopg.Connection[Any]) -> list[str]:
    """Remove what a killed restore left: roles still carrying :data:`ROLE_MARKER` whose
    restore no longer holds its advisory lock (:func:`hold_restore_guard`), and the
    staged database the marker names, when it looks like one strongroom makes
    (``<name>_sr_<8 hex>``, ``strongroom_verify_…``), belongs to the role cleaning up and
    nobody is connected to it. A role is kept when it may log in (strongroom creates only
    NOLOGIN roles), has members, has settings, or still owns or is granted anything.
    Returns the roles dropped; needs CREATEROLE (else none)."""
    rows = conn.execute(
        "SELECT r.rolname, d.description FROM pg_roles r"
        " JOIN pg_shdescription d ON d.objoid = r.oid AND d.classoid = 'pg_authid'::regclass"
        " WHERE starts_with(d.description, %s) AND NOT r.rolcanlogin"
        "   AND NOT EXISTS (SELECT 1 FROM pg_auth_members m WHERE m.roleid = r.oid)"
        "   AND NOT EXISTS (SELECT 1 FROM pg_db_role_setting s WHERE s.setrole = r.oid)",
        (ROLE_MARKER,),
    ).fetchall()
    dropped: list[str] = []
    for role, description in rows:
        staged = str(description)[len(ROLE_MARKER) :]
        key = restore_guard_key(staged)
        free = conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (key,))
        row = free.fetchone()
        if not (row and row[0]):
            continue  # its restore is still running
        try:
            if _drop_leftover_database(conn, staged) and not drop_roles(conn, [str(role)]):
                dropped.append(str(role))
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (key,))
    return dropped


def _drop_leftover_database(conn: psycopg.Connection[Any], name: str) -> bool:
    """Drop a killed restore's staged database ``name``; whether it is gone now."""
    row = conn.execute(
        "SELECT d.datdba = (SELECT oid FROM pg_roles WHERE rolname = current_user),"
        " (SELECT count(*) FROM pg_stat_activity a WHERE a.datname = d.datname)"
        " FROM pg_database d WHERE d.datname = %s",
        (name,),
    ).fetchone()
    if row is None:
        return True
    if not row[0] or row[1] or not _STAGED_NAME.search(name):
        return False  # someone else's, in use, or not a name strongroom stages under
    try:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
    except psycopg.Error:
        return False
    return True


def drop_roles(conn: psycopg.Connection[Any], names: Iterable[str]) -> list[str]:
    """Drop roles this restore created (after the database that used them is gone); return
    the ones that could not be dropped."""
    left: list[str] = []
    for name in names:
        try:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
        except psycopg.Error:
            left.append(name)
    return left


def split_list_setting(value: str) -> list[str]:
    """The elements of a stored list setting (``app, "My Schema", ""``), unquoted, as
    PostgreSQL's SplitGUCList reads them (``""`` is an empty element)."""
    items: list[str] = []
    pos, end = 0, len(value)
    while True:
        while pos < end and value[pos].isspace():
            pos += 1
        if pos < end and value[pos] == '"':
            pos += 1
            item = []
            while pos < end:
                if value[pos] == '"':
                    if pos + 1 < end and value[pos + 1] == '"':
                        item.append('"')
                        pos += 2
                        continue
                    pos += 1
                    break
                item.append(value[pos])
                pos += 1
            items.append("".join(item))
        else:
            start = pos
            while pos < end and value[pos] != ",":
                pos += 1
            items.append(value[start:pos].strip())
        while pos < end and value[pos] != ",":
            pos += 1
        if pos >= end:
            return items
        pos += 1  # the comma


def _setting_statement(name: str, value: str) -> sql.Composed:
    if name.lower() in _LIST_QUOTE_SETTINGS:  # each element as a literal, as pg_dump does
        elements = sql.SQL(", ").join(sql.Literal(v) for v in split_list_setting(value))
        return sql.SQL("SET {} TO {}").format(sql.Identifier(name), elements)
    return sql.SQL("SET {} TO {}").format(sql.Identifier(name), sql.Literal(value))


def database_state_statements(
    dbname: str, state: DatabaseState, skip: frozenset[str] = frozenset()
) -> list[sql.Composed | tuple[sql.Composed, sql.Composed]]:
    """The statements that give database ``dbname`` the recorded owner, connection limit,
    comment, ACL and settings (leaving out those of the roles in ``skip``); a pair is a
    grant made as its grantor and the same grant made by the restoring role."""
    db = sql.Identifier(dbname)
    out: list[sql.Composed | tuple[sql.Composed, sql.Composed]] = []
    owner = state.owner
    if owner not in skip:
        out.append(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(db, sql.Identifier(owner)))
    out.append(
        sql.SQL("ALTER DATABASE {} CONNECTION LIMIT {}").format(
            db, sql.Literal(state.connection_limit)
        )
    )
    out.append(sql.SQL("COMMENT ON DATABASE {} IS {}").format(db, sql.Literal(state.comment)))
    if state.acl is not None:
        out.append(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(db))
        if owner not in skip:
            out.append(
                sql.SQL("REVOKE ALL ON DATABASE {} FROM {}").format(db, sql.Identifier(owner))
            )
        # The owner's grants first: a grantee WITH GRANT OPTION may then grant on, as itself
        # (SET ROLE, as pg_dump does with SET SESSION AUTHORIZATION), keeping the grantor.
        by_owner = [g for g in state.acl if g.grantor in ("", owner)]
        by_others = [g for g in state.acl if g.grantor not in ("", owner)]
        for grant in by_owner + by_others:
            if grant.grantee in skip:
                continue
            to = sql.SQL(PUBLIC) if grant.grantee == PUBLIC else sql.Identifier(grant.grantee)
            option = sql.SQL(" WITH GRANT OPTION" if grant.grantable else "")
            statement = sql.SQL("GRANT {} ON DATABASE {} TO {}{}").format(
                sql.SQL(grant.privilege), db, to, option
            )
            if grant in by_others and grant.grantor not in skip:
                as_grantor = sql.SQL("SET ROLE {}; {}; RESET ROLE").format(
                    sql.Identifier(grant.grantor), statement
                )
                out.append((as_grantor, statement))
            else:
                out.append(statement)
    for setting in state.settings:
        if setting.role is not None and setting.role in skip:
            continue
        for item in setting.settings:
            name, _, value = item.partition("=")
            target = (
                sql.SQL("ALTER DATABASE {}").format(db)
                if setting.role is None
                else sql.SQL("ALTER ROLE {} IN DATABASE {}").format(
                    sql.Identifier(setting.role), db
                )
            )
            out.append(sql.SQL("{} {}").format(target, _setting_statement(name, value)))
    return out


def apply_database_state(
    conn: psycopg.Connection[Any],
    dbname: str,
    state: DatabaseState,
    skip: frozenset[str] = frozenset(),
) -> None:
    """Run :func:`database_state_statements` in one transaction on ``conn`` (a maintenance
    connection, not one to ``dbname``). A grant that keeps its grantor (``SET ROLE``) falls
    back to a grant by the restoring role when that role may not act as the grantor.
    Raises ``psycopg.Error`` naming the failed step."""
    statements = database_state_statements(dbname, state, skip)
    with conn.transaction():
        for statement in statements:
            if isinstance(statement, tuple):
                try:
                    with conn.transaction():  # a savepoint
                        conn.execute(statement[0])
                except psycopg.errors.InsufficientPrivilege:
                    logger.warning("a database grant is restored without its grantor")
                    conn.execute(statement[1])
            else:
                conn.execute(statement)


# --- pg_restore's errors ---------------------------------------------------------------
_FROM_ENTRY = re.compile(r"^pg_restore: from TOC entry \d+; \d+ \d+ (?P<what>.*)$")
# ``pg_restore -j`` workers share one stderr and write a message's "pg_restore:", "error: "
# and text apart: their prefixes interleave ("pg_restore:pg_restore:  error: error: could
# not...", "error: pg_restore:could not...", or none), the text stays whole
_QUERY_ERROR = re.compile(
    r"^(?:pg_restore:|error:|\s)*could not execute query: (?:ERROR|FATAL):\s+(?P<msg>.*)$"
)
# an info line of --verbose that got another worker's "error: " (``pg_restore: error:
# pg_restore: from TOC entry ...``, ``pg_restore: error: creating ACL ...``)
_VERBOSE_INFO = re.compile(
    r"^pg_restore: error:(?:pg_restore:|error:|\s)*(?:creating |processing item |launching "
    r"item |finished item |from TOC entry |processing data for table |executing |entering )"
)
_ROLE_MISSING = re.compile(r'^role "(?P<role>.+)" does not exist$')
_NOT_MEMBER = re.compile(
    r'^must be (?:a )?member of role "(?P<role>.+)"$|'
    r'^must be able to SET ROLE "(?P<role2>.+)"$'
)
_EXT_OWNER = re.compile(r"^must be owner of extension (?P<ext>.+)$")
_SUPERUSER_ONLY = re.compile(
    r'^permission denied to create (?:event trigger|extension) "(?P<name>.+)"$'
    r'|^(?:event trigger|extension) "(?P<name2>.+)" does not exist$'
)


def _command_of(lines: list[str], error_line: int) -> list[str]:
    """The statements of the ``Command was:`` block after an error line."""
    out: list[str] = []
    for line in lines[error_line + 1 :]:
        if not out:
            if not line.startswith("Command was: "):
                return []
            line = line.removeprefix("Command was: ")
        elif not line.strip() or line.startswith("pg_restore: "):
            break
        out.append(line.strip())
    return [s for s in out if s]


def _names_role(statement: str, role: str) -> bool:
    """Whether a pg_dump GRANT/REVOKE ends with ``role`` as pg_dump writes it: quoted, or
    bare only when the name is a plain lower-case identifier (so a role named ``a FROM
    PUBLIC`` cannot pass for the tail of ``REVOKE … FROM PUBLIC``)."""
    forms = ['"' + role.replace('"', '""') + '"']
    if _PLAIN_IDENTIFIER.match(role):
        forms.append(role)
    tail = statement.rstrip(";").removesuffix(" WITH GRANT OPTION").removesuffix(" CASCADE")
    return any(tail.endswith(f" {form}") for form in forms)


_PLAIN_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_$]*$")


def _other_statements(command: list[str], role: str) -> list[str]:
    """Statements of a failed entry that do not concern ``role`` (lost with it)."""
    return [s for s in command if s.endswith(";") and not _names_role(s, role)]


@dataclass(frozen=True)
class RestoreErrors:
    """``pg_restore``'s errors split into those the user agreed to and the others."""

    accepted: tuple[str, ...]
    fatal: tuple[str, ...]


def classify_errors(
    stderr: str,
    *,
    skip_roles: frozenset[str],
    preexisting_extensions: frozenset[str],
    skipped_superuser_objects: frozenset[str],
) -> RestoreErrors:
    """Read ``pg_restore --verbose`` output. An error is accepted only if it concerns a role
    in ``skip_roles``, a ``COMMENT``/statement on an extension that existed in the database
    before the restore (and the restoring role does not own), or a superuser-only object
    the user chose to leave out (names as ``"extension x"``/``"event trigger y"``). Every
    other ``error:`` line is fatal."""
    accepted: list[str] = []
    fatal: list[str] = []
    entry = ""
    skipped_names = {n.split(" ", 2)[-1] for n in skipped_superuser_objects}
    lines = stderr.splitlines()
    for number, line in enumerate(lines):
        found = _FROM_ENTRY.match(line)
        if found:
            entry = found.group("what")
            continue
        query = _QUERY_ERROR.match(line)
        if query is None:
            if line.startswith("pg_restore: error:") and not _VERBOSE_INFO.match(line):
                fatal.append(line.removeprefix("pg_restore: error: "))
            continue
        msg = query.group("msg").strip()
        role = _ROLE_MISSING.match(msg) or _NOT_MEMBER.match(msg)
        name = role.group(role.lastgroup or "role") if role else None
        if name is not None and name in skip_roles:
            # One TOC entry runs as one query: a failed GRANT to the skipped role takes
            # the entry's other statements with it (a REVOKE … FROM PUBLIC: a widening).
            others = _other_statements(_command_of(lines, number), name)
            if others:
                fatal.append(
                    f"{msg}, and the same entry's other statements would be lost with it "
                    f"({others[0]}); create role {name} first or restore as a role with "
                    "CREATEROLE"
                )
            else:
                accepted.append(msg)
            continue
        ext = _EXT_OWNER.match(msg)
        if ext and ext.group("ext") in preexisting_extensions:
            accepted.append(msg)
            continue
        su = _SUPERUSER_ONLY.match(msg)
        if su and (su.group("name") or su.group("name2")) in skipped_names:
            accepted.append(msg)
            continue
        fatal.append(f"{msg} (at {entry})" if entry else msg)
    return RestoreErrors(tuple(accepted), tuple(fatal))
