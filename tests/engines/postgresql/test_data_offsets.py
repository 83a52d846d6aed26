"""Data offsets filled into a piped ``pg_dump -Fc`` before ``pg_restore -j`` (real server)."""

from __future__ import annotations

import logging
import mmap
import os
import subprocess
import sys
from pathlib import Path

import pytest

from strongroom.engines.postgresql import PostgresEngine, data_offsets
from strongroom.engines.postgresql.data_offsets import (
    OFFSET_NOT_SET,
    OFFSET_SET,
    fill_data_offsets,
    read_toc,
)
from tests.engines.postgresql.dump_shape import dump, users_shape_database
from tests.engines.postgresql.test_engine import (
    chunks_of,
    dbname_of,
    fingerprint,
    sample_db,  # noqa: F401  (module fixture)
    sample_dump,  # noqa: F401  (module fixture)
)
from tests.fixtures.postgres import PgServer


def offsets(path: Path) -> list[tuple[int, bytes, int, int]]:
    """(dump id, desc, flag, offset) of every TOC entry that has or may have data."""
    fd = os.open(path, os.O_RDONLY)
    try:
        with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as m:
            toc = read_toc(m)
            return [
                (
                    s.dump_id,
                    s.desc,
                    m[s.flag_at],
                    int.from_bytes(m[s.flag_at + 1 : s.flag_at + 1 + toc.offset_size], "little"),
                )
                for s in toc.slots
                if s.flag in (OFFSET_NOT_SET, OFFSET_SET)
            ]
    finally:
        os.close(fd)


def fill(path: Path) -> int:
    fd = os.open(path, os.O_RDWR)
    try:
        return fill_data_offsets(fd)
    finally:
        os.close(fd)


def dump_to_file(server: PgServer, dbname: str, path: Path, *extra: str) -> None:
    """``pg_dump -Fc -Z0 -f path``: on a seekable file pg_dump writes the offsets itself."""
    tool = str(server.bin_dir / "pg_dump")
    subprocess.run(
        [tool, "-Fc", "-Z0", *extra, "-f", str(path), "-d", server.url(dbname)],
        check=True,
        capture_output=True,
    )


def test_filled_offsets_are_those_pg_dump_writes_to_a_file(
    pg_server: PgServer, pg_db: str, tmp_path: Path
) -> None:
    dbname = dbname_of(pg_db)
    users_shape_database(pg_server, dbname, customers=3000)
    pg_server.psql(dbname, "CREATE TABLE empty_one (x int); CREATE TABLE other (t text);")
    pg_server.psql(dbname, "INSERT INTO other SELECT repeat('y', g) FROM generate_series(1, 700) g")
    piped = tmp_path / "piped.dump"
    piped.write_bytes(dump(pg_server, dbname))
    seekable = tmp_path / "file.dump"
    dump_to_file(pg_server, dbname, seekable)
    before = offsets(piped)
    assert {flag for _, _, flag, _ in before} == {OFFSET_NOT_SET}  # a pipe: none set
    assert len(before) == 4  # Customers, OrderLines, empty_one, other
    raw = piped.read_bytes()

    assert fill(piped) == 4

    after = offsets(piped)
    assert after == offsets(seekable)  # the same flags and offsets as pg_dump's own
    data = piped.read_bytes()
    for dump_id, _desc, flag, at in after:  # each points at its own data block's header
        assert flag == OFFSET_SET
        assert data[at] == 1 and int.from_bytes(data[at + 2 : at + 6], "little") == dump_id
    # nothing but the offset fields changed
    fd = os.open(piped, os.O_RDONLY)
    with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as m:
        toc = read_toc(m)
    os.close(fd)
    changed = [i for i, (a, b) in enumerate(zip(raw, data, strict=True)) if a != b]
    fields = [range(s.flag_at, s.flag_at + 1 + toc.offset_size) for s in toc.slots]
    assert changed and all(any(i in f for f in fields) for i in changed)


def test_entries_from_a_large_object_block_on_keep_no_offset(
    pg_server: PgServer,
    sample_db: tuple[str, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    piped = tmp_path / "piped.dump"
    piped.write_bytes(dump(pg_server, sample_db[0]))
    seekable = tmp_path / "file.dump"
    dump_to_file(pg_server, sample_db[0], seekable)
    filled = fill(piped)
    after, expected = offsets(piped), offsets(seekable)
    blobs = next(i for i, e in enumerate(after) if e[1] in (b"BLOBS", b"LARGE OBJECTS"))
    assert filled == blobs > 0
    assert after[:blobs] == expected[:blobs]
    assert {flag for _, _, flag, _ in after[blobs:]} == {OFFSET_NOT_SET}


@pytest.mark.parametrize(
    "content",
    [b"", b"not an archive at all", b"PGDMP\x01\x0e\x00\x04\x08\x01"],  # truncated header
)
def test_unreadable_files_are_left_as_they_are(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.dump"
    path.write_bytes(content)
    assert fill(path) == 0
    assert path.read_bytes() == content


def test_a_compressed_dump_is_left_as_it_is(
    pg_server: PgServer, pg_db: str, tmp_path: Path
) -> None:
    dbname = dbname_of(pg_db)
    users_shape_database(pg_server, dbname, customers=300)
    path = tmp_path / "z.dump"
    content = subprocess.run(
        [str(pg_server.bin_dir / "pg_dump"), "-Fc", "-Z1", "-d", pg_server.url(dbname)],
        check=True,
        capture_output=True,
    ).stdout
    path.write_bytes(content)
    assert fill(path) == 0
    assert path.read_bytes() == content


def test_parallel_restore_from_the_filled_temp_file_reproduces_content(
    pg_server: PgServer,
    sample_db: tuple[str, str],  # noqa: F811
    sample_dump: tuple[Path, object],  # noqa: F811
    pg_new_db: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path, result = sample_dump
    monkeypatch.setenv("STRONGROOM_RESTORE_JOBS", "2")
    caplog.set_level(logging.DEBUG, logger="strongroom.engines.postgresql")
    target = PostgresEngine(pg_new_db)
    target.restore(chunks_of(path))
    # the parallel path ran (restore_overlap): the 6 tables before the large-object block
    # in batches of their own; the one after it, the sequences and the large objects in
    # one step after the file was complete
    assert "6 of 9 data entries in table batches" in caplog.text
    assert target.table_stats() == result.tables  # type: ignore[attr-defined]
    assert fingerprint(pg_server, dbname_of(pg_new_db)) == fingerprint(pg_server, sample_db[0])


def test_searching_a_large_dump_does_not_keep_it_mapped(tmp_path: Path) -> None:
    """The search for data blocks maps the temp dump; every page it touched counted in
    the restore's RSS (a 196 MB dump's restore peaked at 309 MB). Measured in a child
    process: its file-backed RSS after searching 96 MiB stays under one scan window."""
    path = tmp_path / "big"
    block = bytes(range(256)) * 4096  # 1 MiB without the needle
    with path.open("wb") as out:
        for _ in range(96):
            out.write(block)
        out.write(b"\x00NEEDLE")
    script = f"""
import mmap, os
from strongroom.engines.postgresql import data_offsets
def rss_file():
    for line in open("/proc/self/status"):
        if line.startswith("RssFile:"):
            return int(line.split()[1]) * 1024
fd = os.open({str(path)!r}, os.O_RDONLY)
with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as file:
    before = rss_file()
    at = data_offsets._find(file, b"\\x00NEEDLE", 0)
    print(at, rss_file() - before)
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.split()
    assert int(out[0]) == 96 * 1024 * 1024
    assert int(out[1]) < data_offsets.SCAN_WINDOW + 4 * 1024 * 1024
