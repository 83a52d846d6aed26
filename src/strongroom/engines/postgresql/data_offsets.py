"""Data offsets for a ``pg_dump -Fc`` archive that was written to a pipe.

``pg_dump`` writing to a file seeks back at the end and records, in each TOC entry, where the
entry's data block begins (``pg_backup_custom.c``: flag ``K_OFFSET_POS_SET`` and the
offset). Written to a pipe, as a backup reads it, every flag stays ``K_OFFSET_POS_NOT_SET``.
``pg_restore -j`` then cannot seek to a table's data: each worker reads its way through the
data blocks before it (one length per row with ``-Z0``), and without the blocks' sizes it
schedules the tables in TOC order instead of the largest first.

:func:`fill_data_offsets` puts the offsets into the restore's private temp copy of the dump,
where ``pg_dump`` would have put them, before ``pg_restore -j`` reads it. The data blocks are
found without reading them row by row: with no compression (``-Z0``) a table's data block is
``COPY`` text, which holds no NUL byte, so ``<end of the previous block: an int 0><block
type 1><dump id>`` cannot occur inside it. The first block begins where the TOC ends.

Nothing else changes in the file. Anything unexpected (another archive version or format,
compression, a large-object block, whose binary data could hold the pattern, a block not
found) stops the filling there: the entries from there on keep "not set" and ``pg_restore``
finds their data as before. ``pg_restore`` checks the block's type and dump id at every
offset it seeks to, and the restored tables are still verified against the backup.
"""

from __future__ import annotations

import logging
import mmap
import os
from dataclasses import dataclass
from typing import BinaryIO

from strongroom.engines.postgresql.dump_layout import (
    FORMAT_CUSTOM,
    MAGIC,
    MAX_PREFIX,
    SUPPORTED_VERSIONS,
    LayoutUnreadable,
    _Reader,
)

logger = logging.getLogger("strongroom.engines.postgresql")

BLK_DATA = 1
OFFSET_NOT_SET = 1  # K_OFFSET_POS_NOT_SET
OFFSET_SET = 2  # K_OFFSET_POS_SET
DATA_DESCS = (b"TABLE DATA", b"SEQUENCE SET", b"MATERIALIZED VIEW DATA")


@dataclass(frozen=True)
class OffsetSlot:
    """One TOC entry's data offset field: ``flag_at`` is the byte offset of its flag byte
    in the file (``offset_size`` bytes of offset follow it)."""

    dump_id: int
    desc: bytes
    flag: int
    flag_at: int
    section: int = 0  # teSection: 1 none, 2 pre-data, 3 data, 4 post-data


@dataclass(frozen=True)
class ArchiveToc:
    int_size: int
    offset_size: int
    compressed: bool
    toc_end: int  # offset of the first byte after the TOC
    slots: tuple[OffsetSlot, ...]  # in TOC order


def read_toc(file: mmap.mmap | BinaryIO, limit: int = MAX_PREFIX) -> ArchiveToc:
    """The header and TOC of the custom-format archive in ``file`` (from its start), with
    where each entry's data offset field is. Raises ``LayoutUnreadable`` (its subclass
    ``LayoutIncomplete`` when ``file`` ends inside the TOC)."""
    file.seek(0)
    reader = _Reader(file, limit)  # type: ignore[arg-type]  # mmap reads like a file
    if reader.take(5) != MAGIC:
        raise LayoutUnreadable("no PGDMP magic")
    version = (reader.byte(), reader.byte(), reader.byte())
    if version[:2] not in SUPPORTED_VERSIONS:
        raise LayoutUnreadable(f"archive version {version[0]}.{version[1]}")
    reader.int_size, offset_size = reader.byte(), reader.byte()
    if not 1 <= reader.int_size <= 8 or not 1 <= offset_size <= 16:
        raise LayoutUnreadable(f"int size {reader.int_size} / offset size {offset_size}")
    if reader.byte() != FORMAT_CUSTOM:
        raise LayoutUnreadable("not the custom format")
    compression = reader.byte() if version[:2] >= (1, 15) else reader.int()
    for _field in range(7):  # creation time
        reader.int()
    for _field in range(3):  # database, server version, pg_dump version
        reader.string()
    count = reader.int()
    if count < 0:
        raise LayoutUnreadable(f"negative TOC count {count}")
    slots = []
    for _entry in range(count):
        dump_id = reader.int()
        reader.int()  # had dumper
        reader.string()  # table OID
        reader.string()  # OID
        reader.string()  # tag
        desc = reader.string() or b""
        section = reader.int()
        for _field in range(6):  # defn, drop, copy, namespace, tablespace, table AM
            reader.string()
        if version[:2] >= (1, 16):
            reader.int()  # relkind
        reader.string()  # owner
        reader.string()  # "false" (with OIDs)
        while reader.string() is not None:  # dependencies
            pass
        flag_at = reader.pos
        flag = reader.byte()
        reader.take(offset_size)
        slots.append(OffsetSlot(dump_id, desc, flag, flag_at, section))
    return ArchiveToc(reader.int_size, offset_size, compression != 0, reader.pos, tuple(slots))


def int_bytes(value: int, int_size: int) -> bytes:
    """``WriteInt``: a sign byte, then ``int_size`` bytes, least significant first."""
    return bytes([1 if value < 0 else 0]) + abs(value).to_bytes(int_size, "little")


SCAN_WINDOW = 32 * 1024 * 1024  # bytes of the mapped dump searched (and mapped) at once


def _find(file: mmap.mmap, needle: bytes, start: int) -> int:
    """``file.find(needle, start)``, a window at a time, giving back the pages searched:
    the file's pages a search touched count in this process's RSS until unmapped, so a
    plain ``find`` over a 10 GB table's data held 10 GB of page cache in RSS (measured:
    a 196 MB dump's restore peaked at 309 MB RSS; the data stays in the page cache)."""
    size = len(file)
    while start < size:
        end = min(size, start + SCAN_WINDOW + len(needle) - 1)
        at = file.find(needle, start, end)
        _release(file, start, end)
        if at >= 0:
            return at
        if end >= size:  # the last window searched: not there
            return -1
        start = end - len(needle) + 1
    return -1


def _release(file: mmap.mmap, start: int, end: int) -> None:
    """Unmap the whole pages of ``[start, end)`` from this process (MADV_DONTNEED on a
    read-only file mapping drops only the mapping: the next access reads it again)."""
    first = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE
    last = end // mmap.PAGESIZE * mmap.PAGESIZE
    if last > first and hasattr(mmap, "MADV_DONTNEED"):
        file.madvise(mmap.MADV_DONTNEED, first, last - first)


def find_data_offsets(file: mmap.mmap) -> tuple[ArchiveToc, dict[int, int]]:
    """The TOC of ``file`` and {flag_at: data block offset} of the entries whose block was
    found (see the module docstring; the rest are left out). Raises ``LayoutUnreadable``
    when the header or TOC cannot be read."""
    toc = read_toc(file)
    found: dict[int, int] = {}
    if toc.compressed:
        return toc, found
    end_marker = int_bytes(0, toc.int_size)
    position = toc.toc_end
    first = True
    for slot in toc.slots:
        if slot.flag != OFFSET_NOT_SET:
            continue  # no data (or already set)
        if slot.desc not in DATA_DESCS:
            break  # a large-object block: binary data follows, stop here
        header = bytes([BLK_DATA]) + int_bytes(slot.dump_id, toc.int_size)
        if first:
            if file[position : position + len(header)] != header:
                break
            start = position
        else:
            at = _find(file, end_marker + header, position)
            if at < 0:
                break
            start = at + len(end_marker)
        found[slot.flag_at] = start
        position, first = start + len(header), False
    return toc, found


def fill_data_offsets(fd: int) -> int:
    """Write the data offsets into the archive open (read-write) at ``fd``, as ``pg_dump``
    would have on a seekable file; return how many entries got one. Never raises for the
    content (an unreadable archive is left as it is, logged at debug); I/O errors do."""
    size = os.fstat(fd).st_size
    if size == 0:
        return 0
    with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as file:
        try:
            toc, found = find_data_offsets(file)
        except LayoutUnreadable as exc:
            logger.debug("data offsets not filled: %s", exc)
            return 0
    for flag_at, offset in found.items():
        field = bytes([OFFSET_SET]) + offset.to_bytes(toc.offset_size, "little")
        if os.pwrite(fd, field, flag_at) != len(field):
            raise OSError(f"short write of a data offset at {flag_at}")
    left = sum(1 for s in toc.slots if s.flag == OFFSET_NOT_SET) - len(found)
    logger.debug("filled %d data offsets (%d left to pg_restore)", len(found), left)
    return len(found)
