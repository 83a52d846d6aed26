"""Snapshots of a growing WAL segment (what wal-receive stores every second): naming, only
the newest kept, never replaced by a shorter one, forgotten once the segment is archived
whole, and ``wal-fetch --snapshots`` padding the newest to the segment size; a plain
``wal-fetch`` never returns one. No server: segments with real long page headers."""

from __future__ import annotations

from pathlib import Path

import pytest

from strongroom.cli.options import location
from strongroom.errors import IntegrityError
from strongroom.repository.log_snapshots import LogSnapshots, snapshot_name, trimmed_length
from strongroom.repository.logs import LogArchive, LogConflict
from strongroom.repository.repository import Repository
from tests.helpers import run_cli_alone, text_ok
from tests.wal.test_wal_commands import SEGMENT_SIZE, SYSID, segment

NAME = "000000010000000000000005"
GROUP = NAME[:16]
STREAM = f"postgresql-{SYSID}"


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    env = {"STRONGROOM_REPO": str(tmp_path / "repo"), "STRONGROOM_KEY_FILE": str(tmp_path / "k")}
    text_ok(run_cli_alone("init", env=env, cwd=tmp_path))
    return location(str(tmp_path / "repo"), tmp_path / "k", None, None).open()


def _growing(length: int) -> bytes:
    """The first ``length`` bytes of a segment, then zeros (pg_receivewal's .partial)."""
    whole = segment(NAME)
    return whole[:length] + bytes(SEGMENT_SIZE - length)


def test_only_the_newest_snapshot_is_kept_and_never_a_shorter_one(repo: Repository) -> None:
    snaps = LogSnapshots(repo)
    for length in (100_000, 300_000, 200_000):
        data = _growing(length)
        snaps.push(STREAM, GROUP, NAME, data[: trimmed_length(data)])
    stored = snaps.list(STREAM, GROUP, NAME)
    assert len(stored) == 1 and stored[0].end == trimmed_length(_growing(300_000))
    assert stored[0].file.name == snapshot_name(NAME, stored[0].end)
    assert stored[0].file.key.startswith(f"logs/{STREAM}/{GROUP}/{NAME}.partial.")
    assert snaps.newest(STREAM, GROUP, NAME) == segment(NAME)[: stored[0].end]
    # the whole segment's own name is untouched by its snapshots, and the reverse
    assert LogArchive(repo).fetch(STREAM, GROUP, NAME) is None
    LogArchive(repo).push(STREAM, GROUP, NAME, segment(NAME))
    assert snaps.forget(STREAM, GROUP, NAME) == 1
    assert snaps.list(STREAM, GROUP, NAME) == [] and snaps.newest(STREAM, GROUP, NAME) is None


def test_a_snapshot_of_other_content_conflicts(repo: Repository) -> None:
    snaps = LogSnapshots(repo)
    data = segment(NAME)[:50_000]
    snaps.push(STREAM, GROUP, NAME, data)
    other = LogArchive(repo)
    with pytest.raises(LogConflict):  # same name (same length), other content
        other.push(STREAM, GROUP, snapshot_name(NAME, len(data)), segment(NAME, seed=2)[:50_000])


def test_a_damaged_snapshot_is_refused(repo: Repository, tmp_path: Path) -> None:
    snaps = LogSnapshots(repo)
    snaps.push(STREAM, GROUP, NAME, segment(NAME)[:70_000])
    (key,) = [p for p in (tmp_path / "repo" / "logs").rglob("*.partial.*")]
    blob = bytearray(key.read_bytes())
    blob[-5] ^= 1
    key.write_bytes(bytes(blob))
    with pytest.raises(IntegrityError):
        snaps.newest(STREAM, GROUP, NAME)


def test_wal_fetch_uses_a_snapshot_only_when_asked(repo: Repository, tmp_path: Path) -> None:
    data = segment(NAME)[:123_456]
    LogSnapshots(repo).push(STREAM, GROUP, NAME, data)
    env = {"STRONGROOM_REPO": str(tmp_path / "repo"), "STRONGROOM_KEY_FILE": str(tmp_path / "k")}
    plain = run_cli_alone(
        "wal-fetch", "--stream", STREAM, NAME, str(tmp_path / "plain"), env=env, cwd=tmp_path
    )
    assert plain.returncode == 1 and not (tmp_path / "plain").exists(), plain.stderr
    asked = run_cli_alone(
        "wal-fetch", "--snapshots", "--stream", STREAM, NAME, str(tmp_path / "got"),
        env=env, cwd=tmp_path,
    )  # fmt: skip
    assert asked.returncode == 0, asked.stderr
    got = (tmp_path / "got").read_bytes()
    assert len(got) == SEGMENT_SIZE and got == data + bytes(SEGMENT_SIZE - len(data))
    # the whole segment, once archived, wins over any snapshot
    LogArchive(repo).push(STREAM, GROUP, NAME, segment(NAME))
    again = run_cli_alone(
        "wal-fetch", "--snapshots", "--stream", STREAM, NAME, str(tmp_path / "whole"),
        env=env, cwd=tmp_path,
    )  # fmt: skip
    assert again.returncode == 0 and (tmp_path / "whole").read_bytes() == segment(NAME)
