"""Running ``pg_restore``: streamed from the verified backup, or in parallel from a file.

Owners and privileges are restored when the backup recorded its roles (``faithful``): then
``pg_restore`` runs with ``--verbose`` and without ``--exit-on-error``, and the caller judges
each error (``fidelity.classify_errors``). Older backups restore as before, with
``--no-owner --exit-on-error``.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from strongroom.engines.postgresql.connection import PostgresServer
from strongroom.engines.postgresql.restore_overlap import restore_overlapped
from strongroom.engines.process import pipe_into
from strongroom.errors import UsageError

logger = logging.getLogger("strongroom.engines.postgresql")

PARALLEL_RESTORE_MIN_BYTES = 64 * 1024 * 1024
MAX_RESTORE_JOBS = 4


def parallel_jobs(size_hint: int | None, tables_hint: int | None = None) -> int:
    """How many ``pg_restore`` jobs to run: ``$STRONGROOM_RESTORE_JOBS`` if set; else 1
    (stream) for small dumps or when the temp folder cannot hold the dump; otherwise one
    per core, at most 4."""
    forced = os.environ.get("STRONGROOM_RESTORE_JOBS", "").strip()
    if forced:
        if not forced.isdigit():
            raise UsageError(f"STRONGROOM_RESTORE_JOBS must be a number, not {forced!r}")
        return max(1, int(forced))
    if size_hint is None or size_hint < PARALLEL_RESTORE_MIN_BYTES:
        return 1
    if tables_hint is not None and tables_hint < 2:
        return 1  # one table: nothing to run in parallel; streaming saves the temp file
    free = shutil.disk_usage(tempfile.gettempdir()).free
    if free < size_hint * 1.2:
        logger.info("not enough temp space for a parallel restore; streaming instead")
        return 1
    return max(1, min(MAX_RESTORE_JOBS, os.cpu_count() or 1))


def restore_flags(faithful: bool) -> list[str]:
    """Owners and privileges are restored when the backup recorded its roles (the
    checks ran); errors are then read and judged by ``classify_errors``."""
    if faithful:
        return ["--verbose", "--no-password"]
    return ["--no-owner", "--exit-on-error", "--no-password"]


def run_pg_restore_parallel(
    server: PostgresServer, tool: Path, source: Iterable[bytes], jobs: int, faithful: bool
) -> tuple[int, str]:
    """Materialise the dump in a private unnamed temp file (``tempfiles.spool``: nothing is
    left behind, even by a killed process) and restore it with up to ``jobs`` ``pg_restore``
    at once, starting while the file is written (``restore_overlap``: pre-data once the TOC
    is in, each table's data once its block is complete, then the rest and post-data)."""
    return restore_overlapped(
        server, tool, source, jobs, restore_flags(faithful), tolerate_errors=faithful
    )


def run_pg_restore(
    server: PostgresServer, tool: Path, source: Iterable[bytes], faithful: bool
) -> tuple[int, str]:
    """Feed ``source`` to ``pg_restore``; return its exit status and stderr."""
    command = [
        str(tool),
        *restore_flags(faithful),
        "-d",
        server.conninfo(with_password=False),
    ]
    logger.info("restoring into %s with %s", server.where(), tool)
    return pipe_into(command, source, env=server.child_env())
