"""Where a ``pg_dump -Fc`` stream's parts begin: the forced cuts that keep dedup intact.

A custom-format archive written to a pipe is, in order (PostgreSQL's
``src/bin/pg_dump/pg_backup_archiver.c`` ``WriteHead``/``WriteToc`` and
``pg_backup_custom.c`` ``_CloseArchive``/``_WriteExtraToc``/``_StartData``):

1. the **header**: ``PGDMP``, archive version (3 bytes), int size, offset size, format
   (1 = custom), the compression (an int before archive 1.15, one byte since), the creation
   time (7 ints: sec, min, hour, mday, mon, year, isdst), then three strings: the database
   name, the server's version and pg_dump's version. Every run writes a new time here;
2. the **TOC**: an int count, then per entry: dump id, had-dumper flag (ints), table OID and
   OID (strings), tag, desc (strings), section (int), defn, drop and copy statements,
   namespace, tablespace, table access method (strings, the last since 1.14), relkind (an
   int, since 1.16), owner, ``"false"`` (strings), the dependency ids (strings ended by a
   NULL string), then the custom format's data offset (a flag byte and ``offset size``
   bytes; to a pipe always "not set", so the TOC of an unchanged database is unchanged);
3. the **data blocks**: a block type byte (1 data, 3 large objects), the entry's dump id,
   then the data; the first one begins right where the TOC ends.

An int is a sign byte (0 or 1) and ``int size`` bytes, least significant first; a string is
an int length (-1: NULL) and that many bytes. Archive versions 1.14 (PostgreSQL 12 to 15),
1.15 (16) and 1.16 (17) are read; any other, or anything that does not parse, yields no cut
(plain content-defined chunking, one debug log line): the backup never fails because of it.

The cuts are (end of header, end of TOC): the header becomes a chunk of its own (~100 bytes),
the TOC a chunk sequence ending exactly where the first data block begins, so the data is
chunked as in the previous backup (``pipeline/chunking.py``, forced cuts).
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import BinaryIO, cast

logger = logging.getLogger("strongroom.engines.postgresql")

MAGIC = b"PGDMP"
FORMAT_CUSTOM = 1  # ArchiveFormat archCustom
SUPPORTED_VERSIONS = ((1, 14), (1, 15), (1, 16))  # (major, minor), any revision
BLOCK_TYPES = (1, 3)  # BLK_DATA, BLK_BLOBS
READ_SIZE = 64 * 1024
# The header and TOC are held in memory while they are parsed; a TOC above this (hundreds
# of thousands of objects) is chunked without cuts instead.
MAX_PREFIX = 64 * 1024 * 1024


class LayoutUnreadable(ValueError):
    """The stream's start is not a custom-format archive of a supported version, or ends
    (or exceeds ``MAX_PREFIX``) before its TOC does; the message says which. ``consumed``
    holds the bytes already read from the stream (set by :func:`read_layout`)."""

    consumed: bytes | bytearray = b""


class LayoutIncomplete(LayoutUnreadable):
    """The bytes read so far end inside the header or TOC (more may follow)."""


@dataclass(frozen=True)
class DumpLayout:
    """Offsets (bytes from the stream's start) of a custom-format archive's parts."""

    version: tuple[int, int, int]
    header_end: int  # first byte after pg_dump's version string (the TOC count's offset)
    toc_end: int  # first byte of the first data block (or the stream's length: no data)
    toc_entries: int
    database: str

    @property
    def cuts(self) -> tuple[int, int]:
        """The forced cuts for ``iter_chunks``: end of header, end of TOC."""
        return (self.header_end, self.toc_end)


class _Reader:
    """Reads the stream forward, keeping every byte read (``buffer``) for replay."""

    def __init__(self, stream: BinaryIO, limit: int) -> None:
        self._stream = stream
        self._limit = limit
        self.buffer = bytearray()
        self.pos = 0
        self.int_size = 4
        self._eof = False

    def _fill(self, need: int) -> bool:
        while len(self.buffer) < self.pos + need and not self._eof:
            if len(self.buffer) >= self._limit:
                raise LayoutUnreadable(f"the header and TOC exceed {self._limit} bytes")
            data = self._stream.read(min(READ_SIZE, self._limit - len(self.buffer)))
            if not data:
                self._eof = True
            self.buffer += data
        return len(self.buffer) >= self.pos + need

    def take(self, count: int) -> bytes:
        if not self._fill(count):
            raise LayoutIncomplete(f"the stream ends inside its TOC (offset {self.pos})")
        data = bytes(self.buffer[self.pos : self.pos + count])
        self.pos += count
        return data

    def at_eof(self) -> bool:
        return not self._fill(1)

    def byte(self) -> int:
        return self.take(1)[0]

    def int(self) -> int:
        raw = self.take(1 + self.int_size)
        if raw[0] not in (0, 1):
            raise LayoutUnreadable(f"bad int sign byte {raw[0]} at offset {self.pos - len(raw)}")
        value = int.from_bytes(raw[1:], "little")
        return -value if raw[0] else value

    def string(self) -> bytes | None:
        length = self.int()
        if length < -1:
            raise LayoutUnreadable(f"bad string length {length} at offset {self.pos}")
        return None if length == -1 else self.take(length)


def _header(reader: _Reader) -> tuple[tuple[int, int, int], int, str]:
    """Read ``WriteHead``'s fields; return (version, offset size, database name)."""
    if reader.take(5) != MAGIC:
        raise LayoutUnreadable("no PGDMP magic: not a custom-format archive")
    version = (reader.byte(), reader.byte(), reader.byte())
    if version[:2] not in SUPPORTED_VERSIONS:
        raise LayoutUnreadable(f"archive version {version[0]}.{version[1]} is not supported")
    reader.int_size = reader.byte()
    offset_size = reader.byte()
    if not 1 <= reader.int_size <= 8 or not 1 <= offset_size <= 16:
        raise LayoutUnreadable(f"int size {reader.int_size} / offset size {offset_size}")
    if (archive_format := reader.byte()) != FORMAT_CUSTOM:
        raise LayoutUnreadable(f"archive format {archive_format} is not custom (1)")
    if version[:2] >= (1, 15):
        reader.byte()  # compression algorithm
    else:
        reader.int()  # compression level
    for _field in range(7):  # creation time
        reader.int()
    database = reader.string() or b""
    reader.string()  # server version
    reader.string()  # pg_dump version
    return version, offset_size, database.decode("utf-8", "replace")


def _toc(reader: _Reader, version: tuple[int, int, int], offset_size: int) -> dict[int, bool]:
    """Read ``WriteToc``'s entries; return {dump id: has data}."""
    count = reader.int()
    if count < 0:
        raise LayoutUnreadable(f"negative TOC count {count}")
    entries: dict[int, bool] = {}
    for _entry in range(count):
        dump_id = reader.int()
        if dump_id <= 0:
            raise LayoutUnreadable(f"TOC entry id {dump_id} out of range")
        had_dumper = reader.int()
        for _field in range(4):  # table OID, OID, tag, desc
            reader.string()
        reader.int()  # section
        for _field in range(6):  # defn, drop, copy, namespace, tablespace, table AM
            reader.string()
        if version[:2] >= (1, 16):
            reader.int()  # relkind
        reader.string()  # owner
        reader.string()  # "false" (with OIDs)
        while reader.string() is not None:  # dependencies
            pass
        flag = reader.byte()  # custom format: data offset flag + offset
        if flag not in (1, 2, 3):
            raise LayoutUnreadable(f"bad data offset flag {flag} in TOC entry {dump_id}")
        reader.take(offset_size)
        entries[dump_id] = bool(had_dumper)
    return entries


def read_layout(stream: BinaryIO, limit: int = MAX_PREFIX) -> tuple[bytearray, DumpLayout]:
    """Read the header and TOC from the start of ``stream``.

    Returns (every byte read, which must be chunked before the rest of the stream: held
    once, not copied, as the TOC may be tens of MB; the layout). Checks that the TOC is
    followed by EOF or a data block of one of its entries. Raises ``LayoutUnreadable`` with
    the bytes read so far in ``consumed``.
    """
    reader = _Reader(stream, limit)
    try:
        version, offset_size, database = _header(reader)
        header_end = reader.pos
        entries = _toc(reader, version, offset_size)
        toc_end = reader.pos
        if not reader.at_eof():
            block, dump_id = reader.byte(), reader.int()
            if block not in BLOCK_TYPES or not entries.get(dump_id, False):
                raise LayoutUnreadable(
                    f"the TOC is followed by block type {block} of entry {dump_id}, "
                    "not a data block of a TOC entry"
                )
    except LayoutUnreadable as exc:
        exc.consumed = reader.buffer
        raise
    layout = DumpLayout(version, header_end, toc_end, len(entries), database)
    return reader.buffer, layout


_EMPTY = memoryview(b"")  # the replayed prefix, once sent: drops the reference to the TOC


class _Replay(io.RawIOBase):
    """``prefix``, then the rest of ``stream``: once the prefix is sent, ``readinto`` and
    ``read`` go straight to ``stream`` (no copy through an extra buffer: every byte of a
    dump passes here)."""

    def __init__(self, prefix: bytes | bytearray, stream: BinaryIO) -> None:
        super().__init__()
        self._prefix = memoryview(prefix)
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._prefix:
            count = min(len(buffer), len(self._prefix))
            buffer[:count] = self._prefix[:count]
            self._prefix = self._prefix[count:] if count < len(self._prefix) else _EMPTY
            return count
        readinto = getattr(self._stream, "readinto", None)
        if readinto is not None:
            return int(readinto(buffer) or 0)
        data = self._stream.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def read(self, size: int | None = -1) -> bytes:
        if self._prefix:
            if size is None or size < 0:  # everything: the prefix and the rest
                data, self._prefix = bytes(self._prefix), _EMPTY
                return data + self._stream.read()
            count = min(size, len(self._prefix))
            data = bytes(self._prefix[:count])
            self._prefix = self._prefix[count:] if count < len(self._prefix) else _EMPTY
            return data
        return self._stream.read(-1 if size is None else size)


def laid_out_stream(stream: BinaryIO) -> tuple[BinaryIO, tuple[int, ...]]:
    """Read the start of a ``pg_dump -Fc`` stream for its layout; never raises for content.

    Returns (a stream that yields every byte of ``stream`` from its start, the forced cuts:
    ``DumpLayout.cuts``, or ``()`` when the layout cannot be read, logged at debug). I/O
    errors of ``stream`` itself propagate, as reading it directly would raise them.
    """
    try:
        prefix, layout = read_layout(stream)
    except LayoutUnreadable as exc:
        logger.debug("dump layout not read, chunking without cuts: %s", exc)
        return cast(BinaryIO, _Replay(exc.consumed, stream)), ()
    logger.debug(
        "dump layout: archive %d.%d.%d, header %d bytes, TOC of %d entries ends at %d",
        *layout.version,
        layout.header_end,
        layout.toc_entries,
        layout.toc_end,
    )
    return cast(BinaryIO, _Replay(prefix, stream)), layout.cuts
