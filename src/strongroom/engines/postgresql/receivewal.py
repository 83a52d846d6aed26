"""Streaming a cluster's WAL over a replication connection with ``pg_receivewal``.

What ``wal-receive`` (services/wal_receive.py) needs from the server: who it is
(``IDENTIFY_SYSTEM``: system identifier, timeline, major version), its replication slot
(checked with ``READ_REPLICATION_SLOT`` on PostgreSQL 15+, created with
``CREATE_REPLICATION_SLOT … PHYSICAL RESERVE_WAL``), and a running ``pg_receivewal`` of the
server's version writing into a spool folder (docs/design.md, "Streaming WAL
(wal-receive)"). The password reaches ``pg_receivewal`` through ``PGPASSWORD`` only.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psycopg
from psycopg.conninfo import make_conninfo

from strongroom import tempfiles
from strongroom.engines.postgresql.connection import PostgresServer, server_major
from strongroom.engines.process import popen, stop
from strongroom.engines.tools import first_line
from strongroom.errors import DatabaseAuthFailed, DatabaseError, UsageError

APPLICATION_NAME = "strongroom-wal-receive"  # pg_stat_replication.application_name
DEFAULT_SLOT = "strongroom"
_SLOT = re.compile(r"[a-z0-9_]{1,63}")  # PostgreSQL's rule for slot names
SIGINT_GRACE = 10.0  # seconds pg_receivewal gets to close its file after SIGINT


class SlotMissing(DatabaseError):
    """The replication slot does not exist and was not to be created (exit 5)."""


def check_slot_name(slot: str) -> str:
    """``slot`` if PostgreSQL accepts it as a slot name; ``UsageError`` (exit 2) else."""
    if _SLOT.fullmatch(slot) is None:
        raise UsageError(
            f"{slot[:70]!r} is not a replication slot name (1-63 lower-case letters, digits "
            "and underscores)"
        )
    return slot


@dataclass(frozen=True)
class ReplicationFacts:
    """What ``IDENTIFY_SYSTEM`` said, and the server's major version."""

    system_identifier: int
    timeline: int
    position: str  # the server's current flush position (``0/16B3748``)
    major: int


def _text(value: Any) -> str:
    return (
        bytes(value).decode() if isinstance(value, bytes | bytearray | memoryview) else str(value)
    )


class ReplicationSource:
    """A cluster whose WAL is streamed through ``slot`` (a physical replication slot)."""

    def __init__(self, url: str, slot: str = DEFAULT_SLOT) -> None:
        self.server = PostgresServer(url)
        self.slot = check_slot_name(slot)

    def describe(self) -> str:
        return self.server.describe()

    def _connect(self) -> psycopg.Connection[Any]:
        conninfo = self.server.conninfo(with_password=True)
        conninfo = make_conninfo(conninfo, replication="true", application_name=APPLICATION_NAME)
        try:
            return psycopg.connect(conninfo, autocommit=True)
        except psycopg.OperationalError as exc:
            raise self._refused(exc) from None

    def _refused(self, exc: psycopg.Error) -> DatabaseError:
        text = str(exc)
        lowered = text.lower()
        user, where = self.server.user(), self.server.host_port()
        if "replication role" in lowered or "permission denied to start wal sender" in lowered:
            return DatabaseAuthFailed(
                f"user {user} may not stream WAL from {where}: it needs the REPLICATION "
                f"attribute (ALTER ROLE {user} REPLICATION)"
            )
        if "no pg_hba.conf entry for replication" in lowered:
            return DatabaseAuthFailed(
                f"{where} refuses replication connections of user {user}: add a 'host "
                f"replication {user} <address> scram-sha-256' line to pg_hba.conf"
            )
        if isinstance(exc, psycopg.OperationalError):
            return self.server.connect_error(exc, "replication")
        return DatabaseError(f"{where}: {self.server.redact(first_line(text))}")

    def identify(self) -> ReplicationFacts:
        """``IDENTIFY_SYSTEM`` over a replication connection; raises ``DatabaseAuthFailed``
        (exit 5) for a user without REPLICATION or without a pg_hba ``replication`` line,
        ``DatabaseUnreachable`` (exit 5) when the server cannot be reached."""
        with self._connect() as conn:
            try:
                row = conn.execute("IDENTIFY_SYSTEM").fetchone()
            except psycopg.Error as exc:
                raise self._refused(exc) from None
            major = server_major(conn.info.server_version)
        if row is None:
            raise DatabaseError(f"{self.server.host_port()} did not answer IDENTIFY_SYSTEM")
        return ReplicationFacts(int(_text(row[0])), int(_text(row[1])), _text(row[2]), major)

    def ensure_slot(self, facts: ReplicationFacts, *, create: bool) -> bool:
        """Make sure the physical slot exists; return ``True`` when this call created it.
        Without ``create``, a missing slot raises ``SlotMissing`` (exit 5). Before
        PostgreSQL 15 (no ``READ_REPLICATION_SLOT``) a missing slot is found by
        ``pg_receivewal`` instead (``start`` reports it)."""
        with self._connect() as conn:
            exists: bool | None = None
            if facts.major >= 15:
                try:
                    row = conn.execute(f"READ_REPLICATION_SLOT {self.slot}").fetchone()
                except psycopg.Error as exc:
                    raise self._refused(exc) from None
                exists = row is not None and row[0] is not None
                if row is not None and row[0] is not None and _text(row[0]) != "physical":
                    raise DatabaseError(f"replication slot {self.slot} is not a physical slot")
            if exists or (exists is None and not create):
                return False
            if not create:
                raise SlotMissing(
                    f"replication slot {self.slot} does not exist on "
                    f"{self.server.host_port()}: run wal-receive once with --create-slot "
                    "(or give --slot NAME of an existing physical slot)"
                )
            try:
                conn.execute(f"CREATE_REPLICATION_SLOT {self.slot} PHYSICAL RESERVE_WAL")
            except psycopg.errors.DuplicateObject:
                return False
            except psycopg.Error as exc:
                raise self._refused(exc) from None
        return True

    def start(self, spool: Path, facts: ReplicationFacts) -> RunningReceiver:
        """Start ``pg_receivewal`` (of a version at least the server's) streaming into
        ``spool`` through the slot, flushing every write (``--synchronous``, so the slot
        advances as soon as WAL is on disk) and exiting when the connection ends
        (``--no-loop``: the caller restarts it)."""
        tool, _version = self.server.tool("pg_receivewal", facts.major)
        conninfo = make_conninfo(
            self.server.conninfo(with_password=False), application_name=APPLICATION_NAME
        )
        command = [
            str(tool),
            "-D",
            str(spool),
            "--slot",
            self.slot,
            "--synchronous",
            "--no-loop",
            "--no-password",
            "-d",
            conninfo,
        ]
        stderr = tempfiles.anonymous_file("pg_receivewal-stderr-")
        proc = popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=self.server.child_env(),
        )
        return RunningReceiver(proc, stderr, self.server)


class RunningReceiver:
    """One ``pg_receivewal`` run."""

    def __init__(
        self, proc: subprocess.Popen[bytes], stderr: IO[bytes], server: PostgresServer
    ) -> None:
        self._proc = proc
        self._stderr = stderr
        self._server = server

    @property
    def pid(self) -> int:
        return self._proc.pid

    def exit_code(self) -> int | None:
        """``None`` while it runs."""
        return self._proc.poll()

    def reason(self) -> str:
        """Its last error line (redacted), or how it ended."""
        self._stderr.seek(0)
        text = self._stderr.read().decode("utf-8", "replace")
        lines = [line for line in text.splitlines() if line.strip()]
        errors = [line for line in lines if "error" in line.lower() or "fatal" in line.lower()]
        chosen = (errors or lines or [f"exit status {self._proc.poll()}"])[-1]
        chosen = re.sub(r"^pg_receivewal:\s*(error:\s*)?", "", chosen.strip())
        return self._server.redact(chosen)

    def finish(self) -> None:
        """Stop it cleanly: SIGINT (it closes and syncs its file), then SIGTERM/SIGKILL
        after ``SIGINT_GRACE`` seconds; close its error file."""
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)
            try:
                self._proc.wait(timeout=SIGINT_GRACE)
            except subprocess.TimeoutExpired:
                stop(self._proc)
        self._stderr.close()


def streaming_slot(conn: psycopg.Connection[Any], slot: str) -> bool:
    """Whether ``slot`` is a physical slot something streams from right now (a base backup
    of a cluster that does not archive is recoverable only when wal-receive streams it)."""
    row = conn.execute(
        "SELECT active FROM pg_replication_slots WHERE slot_name = %s AND slot_type = 'physical'",
        (slot,),
    ).fetchone()
    return bool(row and row[0])


def wait_for_slot(server: PostgresServer, slot: str, lsn: str, timeout: float = 60.0) -> bool:
    """Wait until the slot's receiver has flushed WAL up to ``lsn`` (its ``restart_lsn``
    passed it); ``False`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    with server.connect() as conn:
        while True:
            row = conn.execute(
                "SELECT restart_lsn >= %s::pg_lsn FROM pg_replication_slots WHERE slot_name = %s",
                (lsn, slot),
            ).fetchone()
            if row and row[0]:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
