from __future__ import annotations

import dataclasses
import json

import pytest

from strongroom.notify.events import Event, format_detail, human_bytes


def test_titles_per_kind() -> None:
    def title(kind: str, **details: float) -> str:
        return Event(kind, "shop", "s", dict(details), "t", "h").title()  # type: ignore[arg-type]

    assert title("backup_failed") == "strongroom: backup of shop FAILED"
    assert title("backup_succeeded") == "strongroom: backup of shop succeeded"
    assert title("backup_stale", age_hours=26.04) == (
        "strongroom: backups of shop are STALE (last good backup 26 h ago)"
    )
    assert title("backup_stale", age_hours=2.44) == (
        "strongroom: backups of shop are STALE (last good backup 2.4 h ago)"
    )
    no_backup = Event("backup_stale", "shop", "s", {"last_good_backup": None}, "t", "h")
    assert no_backup.title() == "strongroom: backups of shop are STALE (no good backup yet)"
    assert title("size_changed", change_percent=-42.0) == (
        "strongroom: backup size of shop changed by -42.0%"
    )
    assert title("size_changed") == "strongroom: backup size of shop changed"
    assert title("verify_failed") == "strongroom: verification of shop FAILED"
    assert title("test") == "strongroom: test notification for shop"


def test_unknown_kind_rejected() -> None:
    with pytest.raises(ValueError, match="unknown event kind"):
        Event("exploded", "shop", "s")  # type: ignore[arg-type]


def test_defaults_and_frozen() -> None:
    ev = Event("test", "shop", "hello")
    assert ev.occurred_at.endswith("Z") and "T" in ev.occurred_at
    assert ev.host
    with pytest.raises(dataclasses.FrozenInstanceError):
        ev.target = "other"  # type: ignore[misc]


def test_text_is_one_line_and_redacted(event: Event) -> None:
    ev = Event("backup_failed", "shop\nevil: header", "line one\n  line two", {}, "t", "h")
    assert ev.summary == "line one line two"
    assert "\n" not in ev.title()
    assert "hunter2" not in json.dumps(event.to_json_dict())
    assert event.details["error"] == "connection to postgres://app:***@db:5432/shop failed"


def test_details_are_copied() -> None:
    details: dict[str, str | int | float | None] = {"backup_id": "x"}
    ev = Event("test", "shop", "s", details)
    details["backup_id"] = "changed"
    assert ev.details == {"backup_id": "x"}


def test_to_json_dict(event: Event) -> None:
    data = event.to_json_dict()
    assert data["kind"] == "backup_failed"
    assert data["title"] == "strongroom: backup of shop FAILED"
    assert data["target"] == "shop"
    assert data["host"] == "db1"
    assert data["occurred_at"] == "2026-11-21T14:00:00Z"
    assert data["details"] == event.details
    json.dumps(data)  # serialisable as is


def test_detail_formatting() -> None:
    assert format_detail("raw_size", 1536) == "1536 bytes (1.5 KiB)"
    assert format_detail("change_percent", 12.345) == "+12.3%"
    assert format_detail("age_hours", None) == "n/a"
    assert format_detail("age_hours", 25.123456789) == "25.1235"
    assert human_bytes(3 * 1024**3) == "3.0 GiB"
    assert human_bytes(10) == "10 B"
