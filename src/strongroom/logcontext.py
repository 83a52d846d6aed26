"""What every log record should carry: the backup id and target being worked on."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

_CONTEXT: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "strongroom_log_context", default=None
)


def current() -> dict[str, str]:
    return _CONTEXT.get() or {}


@contextlib.contextmanager
def log_context(**fields: str | None) -> Iterator[None]:
    """Add fields (e.g. ``backup_id``, ``target``) to every record logged inside."""
    merged = {**current(), **{k: v for k, v in fields.items() if v is not None}}
    token = _CONTEXT.set(merged)
    try:
        yield
    finally:
        _CONTEXT.reset(token)
