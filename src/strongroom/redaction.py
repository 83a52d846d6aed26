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
  ``password=`` / ``secret=`` / ``token=`` pairs lose their values (quoted values whole).
"""

from __future__ import annotations

import re
import threading
from urllib.parse import quote

REDACTED = "***"

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_URL_END = re.compile(r"[\s\"'<>`]")
_HOST_END = re.compile(r"[/?#]")
_KV_SECRET = re.compile(
    r"(?i)(?<![A-Za-z0-9_])(password|passwd|pwd|secret|token|sslpassword)"
    r"(\s*=\s*)('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^\s&,;]+)"
)

_lock = threading.Lock()
_registered: set[str] = set()
_ordered: tuple[str, ...] = ()  # longest first, so a longer secret is replaced whole


def register_secret(*values: str) -> None:
    """Redact ``values`` (and their percent-encoded forms) from all text from now on."""
    global _ordered
    forms = set()
    for value in values:
        if value:
            forms.update({value, quote(value, safe=""), quote(value)})
    with _lock:
        if forms <= _registered:
            return
        _registered.update(forms)
        _ordered = tuple(sorted(_registered, key=lambda s: (-len(s), s)))


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


def _is_word(char: str) -> bool:
    return char.isalnum() or char == "_"


def _replace_exact(text: str, secret: str) -> str:
    """``text`` with each occurrence of ``secret`` that is not part of a longer word
    replaced by ``***``."""
    if secret not in text:
        return text
    check_start, check_end = _is_word(secret[0]), _is_word(secret[-1])
    out: list[str] = []
    pos = 0
    while True:
        found = text.find(secret, pos)
        if found < 0:
            break
        end = found + len(secret)
        inside = (check_start and found > 0 and _is_word(text[found - 1])) or (
            check_end and end < len(text) and _is_word(text[end])
        )
        if inside:
            out.append(text[pos : found + 1])
            pos = found + 1
            continue
        out.append(text[pos:found])
        out.append(REDACTED)
        pos = end
    out.append(text[pos:])
    return "".join(out)


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
    with _lock:
        known = _ordered
    extra = tuple(sorted({s for s in secrets if s} - set(known), key=len, reverse=True))
    for secret in (*extra, *known):
        text = _replace_exact(text, secret)
    text = _redact_urls(text)
    return _KV_SECRET.sub(lambda m: f"{m[1]}{m[2]}{REDACTED}", text)


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (user and host stay visible)."""
    return redact_text(url)
