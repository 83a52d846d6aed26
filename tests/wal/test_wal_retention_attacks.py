"""Hostile cases for WAL retention (prune), status and the spool: what must never delete
WAL a retained base backup still needs (docs/design.md, "WAL status, continuity and
retention"). Synthetic repositories built the way tests/services/test_wal_status.py
builds them (segments pushed through repository/logs.py, manifests as ``backup
--physical`` writes them); no server."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from strongroom.engines.postgresql import timelines as tl
from strongroom.repository.keys import KeySource
from strongroom.repository.layout import manifest_key
from strongroom.repository.logs import LogArchive
from strongroom.repository.repository import Repository
from strongroom.services.check import check_repository
from strongroom.services.prune import prune
from strongroom.services.wal_retention import plan_wal_retention
from strongroom.services.wal_status import wal_status
from tests.services.test_wal_status import (
    STREAM,
    T0,
    _names,
    base_backup,
    push,
    push_range,
    repo,
)
from tests.wal.test_wal_receive import streaming

__all__ = ["repo", "streaming"]


def _rewrite_facts(repository: Repository, backup_id: str, **changes: object) -> None:
    """Change a base backup's recorded facts (what another pg_basebackup would record)."""
    from strongroom.repository.manifest import PrivateSection, seal_private

    manifest = repository.load_manifest(backup_id)
    private = repository.private_section(manifest)
    state = dict(private.engine_state or {})
    facts = dict(state["physical"])
    facts.update(changes)
    sealed = seal_private(
        PrivateSection(
            database=private.database,
            source=private.source,
            tables=private.tables,
            engine_state={"physical": facts},
        ),
        repository.keyring.sealer(for_reading=False),
    )
    from dataclasses import replace

    repository.storage.put(
        manifest_key(backup_id), replace(manifest, private_sealed=sealed).to_json()
    )


def _fresh(repository: Repository, tmp_path: Path) -> Repository:
    return Repository.open(repository.storage, KeySource(key_file=tmp_path / "repo.key"))


def test_a_standby_backup_across_a_timeline_switch_keeps_its_start_on_the_old_timeline(
    repo: Repository, tmp_path: Path
) -> None:
    """pg_basebackup from a standby whose upstream was promoted during the backup: its
    backup_manifest has two WAL-Ranges (timeline 1 from the start, timeline 2 to the end);
    strongroom records the last range's timeline and the first range's start LSN. Recovery
    begins on timeline 1 (segments 5..7) and goes on on timeline 2 from the switch (8):
    prune must keep 5..7 of timeline 1, and status must see no gap."""
    push_range(repo, 1, 1, 7, T0)
    push(repo, tl.name_of(1, 8) + ".partial", T0 + timedelta(minutes=8))
    push(repo, "00000002.history", T0 + timedelta(minutes=8))
    push_range(repo, 2, 8, 12, T0)
    b = base_backup(repo, 2, 5, T0 + timedelta(minutes=9))  # start 0/5000028 on timeline 1
    _rewrite_facts(repo, b, timeline=2)
    repo = _fresh(repo, tmp_path)
    stream = wal_status(repo).streams[0]
    assert not stream.gaps, stream.gaps
    (line,) = plan_wal_retention(repo).streams
    assert {f.file.name for f in line.delete} == {tl.name_of(1, n) for n in range(1, 5)}
    prune(repo, wait=0)
    assert {tl.name_of(1, n) for n in range(5, 8)} <= _names(repo)
    assert check_repository(repo).ok


def test_a_running_base_backup_holds_prune_off(repo: Repository) -> None:
    """``backup --physical`` holds its shared lock from before pg_basebackup starts until
    its manifest is written: a prune meanwhile (its start segment older than the oldest
    retained base backup's) must wait, not decide without it."""
    from strongroom.errors import RepositoryBusy
    from strongroom.repository.locks import acquire_shared

    push_range(repo, 1, 1, 12, T0)
    base_backup(repo, 1, 9, T0 + timedelta(minutes=9, seconds=30))
    running = acquire_shared(repo.storage, "backup of cluster@db:5432", wait=0)
    try:
        before = _names(repo)
        with pytest.raises(RepositoryBusy):
            prune(repo, wait=0)
        assert _names(repo) == before
        # the backup that began at segment 2 finishes: its manifest, then the lock goes
        base_backup(repo, 1, 2, T0 + timedelta(minutes=12))
    finally:
        running.release()
    assert prune(repo, wait=0).wal_files == 1  # segment 1 only
    assert tl.name_of(1, 2) in _names(repo)


def test_prune_killed_mid_deletion_leaves_no_gap(repo: Repository, tmp_path: Path) -> None:
    """A prune killed part-way through its WAL deletes (any subset deleted, in any order):
    every retained base backup still recovers, check is clean, the next prune finishes.
    The newest base backup forgotten, the older kept: the older decides."""
    push_range(repo, 1, 1, 30, T0)
    push(repo, tl.name_of(1, 6) + ".00000028.backup", T0 + timedelta(minutes=6))
    push(repo, tl.name_of(1, 30) + ".partial", T0 + timedelta(minutes=31))
    old = base_backup(repo, 1, 6, T0 + timedelta(minutes=6, seconds=30))
    new = base_backup(repo, 1, 20, T0 + timedelta(minutes=20, seconds=30))
    repo.storage.delete(manifest_key(new))
    plan = plan_wal_retention(repo)
    (line,) = plan.streams
    assert {f.file.name for f in line.delete} == {tl.name_of(1, n) for n in range(1, 6)}
    # the kill: every other planned delete done
    for file in list(line.delete)[::2]:
        repo.storage.delete(file.file.key)
    assert check_repository(repo).ok
    (stream,) = wal_status(repo).streams
    assert not stream.gaps and stream.window_start == T0 + timedelta(minutes=6, seconds=30)
    assert prune(repo, wait=0).wal_files == 2
    kept = _names(repo)
    assert {tl.name_of(1, n) for n in range(6, 31)} <= kept
    assert tl.name_of(1, 6) + ".00000028.backup" in kept
    assert tl.name_of(1, 30) + ".partial" in kept
    assert old in repo.backup_ids()


# --- the spool -------------------------------------------------------------------------
def test_a_spool_shared_by_two_clusters_keeps_one_clusters_failure_in_health(
    tmp_path: Path,
) -> None:
    """Two clusters archive into one spool folder (streams keep their files apart). One
    cannot spool (its stream's folder is unusable); the other's next successful push
    must not clear that failure from health: its archiver is still failing."""
    from strongroom.errors import StorageError
    from strongroom.services.wal_spool import spool_health, spool_push

    spool = tmp_path / "my spool"  # a space in the path
    a, b = "postgresql-7300000000000000001", "postgresql-7300000000000000002"
    source = tmp_path / "segment"
    source.write_bytes(b"w" * 8192)
    name = tl.name_of(1, 1)
    spool_push(spool, a, name, source, None)
    spool_push(spool, b, name, source, None)
    (spool / a / name).unlink()
    (spool / a).rmdir()
    (spool / a).write_bytes(b"")  # cluster a's folder is unusable now
    with pytest.raises(StorageError):
        spool_push(spool, a, tl.name_of(1, 2), source, None)
    assert spool_health(spool, 900).status == "critical"
    spool_push(spool, b, tl.name_of(1, 2), source, None)  # the other cluster goes on
    health = spool_health(spool, 900)
    assert health.status == "critical", health.reasons
    assert tl.name_of(1, 2) in " ".join(health.reasons)
    # cluster a's folder usable again: its next push clears its failure
    (spool / a).unlink()
    spool_push(spool, a, tl.name_of(1, 2), source, None)
    assert spool_health(spool, 900).status == "healthy"


def test_two_uploaders_and_a_pusher_at_once_lose_nothing(repo: Repository, tmp_path: Path) -> None:
    """Two ``wal-upload --once`` at the same moment (the lock serialises them) while
    ``wal-push`` keeps spooling, then pushes again files already uploaded (PostgreSQL
    retrying): every file ends in the repository exactly once, the spool empties, no
    conflict."""
    import threading

    from strongroom.services.wal_spool import spool_push, upload_until, waiting

    spool = tmp_path / "spool"
    names = [tl.name_of(1, n) for n in range(1, 41)]
    errors: list[BaseException] = []

    def pusher() -> None:
        try:
            for name in names + names[:10]:  # the first ten again: already archived
                source_n = tmp_path / f"src-{name}"
                source_n.write_bytes(name.encode() * 8)
                spool_push(spool, STREAM, name, source_n, None)
        except BaseException as exc:
            errors.append(exc)

    def uploader() -> None:
        try:
            for _ in range(15):
                upload_until(spool, lambda: repo, once=True)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=t) for t in (pusher, uploader, uploader)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    upload_until(spool, lambda: repo, once=True)
    assert waiting(spool) == []
    archived = [f.name for f in LogArchive(repo).files(STREAM)]
    assert sorted(archived) == names  # each once
    for name in names:
        (found,) = (f for f in LogArchive(repo).files(STREAM) if f.name == name)
        assert LogArchive(repo).read(found) == name.encode() * 8


def test_prune_while_wal_push_goes_on_deletes_only_what_it_planned(repo: Repository) -> None:
    """Pushes take no lock: a prune running while segments keep arriving (and an old,
    no longer needed one is pushed again by a retrying archiver) deletes only segments
    before the retained base backup's start; every new segment survives."""
    import threading

    push_range(repo, 1, 1, 20, T0)
    base_backup(repo, 1, 10, T0 + timedelta(minutes=10, seconds=30))
    stop = threading.Event()
    pushed: list[str] = []

    def archiver() -> None:
        number = 21
        while not stop.is_set() and number < 400:
            push(repo, tl.name_of(1, number))
            pushed.append(tl.name_of(1, number))
            push(repo, tl.name_of(1, 3))  # an old one again (a retry)
            number += 1

    thread = threading.Thread(target=archiver)
    thread.start()
    try:
        for _ in range(3):
            prune(repo, wait=30)
    finally:
        stop.set()
        thread.join(30)
    kept = _names(repo)
    assert {tl.name_of(1, n) for n in range(10, 21)} <= kept
    assert set(pushed) <= kept and len(pushed) > 0
    assert not {tl.name_of(1, n) for n in (1, 2, 4, 5, 6, 7, 8, 9)} & kept
    assert not wal_status(repo).streams[0].gaps


# --- a real streaming set-up: health quiet, then a real gap ----------------------------
def test_streaming_health_is_quiet_then_critical_on_a_real_gap(streaming: object) -> None:
    """wal-receive streaming a real cluster (no archive_command) and a base backup: check
    is clean and health shows the window with no gap (no critical); one segment the base
    backup needs deleted from the repository: check exits 7 naming it, health exits 2;
    prune (with wal-receive still streaming) never deletes what the base backup reads."""
    import time

    from strongroom.repository.keys import KeySource
    from strongroom.storage.local import LocalStorage
    from tests.wal.test_wal_receive import Receiver

    place, server = streaming  # type: ignore[misc]
    config = ("--config", str(place.config))
    clock = time.monotonic()
    receiver = Receiver(place, server, "--create-slot")
    try:
        server.query("postgres", "CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g")
        for _ in range(2):
            server.query("postgres", "SELECT pg_switch_wal()")
        backup = place.run("backup", "--physical", "--target", "pitr", *config, server.url())
        assert backup.returncode == 0, backup.stderr
        server.query("postgres", "INSERT INTO t VALUES (0)")
        server.query("postgres", "SELECT pg_switch_wal()")
        repo = Repository.open(LocalStorage(place.repo), KeySource(key_file=place.key))
        deadline = time.monotonic() + 30
        while True:  # the backup's segments archived whole: its window opens
            (stream,) = wal_status(repo).streams
            if stream.window_start is not None or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert stream.window_start is not None and not stream.gaps and not stream.unsure
        check = place.run("check", *config)
        assert check.returncode == 0 and "no problems found" in check.stdout, check.stdout
        health = place.run("health", *config)
        assert health.returncode in (0, 1), health.stdout + health.stderr  # no drill yet
        assert "no gap" in health.stdout and "critical" not in health.stdout.lower()
        before = _names_of(repo, stream.stream)
        assert place.run("prune", *config).returncode == 0
        (kept,) = repo.list_backups("pitr")
        facts = repo.private_section(kept).engine_state["physical"]  # type: ignore[index]
        start = tl.segment_name(int(facts["timeline"]), tl.parse_lsn(str(facts["start_lsn"])))
        after = _names_of(repo, stream.stream)
        assert {n for n in before if n[:24] >= start} <= after
        # a real gap: the base backup's start segment lost
        (lost,) = (f for f in LogArchive(repo).files(stream.stream) if f.name == start)
        repo.storage.delete(lost.key)
        check = place.run("check", *config)
        assert check.returncode == 7 and f"segment {start} is missing" in check.stdout + (
            check.stderr
        )
        health = place.run("health", *config)
        assert health.returncode == 2, health.stdout + health.stderr
        print(f"\nstreaming health, prune and gap: {time.monotonic() - clock:.1f} s")
    finally:
        receiver.stop()


def _names_of(repo: Repository, stream: str) -> set[str]:
    return {f.name for f in LogArchive(repo).files(stream)}


def test_segment_sizes_64mb_and_a_disagreement(repo: Repository, tmp_path: Path) -> None:
    """A cluster with 64 MiB segments (initdb --wal-segsize=64): 64 segments per log, so
    names wrap at ...3F; prune deletes only before the base backup's start in 64 MiB
    units. A base backup recording another size (pg_resetwal --wal-segsize kept the
    system identifier): nothing of the stream goes."""
    mb64 = 64 * 1024 * 1024
    names = [tl.name_of(1, n, mb64) for n in range(60, 71)]  # crosses log 0 -> 1
    assert names[3:5] == ["00000001000000000000003F", "000000010000000100000000"]
    for name in names:
        push(repo, name)
    b = base_backup(repo, 1, 1, T0 + timedelta(minutes=5))
    start = 65 * mb64 + 0x28
    _rewrite_facts(
        repo, b, wal_segment_size=mb64, start_lsn=tl.format_lsn(start),
        stop_lsn=tl.format_lsn(start + 0x100),
    )  # fmt: skip
    repo = _fresh(repo, tmp_path)
    (line,) = plan_wal_retention(repo).streams
    assert {f.file.name for f in line.delete} == set(names[:5]), line.kept_whole
    assert not wal_status(repo).streams[0].gaps
    other = base_backup(repo, 1, 66 * 4, T0 + timedelta(minutes=6))  # records 16 MiB
    repo = _fresh(repo, tmp_path)
    (line,) = plan_wal_retention(repo).streams
    assert not line.delete and "different WAL segment sizes" in (line.kept_whole or "")
    assert other in repo.backup_ids()


def test_a_read_only_spool_fails_in_one_line_and_health_goes_critical(
    tmp_path: Path,
) -> None:
    """The spool's disk remounted read-only (ext4 ``errors=remount-ro``): wal-push exits 6
    in one line, and since no status can be written there, health must still see it."""
    from tests.wal.test_wal_commands import fails, segment
    from tests.wal.test_wal_spool import _cli, _mount_tmpfs, _push, _umount, spooled

    c = next(spooled.__wrapped__(tmp_path))  # type: ignore[attr-defined]
    if not _mount_tmpfs(c["spool"], "40m"):
        pytest.skip("needs root to mount a tmpfs and remount it read-only")
    try:
        names = [f"0000000100000000000000{n:02X}" for n in range(32, 34)]
        assert _push(c, names[0], segment(names[0])).returncode == 0
        assert _cli("wal-upload", "--once", c=c).returncode == 0
        import subprocess

        subprocess.run(["mount", "-o", "remount,ro", str(c["spool"])], check=True)
        failed = _push(c, names[1], segment(names[1]))
        fails(failed, 6, f"cannot spool {names[1]} in .*")
        health = _cli("health", c=c)
        assert health.returncode == 2, health.stdout + health.stderr
        assert "read-only" in health.stdout
    finally:
        _umount(c["spool"])


def test_a_stray_file_in_the_spool_does_not_stop_the_uploads(tmp_path: Path) -> None:
    """A dedicated spool disk has ``lost+found``; someone leaves a note in a stream's
    folder: neither is uploaded, and neither stops the WAL behind it from going."""
    from strongroom.services.wal_spool import spool_health, spool_push, upload_until, waiting

    repository = _new_repo(tmp_path)
    spool = tmp_path / "spool"
    source = tmp_path / "segment"
    source.write_bytes(b"w" * 8192)
    spool_push(spool, STREAM, tl.name_of(1, 3), source, None)
    (spool / "lost+found").mkdir()
    (spool / "lost+found" / "#1234").write_bytes(b"x")
    (spool / STREAM / "notes.txt").write_bytes(b"x")
    assert [w.name for w in waiting(spool)] == [tl.name_of(1, 3)]
    report = upload_until(spool, lambda: repository, once=True)
    assert report.uploaded == 1 and waiting(spool) == []
    assert [f.name for f in LogArchive(repository).files(STREAM)] == [tl.name_of(1, 3)]
    assert spool_health(spool, 900).status == "healthy"


def _new_repo(tmp_path: Path) -> Repository:
    from strongroom.storage.local import LocalStorage

    storage = LocalStorage(tmp_path / "repo")
    Repository.init(storage, key_file=tmp_path / "repo.key")
    return Repository.open(storage, KeySource(key_file=tmp_path / "repo.key"))
