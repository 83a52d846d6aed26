"""Loading a dump into a staged (or scratch) database without acting on anything else.

A restore loads the dump into ``<name>_sr_<8 hex>`` beside the target, verifies it, then
swaps it in (``swap``); a restore drill loads it into a scratch database and drops it.
Until the swap nothing of the dump may act outside that database, and as dumped, two
kinds of statement would:

* **Events.** The dump creates each event with its status; with the event scheduler on,
  an enabled one starts running as soon as it is created, in a copy not verified yet,
  and its body is kept as written, so ``INSERT INTO shop.audit`` writes into the
  original ``shop``. So every event is created disabled (its status clause becomes
  ``DISABLE``, or ``DISABLE`` is added where the text has none), and its original status
  is recorded (``Staging.statuses``); the swap gives it back when it re-creates the
  event in the target (``with_status``). A drill's copy never runs an event.
* **Qualified object names.** The server keeps a trigger's text as written, so one
  created as ``CREATE TRIGGER shop.t BEFORE INSERT ON shop.orders`` (as MySQL Workbench
  writes them) is dumped that way and, replayed into the staged database, is created on
  the original's table: "Trigger already exists", or "Table 'shop.orders' doesn't exist"
  once the original is gone. Routine and event names are printed unqualified by the
  server, but the same would hold if a dump had them qualified. So the qualifier of the
  object's own name and of a trigger's ``ON`` table is re-pointed at the staged database,
  keeping its quoting (```shop``` becomes ```shop_sr_…```, ``shop`` stays unquoted). An
  object belongs to the database it was dumped from, so any qualifier in those positions
  names the source: every one is re-pointed, whatever the source was called. Bodies are
  not touched here: the swap rewrites the staged name to the target's
  (``qualifiers.retarget_statement``) and the source's to the target's
  (``qualifiers.requalify_statement``).

``Staging.rewrite`` filters the dump as it streams into the client, like
``definers.rewrite``. Only statements the dump tools write at the start of a line that
starts a statement (the line before ended one with the client's delimiter, or was a
``DELIMITER`` command), in code (not inside a string, quoted name or comment), are looked
at; a line of a routine's body never starts a statement::

    /*!50003 CREATE*/ /*!50017 DEFINER=`u`@`h`*/ /*!50003 TRIGGER …      (triggers)
    /*!50106 CREATE*/ /*!50117 DEFINER=`u`@`h`*/ /*!50106 EVENT …        (events)
    CREATE DEFINER=`u`@`h` PROCEDURE|FUNCTION …                          (routines)

(with or without the definer clause, which ``definers.rewrite`` may have made
``CURRENT_USER``). Their head, up to the trigger's ``ON`` table, the event's status clause
(or ``DO``) or the routine's name, is lexed with ``qualifiers.Lexer`` in the character set
and ``sql_mode`` the dump sets for the statement, so strings and comments are never
changed. Which lines start in code is followed by a byte-level lexer over every line but
the rows: ``INSERT INTO`` statements outside ``DELIMITER ;;`` blocks (no routine, trigger
or event body is there) pass through unread, in the pieces they came in, up to the
``;`` that ends their last line (the dump escapes line breaks inside values, so a row
never spans lines; MariaDB's dump writes one row per line, MySQL's all on one line). The
filter is linear in the dump's size; it holds one line at a time, and a statement head
of at most ``HEAD_LIMIT`` bytes.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from strongroom.engines.mysql import qualifiers
from strongroom.engines.mysql.qualifiers import Lexer, Token
from strongroom.errors import RestoreFailed

logger = logging.getLogger("strongroom.engines.mysql")

HEAD_LIMIT = 1 << 20  # bytes of one statement's head read before its name or status

ENABLED, DISABLED, SLAVESIDE_DISABLED = "ENABLED", "DISABLED", "SLAVESIDE_DISABLED"
# information_schema.EVENTS.STATUS -> the clause that gives it (MariaDB and MySQL; MySQL
# 8.0.22 and later also write DISABLE ON REPLICA, which is read as the same status)
STATUS_CLAUSES = {ENABLED: "ENABLE", DISABLED: "DISABLE", SLAVESIDE_DISABLED: "DISABLE ON SLAVE"}
_SHAPE_NAME = re.compile(r"[A-Za-z0-9_]+")  # a character set or collation name

_ROWS = b"INSERT INTO "
_STARTS = (b"/*!50003 CREATE*/", b"/*!50106 CREATE*/", b"CREATE ")
_NOT_OURS = re.compile(rb"CREATE (?:TABLE|ALGORITHM|VIEW|DATABASE|SCHEMA)\b")
_SQL_MODE = re.compile(
    rb"/\*!\d+ SET (?:@OLD_SQL_MODE=@@SQL_MODE, |SESSION )?sql_mode\s*=\s*"
    rb"(?:'(?P<mode>[^']*)'|@\w+)",
    re.I,
)
_CHARSET = re.compile(
    rb"/\*!\d+ SET (?:NAMES (?P<names>\w+)|character_set_client\s*=\s*(?P<client>@?\w+))", re.I
)
_DELIMITER = re.compile(rb"DELIMITER[ \t]+(\S+)", re.I)
_CLIENT = re.compile(rb"DELIMITER[ \t]|/\*M!999999\\- enable the sandbox mode \*/\s*$", re.I)
_PLAIN = re.compile(r"[0-9A-Za-z_$\u0080-\uffff]+")
_KINDS = ("TRIGGER", "EVENT", "PROCEDURE", "FUNCTION")
_PRELUDE = ("DEFINER", "CURRENT_USER", "OR", "REPLACE", "AGGREGATE")


# --- what a backup records, and what a restore reads back ----------------------------------
def capture_state(cur: Any, database: str) -> dict[str, Any]:
    """The engine state a backup records for staging: the database's default character set
    and collation (``{"schema": {"character_set", "collation"}}``, which the dump does not
    hold: it has no ``CREATE DATABASE``) and each event's status (``{"events": {name:
    "ENABLED" | "DISABLED" | "SLAVESIDE_DISABLED"}}``). Raises ``pymysql.Error``."""
    state: dict[str, Any] = {}
    cur.execute(
        "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME"
        " FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s",
        (database,),
    )
    row = cur.fetchone()
    if row:
        state["schema"] = {"character_set": _text(row[0]), "collation": _text(row[1])}
    cur.execute(
        "SELECT EVENT_NAME, STATUS FROM information_schema.EVENTS WHERE EVENT_SCHEMA = %s",
        (database,),
    )
    state["events"] = {_text(name): _text(status) for name, status in cur.fetchall()}
    return state


def recorded_shape(state: Mapping[str, Any] | None) -> tuple[str, str] | None:
    """(character set, collation) a backup recorded, or ``None`` (older backups, or a
    value that is not a plain name)."""
    schema = state.get("schema") if state else None
    if not isinstance(schema, Mapping):
        return None
    charset, collation = schema.get("character_set"), schema.get("collation")
    if not all(isinstance(v, str) and _SHAPE_NAME.fullmatch(v) for v in (charset, collation)):
        return None
    return str(charset), str(collation)


def recorded_events(state: Mapping[str, Any] | None) -> dict[str, str]:
    """Event name -> status a backup recorded (empty for older backups)."""
    events = state.get("events") if state else None
    if not isinstance(events, Mapping):
        return {}
    return {
        str(name): str(status)
        for name, status in events.items()
        if isinstance(name, str) and status in STATUS_CLAUSES
    }


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


# --- statement heads ---------------------------------------------------------------------
@dataclass
class _Head:
    """What one statement's head says: its kind (``""``: not a trigger, event or routine),
    name, the edits re-pointing its qualifiers, and for an event the status it has and
    where that is written (``status_at``: the clause's span, or an empty span before
    ``COMMENT``/``DO`` when there is none)."""

    kind: str
    name: str = ""
    edits: list[tuple[int, int, str]] = field(default_factory=list)
    status: str | None = None
    status_at: tuple[int, int] | None = None


def _chain(tokens: list[Token], i: int) -> tuple[list[Token], int] | None:
    """The dotted name starting at ``tokens[i]`` and the index after it; ``None`` when the
    tokens end before it is certain the name is complete."""
    parts = [tokens[i]]
    j = i + 1
    while j < len(tokens):
        if tokens[j].kind != "dot":
            return parts, j
        if j + 1 >= len(tokens):
            return None
        parts.append(tokens[j + 1])
        j += 2
    return None


def _requalified(token: Token, staged: str) -> tuple[int, int, str]:
    """An edit making the qualifier ``token`` name ``staged``, quoted as it was (an
    unquoted one stays unquoted where the staged name is a plain name: it ends in
    ``_sr_<hex>``, so it is never a keyword)."""
    quote = token.quote
    if not quote and not _PLAIN.fullmatch(staged):
        quote = "`"
    name = quote + staged.replace(quote, quote * 2) + quote if quote else staged
    return token.start, token.end, name


def _parse(tokens: list[Token], staged: str | None, *, done: bool) -> _Head | None:
    """The head of a statement starting with ``CREATE``, or ``None`` when more of it is
    needed (never when ``done``: the statement ended). ``staged``: the database its
    qualifiers are re-pointed at (``None``: none are)."""
    if not tokens or not tokens[0].word("CREATE"):
        return None if not tokens and not done else _Head("")
    i, account = 1, False
    while True:  # CREATE [OR REPLACE] [DEFINER = account] [AGGREGATE] <kind>
        if i >= len(tokens):
            return None if not done else _Head("")
        token = tokens[i]
        if token.word(*_KINDS):
            break
        if token.kind == "ident" and (token.quote or account or token.word(*_PRELUDE)):
            account = False
        elif token.kind in ("at", "other"):
            account = token.name == "="
        else:
            return _Head("")
        i += 1
    head = _Head(tokens[i].name.upper())
    i += 1
    if i < len(tokens) and tokens[i].word("IF"):  # IF NOT EXISTS
        if len(tokens) < i + 3:
            return None if not done else head
        i += 3
    name = _chain(tokens, i) if i < len(tokens) else None
    if name is None:
        return None if not done else head
    parts, i = name
    head.name = parts[-1].name
    if staged is not None and len(parts) == 2:
        head.edits.append(_requalified(parts[0], staged))
    if head.kind == "TRIGGER":
        return _trigger_table(head, tokens, i, staged, done=done)
    if head.kind == "EVENT":
        return _event_status(head, tokens, i, done=done)
    return head


def _trigger_table(
    head: _Head, tokens: list[Token], i: int, staged: str | None, *, done: bool
) -> _Head | None:
    """The qualifier of a trigger's ``ON`` table (its name ends before ``tokens[i]``)."""
    while i < len(tokens) and not tokens[i].word("ON"):
        i += 1
    table = _chain(tokens, i + 1) if i + 1 < len(tokens) else None
    if table is None:
        return None if not done else head
    parts, _ = table
    if staged is not None and len(parts) == 2:
        head.edits.append(_requalified(parts[0], staged))
    return head


def _event_status(head: _Head, tokens: list[Token], i: int, *, done: bool) -> _Head | None:
    """The status clause of an event (its name ends before ``tokens[i]``): ``ENABLE``,
    ``DISABLE`` or ``DISABLE ON SLAVE|REPLICA``, written before ``COMMENT`` and ``DO``
    (``SHOW CREATE EVENT`` puts it right after ``ON COMPLETION [NOT] PRESERVE``); none
    means enabled."""
    while i < len(tokens):
        token = tokens[i]
        if token.word("ENABLE"):
            head.status, head.status_at = ENABLED, (token.start, token.end)
            return head
        if token.word("DISABLE"):
            rest = tokens[i + 1 : i + 3]
            if len(rest) < 2 and not done:
                return None  # ON SLAVE may follow
            if len(rest) == 2 and rest[0].word("ON") and rest[1].word("SLAVE", "REPLICA"):
                head.status, head.status_at = SLAVESIDE_DISABLED, (token.start, rest[1].end)
            else:
                head.status, head.status_at = DISABLED, (token.start, token.end)
            return head
        if token.word("COMMENT", "DO"):
            head.status, head.status_at = ENABLED, (token.start, token.start)
            return head
        i += 1
    return None if not done else head


def _status_edit(head: _Head, status: str) -> tuple[int, int, str]:
    """The edit giving an event's head the clause of ``status``; ``RestoreFailed`` when the
    head has no place for it (the definition could not be read)."""
    if head.status_at is None:
        raise RestoreFailed(
            f"cannot find the status clause of event {head.name or '(unnamed)'} in its "
            "definition, so strongroom cannot keep it from running"
        )
    start, end = head.status_at
    return start, end, STATUS_CLAUSES[status] + (" " if start == end else "")


def _dialect(sql_mode: str | None) -> tuple[bool, bool]:
    return qualifiers.dialect(sql_mode)


def _apply(text: str, edits: Iterable[tuple[int, int, str]]) -> str:
    out, last = [], 0
    for start, end, replacement in sorted(edits):
        out += [text[last:start], replacement]
        last = end
    return "".join(out) + text[last:]


def with_status(statement: bytes, *, charset: str, sql_mode: str | None, status: str) -> bytes:
    """A ``SHOW CREATE EVENT`` statement (bytes in ``charset``) with the status clause of
    ``status`` (``ENABLED``, ``DISABLED``, ``SLAVESIDE_DISABLED``): how the swap gives a
    restored event back the status it was backed up with. Raises ``RestoreFailed`` if the
    statement cannot be read."""
    codec = qualifiers.codec(charset) or "latin-1"
    text = statement.decode(codec, "surrogateescape")
    ansi_quotes, backslash_escapes = _dialect(sql_mode)
    try:
        tokens = Lexer(text, ansi_quotes=ansi_quotes, backslash_escapes=backslash_escapes).run()
    except qualifiers.Unrewritable as exc:
        raise RestoreFailed(f"cannot read the definition of an event: it {exc}") from None
    head = _parse(tokens, None, done=True)
    if head is None or head.kind != "EVENT":
        raise RestoreFailed("cannot read the definition of an event")
    if head.status == status:
        return statement
    return _apply(text, [_status_edit(head, status)]).encode(codec, "surrogateescape")


# --- the stream ----------------------------------------------------------------------------
class _Tracker:
    """Whether the next line of the dump starts inside a string, quoted name or comment
    (``state``: ``None`` in code, a quote byte, or ``b"*"`` inside ``/* … */``), whether
    it starts a statement (``at_start``: the line before ended one with the client's
    delimiter, or was a ``DELIMITER`` command; blank and ``--`` comment lines between
    statements change nothing), and what the dump has set so far: ``sql_mode``
    (``NO_BACKSLASH_ESCAPES`` and ``ANSI_QUOTES`` change how quotes read),
    ``character_set_client`` and the delimiter. ``/*!NNNNN … */`` and ``/*M!NNNNN … */``
    hold code and are followed as code. A line inside a routine's body never counts as a
    statement start (its statements end with ``;``, the body's with ``;;``)."""

    _CODE = re.compile(rb"['\"`#]|--(?=\s|$)|/\*(?!!|M!)")

    def __init__(self) -> None:
        self.state: bytes | None = None
        self.base_mode: str | None = None  # the dump's session sql_mode (its header sets it)
        self.mode: str | None = None
        self.base_charset = "utf8mb4"
        self.charset = "utf8mb4"
        self.delimiter = b";"
        self.at_start = True

    def settings(self, line: bytes) -> None:
        """Take what a line starting in code sets."""
        found = _SQL_MODE.match(line)
        if found is not None:
            mode = found.group("mode")
            if mode is None:  # back to @saved_sql_mode / @OLD_SQL_MODE
                self.mode = self.base_mode
            else:
                self.mode = mode.decode("ascii", "replace")
                if found.group(0).upper().find(b"@OLD_SQL_MODE") >= 0:
                    self.base_mode = self.mode
            return
        found = _CHARSET.match(line)
        if found is not None:
            names, client = found.group("names"), found.group("client")
            if names is not None:
                self.base_charset = self.charset = names.decode("ascii")
            elif client is not None:
                name = client.decode("ascii")
                self.charset = self.base_charset if name.startswith("@") else name
            return
        found = _DELIMITER.match(line)
        if found is not None:
            self.delimiter = found.group(1)

    def ends_statement(self, line: bytes) -> bool:
        """Whether ``line`` (just fed) ends a statement: it ends in code with the
        delimiter."""
        return self.state is None and line.rstrip().endswith(self.delimiter)

    def feed(self, line: bytes) -> None:
        """Follow ``line`` (whole, with its newline)."""
        was_start = self.at_start and self.state is None
        self._follow(line)
        stripped = line.strip()
        if was_start and (
            not stripped or stripped.startswith((b"--", b"#")) or _CLIENT.match(line)
        ):
            return  # nothing between statements, or a client command
        self.at_start = self.ends_statement(line)

    def _follow(self, line: bytes) -> None:
        ansi_quotes, backslash = _dialect(self.mode)
        pos, end = 0, len(line)
        while pos < end:
            if self.state is None:
                found = self._CODE.search(line, pos)
                if found is None:
                    return
                token = found.group()
                if token in (b"#", b"--"):
                    return  # a comment to the end of the line
                self.state, pos = (b"*" if token == b"/*" else token), found.end()
            elif self.state == b"*":
                close = line.find(b"*/", pos)
                if close < 0:
                    return
                self.state, pos = None, close + 2
            else:
                quote = self.state
                escapes = backslash and quote != b"`" and not (quote == b'"' and ansi_quotes)
                pos = self._close_quote(line, pos, quote, escapes)

    def _close_quote(self, line: bytes, pos: int, quote: bytes, escapes: bool) -> int:
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


class _Statement:
    """The head of one trigger, event or routine statement, read line by line."""

    def __init__(self, charset: str, sql_mode: str | None) -> None:
        self.lines: list[bytes] = []
        self.size = 0
        self.declared = charset
        known = qualifiers.codec(charset)
        self.codec = known or "latin-1"
        self.as_latin1 = known is None  # read byte by byte, not in its own charset
        self.sql_mode = sql_mode
        self.lexer = self._lexer()

    def _lexer(self) -> Lexer:
        ansi_quotes, backslash_escapes = _dialect(self.sql_mode)
        return Lexer("", ansi_quotes=ansi_quotes, backslash_escapes=backslash_escapes)

    def add(self, line: bytes) -> list[Token]:
        """Add a line; the tokens of every line so far. A line that does not decode and
        encode back the same in the statement's charset makes it read as Latin-1 (every
        byte itself), which keeps ASCII's quotes and names."""
        self.lines.append(line)
        self.size += len(line)
        text = line.decode(self.codec, "surrogateescape")
        if self.codec != "latin-1" and text.encode(self.codec, "surrogateescape") != line:
            self.codec, self.as_latin1 = "latin-1", True
            self.lexer = self._lexer()
            return self.lexer.extend(b"".join(self.lines).decode("latin-1"))
        return self.lexer.extend(text)

    def rewritten(self, edits: list[tuple[int, int, str]]) -> bytes:
        """The statement's lines with ``edits`` made (spans of their decoded text).
        ``RestoreFailed`` when a new name cannot be written in its character set (or
        the statement was read as Latin-1 and the name is not ASCII)."""
        if self.as_latin1 and not all(e[2].isascii() for e in edits):
            raise RestoreFailed(
                f"cannot write the staged database's name in character set {self.declared}"
            )
        text = _apply(self.lexer.text, edits)
        try:
            return text.encode(self.codec, "surrogateescape")
        except UnicodeEncodeError:
            raise RestoreFailed(
                f"cannot write the staged database's name in character set {self.declared}"
            ) from None


def _statement_end(piece: bytes, pos: int) -> int:
    """Where ``;\\n`` is in ``piece`` from ``pos``, or -1 (found by the ``;``, which
    ``bytes.find`` finds many times faster than the pair)."""
    while True:
        found = piece.find(b";", pos)
        if found < 0 or piece[found + 1 : found + 2] == b"\n":
            return found
        pos = found + 1


class Staging:
    """The dump filter for one staged or scratch database ``staged`` (module docstring).

    ``rewrite`` the dump; afterwards ``statuses`` gives each event's original status.
    ``recorded``: the statuses the backup recorded (``recorded_events``), used for an
    event whose dumped text has none."""

    def __init__(self, staged: str, recorded: Mapping[str, str] | None = None) -> None:
        self.staged = staged
        self.recorded = dict(recorded or {})
        self.found: dict[str, str] = {}  # event name -> status, as dumped
        self._tracker = _Tracker()
        self._statement: _Statement | None = None

    def statuses(self) -> dict[str, str]:
        """Case-folded event name -> the status it had in the backup: as dumped (the
        definition and its status come from the same moment), else as recorded."""
        out = {name.casefold(): status for name, status in self.recorded.items()}
        for name, status in self.found.items():
            was = out.get(name.casefold())
            if was is not None and was != status:
                logger.warning(
                    "event %s changed from %s to %s while the backup ran; it is restored %s",
                    name,
                    was,
                    status,
                    status,
                )
            out[name.casefold()] = status
        return out

    def rewrite(self, source: Iterable[bytes]) -> Iterator[bytes]:
        """``source`` (a plain SQL dump, in pieces of any size) with every event created
        disabled and the object names of triggers, events and routines in the staged
        database; every other byte passes unchanged. Rows stream through in the pieces
        they came in. Raises ``RestoreFailed`` for a statement whose head it cannot read
        (nothing of it is passed on)."""
        line: list[bytes] = []  # the current line's pieces, while it is read whole
        held = 0
        decided = False  # whether the current line's start was looked at
        rows = False  # inside an INSERT statement: pass through up to its ";\n"
        last = b""  # rows: the last byte passed
        for piece in source:
            pos, size = 0, len(piece)
            while pos < size:
                if rows:
                    if last == b";" and piece[pos : pos + 1] == b"\n":
                        stop, rows = pos + 1, False  # the ";" ended the last piece
                    else:
                        found = _statement_end(piece, pos)
                        stop = found + 2 if found >= 0 else size
                        rows = found < 0
                    yield piece if pos == 0 and stop == size else piece[pos:stop]
                    last, pos = piece[stop - 1 : stop], stop
                    continue
                newline = piece.find(b"\n", pos)
                stop = size if newline < 0 else newline + 1
                line.append(piece[pos:stop])
                held += stop - pos
                pos = stop
                if not decided and (held >= len(_ROWS) or newline >= 0):
                    decided = True
                    if self._starts_rows(b"".join(line[:13])[: len(_ROWS)]):
                        data = b"".join(line)
                        line, held, decided = [], 0, False
                        yield data
                        rows = not data.endswith(b";\n")
                        last = data[-1:]
                        continue
                if newline >= 0:
                    yield from self._line(b"".join(line))
                    line, held, decided = [], 0, False
        if line:
            yield from self._line(b"".join(line))
        if self._statement is not None:
            yield self._finish(done=True)

    def _starts_rows(self, start: bytes) -> bool:
        tracker = self._tracker
        return (
            start == _ROWS
            and self._statement is None
            and tracker.state is None
            and tracker.at_start
            and tracker.delimiter == b";"
        )

    def _line(self, line: bytes) -> Iterator[bytes]:
        tracker = self._tracker
        if self._statement is None and tracker.at_start and tracker.state is None:
            tracker.settings(line)
            if line.startswith(_STARTS) and not _NOT_OURS.match(line):
                self._statement = _Statement(tracker.charset, tracker.mode)
        tracker.feed(line)
        if self._statement is None:
            yield line
            return
        tokens = self._statement.add(line)
        ended = tracker.ends_statement(line)
        head = _parse(tokens, self.staged, done=ended)
        if head is not None:
            yield self._finish(done=ended, head=head)
        elif self._statement.size > HEAD_LIMIT:
            raise RestoreFailed(
                f"the dump holds a statement whose first {HEAD_LIMIT} bytes do not name "
                "the object it creates; strongroom cannot restore it safely"
            )

    def _finish(self, *, done: bool, head: _Head | None = None) -> bytes:
        statement, self._statement = self._statement, None
        assert statement is not None
        head = head or _parse(statement.lexer.tokens, self.staged, done=done)
        assert head is not None
        edits = list(head.edits)
        if head.kind == "EVENT":
            edits.append(_status_edit(head, DISABLED))
            if head.status is not None:
                self.found[head.name] = head.status
        if not edits:
            return b"".join(statement.lines)
        return statement.rewritten(edits)
