"""What a target name and a backup tag may be: the one set of rules that the command line,
the scheduler and the web API check before anything is written.

A target name becomes part of storage keys (``runs/<target>/…``) and of file names, and
both are shown in one-line messages and tables, so:

* a target name is 1 to 128 printable characters (letters of any script, digits,
  punctuation, spaces inside), no control or format characters, no ``/`` or ``\\``, does
  not start with ``.`` (so never ``.`` or ``..``) and has no space at either end;
* a tag is 1 to 64 printable characters, no control or format characters, no ``,``
  (tags are shown comma-separated) and no space at either end; a backup has at most
  16 tags;
* both are stored in Unicode normal form C (NFC), so a name typed with a combining accent
  (``cafe`` + U+0301) and one typed with ``é`` are one target, not two that look the same.

Manifests written by older versions may hold names these rules refuse: readers list and
restore them as they are (the rules apply to what is written from now on), and show them
through :func:`printable`, so a control character in a stored name (a terminal escape such
as ``ESC ] 0 ; … BEL``, a newline that would fake a second line) is shown, never obeyed.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from strongroom.errors import InvalidName

TARGET_MAX_LENGTH = 128
TAG_MAX_LENGTH = 64
MAX_TAGS = 16
_SHOWN = 40  # characters of a refused name quoted in a message


def printable(text: str) -> str:
    """``text`` as one line of a terminal or log may show it: every character that is not
    printable (control, format, separator other than the space, lone surrogate) as its
    Python escape (``\\x1b``, ``\\u202e``, ``\\ud800``); everything else as it is."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else ascii(char)[1:-1] for char in text)


def normalized(text: str) -> str:
    """``text`` in Unicode normal form C: how names and tags are stored and compared."""
    return unicodedata.normalize("NFC", text)


def _shown(text: str) -> str:
    """A refused name as a message may quote it: short, escaped (no control characters)."""
    cut = text if len(text) <= _SHOWN else text[:_SHOWN] + "…"
    return repr(cut)


def _bad_character(text: str) -> str | None:
    for char in text:
        if unicodedata.category(char)[0] in ("C", "Z") and char != " ":
            code = f"U+{ord(char):04X}"
            return f"a control, format or separator character ({code})"
    return None


def target_name_problem(name: str) -> str | None:
    """Why ``name`` may not name a target, or ``None`` when it may."""
    if not name:
        return "it is empty"
    if len(name) > TARGET_MAX_LENGTH:
        return f"it is {len(name)} characters long (at most {TARGET_MAX_LENGTH})"
    bad = _bad_character(name)
    if bad is not None:
        return f"it holds {bad}"
    if "/" in name or "\\" in name:
        return "it holds a '/' or '\\'"
    if name.startswith("."):
        return "it starts with '.'"
    if name != name.strip():
        return "it starts or ends with a space"
    return None


def tag_problem(tag: str) -> str | None:
    """Why ``tag`` may not tag a backup, or ``None`` when it may."""
    if not tag:
        return "it is empty"
    if len(tag) > TAG_MAX_LENGTH:
        return f"it is {len(tag)} characters long (at most {TAG_MAX_LENGTH})"
    bad = _bad_character(tag)
    if bad is not None:
        return f"it holds {bad}"
    if "," in tag:
        return "it holds a ','"
    if tag != tag.strip():
        return "it starts or ends with a space"
    return None


def is_valid_target_name(name: str) -> bool:
    return target_name_problem(name) is None


def check_target_name(name: str, *, what: str = "target name") -> str:
    """Return ``name`` in NFC (:func:`normalized`); raise ``InvalidName`` (exit 2, one
    line) if it breaks the rules."""
    name = normalized(name)
    problem = target_name_problem(name)
    if problem is not None:
        raise InvalidName(
            f"{what} {_shown(name)} is not allowed: {problem}; a target name is 1-"
            f"{TARGET_MAX_LENGTH} printable characters without '/', '\\', control "
            "characters or a leading '.'"
        )
    return name


def check_tags(tags: Iterable[str]) -> tuple[str, ...]:
    """Return ``tags`` as a tuple, each in NFC (:func:`normalized`); raise ``InvalidName``
    (exit 2, one line) if one breaks the rules or there are more than ``MAX_TAGS``."""
    checked = tuple(normalized(tag) for tag in tags)
    if len(checked) > MAX_TAGS:
        raise InvalidName(f"{len(checked)} tags given: a backup has at most {MAX_TAGS} tags")
    for tag in checked:
        problem = tag_problem(tag)
        if problem is not None:
            raise InvalidName(
                f"tag {_shown(tag)} is not allowed: {problem}; a tag is 1-{TAG_MAX_LENGTH} "
                "printable characters without ',' or control characters"
            )
    return checked


__all__ = [
    "MAX_TAGS",
    "TAG_MAX_LENGTH",
    "TARGET_MAX_LENGTH",
    "check_tags",
    "check_target_name",
    "is_valid_target_name",
    "normalized",
    "printable",
    "tag_problem",
    "target_name_problem",
]
