"""Where each kind of object lives in the repository (see docs/design.md)."""

from __future__ import annotations

import re

from strongroom.errors import IntegrityError

CONFIG_KEY = "config"
WRAPPED_IDENTITY_KEY = "keys/identity.age"
CHUNKS_PREFIX = "chunks/"
BACKUPS_PREFIX = "backups/"
MANIFEST_SUFFIX = ".json"


CHUNK_ID_PATTERN = re.compile(r"[0-9a-f]{64}")


def is_chunk_id(text: str) -> bool:
    """A chunk id: the 64 lowercase hex characters of a keyed BLAKE3 hash."""
    return CHUNK_ID_PATTERN.fullmatch(text) is not None


def chunk_key(chunk_id: str) -> str:
    """Where chunk ``chunk_id`` lives; raises ``IntegrityError`` for anything that is not a
    chunk id (e.g. ``../../config`` from a damaged manifest): never a key outside chunks/."""
    if not is_chunk_id(chunk_id):
        shown = chunk_id if len(chunk_id) <= 70 else chunk_id[:70] + "…"
        raise IntegrityError(f"{shown!r} is not a chunk id (64 hex characters)")
    return f"{CHUNKS_PREFIX}{chunk_id[:2]}/{chunk_id}"


def chunk_id_of_key(key: str) -> str:
    return key.rsplit("/", 1)[-1]


def manifest_key(backup_id: str) -> str:
    return f"{BACKUPS_PREFIX}{backup_id}{MANIFEST_SUFFIX}"


LOCKS_PREFIX = "locks/"
# log streams (WAL, later binlogs): ``logs/<stream>/<group>/<file name>-<digest>``, see
# repository/logs.py; never under chunks/, so prune and check leave them alone
LOGS_PREFIX = "logs/"
PINS_PREFIX = "pins/"
# named restore points of a log stream: ``restore-points/<stream>/<name>.json``
RESTORE_POINTS_PREFIX = "restore-points/"


def lock_key(lock_id: str) -> str:
    return f"{LOCKS_PREFIX}{lock_id}.json"


def pin_key(backup_id: str) -> str:
    return f"{PINS_PREFIX}{backup_id}.json"
