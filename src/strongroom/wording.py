"""Counted nouns for messages: ``counted(1, "table")`` is ``1 table``, ``counted(2,
"table")`` is ``2 tables`` (never ``1 tables`` or ``table(s)``)."""

from __future__ import annotations


def counted(n: int, singular: str, plural: str | None = None) -> str:
    """``"<n> <noun>"`` with the noun in the number ``n`` needs; ``plural`` defaults to
    ``singular + "s"`` (give it for irregular words: ``counted(2, "query", "queries")``)."""
    return f"{n} {singular if n == 1 else (plural or singular + 's')}"
