"""The PostgreSQL dump: ``pg_dump -Fc -Z0`` on a snapshot that the row counts share.

A control connection opens a ``REPEATABLE READ`` transaction, exports its snapshot, records
the database object and its roles (``postgresql.state``), then counts rows and checksums every
table (``postgresql.stats``) while ``pg_dump --snapshot`` streams the same state.
"""

from __future__ import annotations

import logging
import subprocess
import threading
from typing import IO, Any, BinaryIO, cast

import psycopg

from strongroom import tempfiles
from strongroom.engines.base import DumpResult, TableStats
from strongroom.engines.postgresql.connection import PostgresServer, server_major
from strongroom.engines.postgresql.dump_layout import laid_out_stream
from strongroom.engines.postgresql.state import DatabaseState, capture_state
from strongroom.engines.postgresql.stats import snapshot_table_stats
from strongroom.engines.process import DumpProcess, popen, stop
from strongroom.engines.tools import exit_description as _exit_description
from strongroom.engines.tools import first_line as _first_line
from strongroom.errors import DumpFailed
from strongroom.interrupts import join_thread

logger = logging.getLogger("strongroom.engines.postgresql")

KIND = "postgresql"
DUMP_FORMAT = "pg_dump-custom"
PIPE_BUFFER = 1 << 20
_STOP_TIMEOUT = 10.0


class _RowCounter(threading.Thread):
    """Counts rows of every user table on the control connection (inside its snapshot)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        super().__init__(name="strongroom-pg-rowcount", daemon=True)
        self._conn = conn
        self._stop_event = threading.Event()
        self.tables: list[TableStats] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.tables = snapshot_table_stats(self._conn, self._stop_event.is_set)
        except BaseException as exc:  # reported by finish()
            self.error = exc

    def stop(self) -> None:
        """Ask the thread to stop and cancel a running count."""
        self._stop_event.set()
        if self.is_alive():
            try:
                if hasattr(self._conn, "cancel_safe"):
                    self._conn.cancel_safe(timeout=5)
                else:  # psycopg < 3.2
                    self._conn.cancel()
            except psycopg.Error:
                logger.debug("could not cancel the row count", exc_info=True)


class PostgresRunningDump(DumpProcess):
    """A running ``pg_dump``; ``stream`` is its stdout."""

    def __init__(
        self,
        *,
        engine: PostgresServer,
        proc: subprocess.Popen[bytes],
        stderr_file: IO[bytes],
        conn: psycopg.Connection[Any],
        counter: _RowCounter,
        server_version: str,
        tool_version: str,
        state: DatabaseState,
    ) -> None:
        self._engine = engine
        self._state = state
        self._proc = proc
        self._stderr_file = stderr_file
        self._conn = conn
        self._counter = counter
        self._server_version = server_version
        self._tool_version = tool_version
        self._result: DumpResult | None = None
        self._closed = False
        self._stream = cast(BinaryIO, proc.stdout)

    @property
    def stream(self) -> BinaryIO:
        """The raw, uncompressed ``pg_dump -Fc -Z0`` bytes."""
        return self._stream

    def forced_cuts(self) -> tuple[int, ...]:
        """The end of the archive header and of its TOC (``dump_layout.py``), or ``()``.

        Reads the header and TOC from ``stream`` (``stream`` yields them again)."""
        self._stream, cuts = laid_out_stream(self._stream)
        return cuts

    @property
    def pid(self) -> int:
        """The process id of ``pg_dump`` (for diagnostics and tests)."""
        return self._proc.pid

    def _where(self) -> str:
        return self._engine.where()

    def _wait(self) -> DumpResult:
        where = self._engine.where()
        stdout = self._proc.stdout
        if stdout is not None and stdout.read(1):
            raise DumpFailed(
                f"the dump of {where} was not read to the end; read the stream to EOF first"
            )
        returncode = self._proc.wait()
        self._counter.join()
        count_error = None
        if self._counter.error is not None:
            count_error = self._engine.redact(_first_line(str(self._counter.error)))
        if returncode != 0:
            self._stderr_file.seek(0)
            stderr = self._stderr_file.read().decode("utf-8", "replace")
            reason = _first_line(stderr, prefer="error") or _exit_description(returncode)
            # A failed count aborts the snapshot's transaction, so pg_dump may then only
            # say it cannot import the snapshot: the count's error is the cause.
            cause = f"{count_error}; " if count_error else ""
            hint = ""
            if "row-level security" in f"{cause}{reason}":
                hint = (
                    "; row-level security applies to this role, so a dump would miss rows: "
                    "back up as a superuser or a role with BYPASSRLS"
                )
            raise DumpFailed(
                f"pg_dump failed for {where}: {cause}{self._engine.redact(reason)}"
                f" ({_exit_description(returncode)}){hint}"
            )
        if count_error is not None:
            raise DumpFailed(f"counting rows of {where} failed: {count_error}")
        try:
            self._conn.execute("COMMIT")
        except psycopg.Error as exc:
            reason = self._engine.redact(_first_line(str(exc)))
            raise DumpFailed(f"the snapshot of {where} could not be released: {reason}") from None
        return DumpResult(
            engine=KIND,
            database=self._engine.database_name(),
            server_version=self._server_version,
            tool_version=self._tool_version,
            dump_format=DUMP_FORMAT,
            tables=self._counter.tables,
            state=self._state.to_dict(),
        )

    def close(self) -> None:
        """Stop ``pg_dump`` if still running, stop the row count, close the connection."""
        if self._closed:
            return
        self._closed = True
        if self._proc.stdout is not None:
            self._proc.stdout.close()  # a write blocked on a full pipe now fails
        stop(self._proc)  # if still running (SIGTERM: it cancels its query, then SIGKILL)
        self._counter.stop()
        join_thread(self._counter, timeout=_STOP_TIMEOUT)
        try:
            self._conn.close()
        except psycopg.Error:
            logger.debug("closing the control connection failed", exc_info=True)
        self._stderr_file.close()


def start_dump(server: PostgresServer) -> PostgresRunningDump:
    """Export a snapshot on a control connection, record the database's state in it
    (:func:`capture_state`), start ``pg_dump`` on that snapshot and count rows beside it.
    Raises ``DumpFailed`` (exit 5) when the snapshot cannot be taken."""
    conn = server.connect()
    try:
        tool, tool_version = server.tool("pg_dump", server_major(conn.info.server_version))
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        version_row = conn.execute("SHOW server_version").fetchone()
        snapshot_row = conn.execute("SELECT pg_export_snapshot()").fetchone()
        state = capture_state(conn)
    except psycopg.Error as exc:
        conn.close()
        reason = server.redact(_first_line(str(exc)))
        raise DumpFailed(f"cannot start the dump of {server.where()}: {reason}") from None
    except BaseException:
        conn.close()
        raise
    server_version = str(version_row[0]) if version_row else ""
    snapshot = str(snapshot_row[0]) if snapshot_row else ""
    command = [
        str(tool),
        "-Fc",
        "-Z0",
        f"--snapshot={snapshot}",
        "--no-password",
        "-d",
        server.conninfo(with_password=False),
    ]
    logger.info("dumping %s with %s", server.where(), tool)
    stderr_file = tempfiles.anonymous_file("pg_dump-stderr-")
    try:
        proc = popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr_file,
            bufsize=PIPE_BUFFER,
            env=server.child_env(),
        )
    except BaseException:
        stderr_file.close()
        conn.close()
        raise
    counter = _RowCounter(conn)
    running = PostgresRunningDump(
        engine=server,
        proc=proc,
        stderr_file=stderr_file,
        conn=conn,
        counter=counter,
        server_version=server_version,
        tool_version=tool_version,
        state=state,
    )
    try:
        counter.start()
    except BaseException:
        running.close()
        raise
    return running
