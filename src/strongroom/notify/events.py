"""The event a channel sends: what happened, to which target, on which host, when."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, get_args

from strongroom.redaction import redact_text

EventKind = Literal[
    "backup_failed",
    "backup_succeeded",
    "backup_stale",
    "size_changed",
    "verify_failed",
    "hook_failed",  # a post_backup hook failed after the backup was complete (it is kept)
    "wal_lagging",  # WAL archiving lags past [wal] recovery_point (services/wal_alerts.py)
    "wal_gap",  # WAL a retained base backup needs is missing
    "test",
]
DetailValue = str | int | float | None

EVENT_KINDS: tuple[str, ...] = get_args(EventKind)

# Slack, SMTP servers and chat clients all cope badly with very long values.
MAX_DETAIL_CHARS = 1500


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _clean_detail(value: DetailValue) -> DetailValue:
    if isinstance(value, str):
        value = redact_text(value)
        if len(value) > MAX_DETAIL_CHARS:
            value = value[: MAX_DETAIL_CHARS - 1] + "…"
    return value


def utc_now_iso() -> str:
    """The current time as ``2026-11-21T14:00:00Z``."""
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def format_detail(key: str, value: DetailValue) -> str:
    """Render one detail for people: sizes get a binary-unit hint, percentages a sign."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) and key.endswith("size"):
        return f"{value} bytes ({human_bytes(value)})"
    if isinstance(value, float):
        if key.endswith("percent"):
            return f"{value:+.1f}%"
        return f"{value:.6g}"
    return str(value)


def human_bytes(size: float) -> str:
    """``1536`` -> ``1.5 KiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass(frozen=True)
class Event:
    """One notification. Text is made single-line and URL passwords are redacted on creation.

    ``details`` holds extra facts such as ``backup_id``, ``error``, ``raw_size``,
    ``previous_raw_size``, ``change_percent`` or ``age_hours``.
    """

    kind: EventKind
    target: str
    summary: str
    details: dict[str, DetailValue] = field(default_factory=dict, hash=False)
    occurred_at: str = field(default_factory=utc_now_iso)
    host: str = field(default_factory=socket.gethostname)

    def __post_init__(self) -> None:
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {self.kind!r}; expected one of {EVENT_KINDS}")
        object.__setattr__(self, "target", _one_line(self.target))
        object.__setattr__(self, "host", _one_line(self.host))
        object.__setattr__(self, "summary", redact_text(_one_line(self.summary)))
        object.__setattr__(
            self, "details", {str(k): _clean_detail(v) for k, v in self.details.items()}
        )

    def title(self) -> str:
        """A short subject line, e.g. ``strongroom: backup of shop FAILED``."""
        t = self.target or "?"
        if self.kind == "backup_failed":
            return f"strongroom: backup of {t} FAILED"
        if self.kind == "backup_succeeded":
            return f"strongroom: backup of {t} succeeded"
        if self.kind == "backup_stale":
            age = self.details.get("age_hours")
            if isinstance(age, int | float):
                hours = f"{age:.0f}" if age >= 10 else f"{age:.1f}"
                since = f" (last good backup {hours} h ago)"
            elif "last_good_backup" in self.details:  # named, and None: there is none
                since = " (no good backup yet)"
            else:
                since = ""
            return f"strongroom: backups of {t} are STALE{since}"
        if self.kind == "size_changed":
            change = self.details.get("change_percent")
            by = f" by {change:+.1f}%" if isinstance(change, int | float) else ""
            return f"strongroom: backup size of {t} changed{by}"
        if self.kind == "verify_failed":
            return f"strongroom: verification of {t} FAILED"
        if self.kind == "wal_lagging":
            lag = self.details.get("lag_seconds")
            behind = f" ({lag / 60:.1f} min behind)" if isinstance(lag, int | float) else ""
            if not behind and self.details.get("last_segment", "") is None:
                behind = " (no WAL archived)"
            return f"strongroom: WAL archiving of {t} LAGS{behind}"
        if self.kind == "wal_gap":
            return f"strongroom: WAL of {t} has a GAP"
        if self.kind == "hook_failed":
            hook = self.details.get("hook")
            return f"strongroom: {hook or 'a'} hook of {t} FAILED"
        return f"strongroom: test notification for {t}"

    def detail_lines(self) -> list[tuple[str, str]]:
        """``(label, text)`` pairs for human-readable renderings, in insertion order."""
        return [(k.replace("_", " "), format_detail(k, v)) for k, v in self.details.items()]

    def to_json_dict(self) -> dict[str, object]:
        """The machine-readable form sent by the webhook channel."""
        return {
            "source": "strongroom",
            "kind": self.kind,
            "title": self.title(),
            "target": self.target,
            "summary": self.summary,
            "details": dict(self.details),
            "occurred_at": self.occurred_at,
            "host": self.host,
        }
