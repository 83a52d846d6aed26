"""Small helpers the ``wal-push`` spool attack modules (tests/wal/test_wal_quick*_attacks.py)
share: one-line refusals, what is spooled, a push started in the background."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.wal.test_wal_commands import fails
from tests.wal.test_wal_quick import PROBE, STREAM, _env


def _one_error(result: subprocess.CompletedProcess[str], code: int, pattern: str) -> None:
    """``fails`` (one ``error:`` line naming ``pattern``, exit ``code``) and no traceback."""
    fails(result, code, pattern)
    assert "Traceback" not in result.stderr, result.stderr


def _spooled(q: dict[str, Path], stream: str = STREAM) -> list[str]:
    folder = q["spool"] / stream
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def _no_push_failure(q: dict[str, Path]) -> bool:
    return b"push_failed" not in (q["spool"] / "status.json").read_bytes()


def _start(q: dict[str, Path], path: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", PROBE, "wal-push", "--config", str(q["config"]), *args, path],
        env=_env(q), cwd=q["data"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
