"""Where each kind of object lives in the repository (see docs/design.md)."""

from __future__ import annotations

CONFIG_KEY = "config"
WRAPPED_IDENTITY_KEY = "keys/identity.age"
CHUNKS_PREFIX = "chunks/"
BACKUPS_PREFIX = "backups/"
MANIFEST_SUFFIX = ".json"


def chunk_key(chunk_id: str) -> str:
    return f"{CHUNKS_PREFIX}{chunk_id[:2]}/{chunk_id}"


def chunk_id_of_key(key: str) -> str:
    return key.rsplit("/", 1)[-1]


def manifest_key(backup_id: str) -> str:
    return f"{BACKUPS_PREFIX}{backup_id}{MANIFEST_SUFFIX}"


LOCKS_PREFIX = "locks/"
PINS_PREFIX = "pins/"


def lock_key(lock_id: str) -> str:
    return f"{LOCKS_PREFIX}{lock_id}.json"


def pin_key(backup_id: str) -> str:
    return f"{PINS_PREFIX}{backup_id}.json"
