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

from strongroom import tempfiles
from strongroom.engines.postgresql.connection import PostgresServer
from strongroom.engines.postgresql.data_offsets import fill_data_offsets
from strongroom.engines.process import pipe_into, run_tool
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
    left behind, even by a killed process), give it the data offsets ``pg_dump`` writes to a
    seekable file (``data_offsets``: ``pg_restore -j`` then seeks to each table's data and
    starts the largest first), then ``pg_restore -j`` from it."""
    with tempfiles.spool("dump-") as dump:
        for data in source:  # every chunk is verified as it is read
            dump.handle.write(data)
        dump.handle.flush()
        fill_data_offsets(dump.handle.fileno())
        listing = run_tool([str(tool), "--list", dump.path], pass_fds=dump.pass_fds)
        data_entries = listing.stdout.count(b" TABLE DATA ")
        jobs = max(1, min(jobs, data_entries))
        logger.info("restoring into %s with %s -j %d", server.where(), tool, jobs)
        command = [
            str(tool),
            *restore_flags(faithful),
            f"--jobs={jobs}",
            "-d",
            server.conninfo(with_password=False),
            dump.path,
        ]
        result = run_tool(command, env=server.child_env(), pass_fds=dump.pass_fds)
        return result.returncode, result.stderr.decode("utf-8", "replace")


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
