"""Remove secrets from text before it reaches a log, an error or a screen.

Two mechanisms:

* **Known secrets.** Every :class:`Secret` (a database URL's password, as parsed by
  :mod:`strongroom.engines.urls`) registers its value and the forms it may be written in
  (percent-encoded, …) when it is created; :func:`redact_text` replaces each occurrence of
  any registered value, in any text, with ``***``. The match is exact: a secret made of
  letters and digits at its edges is replaced only where it does not continue a longer
  word, so a password ``a`` or ``percent`` does not turn ``percentage`` into
  ``***age`` or every ``a`` into ``***``.
* **URLs in free text** that strongroom never parsed (a hook's command, a webhook's
  error): the userinfo of ``scheme://user:password@host`` is cut at the *last* ``@``
  before the host, as :func:`strongroom.engines.urls.parse_database_url` does, and
  ``password=`` / ``secret=`` / ``token=`` pairs (also inside longer names such as
  ``PGPASSWORD=`` or ``MYSQL_PWD=``, and JSON's ``"password": "…"``) lose their values
  (quoted values whole), and so do ``Bearer``/``Basic`` credentials.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from urllib.parse import quote

REDACTED = "***"

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_URL_END = re.compile(r"[\s\"'<>`]")
_HOST_END = re.compile(r"[/?#]")
# a name holding one of these words: password=, PGPASSWORD=, MYSQL_PWD=, CRON_SECRET=,
# api_token=, AWS_SECRET_ACCESS_KEY=
_SECRET_NAME = r"[A-Za-z0-9_]*(?:password|passwd|pwd|secret|token)[A-Za-z0-9_]*"
_KV_SECRET = re.compile(
    rf"(?i)(?<![A-Za-z0-9_-])({_SECRET_NAME})"
    r"(\s*=\s*)('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^\s&,;]+)"
)
# JSON: "password": "…", "api_token": "…" (the value whole, escapes included)
_JSON_SECRET = re.compile(rf'(?i)("{_SECRET_NAME}"\s*:\s*)"(?:[^"\\]|\\.)*"')
# HTTP credentials: Authorization: Bearer …, Basic …
_HTTP_CREDENTIALS = re.compile(
    r"(?i)((?<![A-Za-z0-9_-])bearer|authorization:\s*basic)(\s+)[A-Za-z0-9._~+/=-]{6,}"
)

_KV_WORDS = ("pass", "pwd", "secret", "token", "bearer", "authorization")  # cheap test first

_lock = threading.Lock()
_registered: set[str] = set()
_pending: list[str] = []  # registered, not yet in a compiled pattern
_chunks: list[tuple[list[str], re.Pattern[str]]] = []  # secrets and their pattern
_FEW = 48  # fewer new secrets than this are searched for with str.find, not compiled
_QUIET = 100
_quiet = 0  # redactions since the last new secret


def register_secret(*values: str) -> None:
    """Redact ``values`` (and their percent-encoded forms) from all text from now on."""
    global _quiet
    forms = set()
    for value in values:
        if value:
            forms.update({value, quote(value, safe=""), quote(value)})
    with _lock:
        new = forms - _registered
        _registered.update(new)
        _pending.extend(sorted(new))
        if new:
            _quiet = 0


class Secret:
    """A value that must never be shown: ``str()`` and ``repr()`` give ``***``; the value
    itself comes from :meth:`reveal`. Creating one registers it for redaction (with
    ``also``: other forms the same secret was written in)."""

    __slots__ = ("_value",)

    def __init__(self, value: str, *also: str) -> None:
        self._value = value
        register_secret(value, *also)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({REDACTED!r})"

    def __str__(self) -> str:
        return REDACTED

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __len__(self) -> int:
        return len(self._value)


_WORD = re.compile(r"\w")
_MAX_NESTING = 60  # deeper trie branches become one flat alternation (re's nesting limit)


def _end(last: str) -> str:
    """What must follow a secret whose last character is ``last``: no word character
    if it is one (``percent`` is not redacted inside ``percentage``)."""
    return r"(?!\w)" if _WORD.fullmatch(last) else ""


def _common_prefix(texts: list[str]) -> str:
    low, high = min(texts), max(texts)  # the prefix of these two is everyone's
    n = 0
    while n < len(low) and low[n] == high[n]:
        n += 1
    return low[:n]


def _trie(secrets: list[str], last: str, depth: int) -> str:
    """A regular expression for the rests ``secrets`` of secrets whose part matched so far
    ends with ``last``; the longest first where several match at one place. Shared
    prefixes are written once, so an attempt costs about a secret's length, not the
    number of secrets."""
    if depth > _MAX_NESTING:
        flat = sorted(secrets, key=lambda s: (-len(s), s))
        return "(?:" + "|".join(re.escape(s) + _end((last + s)[-1]) for s in flat) + ")"
    by_first: dict[str, list[str]] = {}
    ends_here = False
    for secret in secrets:
        if secret:
            by_first.setdefault(secret[0], []).append(secret[1:])
        else:
            ends_here = True
    branches = []
    for first, rests in sorted(by_first.items()):
        prefix = first
        shared = _common_prefix(rests) if len(rests) > 1 else ""
        if shared:  # a prefix all of them share, written once
            prefix += shared
            rests = [r[len(shared) :] for r in rests]
        if len(rests) == 1:
            whole = prefix + rests[0]
            branches.append(re.escape(whole) + _end(whole[-1]))
        else:
            branches.append(re.escape(prefix) + _trie(rests, prefix[-1], depth + 1))
    if ends_here:
        branches.append(_end(last))  # last: the shortest is tried after the longer ones
    if len(branches) == 1:
        return branches[0]
    return "(?:" + "|".join(branches) + ")"


def _compile(secrets: list[str]) -> re.Pattern[str]:
    """Every occurrence of any of ``secrets``, overlapping ones too (a lookahead at each
    position); a secret starting with a word character only where no word precedes."""
    words = [s for s in secrets if _WORD.fullmatch(s[0])]
    others = [s for s in secrets if not _WORD.fullmatch(s[0])]
    parts = []
    if words:
        parts.append(r"(?<!\w)" + _trie(words, "", 0))
    if others:
        parts.append(_trie(others, "", 0))
    return re.compile("(?=(" + "|".join(parts) + "))")


def _matchers() -> tuple[list[re.Pattern[str]], list[str]]:
    """The compiled patterns of the registered secrets, and the few newest secrets not
    compiled yet (searched for with ``str.find``). ``_FEW`` new secrets are compiled into a
    chunk of their own, which absorbs the chunks before it that are no bigger (a binary
    counter: each secret is compiled O(log n) times, whatever the order of registering and
    redacting); after ``_QUIET`` redactions without a new secret the chunks become one."""
    global _quiet
    with _lock:
        if len(_pending) >= _FEW or (_pending and _quiet >= _QUIET):
            batch = list(_pending)
            _pending.clear()
            while _chunks and len(_chunks[-1][0]) <= len(batch):
                batch = _chunks.pop()[0] + batch
            _chunks.append((batch, _compile(batch)))
        elif _quiet >= _QUIET and len(_chunks) > 1:
            batch = [secret for chunk, _ in _chunks for secret in chunk]
            _chunks[:] = [(batch, _compile(batch))]
        _quiet += 1
        return [pattern for _, pattern in _chunks], list(_pending)


def _found(text: str, secrets: list[str]) -> Iterator[tuple[int, int]]:
    """Where ``secrets`` occur in ``text`` (not inside a longer word), by ``str.find``."""
    for secret in secrets:
        start = text.find(secret)
        while start >= 0:
            end = start + len(secret)
            inside = (_WORD.match(secret[0]) and start and _WORD.match(text[start - 1])) or (
                _WORD.match(secret[-1]) and end < len(text) and _WORD.match(text[end])
            )
            if not inside:
                yield start, end
            start = text.find(secret, start + 1)


def _spans(text: str, patterns: list[re.Pattern[str]], few: list[str]) -> list[tuple[int, int]]:
    """The merged spans of ``text`` that hold a secret."""
    found = [(m.start(1), m.end(1)) for p in patterns for m in p.finditer(text)]
    found = sorted([*found, *_found(text, few)])
    merged: list[tuple[int, int]] = []
    for start, end in found:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _redact_urls(text: str) -> str:
    """Passwords of ``scheme://user:password@host…`` URLs in ``text`` replaced by ``***``."""
    out: list[str] = []
    pos = 0
    for match in _SCHEME.finditer(text):
        if match.start() < pos:
            continue
        start = match.end()
        stop = _URL_END.search(text, start)
        end = stop.start() if stop else len(text)
        token = text[start:end]
        at = token.rfind("@")
        # the host part ends the userinfo: a '/', '?' or '#' after the last '@' is a path
        if at > 0 and not _HOST_END.search(token[:at].split(":", 1)[0]):
            user, colon, _ = token[:at].partition(":")
            if colon:
                out.append(text[pos:start] + f"{user}:{REDACTED}")
                pos = start + at
    out.append(text[pos:])
    return "".join(out)


def redact_text(text: str, secrets: tuple[str, ...] = ()) -> str:
    """``text`` without any registered secret, literal ``secrets``, URL password or
    ``password=`` value."""
    patterns, few = _matchers()
    spans = _spans(text, patterns, [*few, *{s for s in secrets if s} - _registered])
    if spans:
        out: list[str] = []
        pos = 0
        for start, end in spans:
            out += [text[pos:start], REDACTED]
            pos = end
        out.append(text[pos:])
        text = "".join(out)
    if "://" in text:
        text = _redact_urls(text)
    lowered = text.lower()
    if any(word in lowered for word in _KV_WORDS):
        text = _KV_SECRET.sub(lambda m: f"{m[1]}{m[2]}{REDACTED}", text)
        text = _JSON_SECRET.sub(lambda m: f'{m[1]}"{REDACTED}"', text)
        text = _HTTP_CREDENTIALS.sub(lambda m: f"{m[1]}{m[2]}{REDACTED}", text)
    return text


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (user and host stay visible)."""
    return redact_text(url)
