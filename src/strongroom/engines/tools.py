"""Finding out about the database client tools an engine runs."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

_VERSION_CACHE: dict[Path, str | None] = {}
_VERSION_LOCK = threading.Lock()


def tool_version(path: Path) -> str | None:
    """``<tool> --version`` output (cached per path), or ``None`` if the tool does not run."""
    with _VERSION_LOCK:
        if path in _VERSION_CACHE:
            return _VERSION_CACHE[path]
    try:
        out = subprocess.run(
            [str(path), "--version"], capture_output=True, text=True, timeout=30, check=False
        )
        version: str | None = out.stdout.strip() if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        version = None
    with _VERSION_LOCK:
        _VERSION_CACHE[path] = version or None
    return version or None
