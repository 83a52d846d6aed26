"""WAL status, continuity (check) and retention (prune) over a local repository whose log
objects are pushed through repository/logs.py and whose base backups are real manifests
with the facts ``backup --physical`` records (no server: services/wal_status.py,
services/wal_retention.py)."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from strongroom.engines.postgresql import timelines as tl
from strongroom.engines.postgresql.physical import PHYSICAL_FORMAT
from strongroom.repository.ids import new_backup_id
from strongroom.repository.keys import KeySource
from strongroom.repository.layout import manifest_key
from strongroom.repository.logs import LogArchive
from strongroom.repository.manifest import STATUS_COMPLETE, Manifest, PrivateSection, seal_private
from strongroom.repository.repository import Repository
from strongroom.services.check import check_repository
from strongroom.services.prune import prune
from strongroom.services.wal_retention import plan_wal_retention
from strongroom.services.wal_status import wal_status
from strongroom.storage.local import LocalStorage
from strongroom.storage.memory import MemoryStorage
from tests.helpers import cli_fails, cli_ok, run_cli

STREAM = "postgresql-7300000000000000001"
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
MB16 = tl.SEGMENT_SIZE


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@pytest.fixture()
def repo(tmp_path: Path) -> Repository:
    storage = LocalStorage(tmp_path / "repo")
    Repository.init(storage, key_file=tmp_path / "repo.key")
    return Repository.open(storage, KeySource(key_file=tmp_path / "repo.key"))


def push(repo: Repository, name: str, modified: datetime | None = None, stream: str = STREAM):
    """Archive ``name`` as wal-push does; its object's time set to ``modified``."""
    group = "history" if name.endswith(".history") else name[:16]
    data = name.encode() * 8
    if name.endswith(".history"):
        data = HISTORIES[name].encode()
    result = LogArchive(repo).push(stream, group, name, data)
    if modified is not None:
        path = Path(repo.storage.describe().removeprefix("file://")) / result.file.key
        local = repo.storage
        assert isinstance(local, LocalStorage)
        path = local.root / result.file.key
        os.utime(path, (modified.timestamp(), modified.timestamp()))
    return result.file


def push_range(repo: Repository, tli: int, first: int, last: int, start: datetime) -> None:
    for number in range(first, last + 1):
        push(repo, tl.name_of(tli, number), start + timedelta(minutes=number))


HISTORIES = {"00000002.history": "1\t0/8000100\tno recovery target specified\n"}


def base_backup(
    repo: Repository,
    timeline: int,
    start_segment: int,
    stop_time: datetime,
    *,
    stream: str = STREAM,
    target: str = "cluster@db:5432",
    record_size: bool = True,
) -> str:
    """A base backup's manifest as ``backup --physical`` writes it (no chunks)."""
    start = start_segment * MB16 + 0x28
    facts = {
        "cluster": "cluster",
        "server_version": "16.4",
        "system_identifier": stream.removeprefix("postgresql-"),
        "stream": stream,
        "databases": ["postgres", "shop"],
        "timeline": timeline,
        "start_lsn": tl.format_lsn(start),
        "stop_lsn": tl.format_lsn(start + 0x100),
        "stop_time": _iso(stop_time),
        "wal_segment_size": MB16,
    }
    if not record_size:  # base backups taken before it was recorded
        del facts["wal_segment_size"]
    private = PrivateSection(
        database="cluster",
        source="postgresql://db:5432/postgres",
        engine_state={"physical": facts},
    )
    manifest = Manifest(
        backup_id=new_backup_id(stop_time),
        target=target,
        engine="postgresql",
        engine_version="16.4",
        tool_version="pg_basebackup (PostgreSQL) 16.4",
        dump_format=PHYSICAL_FORMAT,
        started_at=_iso(stop_time - timedelta(seconds=5)),
        finished_at=_iso(stop_time),
        duration_seconds=5.0,
        tags=(),
        status=STATUS_COMPLETE,
        created_by="test@host",
        raw_size=0,
        stored_new_bytes=0,
        new_chunk_count=0,
        stream_checksum="0" * 64,
        chunks=(),
        private_sealed=seal_private(private, repo.keyring.sealer(for_reading=False)),
        chunk_order=repo.chunk_order(()),
    )
    repo.write_manifest(manifest)
    return manifest.backup_id


def _names(repo: Repository) -> set[str]:
    return {f.name for f in LogArchive(repo).files(STREAM)}


def test_window_lag_and_newest_segment(repo: Repository) -> None:
    push_range(repo, 1, 1, 20, T0)
    a = base_backup(repo, 1, 3, T0 + timedelta(minutes=3, seconds=30))
    base_backup(repo, 1, 10, T0 + timedelta(minutes=10, seconds=30))
    now = T0 + timedelta(minutes=20, seconds=90)
    status = wal_status(repo, now=now)
    (stream,) = status.streams
    assert stream.stream == STREAM and stream.targets == ("cluster@db:5432",)
    assert stream.segments == 20 and stream.base_backups == 2
    assert stream.newest_segment == tl.name_of(1, 20)
    assert stream.newest_time == T0 + timedelta(minutes=20)
    assert stream.window_start == T0 + timedelta(minutes=3, seconds=30)
    assert stream.window_end == T0 + timedelta(minutes=20)
    assert stream.lag_seconds == pytest.approx(90.0)
    assert not stream.gaps and not stream.unsure
    assert status.for_target("cluster@db:5432") == [stream]
    assert status.for_target("other") == []
    assert check_repository(repo).ok
    # a segment the newest base backup does not need, but the oldest does
    (
        repo.storage.root
        / next(f for f in LogArchive(repo).files(STREAM) if f.name == tl.name_of(1, 5)).key
    ).unlink()  # type: ignore[attr-defined]
    stream = wal_status(repo, now=now).streams[0]
    (gap,) = stream.gaps
    assert gap.first_missing == tl.name_of(1, 5) and gap.backup_ids == (a,) and gap.missing == 1
    # the window starts at the oldest base backup that has all its WAL
    assert stream.window_start == T0 + timedelta(minutes=10, seconds=30)
    report = check_repository(repo)
    (problem,) = report.problems
    assert problem.kind == "wal" and problem.backups == (a,)
    assert (
        f"WAL stream {STREAM} has a gap: segment {tl.name_of(1, 5)} is missing" in problem.message
    )


def test_timeline_switch_status_and_retention(repo: Repository) -> None:
    # timeline 2 branched off 1 at 0/8000100 (inside segment 8): tli 1 has 1..7, its
    # segment 8 only as .partial; tli 2 has 8..15
    push_range(repo, 1, 1, 7, T0)
    push(repo, tl.name_of(1, 8) + ".partial", T0 + timedelta(minutes=8))
    push(repo, "00000002.history", T0 + timedelta(minutes=8))
    push_range(repo, 2, 8, 15, T0)
    push(repo, tl.name_of(1, 3) + ".00000028.backup", T0 + timedelta(minutes=3))
    a = base_backup(repo, 1, 3, T0 + timedelta(minutes=3, seconds=30))
    b = base_backup(repo, 2, 12, T0 + timedelta(minutes=12, seconds=30))
    now = T0 + timedelta(minutes=16)
    stream = wal_status(repo, now=now).streams[0]
    assert not stream.gaps and not stream.unsure, stream
    assert stream.newest_segment == tl.name_of(2, 15)
    assert stream.window_start == T0 + timedelta(minutes=3, seconds=30)
    # nothing is before the oldest base backup's start on either timeline but tli 1's 1, 2
    plan = plan_wal_retention(repo)
    (line,) = plan.streams
    assert {f.file.name for f in line.delete} == {tl.name_of(1, 1), tl.name_of(1, 2)}
    assert line.keep_from == {1: 3, 2: 8}
    # a missing segment on the new timeline is a gap for the base backup of the old one
    files = {f.name: f for f in LogArchive(repo).files(STREAM)}
    (repo.storage.root / files[tl.name_of(2, 9)].key).unlink()  # type: ignore[attr-defined]
    (gap,) = wal_status(repo, now=now).streams[0].gaps
    assert gap.first_missing == tl.name_of(2, 9) and gap.backup_ids == (a,)
    push(repo, tl.name_of(2, 9), T0 + timedelta(minutes=9))
    # forget the old base backup: tli 1 before the switch's segment goes, its .partial and
    # everything from it stays; tli 2 before b's start goes; the history file stays
    repo.storage.delete(manifest_key(a))
    before = _names(repo)
    report = prune(repo, dry_run=True)
    assert report.wal_files == 7 + 1 + 4 and _names(repo) == before
    report = prune(repo, wait=0)
    assert report.wal_files == 12
    gone = before - _names(repo)
    assert gone == {tl.name_of(1, n) for n in range(1, 8)} | {
        tl.name_of(1, 3) + ".00000028.backup"
    } | {tl.name_of(2, n) for n in range(8, 12)}
    assert "00000002.history" in _names(repo)
    assert tl.name_of(1, 8) + ".partial" in _names(repo)
    stream = wal_status(repo, now=now).streams[0]
    assert not stream.gaps and stream.window_start == T0 + timedelta(minutes=12, seconds=30)
    assert plan_wal_retention(repo).to_delete == 0
    assert b in repo.backup_ids()


def test_unsure_streams_are_kept_whole(repo: Repository, tmp_path: Path) -> None:
    other = "postgresql-7300000000000000002"
    push_range(repo, 1, 1, 5, T0)
    for n in range(1, 4):
        push(repo, tl.name_of(1, n), T0, stream=other)
    # timeline 3's history was never archived: its base backup's ancestry is unknown
    push(repo, tl.name_of(3, 20), T0 + timedelta(minutes=30))
    base_backup(repo, 3, 20, T0 + timedelta(minutes=30))
    plan = {s.stream: s for s in plan_wal_retention(repo).streams}
    assert not plan[STREAM].delete and "00000003.history" in (plan[STREAM].kept_whole or "")
    assert not plan[other].delete
    assert plan[other].kept_whole == "no retained base backup of this stream"
    status = {s.stream: s for s in wal_status(repo).streams}
    assert any("00000003.history" in why for why in status[STREAM].unsure)
    assert status[STREAM].window_start is None
    assert any(p.kind == "wal" for p in check_repository(repo).problems)
    # a base backup of the first stream on timeline 1, and a damaged manifest: it may be
    # a base backup of either stream, so nothing is deleted anywhere
    base_backup(repo, 1, 4, T0 + timedelta(minutes=4, seconds=30))
    repo.storage.delete(manifest_key(repo.backup_ids()[-1]))  # keep one base backup only
    base_backup(repo, 1, 4, T0 + timedelta(minutes=4, seconds=30), stream=other)
    plan = {s.stream: s for s in plan_wal_retention(repo).streams}
    # segments 1..3 of each; timeline 3 (no history) is kept whole
    assert {f.file.name for f in plan[STREAM].delete} == {tl.name_of(1, n) for n in (1, 2, 3)}
    assert plan[STREAM].keep_from == {1: 4} and len(plan[other].delete) == 3
    repo.storage.put(manifest_key(new_backup_id(T0)), b"{not json")
    fresh = Repository.open(repo.storage, KeySource(key_file=tmp_path / "repo.key"))
    plan = {s.stream: s for s in plan_wal_retention(fresh).streams}
    assert plan_wal_retention(fresh).to_delete == 0
    assert "may need this WAL" in (plan[other].kept_whole or "")


def test_cli_check_names_the_gap_and_prune_dry_run_says_what_goes(
    repo: Repository, tmp_path: Path
) -> None:
    push_range(repo, 1, 1, 12, T0)
    base_backup(repo, 1, 6, T0 + timedelta(minutes=6, seconds=30))
    env = {
        "STRONGROOM_REPO": str(tmp_path / "repo"),
        "STRONGROOM_KEY_FILE": str(tmp_path / "repo.key"),
    }
    out = cli_ok(run_cli("prune", "--dry-run", env=env))
    assert f"WAL {STREAM}: would delete 5 files no retained base backup needs" in out
    assert f"({tl.name_of(1, 1)} … {tl.name_of(1, 5)}); 7 kept" in out
    files = {f.name: f for f in LogArchive(repo).files(STREAM)}
    (repo.storage.root / files[tl.name_of(1, 9)].key).unlink()  # type: ignore[attr-defined]
    cli_fails(
        run_cli("check", env=env),
        7,
        rf"WAL stream {STREAM} has a gap: segment {tl.name_of(1, 9)} is missing",
    )


def test_status_with_5000_segments_is_fast(tmp_path: Path) -> None:
    """5,000 segments on two timelines and 20 base backups: one listing."""
    key = tmp_path / "repo.key"
    local = LocalStorage(tmp_path / "repo")
    Repository.init(local, key_file=key)
    # push through repository/logs.py into memory (no fsync per object), then lay the same
    # objects down as files: what 5,000 wal-push calls leave
    memory = MemoryStorage()
    for found in local.list(""):
        memory.put(found, local.get(found))
    mem_repo = Repository.open(memory, KeySource(key_file=key))
    archive = LogArchive(mem_repo)
    for number in range(1, 3001):
        archive.push(STREAM, tl.name_of(1, number)[:16], tl.name_of(1, number), b"x")
    archive.push(STREAM, "history", "00000002.history", b"1\tB/B8000000\tpromoted\n")
    for number in range(3000, 5000):
        archive.push(STREAM, tl.name_of(2, number)[:16], tl.name_of(2, number), b"y")
    for number in range(20):
        base_backup(mem_repo, 1, 100 + number * 140, T0 + timedelta(hours=number))
    for found in memory.list(""):
        path = local.root / found
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(memory.get(found))
    repo = Repository.open(local, KeySource(key_file=key))
    clock = time.perf_counter()
    stream = wal_status(repo).streams[0]
    cold = time.perf_counter() - clock
    clock = time.perf_counter()
    wal_status(repo)
    warm = time.perf_counter() - clock
    print(
        f"\nWAL status, 5,000 segments, 20 base backups: cold {cold * 1000:.0f} ms, "
        f"warm {warm * 1000:.0f} ms"
    )
    assert stream.segments == 5000 and not stream.gaps and not stream.unsure
    assert stream.newest_segment is not None
    assert cold < 10 and warm < 5
    # prune ~100 segments: those before the oldest base backup's start
    clock = time.perf_counter()
    report = prune(repo, wait=0)
    seconds = time.perf_counter() - clock
    print(f"prune of {report.wal_files} WAL segments (5,000 listed): {seconds * 1000:.0f} ms")
    assert report.wal_files == 99
    # the oldest base backup forgotten: the 140 segments up to the next one's start go
    repo.storage.delete(manifest_key(repo.list_backups()[0].backup_id))
    assert prune(repo, wait=0).wal_files == 140
    assert not wal_status(repo).streams[0].gaps


def test_health_metrics_and_list_show_the_wal(repo: Repository, tmp_path: Path) -> None:
    from prometheus_client import generate_latest

    from strongroom.services.health import CRITICAL, HEALTHY, WARNING, TargetHealth, with_wal
    from strongroom.services.metrics import build_registry

    push_range(repo, 1, 1, 10, T0)
    base_backup(repo, 1, 3, T0 + timedelta(minutes=3, seconds=30))
    fine = TargetHealth("cluster@db:5432", HEALTHY)
    other = TargetHealth("shop", HEALTHY)
    status = wal_status(repo, now=T0 + timedelta(minutes=20))  # newest at 12:10: 10 min lag
    result, untouched = with_wal([fine, other], status, timedelta(minutes=15))
    assert untouched == other
    assert result.status == HEALTHY and result.wal_gap is False
    assert result.wal_lag_seconds == 600 and result.wal_window_start == "2026-11-30T12:03:30Z"
    assert result.wal_window_end == result.wal_last_segment_at == "2026-11-30T12:10:00Z"
    late = wal_status(repo, now=T0 + timedelta(minutes=40))
    (result,) = with_wal([fine], late, timedelta(minutes=15))
    assert result.status == WARNING
    assert result.reasons == [
        "WAL archiving lags 30.0 min (recovery point 15 min; an idle server archives only "
        "at archive_timeout: set it below the recovery point)"
    ]
    files = {f.name: f for f in LogArchive(repo).files(STREAM)}
    repo.storage.delete(files[tl.name_of(1, 4)].key)
    broken = wal_status(repo, now=T0 + timedelta(minutes=20))
    (result,) = with_wal([fine], broken, timedelta(minutes=15))
    assert result.status == CRITICAL and result.wal_gap is True
    assert STREAM not in " ".join(result.reasons) and "0000000" not in " ".join(result.reasons)
    text = generate_latest(build_registry(repo.list_backups(), [], {}, broken)).decode()
    labels = f'stream="{STREAM}",target="cluster@db:5432"'
    assert f"strongroom_wal_archive_lag_seconds{{{labels}}} 600.0" in text
    assert f"strongroom_wal_gap{{{labels}}} 1.0" in text
    stamp = (T0 + timedelta(minutes=10)).timestamp()
    line = f"strongroom_wal_last_segment_timestamp_seconds{{{labels}}} "
    assert float(text.split(line, 1)[1].split()[0]) == stamp
    push(repo, tl.name_of(1, 4), T0 + timedelta(minutes=4))
    env = {
        "STRONGROOM_REPO": str(tmp_path / "repo"),
        "STRONGROOM_KEY_FILE": str(tmp_path / "repo.key"),
    }
    out = cli_ok(run_cli("list", env=env))
    assert (
        f"WAL of cluster@db:5432 ({STREAM}): recoverable 2026-11-30 12:03:30 to 2026-11-30 "
        f"12:10:00 UTC; last segment {tl.name_of(1, 10)} at 2026-11-30 12:10:00 UTC (lag "
    ) in " ".join(out.split())


def test_a_last_segment_still_to_come_is_no_gap_and_snapshots_count_for_lag(
    repo: Repository,
) -> None:
    from strongroom.repository.log_snapshots import snapshot_name

    push_range(repo, 1, 1, 5, T0)
    base_backup(repo, 1, 6, T0 + timedelta(minutes=6, seconds=30))  # segment 6 not yet here
    stream = wal_status(repo, now=T0 + timedelta(minutes=7)).streams[0]
    assert not stream.gaps and not stream.unsure
    assert stream.window_start is None  # not recoverable yet
    # wal-receive's snapshot of the growing segment 7: the freshest WAL stored
    name = snapshot_name(tl.name_of(1, 7), 0x9A000)
    push(repo, name, T0 + timedelta(minutes=7, seconds=50))
    push(repo, tl.name_of(1, 6), T0 + timedelta(minutes=7))
    stream = wal_status(repo, now=T0 + timedelta(minutes=8)).streams[0]
    assert stream.newest_segment == name and stream.lag_seconds == pytest.approx(10.0)
    assert stream.window_start == T0 + timedelta(minutes=6, seconds=30)
    assert stream.window_end == T0 + timedelta(minutes=7, seconds=50)
    # retention: a snapshot goes with its segment number like a .partial
    old = snapshot_name(tl.name_of(1, 2), 0x1000)
    push(repo, old, T0)
    (line,) = plan_wal_retention(repo).streams
    assert {f.file.name for f in line.delete} == {tl.name_of(1, n) for n in range(1, 6)} | {old}


def test_status_on_s3_reads_times_from_the_listing(
    s3_bucket: tuple[str, str], tmp_path: Path
) -> None:
    """ListObjectsV2's LastModified through RetryingStorage (moto over HTTP)."""
    from strongroom.storage.factory import open_storage

    endpoint, bucket = s3_bucket
    storage = open_storage(f"s3://{bucket}/wal", s3_endpoint=endpoint)
    Repository.init(storage, key_file=tmp_path / "s3.key")
    repo = Repository.open(storage, KeySource(key_file=tmp_path / "s3.key"))
    before = datetime.now(UTC).replace(microsecond=0)
    for number in range(1, 5):
        push(repo, tl.name_of(1, number))
    base_backup(repo, 1, 2, before)
    stream = wal_status(repo).streams[0]
    assert stream.segments == 4 and not stream.gaps and stream.window_start == before
    assert stream.newest_time is not None and stream.lag_seconds is not None
    assert before - timedelta(seconds=2) <= stream.newest_time <= datetime.now(UTC)
    assert stream.window_end == stream.newest_time
    assert prune(repo, wait=0).wal_files == 1


def test_a_segment_size_not_recorded_is_taken_from_a_segment_header(repo: Repository) -> None:
    import struct

    push_range(repo, 1, 2, 8, T0)
    base_backup(repo, 1, 5, T0 + timedelta(minutes=5, seconds=30), record_size=False)
    (line,) = plan_wal_retention(repo).streams
    assert not line.delete and "states none, not 16777216" in (line.kept_whole or "")
    # the oldest segment with a real long page header: magic, info, tli, pageaddr,
    # rem_len, pad, system identifier, segment size, block size
    header = struct.pack("=HHIQIIQII", 0xD116, 2, 1, MB16, 0, 0, 7300000000000000001, 0, 8192)
    for size, deleted in ((64 * 1024 * 1024, 0), (MB16, 4)):
        stated = header[:-8] + struct.pack("=II", size, 8192)
        data = stated + bytes(64)
        name = tl.name_of(1, 1)
        files = {f.name: f for f in LogArchive(repo).files(STREAM)}
        if name in files:
            repo.storage.delete(files[name].key)
        LogArchive(repo).push(STREAM, name[:16], name, data)
        (line,) = plan_wal_retention(repo).streams
        assert len(line.delete) == deleted, line.kept_whole
    # another base backup of the stream records it: the older one takes it, no header read
    base_backup(repo, 1, 7, T0 + timedelta(minutes=7, seconds=30))
    repo.storage.delete(files[tl.name_of(1, 2)].key)
    (line,) = plan_wal_retention(repo).streams
    assert {f.file.name for f in line.delete} == {tl.name_of(1, n) for n in (1, 3, 4)}
