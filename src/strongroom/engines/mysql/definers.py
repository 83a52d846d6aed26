"""The DEFINER accounts of a database's views, triggers, routines and events.

MySQL and MariaDB run a view (``SQL SECURITY DEFINER``), trigger, routine or event with
the rights of its definer, and only an account with ``SET USER`` (MariaDB ≥ 10.5.2),
``SET_USER_ID`` / ``SET_ANY_DEFINER`` (MySQL 8) or ``SUPER`` may create one whose definer is
another account (otherwise ``ERROR 1227 … you need (at least one of) the SUPER, SET USER
privilege(s)``). An object whose definer does not exist on the server is created (with a
warning, when allowed), then fails when used: ``ERROR 1449 The user specified as a definer
('shop_app'@'%') does not exist``.

So a backup records every object's definer (``capture``, into the manifest's engine state
as ``{"definers": [{"kind", "name", "definer"}]}``, a definer written ``user@host`` as
``information_schema`` does, a role as ``role@``); the plan (``plan_checks``) lists the
definers this account cannot set or that do not exist here, and refuses unless the user
chose ``RestoreOptions.rewrite_definers``; then ``rewrite`` turns exactly those clauses
of the dump stream into ``DEFINER=CURRENT_USER`` as the stream goes into the client.

``rewrite`` changes only the definer clauses the dump tool writes at the start of a
statement (mariadb-dump and mysqldump 5.7/8 write the same forms)::

    /*!50013 DEFINER=`u`@`h` SQL SECURITY DEFINER */            (a view, second line)
    /*!50001 CREATE ALGORITHM=UNDEFINED DEFINER=`r` SQL SECURITY …  (a view, one line)
    /*!50003 CREATE*/ /*!50017 DEFINER=`u`@`h`*/ /*!50003 TRIGGER …
    /*!50106 CREATE*/ /*!50117 DEFINER=`u`@`h`*/ /*!50106 EVENT …
    CREATE DEFINER=`u`@`h` PROCEDURE|FUNCTION …   (right after ``DELIMITER ;;``)

A table's rows never start a line with these (``INSERT INTO …`` lines, strings escaped
onto one line), and the ``CREATE DEFINER=`` form counts only right after the dump's
``DELIMITER ;;`` line, so text inside a routine body is never rewritten.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pymysql

from strongroom.engines.base import PlanChecks, RestoreOptions
from strongroom.engines.mysql.connection import MysqlConnection
from strongroom.engines.mysql.tools import error_text

logger = logging.getLogger("strongroom.engines.mysql")

# Privileges that let an account name another account as DEFINER.
SET_DEFINER_PRIVILEGES = frozenset({"SUPER", "SET USER", "SET_USER_ID", "SET_ANY_DEFINER"})
_SHOWN = 6  # objects named in a plan line before "and N more"

_QUOTED = rb"`(?:[^`]|``)*`"
_DEFINER = rb"DEFINER=(?P<definer>" + _QUOTED + rb"(?:@" + _QUOTED + rb")?)"
_AT_STATEMENT_START = re.compile(
    rb"^(?P<head>/\*!50013 |/\*!50001 CREATE ALGORITHM=\w+ |/\*!50003 CREATE\*/ /\*!50017 "
    rb"|/\*!50106 CREATE\*/ /\*!50117 )" + _DEFINER
)
_AFTER_DELIMITER = re.compile(rb"^(?P<head>CREATE )" + _DEFINER + rb" (?:PROCEDURE|FUNCTION)\b")
_DELIMITER_LINE = b"DELIMITER ;;"


@dataclass(frozen=True)
class DefinedObject:
    """One object and its definer (``user@host``; a role is ``role@``)."""

    kind: str  # VIEW, TRIGGER, PROCEDURE, FUNCTION, EVENT
    name: str
    definer: str

    def label(self) -> str:
        return f"{self.kind.lower()} {self.name} ({self.definer})"


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def capture(cur: Any, database: str) -> list[DefinedObject]:
    """Every view, trigger, routine and event of ``database`` with its definer, as the
    account sees them in ``information_schema`` (sorted by kind, then name)."""
    return [o for o, _ in _capture(cur, database)]


def _capture(cur: Any, database: str) -> list[tuple[DefinedObject, bool]]:
    """``capture``, each object with whether this account can read its definition
    (``SHOW CREATE``; a routine of another definer needs ``SELECT`` on ``mysql.proc``, or
    ``SHOW CREATE ROUTINE`` on MariaDB ≥ 11.3, and ``information_schema`` then shows its
    body as NULL)."""
    queries = (
        "SELECT 'VIEW', TABLE_NAME, DEFINER, 0 FROM information_schema.VIEWS"
        " WHERE TABLE_SCHEMA = %s",
        "SELECT 'TRIGGER', TRIGGER_NAME, DEFINER, 0 FROM information_schema.TRIGGERS"
        " WHERE TRIGGER_SCHEMA = %s",
        "SELECT ROUTINE_TYPE, ROUTINE_NAME, DEFINER, ROUTINE_DEFINITION IS NULL"
        " FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = %s",
        "SELECT 'EVENT', EVENT_NAME, DEFINER, 0 FROM information_schema.EVENTS"
        " WHERE EVENT_SCHEMA = %s",
    )
    found: list[tuple[DefinedObject, bool]] = []
    for query in queries:
        cur.execute(query, (database,))
        found += [
            (DefinedObject(_text(k), _text(n), _text(d)), not int(hidden))
            for k, n, d, hidden in cur.fetchall()
        ]
    return sorted(found, key=lambda item: (item[0].kind, item[0].name))


def to_state(objects: Iterable[DefinedObject]) -> list[dict[str, str]]:
    """``objects`` as the manifest stores them."""
    return [{"kind": o.kind, "name": o.name, "definer": o.definer} for o in objects]


def from_state(state: Mapping[str, Any] | None) -> list[DefinedObject] | None:
    """The definers a backup recorded, or ``None`` if it recorded none (older backups)."""
    if not state or not isinstance(state.get("definers"), list):
        return None
    found = []
    for item in state["definers"]:
        if isinstance(item, Mapping) and all(
            isinstance(item.get(k), str) for k in ("kind", "name", "definer")
        ):
            found.append(DefinedObject(item["kind"], item["name"], item["definer"]))
    return found


def split_definer(definer: str) -> tuple[str, str]:
    """(user, host) of ``user@host`` (the host holds no ``@``; a role has host ``''``)."""
    user, _, host = definer.rpartition("@")
    return (user, host) if user else (definer, "")


@dataclass(frozen=True)
class Account:
    """The restoring account as the server sees it (``CURRENT_USER()``) and what it may do.

    ``existing``: every account and role of the server as ``user@host`` (roles ``role@``),
    or ``None`` if this account may not read ``mysql.user``."""

    current: str
    may_set_any: bool
    existing: frozenset[str] | None

    def cannot_set(self, definer: str) -> bool:
        """Whether creating an object with this definer fails with ERROR 1227."""
        return not self.may_set_any and definer != self.current

    def missing(self, definer: str) -> bool:
        """Whether the definer account is known not to exist on this server."""
        return self.existing is not None and definer not in self.existing

    def needs_rewrite(self, definer: str) -> bool:
        return self.cannot_set(definer) or self.missing(definer)


def account(db: MysqlConnection) -> Account:
    """Who this account is and whether it may set other definers (see the module
    docstring). Raises what ``MysqlConnection.connect`` raises."""
    with db.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT CURRENT_USER()")
        row = cur.fetchone()
        current = _text(row[0]) if row else ""
        user, host = split_definer(current)
        grantee = f"'{user}'@'{host}'"
        cur.execute("SELECT GRANTEE, PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES")
        privileges = {_text(p).upper() for g, p in cur.fetchall() if _text(g) == grantee}
        existing: frozenset[str] | None
        try:
            cur.execute("SELECT User, Host FROM mysql.user")
            existing = frozenset(f"{_text(u)}@{_text(h)}" for u, h in cur.fetchall())
        except pymysql.Error as exc:
            logger.debug("cannot list the server's accounts: %s", error_text(exc))
            existing = None
    return Account(current, bool(privileges & SET_DEFINER_PRIVILEGES), existing)


def _listed(objects: list[DefinedObject]) -> str:
    shown = ", ".join(o.label() for o in objects[:_SHOWN])
    return shown + (f" and {len(objects) - _SHOWN} more" if len(objects) > _SHOWN else "")


def plan_checks(
    db: MysqlConnection, state: Mapping[str, Any] | None, options: RestoreOptions
) -> PlanChecks:
    """The plan's lines about definers, and the refusal when the restore could not be
    done as it is (module docstring):

    - objects of the backup whose definer this account cannot set, or that does not exist
      here: refused unless ``options.rewrite_definers``;
    - objects of the target (which the swap drops and, if it must be undone, re-creates)
      whose definer this account cannot set: refused unless ``options.rewrite_definers``
      (an undo then re-creates them with this account as definer);
    - objects of the target whose definition this account cannot read: always refused
      (neither the safety backup nor the swap can copy them).
    """
    who = account(db)
    with db.connect() as conn, conn.cursor() as cur:
        current = _capture(cur, db.database_name())
    hidden = [o for o, readable in current if not readable]
    if hidden:
        return PlanChecks(
            refusal=f"{who.current} cannot read the definition of {_listed(hidden)} in "
            f"{db.where()}, which the safety backup and the swap copy: GRANT SELECT ON "
            "mysql.proc (or SHOW CREATE ROUTINE on MariaDB 11.3 and later) to it, or restore "
            "as the definer or an administrator"
        )
    replaced = [o for o, _ in current if who.cannot_set(o.definer)]
    objects = from_state(state) or []
    unsettable = [o for o in objects if who.cannot_set(o.definer)]
    missing = [o for o in objects if not who.cannot_set(o.definer) and who.missing(o.definer)]
    lines: list[str] = []
    if objects and not unsettable and not missing:
        lines.append(f"definers kept: {', '.join(sorted({o.definer for o in objects}))}")
    if options.rewrite_definers:
        if unsettable or missing:
            lines.append(
                f"definers rewritten to the restoring account {who.current}: "
                f"{_listed(unsettable + missing)}"
            )
        if replaced:
            lines.append(
                f"if the swap has to be undone, the target's {_listed(replaced)} are "
                f"re-created with {who.current} as definer"
            )
        return PlanChecks(lines=tuple(lines))
    problems = []
    if unsettable:
        problems.append(
            f"{who.current} cannot create objects with another account as definer "
            f"(it lacks SET USER/SUPER): {_listed(unsettable)}"
        )
    if missing:
        problems.append(f"definer accounts missing on this server: {_listed(missing)}")
    if replaced:
        problems.append(
            f"the target's {_listed(replaced)} could not be re-created by {who.current} "
            "if the swap had to be undone"
        )
    if not problems:
        return PlanChecks(lines=tuple(lines))
    return PlanChecks(
        lines=tuple(problems),
        refusal=(
            "; ".join(problems)
            + "; restore as an account that has SET USER (and create the missing accounts), "
            f"or add --rewrite-definers to give these objects {who.current} as definer"
        ),
    )


_SHOWN_DEFINER = re.compile(rb"^(CREATE (?:ALGORITHM=\w+ )?)" + _DEFINER)


def as_current_user(statement: bytes) -> bytes | None:
    """A ``SHOW CREATE`` statement with its DEFINER made ``CURRENT_USER``, or ``None`` if
    it names none (``CREATE [ALGORITHM=…] DEFINER=`u`@`h` …``: the clause the server
    prints before the object's name)."""
    match = _SHOWN_DEFINER.match(statement)
    if match is None:
        return None
    start, stop = match.span("definer")
    return statement[:start] + b"CURRENT_USER" + statement[stop:]


def _parse(quoted: bytes) -> str:
    """```u`@`h``` or ```r``` as ``u@h`` / ``r@``."""
    parts = re.findall(_QUOTED, quoted)
    names = [p[1:-1].replace(b"``", b"`").decode("utf-8", "replace") for p in parts]
    return f"{names[0]}@{names[1] if len(names) > 1 else ''}"


def rewrite(source: Iterable[bytes], needs_rewrite: Callable[[str], bool]) -> Iterator[bytes]:
    """``source`` (a plain SQL dump, in pieces of any size) with every definer clause at a
    statement start (module docstring) whose definer ``needs_rewrite`` made
    ``DEFINER=CURRENT_USER``; every other byte is passed through unchanged."""
    carry = b""
    previous = b""
    for piece in source:
        if not piece:
            continue
        data = carry + piece
        end = data.rfind(b"\n")
        if end < 0:
            carry = data
            continue
        carry = data[end + 1 :]
        lines = data[: end + 1].split(b"\n")
        lines.pop()  # empty: the block ends with a newline
        out = []
        for line in lines:
            out.append(_rewrite_line(line, previous, needs_rewrite))
            previous = line
        yield b"\n".join(out) + b"\n"
    if carry:
        yield _rewrite_line(carry, previous, needs_rewrite)


def _rewrite_line(line: bytes, previous: bytes, needs_rewrite: Callable[[str], bool]) -> bytes:
    if not line.startswith((b"/*!5", b"CREATE DEFINER=")):
        return line
    pattern = _AT_STATEMENT_START
    if line.startswith(b"CREATE"):
        if previous.rstrip(b"\r") != _DELIMITER_LINE:
            return line
        pattern = _AFTER_DELIMITER
    match = pattern.match(line)
    if match is None or not needs_rewrite(_parse(match.group("definer"))):
        return line
    start, stop = match.span("definer")
    return line[:start] + b"CURRENT_USER" + line[stop:]
