"""Pins: ``pins/<backup id>.json`` marks a backup that retention must never forget.

Manifests are immutable, so a pin is a separate object, written and deleted atomically.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from strongroom.errors import ObjectNotFound
from strongroom.repository.ids import is_backup_id
from strongroom.repository.layout import PINS_PREFIX, pin_key
from strongroom.storage.base import Storage

PIN_FORMAT = "strongroom-pin"
PIN_VERSION = 1


@dataclass(frozen=True)
class Pin:
    backup_id: str
    pinned_at: str
    pinned_by: str

    def to_json(self) -> bytes:
        document = {
            "format": PIN_FORMAT,
            "version": PIN_VERSION,
            "backup_id": self.backup_id,
            "pinned_at": self.pinned_at,
            "pinned_by": self.pinned_by,
        }
        return json.dumps(document, sort_keys=True).encode() + b"\n"


def write_pin(storage: Storage, pin: Pin) -> None:
    storage.put(pin_key(pin.backup_id), pin.to_json())
    storage.sync()


def remove_pin(storage: Storage, backup_id: str) -> None:
    storage.delete(pin_key(backup_id))


def is_pinned(storage: Storage, backup_id: str) -> bool:
    return storage.exists(pin_key(backup_id))


def pinned_ids(storage: Storage) -> set[str]:
    """Ids of every pinned backup (one listing; the pin's content is not needed)."""
    ids = set()
    for key in storage.list(PINS_PREFIX):
        name = key[len(PINS_PREFIX) :].removesuffix(".json")
        if is_backup_id(name):
            ids.add(name)
    return ids


def read_pin(storage: Storage, backup_id: str) -> Pin | None:
    try:
        doc = json.loads(storage.get(pin_key(backup_id)))
    except ObjectNotFound:
        return None
    except ValueError:
        return Pin(backup_id, "", "")  # an unreadable pin still pins
    return Pin(backup_id, str(doc.get("pinned_at", "")), str(doc.get("pinned_by", "")))
