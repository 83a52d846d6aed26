"""Where the local index cache lives (docs/design.md "Local index cache"), and the
temporary folders used when it cannot live there."""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

from strongroom.errors import StorageError

log = logging.getLogger("strongroom.repository")

CACHE_ENV = "STRONGROOM_CACHE_DIR"
CACHE_FILE = "index.sqlite"

_temp_dirs: list[str] = []


class CacheUnusable(StorageError):
    """Neither the cache file nor a private temporary one can be used (a full or
    read-only temporary folder). Exit 6."""


def is_locked(exc: sqlite3.DatabaseError) -> bool:
    """Whether an SQLite error is another connection's lock (busy), not damage."""
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _remove_temp_dirs() -> None:
    for path in _temp_dirs:
        shutil.rmtree(path, ignore_errors=True)


def temp_cache_dir() -> str:
    """A new private temporary folder (mode 0700), removed at exit."""
    temp = tempfile.mkdtemp(prefix="strongroom-cache-")
    if not _temp_dirs:
        atexit.register(_remove_temp_dirs)
    _temp_dirs.append(temp)
    return temp


def cache_path(repository_id: str) -> Path:
    """``$STRONGROOM_CACHE_DIR`` (else ``$XDG_CACHE_HOME/strongroom``, else
    ``~/.cache/strongroom``) ``/<repository id>/index.sqlite``; when that folder cannot be
    made or written, a temporary folder removed at exit (said once in the log)."""
    base = os.environ.get(CACHE_ENV)
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        base = str(Path(xdg) / "strongroom")
    folder = Path(base) / repository_id
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        if os.access(folder, os.W_OK | os.X_OK):
            return folder / CACHE_FILE
    except OSError:
        pass
    temp = temp_cache_dir()
    log.warning("cannot write the index cache in %s: using %s for this run", folder, temp)
    return Path(temp) / CACHE_FILE
