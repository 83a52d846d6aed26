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
statement (mariadb-dump and mysqldump 5.7/8 write the same forms; under ``ANSI_QUOTES``
with double quotes)::

    /*!50013 DEFINER=`u`@`h` SQL SECURITY DEFINER */            (a view, second line)
    /*!50001 CREATE ALGORITHM=UNDEFINED DEFINER=`r` SQL SECURITY …  (a view, one line)
    /*!50003 CREATE*/ /*!50017 DEFINER=`u`@`h`*/ /*!50003 TRIGGER …
    /*!50106 CREATE*/ /*!50117 DEFINER=`u`@`h`*/ /*!50106 EVENT …
    CREATE DEFINER=`u`@`h` [AGGREGATE] FUNCTION|PROCEDURE|PACKAGE [BODY] …

and only on a line that starts outside any string, quoted name or comment: a small lexer
(``_Lexer``) follows quotes and comments over every statement line, with the dump's
``sql_mode`` (``NO_BACKSLASH_ESCAPES``, ``ANSI_QUOTES``), so text inside a routine body is
never rewritten. A table's rows are ``INSERT INTO`` statements whose strings never span a
line (the dump escapes line breaks; mariadb-dump 10.x writes one row per line, the last
ending in ``;``): they stream through unread, in the pieces they came in, so the filter
costs one look at each line's end, however long the line.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
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

_QUOTED = rb"(?:`(?:[^`]|``)*`|\"(?:[^\"]|\"\")*\")"
_DEFINER = rb"DEFINER=(?P<definer>" + _QUOTED + rb"(?:@" + _QUOTED + rb")?)"
_HEAD_CLAUSE = re.compile(
    rb"^(?:/\*!50013 |/\*!50001 CREATE ALGORITHM=\w+ |/\*!50003 CREATE\*/ /\*!50017 "
    rb"|/\*!50106 CREATE\*/ /\*!50117 )" + _DEFINER
)
_ROUTINE_CLAUSE = re.compile(
    rb"^CREATE " + _DEFINER + rb" (?:AGGREGATE )?(?:PROCEDURE|FUNCTION|PACKAGE)\b"
)
_ROWS = b"INSERT INTO "
_MODE_LINE = re.compile(
    rb"^/\*!(?:40101|50003) SET (?:SESSION )?sql_mode\s*=\s*(?:'([^']*)'|@saved_sql_mode)", re.I
)


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

    ``roles``: its enabled roles (as definers: ``role@``), which it may name as definer;
    ``existing``: every account and role of the server as ``user@host`` (roles ``role@``),
    or ``None`` if this account may not read ``mysql.user``."""

    current: str
    may_set_any: bool
    existing: frozenset[str] | None
    roles: frozenset[str] = frozenset()

    def cannot_set(self, definer: str) -> bool:
        """Whether creating an object with this definer fails with ERROR 1227."""
        return not self.may_set_any and definer != self.current and definer not in self.roles

    def missing(self, definer: str) -> bool:
        """Whether the definer account is known not to exist on this server."""
        return self.existing is not None and definer not in self.existing

    def needs_rewrite(self, definer: str) -> bool:
        return self.cannot_set(definer) or self.missing(definer)


_GLOBAL_GRANT = re.compile(r"^GRANT (.+?) ON \*\.\* TO ")


def _global_privileges(grants: Iterable[str]) -> set[str]:
    """The global privileges in ``SHOW GRANTS`` lines (the account's and its enabled
    roles': MariaDB and MySQL list both), upper case; ``ALL PRIVILEGES`` as ``SUPER``."""
    found: set[str] = set()
    for line in grants:
        match = _GLOBAL_GRANT.match(line)
        if match is None or match.group(1).startswith("`"):  # GRANT `role` TO …
            continue
        for privilege in match.group(1).split(","):
            name = privilege.strip().upper()
            found.add("SUPER" if name == "ALL PRIVILEGES" else name)
    return found


def account(db: MysqlConnection) -> Account:
    """Who this account is and whether it may set other definers (see the module
    docstring). Raises what ``MysqlConnection.connect`` raises."""
    with db.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT CURRENT_USER()")
        row = cur.fetchone()
        current = _text(row[0]) if row else ""
        cur.execute("SHOW GRANTS")  # never logged: it may hold password hashes
        privileges = _global_privileges(_text(r[0]) for r in cur.fetchall())
        roles: frozenset[str] = frozenset()
        try:
            cur.execute("SELECT ROLE_NAME FROM information_schema.ENABLED_ROLES")
            roles = frozenset(f"{_text(r[0])}@" for r in cur.fetchall())
        except pymysql.Error as exc:
            logger.debug("cannot list the enabled roles: %s", error_text(exc))
        existing: frozenset[str] | None
        try:
            cur.execute("SELECT User, Host FROM mysql.user")
            existing = frozenset(f"{_text(u)}@{_text(h)}" for u, h in cur.fetchall())
        except pymysql.Error as exc:
            logger.debug("cannot list the server's accounts: %s", error_text(exc))
            existing = None
    return Account(current, bool(privileges & SET_DEFINER_PRIVILEGES), existing, roles)


def _listed(objects: list[DefinedObject]) -> str:
    """Every definer account named once, each with (some of) its objects."""
    by_definer: dict[str, list[str]] = {}
    for o in objects:
        by_definer.setdefault(o.definer, []).append(f"{o.kind.lower()} {o.name}")
    parts = []
    for definer, names in sorted(by_definer.items()):
        shown = ", ".join(names[:_SHOWN])
        more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
        parts.append(f"{definer} ({shown}{more})")
    return "; ".join(parts)


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

    A backup that recorded no definers (made before they were) gets a line saying so.
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
    recorded = from_state(state)
    objects = recorded or []
    unsettable = [o for o in objects if who.cannot_set(o.definer)]
    missing = [o for o in objects if not who.cannot_set(o.definer) and who.missing(o.definer)]
    lines: list[str] = []
    if recorded is None:
        lines.append(
            "definers: the backup does not record them (made by an older version)"
            + (
                f"; any this account cannot set become {who.current}"
                if options.rewrite_definers
                else ""
            )
        )
    elif objects and not unsettable and not missing:
        kept = ", ".join(sorted({o.definer for o in objects}))
        lines.append(
            f"definers kept: {kept}"
            if who.existing is not None
            else f"definers not checked against this server's accounts ({who.current} cannot "
            f"read mysql.user): {kept}; an object whose definer is missing here fails when used"
        )
    if options.rewrite_definers:
        if unsettable or missing:
            lines.append(
                f"definers rewritten to the restoring account {who.current}: "
                f"{_listed(unsettable + missing)}"
            )
        if replaced:
            lines.append(
                f"if the swap has to be undone, the target's objects of {_listed(replaced)} "
                f"are re-created with {who.current} as definer"
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
            f"the target's objects of {_listed(replaced)} could not be re-created by "
            f"{who.current} if the swap had to be undone"
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


_SHOWN_DEFINER = re.compile(rb"^CREATE (?:OR REPLACE )?(?:ALGORITHM=\w+ )?" + _DEFINER)


def as_current_user(statement: bytes) -> bytes | None:
    """A ``SHOW CREATE`` statement with its DEFINER made ``CURRENT_USER``, or ``None`` if
    it names none (``CREATE [OR REPLACE] [ALGORITHM=…] DEFINER=`u`@`h` …``: the clause the
    server prints before the object's name)."""
    match = _SHOWN_DEFINER.match(statement)
    if match is None:
        return None
    start, stop = match.span("definer")
    return statement[:start] + b"CURRENT_USER" + statement[stop:]


def _parse(quoted: bytes) -> str:
    """```u`@`h``` or ```r``` (or with double quotes) as ``u@h`` / ``r@``."""
    names = []
    for part in re.findall(_QUOTED, quoted):
        quote = part[:1]
        names.append(part[1:-1].replace(quote * 2, quote).decode("utf-8", "replace"))
    return f"{names[0]}@{names[1] if len(names) > 1 else ''}"


class _Lexer:
    """Whether the next line of a dump starts inside a string, quoted name or comment.

    ``state``: ``None`` (code), a quote byte (``'``, ``"``, `````), or ``b"*"`` (inside
    ``/* … */``). ``/*!NNNNN … */`` version comments hold code and are followed as code.
    Backslash escapes count in strings unless the dump's ``sql_mode`` has
    ``NO_BACKSLASH_ESCAPES``; under ``ANSI_QUOTES`` ``"`` quotes a name (no escapes)."""

    _CODE = re.compile(rb"['\"`#]|--(?=[\s]|$)|/\*(?!!)")

    def __init__(self) -> None:
        self.state: bytes | None = None
        self.backslash = True
        self.ansi_quotes = False

    def feed(self, line: bytes) -> None:
        mode = _MODE_LINE.match(line) if self.state is None else None
        if mode is not None:
            modes = (mode.group(1) or b"").upper()  # @saved_sql_mode: the dump's own
            self.backslash = b"NO_BACKSLASH_ESCAPES" not in modes
            self.ansi_quotes = b"ANSI_QUOTES" in modes
        pos, end = 0, len(line)
        while pos < end:
            if self.state is None:
                found = self._CODE.search(line, pos)
                if found is None:
                    return
                token = found.group()
                if token in (b"#", b"--"):
                    return  # a comment to the end of the line
                if token == b"/*":
                    self.state, pos = b"*", found.end()
                else:
                    self.state, pos = token, found.end()
            elif self.state == b"*":
                close = line.find(b"*/", pos)
                if close < 0:
                    return
                self.state, pos = None, close + 2
            else:
                pos = self._close_quote(line, pos)

    def _close_quote(self, line: bytes, pos: int) -> int:
        quote = self.state or b"'"
        escapes = self.backslash and quote != b"`" and not (quote == b'"' and self.ansi_quotes)
        while pos < len(line):
            byte = line[pos : pos + 1]
            if escapes and byte == b"\\":
                pos += 2
            elif byte == quote:
                if line[pos + 1 : pos + 2] == quote:
                    pos += 2
                else:
                    self.state = None
                    return pos + 1
            else:
                pos += 1
        return pos


def rewrite(source: Iterable[bytes], needs_rewrite: Callable[[str], bool]) -> Iterator[bytes]:
    """``source`` (a plain SQL dump, in pieces of any size) with every definer clause at a
    statement start (module docstring) whose definer ``needs_rewrite`` made
    ``DEFINER=CURRENT_USER``; every other byte is passed through unchanged. Rows stream
    through in the pieces they came in; other lines are read whole."""
    lexer = _Lexer()
    line: list[bytes] = []  # the current line's pieces, while it is read whole
    held = 0
    decided = False  # whether the current line's start was looked at
    rows = False  # inside an INSERT statement: its lines pass through unread
    last = b""  # the last byte passed through before the current position (rows)
    for piece in source:
        pos = 0
        while pos < len(piece):
            newline = piece.find(b"\n", pos)
            stop = len(piece) if newline < 0 else newline + 1
            part = piece[pos:stop]
            pos = stop
            if rows:
                yield part
                body = part[:-1] if newline >= 0 else part
                if body:
                    last = body[-1:]
                if newline >= 0:
                    # mariadb-dump writes a row per line (strings escaped onto it): the
                    # statement ends with the line that ends in ";"
                    rows = last != b";"
                    if not rows:
                        line, held, decided, last = [], 0, False, b""
                continue
            line.append(part)
            held += len(part)
            if not decided and (held >= len(_ROWS) or newline >= 0):
                decided = True
                if lexer.state is None and b"".join(line[:13])[: len(_ROWS)] == _ROWS:
                    whole = b"".join(line)
                    yield whole
                    line, held = [], 0
                    body = whole[:-1] if newline >= 0 else whole
                    last = body[-1:]
                    rows = newline < 0 or last != b";"
                    if not rows:
                        decided = False
                    continue
            if newline >= 0:
                yield _rewrite_line(b"".join(line), lexer, needs_rewrite)
                line, held, decided = [], 0, False
    if line:
        yield _rewrite_line(b"".join(line), lexer, needs_rewrite)


def _rewrite_line(line: bytes, lexer: _Lexer, needs_rewrite: Callable[[str], bool]) -> bytes:
    """One whole line (with its newline), rewritten if it starts with a definer clause in
    code; the lexer is advanced over it."""
    at_code = lexer.state is None
    lexer.feed(line)
    if not at_code or not line.startswith((b"/*!5", b"CREATE DEFINER=")):
        return line
    match = (_ROUTINE_CLAUSE if line.startswith(b"CREATE") else _HEAD_CLAUSE).match(line)
    if match is None or not needs_rewrite(_parse(match.group("definer"))):
        return line
    start, stop = match.span("definer")
    logger.info(
        "creating the object of %s with the restoring account as definer",
        line[: min(len(line), 120)].decode("utf-8", "replace").strip(),
    )
    return line[:start] + b"CURRENT_USER" + line[stop:]


# Rights a definer needs on the database its views are created in: CREATE VIEW resolves
# a view on a view (or one calling a function) with the definer's rights there, so an
# application account granted ALL on `shop`.* only makes the staged load fail with
# ERROR 1356/1370 in `shop_sr_…` (the target's own grants never name the staged copy).
LENT_PRIVILEGES = "SELECT, SHOW VIEW, EXECUTE"


def _grantee(definer: str) -> str:
    user, host = split_definer(definer)
    quoted = "'" + user.replace("\\", "\\\\").replace("'", "''") + "'"
    if definer.endswith("@") and not host:
        return quoted  # a role
    return quoted + "@'" + host.replace("\\", "\\\\").replace("'", "''") + "'"


@contextmanager
def lent_rights(db: MysqlConnection, objects: list[DefinedObject] | None) -> Iterator[None]:
    """While the dump loads into the database of ``db`` (a staged or scratch copy), grant
    ``LENT_PRIVILEGES`` on it to each recorded definer that is not this account, exists
    here and has no grant of its own naming exactly this database; revoke exactly those
    afterwards, whatever happens. A grant this account may not give is skipped (logged):
    the load then fails as it would have, with the server's message. A process killed in
    between leaves a grant on a database name that no longer exists (``<name>_sr_<hex>``,
    never reused)."""
    if not objects:
        yield
        return
    database = db.database_name()
    escaped = database.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%")
    lent: list[str] = []
    try:
        with db.connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT CURRENT_USER()")
            row = cur.fetchone()
            current = _text(row[0]) if row else ""
            for definer in sorted({o.definer for o in objects} - {current}):
                grantee = _grantee(definer)
                try:
                    cur.execute(
                        "SELECT 1 FROM information_schema.SCHEMA_PRIVILEGES"
                        " WHERE GRANTEE = %s AND TABLE_SCHEMA IN (%s, %s) LIMIT 1",
                        (grantee if "@" in grantee else f"{grantee}@''", database, escaped),
                    )
                    if cur.fetchone() is not None:
                        continue
                    cur.execute(
                        f"GRANT {LENT_PRIVILEGES} ON `{database.replace('`', '``')}`.* TO "
                        + grantee
                    )
                    lent.append(grantee)
                except pymysql.Error as exc:
                    logger.debug("not lending rights to %s: %s", definer, error_text(exc))
        yield
    finally:
        if lent:
            with db.connect() as conn, conn.cursor() as cur:
                for grantee in lent:
                    try:
                        cur.execute(
                            f"REVOKE {LENT_PRIVILEGES} ON `{database.replace('`', '``')}`.* FROM "
                            + grantee
                        )
                    except pymysql.Error as exc:
                        logger.warning(
                            "could not revoke the rights lent to %s on %s: %s",
                            grantee,
                            database,
                            error_text(exc),
                        )
