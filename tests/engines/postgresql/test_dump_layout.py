"""The custom-format layout reader on dumps from the real server here (its pg_dump)."""

from __future__ import annotations

import io
import logging
import subprocess
import time

import pytest

from strongroom.engines.postgresql.dump_layout import (
    DumpLayout,
    LayoutUnreadable,
    laid_out_stream,
    read_layout,
)
from tests.engines.postgresql.dump_shape import dump, users_shape_database


def _int(data: bytes, at: int, int_size: int = 4) -> int:
    value = int.from_bytes(data[at + 1 : at + 1 + int_size], "little")
    return -value if data[at] else value


def _restore_list(server, data: bytes, tmp_path) -> list[str]:
    path = tmp_path / "d.dump"
    path.write_bytes(data)
    listed = subprocess.run(
        [str(server.bin_dir / "pg_restore"), "-l", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [line for line in listed.splitlines() if line and not line.startswith(";")]


@pytest.fixture
def shaped(pg_server, pg_db):
    dbname = pg_db.rsplit("/", 1)[1]
    users_shape_database(pg_server, dbname, customers=500)
    return dbname


def test_header_and_toc_of_a_real_dump(pg_server, shaped, tmp_path):
    data = dump(pg_server, shaped)
    prefix, layout = read_layout(io.BytesIO(data))
    assert data.startswith(prefix)
    assert isinstance(layout, DumpLayout)
    # PostgreSQL 12-15 write archive 1.14, 16 writes 1.15, 17 writes 1.16
    expected = {12: 14, 13: 14, 14: 14, 15: 14, 16: 15, 17: 16}[pg_server.version]
    assert layout.version[:2] == (1, expected)
    assert layout.database == shaped
    # the header ends with pg_dump's version string; the TOC count follows it
    version = (
        subprocess.run(  # "pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)"
            [str(pg_server.bin_dir / "pg_dump"), "--version"], capture_output=True, check=True
        )
        .stdout.strip()
        .split(b") ", 1)[1]
    )
    assert data[: layout.header_end].endswith(version)
    assert _int(data, layout.header_end) == layout.toc_entries
    # pg_restore -l leaves out the special entries every archive has
    toc = data[layout.header_end : layout.toc_end]
    special = [b"ENCODING", b"STDSTRINGS", b"SEARCHPATH", b"DATABASE"]
    assert all(desc in toc for desc in special)
    assert layout.toc_entries == len(_restore_list(pg_server, data, tmp_path)) + len(special)
    # the first data block begins at the TOC's end: BLK_DATA, then a TABLE DATA entry's id
    assert data[layout.toc_end] == 1
    first_id = _int(data, layout.toc_end + 1)
    entries = {int(line.split(";")[0]): line for line in _restore_list(pg_server, data, tmp_path)}
    assert " TABLE DATA " in entries[first_id]
    assert layout.header_end < 200 < layout.toc_end < len(data)


def test_two_dumps_of_an_unchanged_database_differ_only_in_the_header(pg_server, shaped):
    one = dump(pg_server, shaped)
    time.sleep(1.1)  # the header's creation time has a one-second resolution
    two = dump(pg_server, shaped)
    _, first = read_layout(io.BytesIO(one))
    _, second = read_layout(io.BytesIO(two))
    assert one[: first.header_end] != two[: second.header_end]
    assert one[first.header_end :] == two[second.header_end :]


def test_a_schema_only_dump_has_no_data_block_after_its_toc(pg_server, shaped):
    data = dump(pg_server, shaped, "--schema-only")
    _, layout = read_layout(io.BytesIO(data))
    assert layout.toc_end == len(data)


def test_the_replayed_stream_is_the_dump_and_cuts_are_header_and_toc(pg_server, shaped):
    data = dump(pg_server, shaped)
    stream, cuts = laid_out_stream(io.BytesIO(data))
    assert stream.read() == data
    _, layout = read_layout(io.BytesIO(data))
    assert cuts == (layout.header_end, layout.toc_end)


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda d: d[:5] + bytes([1, 13, 0]) + d[8:], "archive version 1.13"),
        (lambda d: d[:5] + bytes([1, 99, 0]) + d[8:], "archive version 1.99"),
        (lambda d: b"XXXXX" + d[5:], "no PGDMP magic"),
        (lambda d: d[:400], "ends inside its TOC"),
        (lambda d: d[:10] + bytes([3]) + d[11:], "archive format 3"),
    ],
)
def test_unreadable_starts_fall_back_to_no_cuts_with_a_debug_line(
    pg_server, shaped, damage, reason, caplog
):
    data = damage(dump(pg_server, shaped))
    with pytest.raises(LayoutUnreadable, match=reason):
        read_layout(io.BytesIO(data))
    with caplog.at_level(logging.DEBUG, logger="strongroom.engines.postgresql"):
        stream, cuts = laid_out_stream(io.BytesIO(data))
    assert cuts == ()
    assert stream.read() == data  # every byte read while parsing is replayed
    assert any(reason in r.getMessage() and r.levelno == logging.DEBUG for r in caplog.records)


def test_a_toc_above_the_limit_is_not_held_in_memory(pg_server, shaped):
    data = dump(pg_server, shaped)
    with pytest.raises(LayoutUnreadable, match="exceed 100 bytes"):
        read_layout(io.BytesIO(data), limit=100)


def test_a_plain_sql_dump_is_no_archive(pg_server, shaped):
    data = dump(pg_server, shaped, "-Fp")
    stream, cuts = laid_out_stream(io.BytesIO(data))
    assert (stream.read(), cuts) == (data, ())


# PostgreSQL 16 and 17 are not installed here: archives written field by field as their
# WriteHead/WriteToc do (pg_backup_archiver.c), to check the version-dependent fields.
def _w_int(value: int) -> bytes:
    return bytes([1 if value < 0 else 0]) + abs(value).to_bytes(4, "little")


def _w_str(value: str | None) -> bytes:
    if value is None:
        return _w_int(-1)
    return _w_int(len(value.encode())) + value.encode()


def _synthetic(minor: int, entries: list[tuple[int, bool]], data: bytes) -> tuple[bytes, int, int]:
    head = b"PGDMP" + bytes([1, minor, 0, 4, 8, 1])
    head += bytes([0]) if minor >= 15 else _w_int(0)  # compression
    head += b"".join(_w_int(v) for v in (5, 4, 3, 2, 1, 126, 0))  # creation time
    head += _w_str("Shop") + _w_str("17.2") + _w_str("17.2")
    toc = _w_int(len(entries))
    for dump_id, has_data in entries:
        toc += _w_int(dump_id) + _w_int(1 if has_data else 0)
        toc += b"".join(_w_str(v) for v in ("1259", "16400", '"Order"', "TABLE DATA"))
        toc += _w_int(3)  # section
        toc += b"".join(_w_str(v) for v in ("", "", "COPY x;", "public", "", "heap"))
        if minor >= 16:
            toc += _w_int(ord("r"))  # relkind
        toc += _w_str("app") + _w_str("false") + _w_str("7") + _w_str(None)
        toc += bytes([1 if has_data else 3]) + bytes(8)  # data offset: not set / no data
    return head + toc + data, len(head), len(head) + len(toc)


@pytest.mark.parametrize("minor", [14, 15, 16])
def test_archive_versions_of_postgresql_12_to_17(minor):
    block = bytes([1]) + _w_int(9) + _w_int(3) + b"1\tx" + _w_int(0)
    archive, header_end, toc_end = _synthetic(minor, [(8, False), (9, True)], block)
    prefix, layout = read_layout(io.BytesIO(archive))
    assert (layout.version, layout.header_end, layout.toc_end) == (
        (1, minor, 0),
        header_end,
        toc_end,
    )
    assert (layout.toc_entries, layout.database, prefix) == (2, "Shop", archive)
    # read with the neighbouring version's fields, the same bytes do not parse
    other = 15 if minor == 16 else minor + 1
    misread = archive[:6] + bytes([other]) + archive[7:]
    with pytest.raises(LayoutUnreadable):
        read_layout(io.BytesIO(misread))


def test_a_toc_followed_by_no_data_block_of_its_entries_is_refused():
    archive, _, _ = _synthetic(16, [(9, True)], bytes([1]) + _w_int(44) + _w_int(0))
    with pytest.raises(LayoutUnreadable, match="block type 1 of entry 44"):
        read_layout(io.BytesIO(archive))
