"""Physical base backups of a PostgreSQL cluster and laying them down for recovery.

A base backup is ``pg_basebackup -D - -Ft -X none``: one tar stream of the data directory
(the backup manifest inside it), read like a dump through the chunker; the WAL it needs
comes from the archive (``wal-push``). Laying down extracts that tar into an empty folder
and configures recovery (``restore_command``, the target); ``start_recovery`` runs
``pg_ctl start`` and waits until recovery ends. docs/design.md, "WAL archive and base
backups".
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shlex
import subprocess
import tarfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

import psycopg

from strongroom import tempfiles
from strongroom.engines.base import DumpResult, Engine, SwapRecovery
from strongroom.engines.postgresql.connection import (
    BINDIR_ENV,
    PostgresServer,
    _debian_bin_dirs,
    server_major,
)
from strongroom.engines.postgresql.physical_counts import count_rows
from strongroom.engines.postgresql.receivewal import DEFAULT_SLOT, streaming_slot, wait_for_slot
from strongroom.engines.postgresql.wal import stream_name
from strongroom.engines.process import DumpProcess, popen, stop
from strongroom.engines.tools import exit_description, first_line, tool_candidates, tool_version
from strongroom.errors import (
    DumpFailed,
    RecoveryEndedEarly,
    RestoreFailed,
    ToolMissing,
    UsageError,
)

log = logging.getLogger("strongroom.engines.postgresql.physical")

KIND = "postgresql"
PHYSICAL_FORMAT = "pg_basebackup-tar"  # in repository.manifest.BASE_BACKUP_FORMATS too
PIPE_BUFFER = 1 << 20


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _TarTap:
    """Passes a tar stream through unchanged and keeps the content of a few small members
    (``backup_label``, ``backup_manifest``: the start and stop LSN ``-X none`` does not
    print)."""

    WANTED = ("backup_label", "backup_manifest")
    _LIMIT = 64 * 1024 * 1024  # a manifest lists every file: large clusters, large manifests

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._header = bytearray()
        self._remaining = 0  # data bytes of the current member still to come
        self._padding = 0
        self._capture: bytearray | None = None
        self._ended = False
        self.members: dict[str, bytes] = {}
        self._name = ""

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._feed(memoryview(data))
        return data

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        count = self._raw.readinto(view)  # type: ignore[attr-defined]
        if count:
            self._feed(view[:count])
        return int(count or 0)

    def _feed(self, data: memoryview) -> None:
        while data and not self._ended:
            if self._remaining:
                take = min(self._remaining, len(data))
                if self._capture is not None and len(self._capture) < self._LIMIT:
                    self._capture += data[:take]
                self._remaining -= take
                data = data[take:]
                if not self._remaining:
                    self._done()
            elif self._padding:
                take = min(self._padding, len(data))
                self._padding -= take
                data = data[take:]
            else:
                take = min(512 - len(self._header), len(data))
                self._header += data[:take]
                data = data[take:]
                if len(self._header) == 512:
                    self._parse(bytes(self._header))
                    self._header.clear()

    def _parse(self, header: bytes) -> None:
        if not header.strip(b"\0"):
            self._ended = True
            return
        name = header[:100].split(b"\0", 1)[0].decode("utf-8", "replace")
        field = header[124:136]
        if field[0] & 0x80:  # base-256 size
            size = int.from_bytes(field[1:], "big")
        else:
            size = int(field.split(b"\0", 1)[0].strip() or b"0", 8)
        self._name = name
        self._remaining = size
        self._padding = (512 - size % 512) % 512
        self._capture = bytearray() if name in self.WANTED else None
        if not size:
            self._done()

    def _done(self) -> None:
        if self._capture is not None:
            self.members[self._name] = bytes(self._capture)
            self._capture = None


def wal_range(members: dict[str, bytes]) -> dict[str, Any]:
    """Start/stop LSN and timeline from the tar's ``backup_manifest`` (its WAL-Ranges),
    start time from ``backup_label``; ``DumpFailed`` when neither is whole."""
    facts: dict[str, Any] = {}
    label = members.get("backup_label", b"").decode("utf-8", "replace")
    found = re.search(r"START TIME: (.+)", label)
    if found:
        facts["start_time_label"] = found[1].strip()
    try:
        manifest = json.loads(members["backup_manifest"])
        ranges = manifest["WAL-Ranges"]
        facts["timeline"] = int(ranges[-1]["Timeline"])
        facts["start_lsn"] = str(ranges[0]["Start-LSN"])
        facts["stop_lsn"] = str(ranges[-1]["End-LSN"])
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise DumpFailed(
            "the base backup holds no readable backup_manifest (its WAL range): "
            f"{type(exc).__name__}"
        ) from None
    return facts


class RunningBaseBackup(DumpProcess):
    """A running ``pg_basebackup``; ``stream`` is its tar on stdout."""

    def __init__(
        self,
        server: PostgresServer,
        proc: subprocess.Popen[bytes],
        stderr: IO[bytes],
        facts: dict[str, Any],
        tool_version: str,
    ) -> None:
        self._server = server
        self._proc = proc
        self._stderr = stderr
        self._facts = facts
        self._tool_version = tool_version
        self._tap = _TarTap(cast(BinaryIO, proc.stdout))
        self._result: DumpResult | None = None
        self._closed = False

    @property
    def stream(self) -> BinaryIO:
        return cast(BinaryIO, self._tap)

    def _where(self) -> str:
        return f"the cluster at {self._server.host_port()}"

    def _wait(self) -> DumpResult:
        stdout = self._proc.stdout
        if stdout is not None and stdout.read(1):
            raise DumpFailed(f"the base backup of {self._where()} was not read to the end")
        returncode = self._proc.wait()
        self._stderr.seek(0)
        text = self._stderr.read().decode("utf-8", "replace")
        if returncode != 0:
            reason = first_line(text, prefer="error") or exit_description(returncode)
            raise DumpFailed(
                f"pg_basebackup failed for {self._where()}: {self._server.redact(reason)} "
                f"({exit_description(returncode)})"
            )
        facts = dict(self._facts)
        facts.update(wal_range(self._tap.members))
        facts["stop_time"] = _now()
        slot = facts.get("wal_slot")
        if slot and not wait_for_slot(self._server, str(slot), str(facts["stop_lsn"])):
            log.warning(
                "slot %s has not received the backup's end (%s) yet", slot, facts["stop_lsn"]
            )
        return DumpResult(
            engine=KIND,
            database=str(facts["cluster"]),
            server_version=str(facts["server_version"]),
            tool_version=self._tool_version,
            dump_format=PHYSICAL_FORMAT,
            tables=[],
            state={"physical": facts},
        )

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        stop(self._proc)
        self._stderr.close()


class PhysicalSource:
    """The cluster a ``postgresql://`` URL reaches, backed up whole (``backup --physical``).

    Only what ``services.backup.run_backup`` uses of an ``Engine`` is meaningful here; a
    physical backup is never restored through the logical restore path."""

    kind = KIND

    def __init__(self, url: str, wal_slot: str = DEFAULT_SLOT, row_counts: bool = False) -> None:
        self._server = PostgresServer(url)
        self._row_counts = row_counts  # --row-counts: count every table first (slow)
        self._wal_slot = wal_slot  # wal-receive's slot: streamed WAL instead of archiving
        self._streamed = False

    def describe(self) -> str:
        return self._server.describe()

    def database_name(self) -> str:
        """The default target name: ``cluster@host:port``."""
        return f"cluster@{self._server.host_port()}"

    def check(self) -> None:
        with self._server.connect() as conn:
            row = conn.execute(
                "SELECT current_setting('archive_mode'), current_setting('wal_level')"
            ).fetchone()
            off = row is None or row[0] == "off"
            self._streamed = off and streaming_slot(conn, self._wal_slot)
        if row is None or (off and not self._streamed) or row[1] == "minimal":
            raise UsageError(
                f"the cluster at {self._server.host_port()} neither archives WAL "
                "(archive_mode = on, wal_level = replica and archive_command = 'strongroom "
                "wal-push %p') nor streams it (strongroom wal-receive through the replication "
                f"slot {self._wal_slot}, active now): a base backup alone cannot be recovered"
            )

    def estimated_size(self) -> int | None:
        with self._server.connect() as conn:
            row = conn.execute("SELECT sum(pg_database_size(oid)) FROM pg_database").fetchone()
        return int(row[0]) if row and row[0] is not None else None

    def recover_swaps(self) -> list[SwapRecovery]:
        return []  # a base backup changes no database: no swap to settle

    @contextlib.contextmanager
    def dump(self) -> Iterator[RunningBaseBackup]:
        facts = self._facts()
        if self._row_counts:
            facts["row_counts"] = count_rows(self._server, facts["databases"])
        tool, version = self._server.tool("pg_basebackup", facts.pop("major"))
        command = [
            str(tool),
            "-D",
            "-",
            "-Ft",
            "-X",
            "none",
            "--checkpoint=fast",
            "-v",
            "--no-password",
            "-d",
            self._server.conninfo(with_password=False),
        ]
        stderr = tempfiles.anonymous_file("pg_basebackup-stderr-")
        proc = popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            bufsize=PIPE_BUFFER,
            env=self._server.child_env(),
        )
        running = RunningBaseBackup(self._server, proc, stderr, facts, version)
        try:
            yield running
        finally:
            running.close()

    def _facts(self) -> dict[str, Any]:
        try:
            with self._server.connect() as conn:
                version = conn.execute("SHOW server_version").fetchone()
                sysid = conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()
                names = conn.execute(
                    "SELECT datname FROM pg_database WHERE datallowconn ORDER BY datname"
                ).fetchall()
                major = server_major(conn.info.server_version)
                # every transaction from this id on commits after the backup's start
                # (restore --to-xid chooses a base backup with it)
                next_xid = conn.execute(
                    "SELECT txid_snapshot_xmax(txid_current_snapshot()),"
                    " current_setting('wal_segment_size')"
                ).fetchone()
        except psycopg.Error as exc:
            reason = self._server.redact(first_line(str(exc)))
            raise DumpFailed(
                f"cannot start the base backup of {self.describe()}: {reason}"
            ) from None
        system_identifier = int(sysid[0]) if sysid else 0
        return {
            "cluster": self.database_name(),
            "server_version": str(version[0]) if version else "",
            "system_identifier": str(system_identifier),
            "stream": stream_name(system_identifier),
            "databases": [str(row[0]) for row in names],
            "next_xid": int(next_xid[0]) if next_xid else None,
            "wal_segment_size": _size_bytes(str(next_xid[1])) if next_xid else None,
            "major": major,
        } | ({"wal_slot": self._wal_slot} if self._streamed else {})


def _size_bytes(setting: str) -> int | None:
    """``current_setting('wal_segment_size')`` (``16MB``) in bytes; ``None`` if odd."""
    found = re.fullmatch(r"(\d+)\s*(B|kB|MB|GB)?", setting.strip())
    if found is None:
        return None
    unit = {"B": 1, "kB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}[found[2] or "B"]
    return int(found[1]) * unit


def physical_engine(url: str, wal_slot: str = DEFAULT_SLOT, row_counts: bool = False) -> Engine:
    """A ``PhysicalSource`` where the backup service takes an ``Engine`` (it uses
    ``describe``, ``database_name``, ``check``, ``estimated_size``, ``dump`` and
    ``recover_swaps`` only); ``wal_slot``: the slot wal-receive streams through;
    ``row_counts``: record every table's rows (``physical_counts.count_rows``)."""
    return cast(Engine, PhysicalSource(url, wal_slot, row_counts))


# --- laying a base backup down ---------------------------------------------------------


class _IterReader:
    """A file-like view of an iterator of byte strings (for ``tarfile`` stream mode); a
    read copies only what it returns."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._piece = b""
        self._at = 0

    def read(self, size: int = -1) -> bytes:
        parts: list[bytes] = []
        wanted = size if size >= 0 else None
        while wanted is None or wanted > 0:
            if self._at >= len(self._piece):
                piece = next(self._chunks, None)
                if piece is None:
                    break
                self._piece, self._at = piece, 0
                continue
            end = len(self._piece) if wanted is None else min(len(self._piece), self._at + wanted)
            parts.append(self._piece[self._at : end])
            if wanted is not None:
                wanted -= end - self._at
            self._at = end
        return b"".join(parts)


def prepare_datadir(datadir: Path) -> None:
    """Create ``datadir`` (mode 0700) or accept an empty one of this user; ``UsageError``
    otherwise (also when it cannot be made or is another user's)."""
    try:
        if datadir.exists():
            if not datadir.is_dir() or any(datadir.iterdir()):
                raise UsageError(f"{datadir} is not an empty folder: refusing to restore into it")
        else:
            datadir.mkdir(parents=True, mode=0o700)
        os.chmod(datadir, 0o700)
    except OSError as exc:
        raise UsageError(
            f"cannot use {datadir} as the data directory: {exc.strerror or exc} (it must be "
            "a new or empty folder of the user restoring)"
        ) from None


def _safe_member(member: tarfile.TarInfo) -> tarfile.TarInfo:
    """``member`` if it may be extracted: a file, folder or symbolic link (tablespaces)
    inside the data directory; ``RestoreFailed`` otherwise (what ``tarfile``'s ``data``
    filter refuses, for interpreters that lack it)."""
    parts = Path(member.name).parts
    if member.name.startswith("/") or ".." in parts or not parts:
        raise RestoreFailed(
            f"the base backup holds a member outside the data directory: {member.name!r}"
        )
    if not (member.isfile() or member.isdir() or member.issym()):
        raise RestoreFailed(f"the base backup holds a special file: {member.name!r}")
    member.mode &= 0o700 if member.isdir() else 0o600
    member.uid = member.gid = -1  # never chown to what the archive says
    member.uname = member.gname = ""
    return member


def _refuse_through_link(datadir: Path, name: str) -> None:
    """``RestoreFailed`` when a folder on ``name``'s path is a symbolic link laid down by an
    earlier member: extracting through it would write outside the data directory (the
    classic tar link attack, which ``tarfile``'s ``data`` filter also refuses)."""
    parts = Path(name).parts
    for depth in range(1, len(parts)):
        if (datadir.joinpath(*parts[:depth])).is_symlink():
            raise RestoreFailed(f"the base backup writes {name!r} through a symbolic link: refused")


def lay_down(stream: Iterable[bytes], datadir: Path) -> int:
    """Extract the base backup's tar into ``datadir`` (files 0600, folders 0700, nothing
    outside it, no device files); return the number of members."""
    count = 0
    with tarfile.open(fileobj=_IterReader(stream), mode="r|") as archive:  # type: ignore[call-overload]
        for member in archive:
            _refuse_through_link(datadir, member.name)
            archive.extract(_safe_member(member), datadir, set_attrs=not member.issym())
            count += 1
    for folder in ("pg_wal", "pg_wal/archive_status"):
        (datadir / folder).mkdir(exist_ok=True, mode=0o700)
    return count


@dataclass(frozen=True)
class RecoveryTarget:
    """Where recovery stops: a time (``YYYY-MM-DD HH:MM:SS[.ffffff]+00``), an LSN, a
    transaction id, a named restore point, or the end of the archived WAL (all ``None``);
    ``timeline`` is ``recovery_target_timeline`` (``latest``, ``current`` or a number)."""

    time: str | None = None
    lsn: str | None = None
    xid: str | None = None
    name: str | None = None
    timeline: str = "latest"

    def setting(self) -> tuple[str, str] | None:
        """The ``recovery_target_*`` parameter and its value; ``None`` for the end."""
        for parameter, value in (
            ("time", self.time),
            ("lsn", self.lsn),
            ("xid", self.xid),
            ("name", self.name),
        ):
            if value is not None:
                return f"recovery_target_{parameter}", value
        return None

    def describe(self) -> str:
        for label, value in (
            ("time", self.time),
            ("LSN", self.lsn),
            ("transaction", self.xid),
            ("restore point", self.name),
        ):
            if value is not None:
                return f"{label} {value}"
        return "the end of the archived WAL"


def _conf(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def configure_recovery(
    datadir: Path, restore_command: str, target: RecoveryTarget, port: int | None
) -> None:
    """Append the recovery settings to ``postgresql.auto.conf`` and create
    ``recovery.signal``. Archiving is turned off in the copy: a restored cluster must not
    archive into its original's stream (its new timeline would mix with the original's)."""
    lines = [
        "# added by strongroom restore: point-in-time recovery",
        f"restore_command = {_conf(restore_command)}",
        f"recovery_target_timeline = {_conf(target.timeline)}",
        "recovery_target_action = 'promote'",
        "archive_mode = 'off'",
    ]
    setting = target.setting()
    if setting is not None:
        lines.append(f"{setting[0]} = {_conf(setting[1])}")
        if setting[0] != "recovery_target_name":  # a restore point has no inclusive
            lines.append("recovery_target_inclusive = on")
    if port is not None:
        lines.append(f"port = {port}")
    with (datadir / "postgresql.auto.conf").open("a") as conf:
        conf.write("\n" + "\n".join(lines) + "\n")
    (datadir / "recovery.signal").touch(mode=0o600)


@dataclass(frozen=True)
class RecoveryOutcome:
    """How recovery ended: ``reached`` is the commit time of the last transaction
    replayed (PostgreSQL's "last completed transaction was at log time"), ``stop`` the
    server's line saying where it stopped, ``None`` when it did not say."""

    reached: str | None
    stop: str | None
    log_file: Path


_LAST = re.compile(r"last completed transaction was at log time (.+)$", re.M)
_STOP = re.compile(r"(recovery stopping [^\n]*|redo done at [^\n]*)", re.M)


def find_pg_ctl(server_version: str) -> Path:
    """The ``pg_ctl`` of the base backup's major version (a data directory only starts
    with its own major version); ``ToolMissing`` (exit 5) without one."""
    wanted = server_version.split(".")[0].split()[0]
    given = os.environ.get(BINDIR_ENV)
    for path in tool_candidates("pg_ctl", [Path(given)] if given else None, _debian_bin_dirs()):
        text = tool_version(path) or ""
        found = re.search(r"\(PostgreSQL\)\s*(\d+)", text)
        if found and found[1] == wanted:
            return path
    raise ToolMissing(
        f"no pg_ctl of PostgreSQL {wanted} found (the base backup is of version "
        f"{server_version}): install postgresql-{wanted} or set {BINDIR_ENV}"
    )


def _failure(prefix: str, log_file: Path, fallback: str) -> RestoreFailed:
    """``RecoveryEndedEarly`` when the server says recovery ended before the target,
    else ``RestoreFailed``; the message is ``prefix`` and the server's reason."""
    reason = _server_reason(log_file, fallback)
    if "past the end of the archived WAL" in reason:
        return RecoveryEndedEarly(f"recovery ended before the target was reached: {reason}")
    return RestoreFailed(f"{prefix}: {reason}")


def _server_reason(log_file: Path, fallback: str) -> str:
    text = log_file.read_text(errors="replace") if log_file.exists() else ""
    fatal = re.findall(r"(?:FATAL|PANIC):\s+(.*)", text)
    if not fatal:
        return first_line(fallback) or "unknown"
    reason = fatal[-1].strip()
    if "before configured recovery target was reached" in reason:
        last = _LAST.findall(text)
        newest = f"at {last[-1].strip()}" if last else "before the base backup ended"
        reason = (
            f"the target is past the end of the archived WAL (its newest transaction "
            f"committed {newest}): recover to an earlier moment, or to latest"
        )
    return f"{reason} (see {log_file})"


def start_recovery(
    datadir: Path, pg_ctl: Path, *, timeout: float = 600.0, socket_dir: Path | None = None
) -> RecoveryOutcome:
    """``pg_ctl start`` the laid-down cluster and wait until recovery is over (PostgreSQL
    removes ``recovery.signal`` when it promotes). Raises ``RestoreFailed`` naming the
    server's own reason when it stops instead (e.g. the target is past the archived WAL)."""
    if os.geteuid() == 0:
        raise UsageError("PostgreSQL does not run as root: run restore --start as its OS user")
    log_file = datadir / "strongroom-recovery.log"
    options = f"-k {shlex.quote(str(socket_dir or datadir))}"
    command = [str(pg_ctl), "-D", str(datadir), "-l", str(log_file), "-o", options]
    started = subprocess.run(
        [*command, "-w", "-t", str(int(timeout)), "start"],
        capture_output=True,
        text=True,
        timeout=timeout + 30,
        check=False,
    )
    if started.returncode != 0:
        raise _failure("recovery did not start", log_file, started.stderr)
    deadline = time.monotonic() + timeout
    text = ""
    while True:  # recovery.signal goes at promotion; "ready to accept connections" follows
        text = log_file.read_text(errors="replace") if log_file.exists() else ""
        if "database system is ready to accept connections" in text:
            break
        if not (datadir / "postmaster.pid").exists():
            raise _failure("recovery stopped", log_file, "")
        if time.monotonic() > deadline:
            raise RestoreFailed(f"recovery did not end within {timeout:.0f} s (see {log_file})")
        time.sleep(0.1)
    last = _LAST.findall(text)
    stop_line = _STOP.findall(text)
    return RecoveryOutcome(
        last[-1].strip() if last else None, stop_line[0] if stop_line else None, log_file
    )
