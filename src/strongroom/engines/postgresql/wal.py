"""What strongroom needs to know about PostgreSQL's WAL files (no repository, no storage).

The names ``archive_command`` (``%f``) and ``restore_command`` hand over, the cluster's
system identifier (from ``global/pg_control`` and from a segment's long page header) and
the stream name under which a cluster's WAL is archived (docs/design.md, "WAL archive and
base backups").
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

from strongroom.errors import StrongroomError, UsageError

KIND = "postgresql"
STREAM_PREFIX = "postgresql-"

# 24 hex digits: timeline (8), log (8), segment (8); upper case, as PostgreSQL writes them
_SEGMENT = re.compile(r"[0-9A-F]{24}")
_PARTIAL = re.compile(r"[0-9A-F]{24}\.partial")
_BACKUP_LABEL = re.compile(r"[0-9A-F]{24}\.[0-9A-F]{8}\.backup")
_HISTORY = re.compile(r"[0-9A-F]{8}\.history")

XLP_LONG_HEADER = 0x0002
_LONG_HEADER = struct.Struct(
    "=HHIQIIQII"
)  # magic, info, tli, pageaddr, rem_len, pad, sysid, seg_size, blcksz


class WalMismatch(StrongroomError):
    """A WAL file that does not belong to the cluster it is archived for (exit 7)."""

    exit_code = 7


@dataclass(frozen=True)
class WalFileName:
    """A file name PostgreSQL archives: a segment, a ``.partial`` segment, a backup
    history file (``.backup``) or a timeline history file (``.history``)."""

    name: str
    kind: str  # "segment", "partial", "backup", "history"

    @property
    def timeline(self) -> int:
        return int(self.name[:8], 16)

    @property
    def group(self) -> str:
        """The folder it is filed in: ``history`` for timeline history files, else the
        first 16 hex digits (timeline and log: 256 segments of 16 MB per folder)."""
        return "history" if self.kind == "history" else self.name[:16]


def parse_wal_name(name: str) -> WalFileName:
    """The file name ``name`` as PostgreSQL archives it; ``UsageError`` (exit 2) for
    anything else (so no path, ``..`` or stray file ever names a key)."""
    for kind, pattern in (
        ("segment", _SEGMENT),
        ("partial", _PARTIAL),
        ("backup", _BACKUP_LABEL),
        ("history", _HISTORY),
    ):
        if pattern.fullmatch(name):
            return WalFileName(name, kind)
    shown = name if len(name) <= 60 else name[:60] + "…"
    raise UsageError(
        f"{shown!r} is not a WAL file name (a segment such as 000000010000000000000001, "
        "a .partial or .backup file, or a timeline's .history file)"
    )


def stream_name(system_identifier: int) -> str:
    """The log stream a cluster's WAL is filed under: ``postgresql-<system identifier>``."""
    return f"{STREAM_PREFIX}{system_identifier}"


def control_system_identifier(data_dir: Path) -> int:
    """The cluster's system identifier: the first 8 bytes of ``global/pg_control`` (native
    byte order, as the server writes it). Raises ``UsageError`` when ``data_dir`` holds no
    readable pg_control (``archive_command`` and ``restore_command`` run in the data
    directory; elsewhere give ``--stream``)."""
    control = data_dir / "global" / "pg_control"
    try:
        with control.open("rb") as handle:
            head = handle.read(8)
    except OSError as exc:
        raise UsageError(
            f"cannot read {control} ({exc.strerror or exc}): run in the cluster's data "
            "directory (as archive_command and restore_command do) or give --stream"
        ) from exc
    if len(head) != 8:
        raise UsageError(f"{control} is too short to be a pg_control file")
    return int(struct.unpack("=Q", head)[0])


def segment_system_identifier(data: bytes) -> int | None:
    """The system identifier in a segment's first (long) page header; ``None`` when the
    file does not start with one (an empty or zeroed file)."""
    if len(data) < _LONG_HEADER.size:
        return None
    fields = _LONG_HEADER.unpack_from(data)
    info, sysid = fields[1], fields[6]
    if not info & XLP_LONG_HEADER or sysid == 0:
        return None
    return int(sysid)


def segment_size(data: bytes) -> int | None:
    """The segment size (bytes) a segment's first (long) page header states; ``None``
    without a valid one or for a size that is no power of two from 1 MiB to 1 GiB."""
    if segment_system_identifier(data) is None:
        return None
    size = int(_LONG_HEADER.unpack_from(data)[7])
    if size < (1 << 20) or size > (1 << 30) or size & (size - 1):
        return None
    return size


def check_history_file(name: WalFileName, data: bytes) -> None:
    """Raise ``WalMismatch`` when a ``.history`` file is no timeline history (no switch
    line, or one that does not parse, or a parent not below its own timeline): archived,
    it would stop every recovery that reads it and, written once, keep the real one of
    that timeline out of the archive."""
    from strongroom.engines.postgresql.timelines import parse_history

    timeline = int(name.name[:8], 16)
    try:
        switches = parse_history(data.decode("utf-8"))
        if not switches or any(s.parent >= timeline for s in switches):
            raise ValueError("it names no earlier timeline")
    except (UnicodeDecodeError, ValueError) as exc:
        raise WalMismatch(
            f"{name.name} is not a timeline history file ({exc}): not archived"
        ) from None


def check_segment_belongs(name: WalFileName, data: bytes, system_identifier: int) -> None:
    """Raise ``WalMismatch`` when a segment's header names another cluster (pushing a
    copy's WAL into the original's stream would make recovery replay foreign WAL)."""
    if name.kind not in ("segment", "partial"):
        return
    found = segment_system_identifier(data)
    if found is None:
        if name.kind == "segment":
            raise WalMismatch(f"WAL file {name.name} has no valid page header: not archived")
        return
    if found != system_identifier:
        raise WalMismatch(
            f"WAL file {name.name} belongs to the cluster with system identifier {found}, "
            f"not {system_identifier} (the data directory's pg_control): not archived"
        )
