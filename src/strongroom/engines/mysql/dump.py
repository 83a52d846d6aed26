"""A MySQL/MariaDB dump whose table statistics come from the dump's own snapshot.

``START TRANSACTION WITH CONSISTENT SNAPSHOT`` is per connection, and ``mysqldump`` cannot
share its snapshot. So both snapshots are taken while commits are frozen:

1. the control connection runs ``FLUSH TABLES WITH READ LOCK`` (needs RELOAD; waits at most
   5 s, as writers queue behind a waiting lock): from now on no transaction can commit;
2. the dump tool starts (``--single-transaction``): it connects, sets its session and runs
   ``START TRANSACTION WITH CONSISTENT SNAPSHOT`` before it writes anything but its ~1 KB
   header, which stays in its 4 KiB stdio buffer; so the first bytes on its stdout prove
   its snapshot exists (its exit proves it too). Where the control user may read
   ``information_schema.INNODB_TRX`` (PROCESS), the dump's open transaction is also
   confirmed there: a connection newer than the dump's start, of the same user;
3. the control connection starts its own consistent snapshot, lists tables and columns
   (DDL is still blocked), and runs ``UNLOCK TABLES``: writes resume, typically after tens
   of milliseconds;
4. it counts rows and checksums every table in its snapshot while the dump streams.

No commit happened between the two snapshots, so they see the same data. Without RELOAD
(or when the lock cannot be had in time) the statistics come from a snapshot taken right
after the dump's first bytes, and a warning says writes in between may make a restore
report a difference. Tables of non-transactional engines (MyISAM, Aria, MEMORY) are never
consistent under ``--single-transaction``: a warning names them.
"""

from __future__ import annotations

import io
import logging
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

import pymysql

from strongroom import tempfiles
from strongroom.engines.base import DumpResult, RunningDump, TableStats
from strongroom.engines.mysql import definers, staging
from strongroom.engines.mysql.connection import MysqlConnection, OptionFile
from strongroom.engines.mysql.stats import count_tables, list_tables, non_transactional
from strongroom.engines.mysql.tools import DUMP_TOOLS, error_code, error_text
from strongroom.engines.process import DumpProcess, popen, stop
from strongroom.errors import DumpFailed
from strongroom.interrupts import join_thread

logger = logging.getLogger("strongroom.engines.mysql")

DUMP_FORMAT = "mysqldump-sql"
PIPE_BUFFER = 1 << 20
SNAPSHOT_WAIT = 30.0  # longest time commits stay frozen waiting for the dump's snapshot
CONFIRM_WAIT = 2.0
LOCK_TIMEOUT = 5  # seconds FLUSH TABLES WITH READ LOCK may wait (writers queue behind it)
_POLL = 0.005
_NO_PRIVILEGE = frozenset({1044, 1045, 1142, 1227})
_LOCK_WAIT_TIMEOUT = 1205


class _WatchedStream(io.RawIOBase):
    """The dump's stdout; sets ``first_data`` when the first bytes arrive."""

    def __init__(self, raw: IO[bytes], first_data: threading.Event) -> None:
        super().__init__()
        self._raw = raw
        self._first_data = first_data

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = cast(Any, self._raw).readinto(buffer)
        if count:
            self._first_data.set()
        return int(count or 0)


class _StatsThread(threading.Thread):
    """Waits for the dump's snapshot, takes its own, unlocks, counts (module docstring)."""

    def __init__(
        self,
        db: MysqlConnection,
        conn: pymysql.connections.Connection[Any],
        proc: subprocess.Popen[bytes],
        first_data: threading.Event,
        *,
        locked: bool,
        floor_id: int,
        frozen_at: float,
    ) -> None:
        super().__init__(name="strongroom-mysql-stats", daemon=True)
        self._db = db
        self._conn = conn
        self._proc = proc
        self._first_data = first_data
        self._locked = locked
        self._floor_id = floor_id
        self._locked_since = frozen_at
        self._stop_event = threading.Event()
        self.tables: list[TableStats] = []
        self.error: BaseException | None = None
        self.shared_snapshot = False

    def run(self) -> None:
        try:
            with self._conn.cursor() as cur:
                try:
                    self._wait_for_dump(cur)
                    cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
                    shapes = list_tables(cur, self._db.database_name())
                finally:
                    if self._locked:
                        cur.execute("UNLOCK TABLES")
                        self._locked = False
                        logger.info(
                            "commits were frozen for %.0f ms",
                            (time.monotonic() - self._locked_since) * 1000,
                        )
                self.tables = count_tables(
                    cur, self._db.database_name(), shapes, self._stop_event.is_set
                )
                cur.execute("COMMIT")
        except BaseException as exc:  # reported by finish()
            self.error = exc

    def _dump_started(self) -> bool:
        return self._first_data.is_set() or self._proc.poll() is not None

    def _wait_for_dump(self, cur: Any) -> None:
        deadline = time.monotonic() + SNAPSHOT_WAIT
        while not self._dump_started():
            if self._stop_event.is_set():
                raise InterruptedError("the dump was stopped")
            if time.monotonic() > deadline:
                logger.warning(
                    "the dump of %s wrote nothing for %.0f s; table statistics are taken "
                    "now and may differ from the dump if the database is written meanwhile",
                    self._db.where(),
                    SNAPSHOT_WAIT,
                )
                return
            self._first_data.wait(_POLL)
        if not self._locked:
            return
        if self._proc.poll() is None and not self._confirm_dump_transaction(cur):
            logger.warning(
                "could not confirm the dump's transaction in INNODB_TRX; the statistics of "
                "%s are taken now (commits are still frozen)",
                self._db.where(),
            )
        self.shared_snapshot = True

    def _confirm_dump_transaction(self, cur: Any) -> bool:
        """Whether a newer connection of our user has an open, explicit transaction
        (``True`` too when INNODB_TRX cannot be read: the first bytes already prove it)."""
        query = (
            "SELECT COUNT(*) FROM information_schema.INNODB_TRX t"
            " JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id"
            " WHERE p.ID > %s AND t.trx_autocommit_non_locking = 0"
            " AND p.USER = (SELECT USER FROM information_schema.PROCESSLIST"
            " WHERE ID = CONNECTION_ID())"
        )
        deadline = time.monotonic() + CONFIRM_WAIT
        while True:
            try:
                cur.execute(query, (self._floor_id,))
            except pymysql.Error as exc:
                logger.debug("INNODB_TRX not readable: %s", exc)
                return True
            row = cur.fetchone()
            if row and int(row[0]) > 0:
                return True
            if self._proc.poll() is not None or time.monotonic() > deadline:
                return self._proc.poll() is not None
            time.sleep(_POLL)

    def stop(self) -> None:
        """Ask the thread to stop; kill its running query through a second connection."""
        self._stop_event.set()
        if not self.is_alive():
            return
        try:
            thread_id = cast(Any, self._conn).thread_id()
            with self._db.connect_raw() as killer, killer.cursor() as cur:
                cur.execute(f"KILL QUERY {int(thread_id)}")
        except Exception:
            logger.debug("could not stop the statistics query", exc_info=True)


class MysqlRunningDump(DumpProcess):
    """A running ``mariadb-dump``/``mysqldump``; ``stream`` is its stdout."""

    def __init__(
        self,
        *,
        db: MysqlConnection,
        proc: subprocess.Popen[bytes],
        stream: BinaryIO,
        stderr_file: IO[bytes],
        option_file: OptionFile,
        conn: pymysql.connections.Connection[Any],
        stats: _StatsThread,
        server_version: str,
        tool_version: str,
        state: dict[str, Any] | None = None,
    ) -> None:
        self._state = state
        self._db = db
        self._proc = proc
        self._stream = stream
        self._stderr_file = stderr_file
        self._option_file = option_file
        self._conn = conn
        self._stats = stats
        self._server_version = server_version
        self._tool_version = tool_version
        self._tool_name = Path(str(cast(list[str], proc.args)[0])).name
        self._result: DumpResult | None = None
        self._closed = False

    @property
    def stream(self) -> BinaryIO:
        """The plain SQL dump."""
        return self._stream

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def shared_snapshot(self) -> bool:
        """Whether the statistics came from the dump's snapshot (commits were frozen)."""
        return self._stats.shared_snapshot

    def _where(self) -> str:
        return self._db.where()

    def _wait(self) -> DumpResult:
        where = self._db.where()
        if self._stream.read(1):
            raise DumpFailed(
                f"the dump of {where} was not read to the end; read the stream to EOF first"
            )
        returncode = self._proc.wait()
        self._stats.join()
        if returncode != 0:
            self._stderr_file.seek(0)
            stderr = self._stderr_file.read().decode("utf-8", "replace")
            reason = _dump_error(stderr) or f"exit status {returncode}"
            raise DumpFailed(f"{self._tool_name} failed for {where}: {self._db.redact(reason)}")
        if self._stats.error is not None:
            reason = self._db.redact(error_text(self._stats.error))
            raise DumpFailed(f"counting rows of {where} failed: {reason}")
        return DumpResult(
            engine="mysql",
            database=self._db.database_name(),
            server_version=self._server_version,
            tool_version=self._tool_version,
            dump_format=DUMP_FORMAT,
            tables=self._stats.tables,
            state=self._state,
        )

    def close(self) -> None:
        """Stop the dump tool if still running, stop the statistics, clean up."""
        if self._closed:
            return
        self._closed = True
        if self._proc.stdout is not None:
            self._proc.stdout.close()  # a write blocked on a full pipe now fails
        stop(self._proc)  # if still running: SIGTERM, then SIGKILL
        self._option_file.close()
        self._stats.stop()
        join_thread(self._stats, timeout=10)
        try:
            self._conn.close()
        except pymysql.Error:
            logger.debug("closing the control connection failed", exc_info=True)
        self._stderr_file.close()


def _dump_error(stderr: str) -> str:
    """The useful line of the dump tool's stderr (without the program name prefix)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    chosen = next((line for line in lines if "error" in line.lower()), lines[0] if lines else "")
    return re.sub(r"^\S*(mysqldump|mariadb-dump):\s*", "", chosen)


def dump_command(
    tool: Path, tool_version: str, option_file: Path | OptionFile, database: str
) -> list[str]:
    """The dump tool's arguments: a plain, uncompressed dump of one database (no
    ``CREATE DATABASE``/``USE``, so it restores under any name)."""
    path = option_file.path if isinstance(option_file, OptionFile) else option_file
    command = [
        str(tool),
        f"--defaults-file={path}",  # must come first
        "--single-transaction",
        "--routines",
        "--triggers",
        "--events",
        "--hex-blob",
        "--no-tablespaces",
        "--skip-dump-date",
        "--default-character-set=utf8mb4",
        "--max-allowed-packet=1G",
    ]
    if "mariadb" not in tool_version.lower():  # Oracle's mysqldump
        command.append("--set-gtid-purged=OFF")
        match = re.search(r"Ver (\d+)\.", tool_version)
        if match and int(match.group(1)) >= 8:
            command.append("--column-statistics=0")
    return [*command, "--", database]


def _freeze_commits(db: MysqlConnection, cur: Any) -> bool:
    """``FLUSH TABLES WITH READ LOCK``; ``False`` (with a warning) if it cannot be had."""
    try:
        cur.execute(f"SET SESSION lock_wait_timeout = {LOCK_TIMEOUT}")
        cur.execute("FLUSH TABLES WITH READ LOCK")
        return True
    except pymysql.Error as exc:
        code = error_code(exc)
        if code in _NO_PRIVILEGE:
            why = f"user {db.params.user} lacks the RELOAD privilege"
        elif code == _LOCK_WAIT_TIMEOUT:
            why = f"FLUSH TABLES WITH READ LOCK waited {LOCK_TIMEOUT} s in vain"
        else:
            why = f"FLUSH TABLES WITH READ LOCK failed ({db.redact(error_text(exc))})"
        logger.warning(
            "%s: the table statistics of %s come from a snapshot taken just after the dump's; "
            "if the database is written meanwhile a restore may report a difference "
            "(GRANT RELOAD ON *.* to share the snapshot)",
            why,
            db.where(),
        )
        return False


@contextmanager
def start_dump(db: MysqlConnection) -> Iterator[RunningDump]:
    """Start the dump (see the module docstring); leaving stops it if still running."""
    tool, tool_version = db.tool(DUMP_TOOLS)
    database = db.database_name()
    conn = db.connect(database)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT VERSION(), (SELECT MAX(ID) FROM information_schema.PROCESSLIST)")
            row = cur.fetchone()
            server_version = str(row[0]) if row else ""
            floor_id = int(row[1]) if row and row[1] is not None else 0
            state = {
                "definers": definers.to_state(definers.capture(cur, database)),
                **staging.capture_state(cur, database),  # character set, event statuses
            }
            loose = non_transactional(list_tables(cur, database))
            if loose:
                logger.warning(
                    "tables of %s not in a transactional engine are not dumped consistently "
                    "while the application writes: %s",
                    db.where(),
                    ", ".join(loose[:10]) + (" …" if len(loose) > 10 else ""),
                )
            locked = _freeze_commits(db, cur)
            frozen_at = time.monotonic()
    except pymysql.Error as exc:
        conn.close()
        reason = db.redact(error_text(exc))
        raise DumpFailed(f"cannot start the dump of {db.where()}: {reason}") from None
    except BaseException:
        conn.close()
        raise
    option_file = db.write_option_file()
    stderr_file = tempfiles.anonymous_file("mysqldump-stderr-")
    logger.info("dumping %s with %s", db.where(), tool)
    try:
        proc = popen(
            dump_command(tool, tool_version, option_file, database),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr_file,
            bufsize=PIPE_BUFFER,
            pass_fds=option_file.pass_fds,
        )
    except BaseException:
        option_file.close()
        stderr_file.close()
        conn.close()  # releases the lock
        raise
    first_data = threading.Event()
    stream = cast(BinaryIO, _WatchedStream(cast(IO[bytes], proc.stdout), first_data))
    stats = _StatsThread(
        db, conn, proc, first_data, locked=locked, floor_id=floor_id, frozen_at=frozen_at
    )
    running = MysqlRunningDump(
        db=db,
        proc=proc,
        stream=stream,
        stderr_file=stderr_file,
        option_file=option_file,
        conn=conn,
        stats=stats,
        server_version=server_version,
        tool_version=tool_version,
        state=state,
    )
    try:
        stats.start()
        yield running
    finally:
        running.close()
