"""Finding out about the database client tools an engine runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path

from strongroom.engines.process import run_tool

_VERSION_CACHE: dict[Path, str | None] = {}
_VERSION_LOCK = threading.Lock()


def tool_candidates(
    name: str, tool_dirs: Sequence[Path] | None, extra_dirs: Sequence[Path] = ()
) -> list[Path]:
    """Executables called ``name``: only in ``tool_dirs`` when given (the user's choice),
    else on ``PATH`` and then in ``extra_dirs`` (e.g. Debian's versioned PostgreSQL
    folders), each real file once, in that order."""
    found: list[Path] = []
    if tool_dirs is not None:
        dirs = list(tool_dirs)
    else:
        which = shutil.which(name)
        if which:
            found.append(Path(which))
        dirs = list(extra_dirs)
    for directory in dirs:
        path = directory / name
        if path.is_file() and os.access(path, os.X_OK):
            found.append(path)
    unique: list[Path] = []
    seen: set[Path] = set()
    for path in found:
        real = path.resolve()
        if real not in seen:
            seen.add(real)
            unique.append(path)
    return unique


def tool_version(path: Path) -> str | None:
    """``<tool> --version`` output (cached per path), or ``None`` if the tool does not run."""
    with _VERSION_LOCK:
        if path in _VERSION_CACHE:
            return _VERSION_CACHE[path]
    try:
        out = run_tool([str(path), "--version"], timeout=30)
        text = out.stdout.decode("utf-8", "replace").strip()
        version: str | None = text if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        version = None
    with _VERSION_LOCK:
        _VERSION_CACHE[path] = version or None
    return version or None


def first_line(text: str, prefer: str | None = None) -> str:
    """The first non-blank line of ``text`` (the first containing ``prefer`` if any does)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if prefer is not None:
        for line in lines:
            if prefer in line.lower():
                return line
    return lines[0] if lines else ""


def exit_description(returncode: int) -> str:
    """``exit status N`` or ``killed by signal N`` for a child's return code."""
    if returncode < 0:
        return f"killed by signal {-returncode}"
    return f"exit status {returncode}"
