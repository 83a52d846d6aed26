"""The pieces of base backups and recovery that need no server: the tar tap that finds the
WAL range in pg_basebackup's stream, laying a tar down safely, and the target parsers."""

from __future__ import annotations

import io
import json
import os
import random
import tarfile
from pathlib import Path

import pytest

from strongroom.engines.postgresql.physical import _TarTap, lay_down, wal_range
from strongroom.errors import DumpFailed, RestoreFailed, UsageError
from strongroom.services.pitr import parse_lsn, parse_target_time
from tests.helpers import run_cli_alone

MANIFEST = {
    "PostgreSQL-Backup-Manifest-Version": 1,
    "WAL-Ranges": [{"Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100"}],
}


def _tar(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            archive.addfile(info)
    return out.getvalue()


def test_tar_tap_finds_the_wal_range_whatever_the_read_sizes() -> None:
    big = random.Random(3).randbytes(700_001)
    stream = _tar(
        {
            "backup_label": b"START WAL LOCATION: 0/2000028\nSTART TIME: 2026-11-30 16:00:00 UTC\n",
            "base/1/1259": big,
            "global/pg_control": b"\0" * 8192,
            "backup_manifest": json.dumps(MANIFEST).encode(),
        }
    )
    rng = random.Random(5)
    for use_readinto in (False, True):
        tap = _TarTap(io.BytesIO(stream))
        passed = bytearray()
        while True:
            if use_readinto:
                buffer = bytearray(rng.randint(1, 70_000))
                count = tap.readinto(buffer)
                piece = bytes(buffer[:count])
            else:
                piece = tap.read(rng.randint(1, 70_000))
            if not piece:
                break
            passed += piece
        assert bytes(passed) == stream  # passed through unchanged
        facts = wal_range(tap.members)
        assert facts["start_lsn"] == "0/2000028" and facts["stop_lsn"] == "0/2000100"
        assert facts["timeline"] == 1
        assert facts["start_time_label"] == "2026-11-30 16:00:00 UTC"
    with pytest.raises(DumpFailed, match="no readable backup_manifest"):
        wal_range(_TarTap(io.BytesIO(_tar({"PG_VERSION": b"15\n"}))).members)


def test_lay_down_refuses_what_would_leave_the_folder(tmp_path: Path) -> None:
    good = _tar({"PG_VERSION": b"15\n", "base/1/1259": b"x" * 10})
    pieces = [good[i : i + 777] for i in range(0, len(good), 777)]
    assert lay_down(pieces, tmp_path / "ok") >= 2
    assert (tmp_path / "ok" / "base" / "1" / "1259").read_bytes() == b"x" * 10
    assert (tmp_path / "ok" / "PG_VERSION").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "ok" / "pg_wal" / "archive_status").is_dir()
    for bad in (_tar({"../escape": b"x"}), _tar({"/etc/evil": b"x"})):
        with pytest.raises(RestoreFailed, match="outside the data directory"):
            lay_down([bad], tmp_path / "bad")
    assert not (tmp_path / "escape").exists()


def test_target_parsers() -> None:
    assert parse_target_time("2026-11-30 14:03:12+01").isoformat() == "2026-11-30T13:03:12+00:00"
    assert parse_target_time("2026-11-30T14:03:12.5Z").microsecond == 500_000
    assert parse_lsn("0/16B3748") == 0x16B3748
    assert parse_lsn("1/0") == 1 << 32
    for text in ("yesterday", "0x16B3748", "0/zz"):
        with pytest.raises(UsageError):
            (parse_lsn if "/" in text or text.startswith("0x") else parse_target_time)(text)


@pytest.mark.skipif(os.geteuid() != 0, reason="the refusal is for root")
def test_start_as_root_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    result = run_cli_alone(
        "restore",
        "--repo",
        str(tmp_path / "nowhere"),
        "--to-datadir",
        str(tmp_path / "d"),
        "--start",
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert "does not run as root" in result.stderr
    assert not (tmp_path / "d").exists()


def test_the_base_backup_format_is_the_one_the_manifest_knows():
    """engines may not import repository: the format string is written in both places, and
    this keeps them equal (a base backup the manifest did not recognise would be offered to
    the dump restore)."""
    from strongroom.engines.postgresql.physical import PHYSICAL_FORMAT
    from strongroom.repository.manifest import BASE_BACKUP_FORMATS

    assert PHYSICAL_FORMAT in BASE_BACKUP_FORMATS


def test_lay_down_never_writes_through_a_link_it_laid_down(tmp_path: Path) -> None:
    """A symbolic link member followed by a member under it would write outside the data
    directory (the tar link attack): refused, and nothing lands outside."""
    outside = tmp_path / "outside"
    outside.mkdir()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        link = tarfile.TarInfo("pg_tblspc/16384")
        link.type, link.linkname = tarfile.SYMTYPE, str(outside)
        archive.addfile(link)
        evil = tarfile.TarInfo("pg_tblspc/16384/planted")
        evil.size = 4
        archive.addfile(evil, io.BytesIO(b"evil"))
    with pytest.raises(RestoreFailed, match="through a symbolic link"):
        lay_down([out.getvalue()], tmp_path / "data")
    assert list(outside.iterdir()) == []
