"""Database qualifiers written by the user inside stored definitions, re-pointed at another
database.

MySQL and MariaDB keep a trigger's, routine's and event's body as it was written, and a
view's references as fully qualified names: ``INSERT INTO shop.audit …`` inside a trigger
still names ``shop`` after the dump was restored as ``shop_copy``, so the copy's trigger
writes into the original (or fails once the original is gone). ``requalify_statement``
rewrites, in one ``SHOW CREATE`` text, every identifier that qualifies a name with the
source database into the same qualifier naming the target, and nothing else:

* a small lexer skips what is not code: ``'…'`` strings (``''`` and, unless the object's
  ``sql_mode`` has ``NO_BACKSLASH_ESCAPES``, backslash escapes), ``"…"`` strings (or
  identifiers under ``ANSI_QUOTES`` and the modes that imply it), ``-- `` / ``#`` / ``/* */``
  comments and optimizer hints, user variables (``@x``, ``@@session.x``) and the host of a
  ``user@host``. The text of ``/*! … */`` and ``/*M! … */`` comments is code to the
  server, so it is lexed as code;
* a qualifier is the first identifier of a dotted name (``shop.audit``, ```shop`.t.c``,
  ``shop . audit``, ``"shop".t`` under ``ANSI_QUOTES``) whose name is the source's (compared
  case-insensitively when ``lower_case_table_names`` is not 0, as the server does);
* the replacement keeps the quoting: ```shop``` becomes ```shop_copy```, ``shop`` becomes
  ``shop_copy``, or ```…``` when the target is not a plain identifier or is a keyword
  (``information_schema.KEYWORDS``).

A two-part name ``shop.x`` is a database qualifier only if ``shop`` means nothing else in
the same statement. When ``shop`` is also a table, alias, column, variable or object name
there (it occurs not followed by a dot, or after one), ``shop.x`` could be ``table.column``:
it is taken as a qualifier only if ``x`` is a table, view, routine, event or trigger of the
database and no column is called ``x``; otherwise ``Unrewritable`` is raised, and the swap
refuses before anything changed rather than guess. Three-part names (``shop.t.c``) and
routine calls (``shop.f(``) are always qualifiers. Text inside strings is never rewritten,
so SQL built in a string (``PREPARE s FROM 'INSERT INTO shop.audit …'``) keeps the source
name.

A statement is decoded in its ``character_set_client`` (``surrogateescape``, so undecodable
bytes come back as they were); if the charset has no Python codec, or decoding does not give
the same bytes back, the statement is kept as it is when the source name does not occur in
it, else ``Unrewritable`` is raised.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pymysql

# MySQL/MariaDB character set -> Python codec (ASCII-compatible client charsets).
_CODECS = {
    "utf8": "utf-8",
    "utf8mb3": "utf-8",
    "utf8mb4": "utf-8",
    "latin1": "cp1252",  # MySQL's latin1 is cp1252; its 5 holes round-trip as escapes
    "ascii": "ascii",
    "binary": "latin-1",
    "latin2": "iso8859-2",
    "latin5": "iso8859-9",
    "latin7": "iso8859-13",
    "greek": "iso8859-7",
    "hebrew": "iso8859-8",
    "koi8r": "koi8-r",
    "koi8u": "koi8-u",
    "macroman": "mac-roman",
    "macce": "mac-latin2",
    "sjis": "shift_jis",
    "ujis": "euc_jp",
    "eucjpms": "euc_jp",
    "euckr": "euc_kr",
    "tis620": "tis-620",
}
# sql_mode words that make "…" an identifier.
_ANSI_QUOTE_MODES = frozenset(
    {"ANSI_QUOTES", "ANSI", "ORACLE", "DB2", "MSSQL", "POSTGRESQL", "MAXDB"}
)
_PLAIN = re.compile(r"[0-9A-Za-z_$\u0080-\uffff]+")
_WORD_START = re.compile(r"[0-9A-Za-z_$\u0080-\U0010ffff]")
_WORD = re.compile(r"[0-9A-Za-z_$\u0080-\U0010ffff]+")
_CODE_COMMENT = re.compile(r"/\*(?:!|M!)[0-9]*")


class Unrewritable(ValueError):
    """A statement whose source-database qualifiers cannot be rewritten with certainty;
    the message says why (it follows "the definition of <kind> <name>")."""


@dataclass(frozen=True)
class Scope:
    """What the rewrite needs to know about the server and the database the statements
    belong to: ``fold_case`` (``lower_case_table_names`` is not 0), the server's
    ``keywords`` (upper case; ``None`` when the server does not list them, and then an
    unquoted qualifier is always replaced by a quoted one), and the case-folded names of
    the database's ``objects`` (tables, views, routines, events, triggers) and
    ``columns``."""

    fold_case: bool
    keywords: frozenset[str] | None = frozenset()
    objects: frozenset[str] = frozenset()
    columns: frozenset[str] = frozenset()

    def same(self, a: str, b: str) -> bool:
        """Whether two database names name the same database on this server."""
        return a.casefold() == b.casefold() if self.fold_case else a == b


def load_scope(cur: Any, database: str, also: Iterable[str] = ()) -> Scope:
    """The ``Scope`` of ``database`` (``also``: object names to count that are not
    there yet, e.g. views about to be created)."""
    cur.execute("SELECT @@lower_case_table_names")
    row = cur.fetchone()
    fold = bool(row and int(row[0]))
    keywords: frozenset[str] | None = None
    try:
        cur.execute("SELECT WORD FROM information_schema.KEYWORDS")
        keywords = frozenset(_text(r[0]).upper() for r in cur.fetchall())
    except pymysql.Error:  # no such table (MariaDB before 10.6, MySQL 5.7)
        pass
    objects = {name.casefold() for name in also}
    for query in (
        "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s",
        "SELECT ROUTINE_NAME FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = %s",
        "SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = %s",
        "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = %s",
    ):
        cur.execute(query, (database,))
        objects.update(_text(r[0]).casefold() for r in cur.fetchall())
    cur.execute(
        "SELECT DISTINCT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s",
        (database,),
    )
    columns = frozenset(_text(r[0]).casefold() for r in cur.fetchall())
    return Scope(fold, keywords, frozenset(objects), columns)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class Token:
    """One significant piece of a statement: ``kind`` is "ident", "dot", "at" (a variable
    or a host) or "other"; ``start``/``end`` index the text."""

    kind: str
    start: int
    end: int
    name: str = ""  # an identifier's name, quotes removed
    quote: str = ""  # "`", '"' or "" (unquoted)

    def word(self, *words: str) -> bool:
        """Whether this is one of ``words`` (upper case) written as a plain keyword."""
        return self.kind == "ident" and not self.quote and self.name.upper() in words


class Lexer:
    """The significant tokens of one statement (strings and comments dropped).

    ``run`` lexes a whole statement and raises ``Unrewritable`` if a string, quoted name or
    comment does not end. ``extend`` appends text (whole lines of a statement read from a
    stream) and lexes as far as it can: a string, quoted name or comment still open at the
    end waits for the next text, so each character is lexed once, however the statement
    was cut."""

    def __init__(self, text: str, *, ansi_quotes: bool, backslash_escapes: bool) -> None:
        self.text = text
        self.ansi_quotes = ansi_quotes
        self.backslash_escapes = backslash_escapes
        self.tokens: list[Token] = []
        self.pos = 0  # where lexing resumes
        self.in_code_comment = False  # inside /*! … */ (its text is code)

    def run(self) -> list[Token]:
        self._scan(partial=False)
        if self.in_code_comment:
            raise Unrewritable("has a /*! comment that does not end")
        return self.tokens

    def extend(self, more: str) -> list[Token]:
        """Append ``more`` and lex what can be lexed; every token so far."""
        self.text += more
        self._scan(partial=True)
        return self.tokens

    def _scan(self, *, partial: bool) -> None:
        while self.pos < len(self.text):
            try:
                self.pos = self._step(self.pos)
            except Unrewritable:
                if not partial:
                    raise
                return  # resumes at the open string, name or comment

    def _step(self, i: int) -> int:
        """Lex the token (or skip the blank, string or comment) at ``i``; where it ends."""
        text, n = self.text, len(self.text)
        c = text[i]
        if c.isspace():
            return i + 1
        if c == "#" or (text.startswith("--", i) and (i + 2 == n or text[i + 2] <= " ")):
            end = text.find("\n", i)
            return n if end < 0 else end + 1
        if text.startswith("/*", i):
            code = _CODE_COMMENT.match(text, i)
            if code and not self.in_code_comment:
                self.in_code_comment = True
                return code.end()
            return self._skip_past(i, "*/", "comment")
        if self.in_code_comment and text.startswith("*/", i):
            self.in_code_comment = False
            return i + 2
        if c == "'" or (c == '"' and not self.ansi_quotes):
            return self._string(i, c)
        if c == "`" or c == '"':
            return self._quoted(i, c)
        if c == "@":
            return self._variable(i)
        if c == ".":
            self.tokens.append(Token("dot", i, i + 1))
            return i + 1
        if _WORD_START.match(c):
            word = _WORD.match(text, i)
            assert word is not None
            kind = "other" if word.group().isdigit() else "ident"
            self.tokens.append(Token(kind, i, word.end(), word.group()))
            return word.end()
        self.tokens.append(Token("other", i, i + 1, c))
        return i + 1

    def _skip_past(self, i: int, closing: str, what: str) -> int:
        end = self.text.find(closing, i + 2)
        if end < 0:
            raise Unrewritable(f"has a {what} that does not end")
        return end + len(closing)

    def _string(self, i: int, quote: str) -> int:
        text, j, n = self.text, i + 1, len(self.text)
        while j < n:
            c = text[j]
            if c == "\\" and self.backslash_escapes:
                j += 2
            elif c == quote:
                if j + 1 < n and text[j + 1] == quote:
                    j += 2
                else:
                    return j + 1
            else:
                j += 1
        raise Unrewritable("has a string that does not end")

    def _quoted(self, i: int, quote: str) -> int:
        """A quoted identifier (doubled quote inside) as an ``ident`` token."""
        text, j, n = self.text, i + 1, len(self.text)
        parts: list[str] = []
        while j < n:
            end = text.find(quote, j)
            if end < 0:
                break
            parts.append(text[j:end])
            if end + 1 < n and text[end + 1] == quote:
                parts.append(quote)
                j = end + 2
                continue
            self.tokens.append(Token("ident", i, end + 1, "".join(parts), quote))
            return end + 1
        raise Unrewritable("has a quoted name that does not end")

    def _variable(self, i: int) -> int:
        """``@x``, ``@'x'``, ``@@x``, ``@@session.x`` or the host of ``user@host``."""
        text, j = self.text, i + 1
        if text.startswith("@", j):
            j += 1
        while True:
            if j < len(text) and text[j] in "'\"`":
                j = self._string(j, text[j])
            else:
                word = _WORD.match(text, j)
                j = word.end() if word else j
            if text.startswith("@@", i) and text.startswith(".", j) and _WORD.match(text, j + 1):
                j += 1
                continue
            break
        self.tokens.append(Token("at", i, j))
        return j


def dialect(sql_mode: str | None) -> tuple[bool, bool]:
    """(``"`` quotes identifiers, backslash escapes in strings) under ``sql_mode``."""
    words = {w.strip().upper() for w in (sql_mode or "").split(",")}
    return bool(words & _ANSI_QUOTE_MODES), "NO_BACKSLASH_ESCAPES" not in words


def _replacement(token: Token, target: str, scope: Scope) -> str:
    quote = token.quote
    if not quote:
        plain = _PLAIN.fullmatch(target) and not target.isdigit()
        if plain and scope.keywords is not None and target.upper() not in scope.keywords:
            return target
        quote = "`"
    return quote + target.replace(quote, quote * 2) + quote


def requalify(
    text: str, source: str, target: str, scope: Scope, *, sql_mode: str | None = None
) -> str:
    """``text`` with every qualifier naming ``source`` naming ``target`` (module
    docstring); raises ``Unrewritable``."""
    ansi_quotes, backslash_escapes = dialect(sql_mode)
    tokens = Lexer(text, ansi_quotes=ansi_quotes, backslash_escapes=backslash_escapes).run()
    qualifiers: list[Token] = []
    pairs: list[tuple[Token, Token]] = []  # (source qualifier, the name it qualifies)
    other_use = False
    i = 0
    while i < len(tokens):
        if tokens[i].kind != "ident" or (i and tokens[i - 1].kind == "dot"):
            i += 1
            continue
        chain = [tokens[i]]
        j = i + 1
        while j + 1 < len(tokens) and tokens[j].kind == "dot":
            part = tokens[j + 1]
            if part.kind != "ident" and part.name != "*":
                break
            chain.append(part)
            j += 2
            if part.name == "*" and not part.quote:  # `shop`.* ends a name
                break
        following = tokens[j] if j < len(tokens) else None
        head = chain[0]
        if any(scope.same(t.name, source) for t in chain[1:]):
            other_use = True
        if scope.same(head.name, source):
            if len(chain) == 1:
                # a user name (`shop`@`%`) is no use as a table; anything else is
                other_use = other_use or not (following and following.kind == "at")
            elif len(chain) >= 3 or (following and following.name == "(" and not following.quote):
                qualifiers.append(head)  # shop.t.c, shop.f(…), INSERT INTO shop.t (…)
            else:
                pairs.append((head, chain[1]))
        i = j
    for head, name in pairs:
        if other_use and (
            name.name.casefold() not in scope.objects or name.name.casefold() in scope.columns
        ):
            raise Unrewritable(
                f"uses {source} both as a database and as another name, and "
                f"{text[head.start : name.end]} could be either; strongroom does not guess"
            )
        qualifiers.append(head)
    out: list[str] = []
    last = 0
    for token in sorted(qualifiers, key=lambda t: t.start):
        out.append(text[last : token.start])
        out.append(_replacement(token, target, scope))
        last = token.end
    out.append(text[last:])
    return "".join(out)


def codec(charset: str) -> str | None:
    """The Python codec of a MySQL client character set, or ``None``."""
    name = _CODECS.get(charset.lower(), charset.lower())
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def requalify_statement(
    statement: bytes,
    *,
    charset: str,
    sql_mode: str | None,
    source: str,
    target: str,
    scope: Scope,
) -> bytes:
    """``requalify`` on a statement kept as bytes in its ``character_set_client``; the same
    bytes when nothing names ``source``. Raises ``Unrewritable``."""
    if scope.same(source, target):
        return statement
    name = codec(charset)
    text = statement.decode(name, "surrogateescape") if name else None
    if text is None or text.encode(name or "", "surrogateescape") != statement:
        probe = source.encode("utf-8", "replace").lower()
        if probe not in statement.lower():
            return statement
        raise Unrewritable(f"is written in character set {charset}, which strongroom cannot read")
    new = requalify(text, source, target, scope, sql_mode=sql_mode)
    if new == text:
        return statement
    try:
        return new.encode(name or "", "surrogateescape")
    except UnicodeEncodeError:
        raise Unrewritable(f"cannot name database {target} in character set {charset}") from None


def _encodings(charset: str) -> list[str]:
    """Python codecs a name may be written in inside a statement of ``charset``."""
    names = ["utf-8"]  # identifiers are kept in the server's system charset (utf8)
    extra = codec(charset)
    return names if extra in (None, "utf-8") else [*names, extra or ""]


def retarget_statement(
    statement: bytes,
    charset: str,
    staged: str,
    target: str,
    *,
    keywords: frozenset[str] | None = None,
    sql_mode: str | None = None,
) -> bytes:
    """``statement`` with every qualifier naming ``staged`` naming ``target`` instead.

    Replaced are the server's own quoted qualifier: the backquoted name followed by a dot,
    ```shop_sr_1a2b3c4d`.``, or with double quotes where ``ANSI_QUOTES`` made the server
    print them, ``"shop_sr_1a2b3c4d".``, each with its quote character doubled inside the
    name exactly as the server writes it; and the qualifiers the staging filter
    (``staging``) wrote in an object's name (``CREATE TRIGGER shop.t … ON shop.orders``
    loaded as ``shop_sr_1a2b3c4d.t``, quoted as the dump had it): a name token (found by
    ``Lexer`` under the statement's ``sql_mode``, so never in a string or comment) that is
    the staged name and is followed by a dot. This is exact, never a match inside user
    text: the staged name ends in 8 random hex digits chosen for this restore, after the
    dump was written, so no text that came from the dump (a routine's body, a string
    literal, a comment, another identifier) can hold it; every occurrence was written by
    the server, which qualifies names with the database the object lives in (a view
    whose definer has no rights on the staged database is printed that way), or by the
    staging filter. Replacing that database by the target is what the server would have
    printed had the object been created in the target, where the tables will be; a
    qualifier the filter wrote keeps its quoting (unquoted unless the target is not a
    plain name or is one of the server's ``keywords``, upper case; ``None``: unknown,
    always quoted). Trigger, routine and event texts are kept as written, so for them this
    is a no-op unless the staging filter re-pointed their names; it is applied to every
    kind so that no definition created in the target can ever name the staged database.
    The swap refuses to start (before anything changes) if the staged name is still in a
    definition afterwards.
    """
    for quote in ("`", '"'):
        was = quote + staged.replace(quote, quote * 2) + quote + "."
        now = quote + target.replace(quote, quote * 2) + quote + "."
        for encoding in _encodings(charset):
            try:
                statement = statement.replace(was.encode(encoding), now.encode(encoding))
            except UnicodeEncodeError:
                continue
    name = codec(charset)
    probe = staged.encode(name or "utf-8", "replace")
    if name is None or probe not in statement:
        return statement
    text = statement.decode(name, "surrogateescape")
    if text.encode(name, "surrogateescape") != statement:
        return statement  # the swap refuses: the staged name is still there
    ansi_quotes, backslash_escapes = dialect(sql_mode)
    try:
        tokens = Lexer(text, ansi_quotes=ansi_quotes, backslash_escapes=backslash_escapes).run()
    except Unrewritable:
        return statement
    scope = Scope(fold_case=False, keywords=keywords)
    out: list[str] = []
    last = 0
    for i, token in enumerate(tokens[:-1]):
        if token.kind == "ident" and token.name == staged and tokens[i + 1].kind == "dot":
            if i and tokens[i - 1].kind == "dot":
                continue  # x.<staged>.y: not a qualifier of a database
            out += [text[last : token.start], _replacement(token, target, scope)]
            last = token.end
    if not out:
        return statement
    try:
        return ("".join(out) + text[last:]).encode(name, "surrogateescape")
    except UnicodeEncodeError:
        return statement
