"""The scheduler loop, one tick at a time, with an injected clock."""

import threading
from datetime import UTC, datetime, timedelta

import pytest

from strongroom.config import parse_settings
from strongroom.notify.dispatch import Notifier
from strongroom.repository.keys import KeySource
from strongroom.repository.repository import Repository
from strongroom.repository.runs import runs_of
from strongroom.repository.verifications import last_verifications
from strongroom.services.daemon import Daemon, JobsFailed
from strongroom.storage.local import LocalStorage
from tests.helpers import make_sqlite_db


class Recorder:
    """A notification channel that remembers what it was sent."""

    name = "recorder"

    def __init__(self):
        self.events = []

    def send(self, event):
        self.events.append(event)


class Clock:
    def __init__(self, start):
        self.now = start

    def __call__(self):
        return self.now


def _settings(repo_dir, db, extra=""):
    if "retention" not in extra:  # backups here all finish in the same real minute
        extra += "\nretention = { keep_last = 100 }"
    return parse_settings(
        f"""
        timezone = "Europe/Berlin"
        [repository]
        location = "{repo_dir}"
        [targets.shop]
        url = "sqlite://{db}"
        schedule = {{ daily = "0 2 * * *", weekly = "0 3 * * 0" }}
        {extra}
        [notifications]
        size_change_percent = 20
        """
    )


@pytest.fixture()
def world(tmp_path):
    repo_dir = tmp_path / "repo"
    Repository.init(LocalStorage(repo_dir), key_file=tmp_path / "k")
    db = make_sqlite_db(tmp_path / "shop.db", users=500, orders=500)
    return tmp_path, repo_dir, db


def _daemon(world, clock, extra="", recorder=None, metrics=None):
    tmp_path, repo_dir, db = world
    repo = Repository.open(LocalStorage(repo_dir), KeySource(key_file=tmp_path / "k"))
    notifier = Notifier([recorder], attempts=1, sleep=lambda _s: None) if recorder else None
    return Daemon(
        _settings(repo_dir, db, extra),
        repo,
        {},
        notifier=notifier,
        metrics_file=metrics,
        clock=clock,
    )


SUNDAY_NOON = datetime(2026, 11, 22, 11, 0, tzinfo=UTC)  # 12:00 in Berlin, a Sunday


def test_due_jobs_run_once_with_all_their_tags(world):
    clock = Clock(SUNDAY_NOON)
    daemon = _daemon(world, clock)
    records = daemon.tick()
    assert [(r.kind, r.ok, r.tags) for r in records] == [("backup", True, ("daily", "weekly"))]
    assert daemon.tick() == []  # same instant: nothing is due any more
    clock.now += timedelta(hours=3)
    assert daemon.tick() == []
    backups = daemon.repo.list_backups()
    assert len(backups) == 1 and backups[0].tags == ("daily", "weekly")


def test_runs_missed_while_down_run_once_at_start(world):
    clock = Clock(SUNDAY_NOON)
    _daemon(world, clock).tick()
    clock.now += timedelta(days=3)  # down for three days: three dailies missed
    records = _daemon(world, clock).tick()
    assert [r.tags for r in records] == [("daily",)]
    assert len(_daemon(world, clock).repo.list_backups()) == 2


def test_two_daemons_never_run_the_same_job_twice(world):
    clock = Clock(SUNDAY_NOON)
    daemons = [_daemon(world, clock) for _ in range(2)]
    for day in range(6):
        clock.now = SUNDAY_NOON + timedelta(days=day)
        barrier = threading.Barrier(2)

        def tick(daemon):
            barrier.wait()
            daemon.tick()

        threads = [threading.Thread(target=tick, args=(d,)) for d in daemons]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    backups = daemons[0].repo.list_backups()
    # Six daily runs and one weekly run were due; every job ran exactly once (the two
    # daemons may split Sunday's daily and weekly jobs between them).
    tags = sorted(tag for m in backups for tag in m.tags)
    assert tags == ["daily"] * 6 + ["weekly"]
    runs = [r for r in runs_of(daemons[0].repo.storage) if r.kind == "backup"]
    assert len(runs) == len(backups)


def test_a_failing_backup_is_recorded_and_notified_and_never_raises(world):
    _, _, db = world
    db.unlink()
    recorder = Recorder()
    records = _daemon(world, Clock(SUNDAY_NOON), recorder=recorder).tick()
    assert [(r.ok, r.error_kind) for r in records] == [(False, "DatabaseUnreachable")]
    kinds = [e.kind for e in recorder.events]
    assert "backup_failed" in kinds and "backup_stale" in kinds
    failed = next(e for e in recorder.events if e.kind == "backup_failed")
    assert "does not exist" in failed.summary


def test_size_change_is_notified(world):
    _, _, db = world
    clock = Clock(SUNDAY_NOON)
    recorder = Recorder()
    daemon = _daemon(world, clock, recorder=recorder)
    daemon.tick()
    make_sqlite_db(db, users=3000, orders=3000, seed=3)
    clock.now += timedelta(days=1)
    daemon.tick()
    changed = [e for e in recorder.events if e.kind == "size_changed"]
    assert len(changed) == 1 and changed[0].details["change_percent"] > 20


def test_hooks_and_retention_and_metrics(world):
    tmp_path = world[0]
    marker = tmp_path / "hook-ran"
    extra = f"""
        hooks = {{ post_backup = ["echo $STRONGROOM_BACKUP_ID >> {marker}"] }}
        retention = {{ keep_last = 1 }}
    """
    clock = Clock(SUNDAY_NOON)
    metrics = tmp_path / "strongroom.prom"
    daemon = _daemon(world, clock, extra=extra, metrics=metrics)
    daemon.tick()
    clock.now += timedelta(days=1)
    daemon.tick()
    backups = daemon.repo.list_backups()
    assert len(backups) == 1  # keep_last = 1 forgot the first
    assert marker.read_text().split()[-1] == backups[0].backup_id
    text = metrics.read_text()
    assert 'strongroom_last_backup_raw_bytes{target="shop"}' in text
    assert 'strongroom_backup_failures_total{target="shop"} 0.0' in text


def test_a_failing_pre_backup_hook_fails_the_job(world):
    records = _daemon(world, Clock(SUNDAY_NOON), extra='hooks = { pre_backup = ["exit 3"] }').tick()
    assert [(r.ok, r.error_kind) for r in records] == [(False, "HookFailed")]


def test_scheduled_restore_drill_is_recorded(world):
    clock = Clock(SUNDAY_NOON)
    daemon = _daemon(world, clock, extra='verify = { schedule = "0 5 * * *" }')
    records = daemon.tick()
    assert [r.kind for r in records] == ["backup", "verify"]
    assert records[1].ok
    newest = daemon.repo.list_backups()[-1]
    record = last_verifications(daemon.repo.storage)[newest.backup_id]
    assert record.ok and record.kind == "restore" and record.restore_seconds > 0


def test_scheduled_drill_of_a_mysql_target_restores_into_mysql(tmp_path, mariadb_server, mysql_db):
    """Without a scratch URL, the drill restores into a new database on the target's own
    MySQL server (it used to go to a temporary SQLite file and fail)."""
    from tests.fixtures.mariadb import fill_sample

    name = mysql_db.rsplit("/", 1)[1]
    fill_sample(mariadb_server, name, customers=50)
    repo_dir = tmp_path / "repo"
    Repository.init(LocalStorage(repo_dir), key_file=tmp_path / "k")
    settings = parse_settings(
        f"""
        [repository]
        location = "{repo_dir}"
        [targets.shop]
        url = "{mysql_db}"
        schedule = {{ daily = "0 2 * * *" }}
        verify = {{ schedule = "0 5 * * *" }}
        retention = {{ keep_last = 100 }}
        """
    )
    before = mariadb_server.databases()
    repo = Repository.open(LocalStorage(repo_dir), KeySource(key_file=tmp_path / "k"))
    records = Daemon(settings, repo, {}, clock=Clock(SUNDAY_NOON)).tick()
    assert [(r.kind, r.ok) for r in records] == [("backup", True), ("verify", True)], records
    record = last_verifications(repo.storage)[repo.list_backups()[-1].backup_id]
    assert record.ok and record.kind == "restore" and record.tables_checked > 0
    assert mariadb_server.databases() == before  # the scratch database was dropped


# --- daylight saving ----------------------------------------------------------------------
def test_a_daily_job_runs_once_on_the_autumn_change_day(world):
    """02:30 Europe/Berlin happens twice on 2026-10-25 (CEST, then CET): one backup."""
    tmp_path, repo_dir, db = world
    settings = parse_settings(
        f"""
        timezone = "Europe/Berlin"
        [repository]
        location = "{repo_dir}"
        [targets.shop]
        url = "sqlite://{db}"
        schedule = {{ daily = "30 2 * * *" }}
        retention = {{ keep_last = 100 }}
        """
    )
    repo = Repository.open(LocalStorage(repo_dir), KeySource(key_file=tmp_path / "k"))
    clock = Clock(datetime(2026, 10, 24, 23, 0, tzinfo=UTC))  # 01:00 CEST
    daemon = Daemon(settings, repo, {}, clock=clock)
    daemon.tick()  # the run of the 24th, missed "while down"
    ran = []
    while clock.now < datetime(2026, 10, 25, 4, 0, tzinfo=UTC):  # to 05:00 CET
        clock.now += timedelta(minutes=10)
        ran += [(clock.now, r.scheduled_for) for r in daemon.tick()]
    assert [(when.isoformat(), due) for when, due in ran] == [
        ("2026-10-25T00:30:00+00:00", "2026-10-25T02:30:00+02:00")
    ]
    assert len(repo.list_backups()) == 2


# --- alerts -------------------------------------------------------------------------------
def _stale(recorder):
    return [e for e in recorder.events if e.kind == "backup_stale"]


def test_no_good_backup_yet_alerts_once_across_processes(world):
    """A target with no good backup: "no good backup yet" (not "0.0 h ago"), sent once,
    also by later passes of new processes (run --once from cron, serve restarts)."""
    _, _, db = world
    db.unlink()
    recorder = Recorder()
    clock = Clock(datetime.now(UTC))
    for _ in range(4):  # four `run --once` a quarter of an hour apart
        _daemon(world, clock, recorder=recorder).tick()
        clock.now += timedelta(minutes=15)
    stale = _stale(recorder)
    assert len(stale) == 1, [e.summary for e in stale]
    assert stale[0].title() == "strongroom: backups of shop are STALE (no good backup yet)"
    assert stale[0].summary.startswith("no good backup of shop yet")
    assert "0.0 h" not in stale[0].summary


def test_a_stale_backup_alerts_once_per_condition(world):
    tmp_path, repo_dir, db = world
    recorder = Recorder()
    clock = Clock(datetime.now(UTC))
    first = _daemon(world, clock, recorder=recorder)
    assert [r.ok for r in first.tick()] == [True]
    assert _stale(recorder) == []
    saved = tmp_path / "saved.db"
    db.rename(saved)
    clock.now += timedelta(hours=31)  # the daily run fails; the good backup is 31 h old
    for _ in range(3):
        _daemon(world, clock, recorder=recorder).tick()
        clock.now += timedelta(minutes=15)
    stale = _stale(recorder)
    assert len(stale) == 1
    assert "last good backup 31 h ago" in stale[0].title(), stale[0].title()
    assert stale[0].summary.startswith("last good backup of shop 31 h ago")
    assert list((repo_dir / "alerts").rglob("*.json"))  # the state is in the repository

    saved.rename(db)  # a new backup: still stale by this clock, but a new condition
    clock.now += timedelta(days=1)
    assert [r.ok for r in _daemon(world, clock, recorder=recorder).tick()] == [True]
    _daemon(world, clock, recorder=recorder).tick()
    assert len(_stale(recorder)) == 2
    newest = first.repo.list_backups()[-1].backup_id
    assert _stale(recorder)[1].details["last_good_backup"] == newest

    clock.now = datetime.now(UTC)  # fresh again: the state is cleared...
    _daemon(world, clock, recorder=recorder).tick()
    assert list((repo_dir / "alerts").rglob("*.json")) == []
    clock.now += timedelta(hours=30)  # ...so the next staleness alerts again
    _daemon(world, clock, recorder=recorder).tick()
    _daemon(world, clock, recorder=recorder).tick()
    assert len(_stale(recorder)) == 3


def test_failures_of_a_pass_are_listed_with_their_exit_codes(world):
    _, _, db = world
    daemon = _daemon(world, Clock(SUNDAY_NOON), extra='verify = { schedule = "0 5 * * *" }')
    db.unlink()
    daemon.tick()
    assert [(f.job, f.exit_code) for f in daemon.failures] == [
        ("backup of shop", 5),
        ("restore drill of shop", 1),
    ]
    error = JobsFailed(daemon.failures)
    assert error.exit_code == 5 and "\n" not in error.message
    assert (
        error.message.startswith("backup of shop failed: ") and "1 more job failed" in error.message
    )
