"""Attacks on the scheduler and its alerts (issue 15 items 8-11): odd time zones and
daylight-saving days, a scheduler killed between claiming a run and running it, two
schedulers at once, odd target names in the alert keys, a repository that refuses the
alert bookkeeping, garbage alert state, a notification channel that is down, a secret in
a webhook URL, and web jobs polled while they finish. Real receivers on loopback, real
subprocesses; small fakes only where a fault must be injected."""

from __future__ import annotations

import json
import logging
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from strongroom.config import ConfigError, parse_settings
from strongroom.errors import StorageError
from strongroom.notify.dispatch import Notifier
from strongroom.notify.webhook import WebhookChannel
from strongroom.repository.keys import KeySource
from strongroom.repository.repository import Repository
from strongroom.repository.runs import runs_of
from strongroom.services.daemon import Daemon
from strongroom.services.schedule import Job, is_fixed_time, latest_due, next_run, runs_between
from strongroom.storage.local import LocalStorage
from tests.helpers import STRONGROOM, cli_fails, cli_ok, make_sqlite_db, run_cli
from tests.notify.conftest import Receiver

U = UTC


def _utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def _iso(runs: list[datetime]) -> list[str]:
    return [r.isoformat() for r in runs]


# --- schedules in odd zones ------------------------------------------------------------
def _consistent(cron: str, zone: str, start: datetime, end: datetime) -> list[datetime]:
    """The runs in (start, end], checked against latest_due and next_run at and around
    each run (compared in UTC)."""
    job = Job("backup", "t", "daily", cron)
    runs = runs_between(job, start, end, zone)
    previous: datetime | None = None
    for run in runs:
        instant = run.astimezone(UTC)
        assert latest_due(job, instant, zone).isoformat() == run.isoformat(), run
        if previous is not None:
            before = latest_due(job, instant - timedelta(seconds=1), zone)
            assert before.isoformat() == previous.isoformat(), (run, before)
            assert next_run(job, previous.astimezone(UTC), zone).isoformat() == run.isoformat()
        previous = run
    return runs


def test_lord_howe_half_hour_change_runs_once_per_local_day():
    # 2026-04-05 02:00 LHDT (+11) -> 01:30 LHST (+10:30): 01:30-02:00 happens twice
    runs = _consistent("45 1 * * *", "Australia/Lord_Howe", _utc(2026, 4, 2), _utc(2026, 4, 6))
    assert _iso(runs) == [
        "2026-04-03T01:45:00+11:00",
        "2026-04-04T01:45:00+11:00",
        "2026-04-05T01:45:00+11:00",  # the first 01:45 only
        "2026-04-06T01:45:00+10:30",
    ]
    # 2026-10-04 02:00 (+10:30) -> 02:30 (+11): 02:15 does not exist, runs when the gap ends
    runs = _consistent("15 2 * * *", "Australia/Lord_Howe", _utc(2026, 10, 1), _utc(2026, 10, 5))
    assert _iso(runs) == [
        "2026-10-02T02:15:00+10:30",
        "2026-10-03T02:15:00+10:30",
        "2026-10-04T02:30:00+11:00",
        "2026-10-05T02:15:00+11:00",
    ]
    # a wildcard schedule runs on real time: each real 20 minutes of the repeated half hour
    runs = _consistent(
        "*/20 * * * *", "Australia/Lord_Howe", _utc(2026, 4, 4, 14), _utc(2026, 4, 4, 16, 10)
    )
    assert _iso(runs) == [
        "2026-04-05T01:20:00+11:00",
        "2026-04-05T01:40:00+11:00",
        "2026-04-05T01:40:00+10:30",
        "2026-04-05T02:00:00+10:30",
        "2026-04-05T02:20:00+10:30",
        "2026-04-05T02:40:00+10:30",
    ]


def test_apia_skipped_day_loses_no_monthly_run():
    """Samoa skipped 2011-12-30 (UTC-10 -> UTC+14, a 24-hour jump). The monthly run of
    the 30th runs when the gap ends, daily runs keep their days, hourly runs real hours."""
    monthly = _consistent("0 2 30 * *", "Pacific/Apia", _utc(2011, 11, 1), _utc(2012, 2, 1))
    assert _iso(monthly) == [
        "2011-11-30T02:00:00-10:00",
        "2011-12-31T00:00:00+14:00",
        "2012-01-30T02:00:00+14:00",
    ]
    daily = _consistent("0 2 * * *", "Pacific/Apia", _utc(2011, 12, 29), _utc(2011, 12, 31))
    assert _iso(daily) == [
        "2011-12-29T02:00:00-10:00",
        "2011-12-31T00:00:00+14:00",  # the 30th's, once, when the missing day ends
        "2011-12-31T02:00:00+14:00",
    ]
    hourly = _consistent("0 * * * *", "Pacific/Apia", _utc(2011, 12, 30, 8), _utc(2011, 12, 30, 11))
    assert _iso(hourly) == [
        "2011-12-29T23:00:00-10:00",
        "2011-12-31T00:00:00+14:00",
        "2011-12-31T01:00:00+14:00",
    ]


@pytest.mark.parametrize(
    ("cron", "zone", "start", "end", "count"),
    [
        ("@weekly", "Europe/Berlin", _utc(2026, 10, 18), _utc(2026, 11, 3), 2),
        ("@weekly", "Europe/Berlin", _utc(2026, 3, 22), _utc(2026, 4, 7), 2),
        ("0 2 * * 1-5", "Europe/Berlin", _utc(2026, 3, 26), _utc(2026, 4, 2), 6),
        ("0 2 * * 1-5", "Europe/Berlin", _utc(2026, 10, 22), _utc(2026, 10, 29), 4),
        ("30 2 1 * *", "Europe/Berlin", _utc(2026, 1, 1), _utc(2027, 1, 1), 12),
        ("30 2 * * *", "America/Santiago", _utc(2026, 4, 1), _utc(2026, 4, 10), 9),
        ("0 0 * * *", "America/Santiago", _utc(2026, 9, 1), _utc(2026, 9, 10), 9),
        ("0 0 * * *", "America/Havana", _utc(2026, 3, 5), _utc(2026, 3, 12), 7),
        ("30 1 * * *", "Europe/Dublin", _utc(2026, 10, 23), _utc(2026, 10, 27), 4),
        ("30 2 * * *", "UTC", _utc(2026, 3, 27), _utc(2026, 3, 31), 4),
        ("*/15 * * * *", "Europe/Berlin", _utc(2026, 10, 24, 23), _utc(2026, 10, 25, 2), 12),
    ],
)
def test_schedules_across_change_days_are_consistent(cron, zone, start, end, count):
    """Every run is what latest_due and next_run say around it, and a fixed-time
    schedule runs at most once per local day (@weekly, weekdays, the 1st at 02:30)."""
    runs = _consistent(cron, zone, start, end)
    assert len(runs) == count, _iso(runs)
    if is_fixed_time(cron):
        days = [r.date() for r in runs]
        assert len(days) == len(set(days)), _iso(runs)


def test_no_time_zone_means_utc_and_an_invalid_one_is_one_error_line(tmp_path):
    settings = parse_settings(
        f'[repository]\nlocation = "{tmp_path}"\n[targets.shop]\nurl = "sqlite:///x.db"\n'
        'schedule = { daily = "30 2 * * *" }\n'
    )
    assert settings.timezone == "UTC"
    config = tmp_path / "bad.toml"
    config.write_text(f'timezone = "Mars/Olympus"\n[repository]\nlocation = "{tmp_path}"\n')
    cli_fails(run_cli("run", "--once", "--config", str(config)), 2, "unknown time zone")


# --- the scheduler, in this process ----------------------------------------------------
class FlakyStorage:
    """A local repository whose alert bookkeeping (``alerts/``) fails, as a read-only
    folder or an S3 endpoint answering 503 would; everything else works."""

    def __init__(self, inner: LocalStorage, fail_reads: bool = False) -> None:
        self._inner = inner
        self._fail_reads = fail_reads

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self._inner, name)

    def _check(self, key: str) -> None:
        if key.startswith("alerts/"):
            raise StorageError(f"cannot write {key}: read-only file system")

    def put(self, key: str, data: bytes) -> None:
        self._check(key)
        self._inner.put(key, data)

    def create(self, key: str, data: bytes) -> bool:
        self._check(key)
        return self._inner.create(key, data)

    def delete(self, key: str) -> None:
        self._check(key)
        self._inner.delete(key)

    def list(self, prefix: str) -> Iterator[str]:
        if self._fail_reads and prefix.startswith("alerts/"):
            raise StorageError("S3 endpoint answered 503 for alerts/")
        return self._inner.list(prefix)


def _repo(tmp_path: Path) -> Path:
    repo_dir = tmp_path / "repo"
    if not repo_dir.exists():
        Repository.init(LocalStorage(repo_dir), key_file=tmp_path / "k")
    return repo_dir


def _scheduler(
    tmp_path: Path,
    targets: dict[str, str],
    *,
    channels: list[object] | None = None,
    now: datetime | None = None,
    storage: object | None = None,
    extra: str = "",
) -> Daemon:
    repo_dir = _repo(tmp_path)
    lines = ['timezone = "UTC"', "[repository]", f'location = "{repo_dir}"']
    for name, url in targets.items():
        lines += [
            f"[targets.{json.dumps(name)}]",
            f'url = "{url}"',
            'schedule = { daily = "0 2 * * *" }',
            "retention = { keep_last = 100 }",
            extra,
        ]
    settings = parse_settings("\n".join(lines) + "\n")
    repo = Repository.open(
        storage or LocalStorage(repo_dir),  # type: ignore[arg-type]
        KeySource(key_file=tmp_path / "k"),
    )
    notifier = Notifier(channels, attempts=1, sleep=lambda _s: None) if channels else None  # type: ignore[arg-type]
    moment = now or datetime.now(UTC)
    return Daemon(settings, repo, {}, notifier=notifier, clock=lambda: moment)


def _hook(receiver: Receiver, path: str = "/hook") -> WebhookChannel:
    return WebhookChannel(receiver.url + path, None, timeout=5)


def _kinds(receiver: Receiver) -> list[str]:
    return [json.loads(r.body)["kind"] for r in receiver.requests]


@pytest.fixture
def loopback() -> Iterator[Receiver]:
    """The notification tests' HTTP receiver, here too."""
    from tests.notify.conftest import receiver as fixture

    yield from fixture.__wrapped__()  # type: ignore[attr-defined]


def test_odd_target_names_get_their_own_alert_keys_inside_alerts(tmp_path, loopback):
    """Spaces, unicode, names that look like each other or like a hashed key: each target
    is alerted once, under its own key, and every key stays inside alerts/stale/."""
    names = ["a_b", "a b", "шоп", "h-" + "0" * 32, "x" * 100, "x" * 101, "x" * 128]
    targets = {name: f"sqlite://{tmp_path / 'gone.db'}" for name in names}
    for _ in range(2):
        _scheduler(tmp_path, targets, channels=[_hook(loopback)], now=_utc(2026, 11, 22, 1)).tick()
    stale = [json.loads(r.body) for r in loopback.requests if b"backup_stale" in r.body]
    assert sorted(e["target"] for e in stale) == sorted(names)
    keys = [
        p.relative_to(tmp_path / "repo").as_posix()
        for p in (tmp_path / "repo" / "alerts").rglob("*")
        if p.is_file()
    ]
    assert len(keys) == len(names) and all(k.startswith("alerts/stale/") for k in keys), keys


def test_a_target_name_the_rules_refuse_fails_its_job_not_the_whole_pass(tmp_path, loopback):
    """The scheduler used to die on targets named ".." or "a/b" (exit 70: a storage key
    with '..'; exit 2 before the other targets ran, with the run claimed). The configuration
    now refuses such names when it is read (`config check` names them); settings made
    another way (here: added after validation) still only fail their own jobs, exit 2,
    one line each, and the rest runs."""
    db = make_sqlite_db(tmp_path / "shop.db", users=20, orders=20)
    with pytest.raises(ConfigError, match="is not allowed"):
        parse_settings(f'[repository]\nlocation = "/r"\n[targets.".."]\nurl = "sqlite://{db}"\n')
    daemon = _scheduler(
        tmp_path, {"shop": f"sqlite://{db}"}, channels=[_hook(loopback)], now=_utc(2026, 11, 22, 3)
    )
    for odd in ("..", "a/b"):
        daemon.settings.targets[odd] = daemon.settings.targets["shop"]
    records = daemon.tick()
    assert [(r.target, r.ok) for r in records] == [("shop", True)]
    assert sorted((f.job, f.exit_code) for f in daemon.failures) == [
        ("backup of ..", 2),
        ("backup of a/b", 2),
    ]
    assert all("is not allowed" in f.message for f in daemon.failures)
    assert not any((tmp_path / "repo" / "jobs" / "backup").glob("a*"))
    assert daemon.tick() == []  # shop's run is done; nothing was claimed for the others


def _stale(receiver: Receiver) -> list[str]:
    return [k for k in _kinds(receiver) if k == "backup_stale"]


def test_a_stale_alert_no_channel_took_is_sent_again_next_pass(tmp_path, loopback):
    """The channel is down: the alert was never delivered, so the next pass sends it again
    (it used to be recorded as sent, and never repeated); once delivered, it is quiet."""
    targets = {"shop": f"sqlite://{tmp_path / 'gone.db'}"}
    loopback.fail_first = 3  # pass 1: backup_failed and backup_stale get HTTP 500; pass 2 too
    for _ in range(4):
        _scheduler(tmp_path, targets, channels=[_hook(loopback)], now=_utc(2026, 11, 22, 1)).tick()
    assert _kinds(loopback)[0] == "backup_failed"
    assert _stale(loopback) == ["backup_stale"] * 3  # failed, failed, delivered, then quiet


def test_one_channel_down_does_not_repeat_the_alert_on_the_others(tmp_path, loopback):
    targets = {"shop": f"sqlite://{tmp_path / 'gone.db'}"}
    down = WebhookChannel("http://127.0.0.1:9/hook", None, name="down", timeout=2)
    for _ in range(3):
        daemon = _scheduler(
            tmp_path, targets, channels=[_hook(loopback), down], now=_utc(2026, 11, 22, 1)
        )
        daemon.tick()
    assert _stale(loopback) == ["backup_stale"]


def test_run_once_with_the_channel_down_exits_with_the_jobs_code(tmp_path):
    config = tmp_path / "strongroom.toml"
    config.write_text(
        f"""
[repository]
location = "{_repo(tmp_path)}"
key_file = "{tmp_path / "k"}"
[targets.shop]
url = "sqlite://{tmp_path / "gone.db"}"
schedule = {{ daily = "0 2 * * *" }}
[notifications]
[[notifications.channels]]
type = "webhook"
url = "http://127.0.0.1:9/hook/T0ps3cretT0ken?token=qu3ryS3cretValue"
"""
    )
    result = run_cli("run", "--once", "--config", str(config))
    err = cli_fails(result, 5, r"error: backup of shop failed: SQLite database .* does not exist")
    assert "T0ps3cretT0ken" not in err and "qu3ryS3cretValue" not in err
    assert "notification backup_failed via webhook" in err  # the failed delivery is logged


def test_alert_bookkeeping_that_cannot_be_written_does_not_fail_the_pass(
    tmp_path, loopback, caplog
):
    """A read-only repository folder (or S3 failing) for alerts/: the backup job is not
    failed by it, the alert is still sent (better twice than never), and the failure is
    logged in one line."""
    db = make_sqlite_db(tmp_path / "shop.db", users=20, orders=20)
    _repo(tmp_path)
    for fail_reads in (False, True):
        storage = FlakyStorage(LocalStorage(tmp_path / "repo"), fail_reads=fail_reads)
        daemon = _scheduler(
            tmp_path,
            {"shop": f"sqlite://{db}", "gone": f"sqlite://{tmp_path / 'gone.db'}"},
            channels=[_hook(loopback)],
            now=_utc(2026, 11, 22, 3) + timedelta(days=int(fail_reads)),
            storage=storage,
        )
        with caplog.at_level(logging.ERROR, logger="strongroom.daemon"):
            records = daemon.tick()
        assert ("shop", True) in [(r.target, r.ok) for r in records]
        assert [f.job for f in daemon.failures] == ["backup of gone"]
    stale = [json.loads(r.body)["target"] for r in loopback.requests if b"backup_stale" in r.body]
    assert stale == ["gone", "gone"]
    logged = [r.getMessage() for r in caplog.records if "alert" in r.getMessage()]
    assert logged and all("\n" not in m for m in logged), logged


def test_garbage_alert_state_is_survived(tmp_path, loopback):
    """A file where the target's alert folder should be, garbage in a state object, and a
    stray key: the pass goes on, the target is alerted once, the garbage cleaned up."""
    targets = {"shop": f"sqlite://{tmp_path / 'gone.db'}", "cart": f"sqlite://{tmp_path / 'x.db'}"}
    stale_dir = _repo(tmp_path) / "alerts" / "stale"
    stale_dir.mkdir(parents=True)
    (stale_dir / "shop").write_bytes(b"\x00garbage")  # a file, not a folder
    (stale_dir / "cart").mkdir()
    (stale_dir / "cart" / "junk").write_bytes(b"{not json")
    for _ in range(3):
        daemon = _scheduler(
            tmp_path, targets, channels=[_hook(loopback)], now=_utc(2026, 11, 22, 1)
        )
        daemon.tick()
    stale = sorted(json.loads(r.body)["target"] for r in loopback.requests if b"stale" in r.body)
    assert stale == ["cart", "shop"]
    assert not (stale_dir / "cart" / "junk").exists()


def test_a_secret_in_the_webhook_url_never_shows_in_errors(loopback, caplog):
    """The receiver answers 403 and echoes what it got: the path token and the query
    token are both hidden in the logged line."""
    loopback.fail_first, loopback.fail_status = 10, 403
    loopback.fail_body = b"bad token qu3ryS3cretValue for /hook/T0ps3cretT0ken; use ?token="
    channel = WebhookChannel(
        loopback.url + "/hook/T0ps3cretT0ken?token=qu3ryS3cretValue&x=1", None, timeout=5
    )
    from strongroom.notify.events import Event

    with caplog.at_level(logging.WARNING, logger="strongroom.notify"):
        [result] = Notifier([channel], attempts=2, sleep=lambda _s: None).notify(
            Event("backup_failed", "shop", "x")
        )
    assert not result.ok and "HTTP 403" in (result.error or "")
    text = (result.error or "") + " ".join(r.getMessage() for r in caplog.records)
    assert "T0ps3cretT0ken" not in text and "qu3ryS3cretValue" not in text, text


def test_an_unexpected_failure_of_one_job_does_not_stop_the_pass(tmp_path, loopback):
    """A drill whose check_sql file is Latin-1 (UnicodeDecodeError, not a StrongroomError)
    used to end the pass: the next drill was skipped and stayed claimed for a day, and
    `run` died. Now that job fails (exit 70, one line, notified), the rest runs."""
    db = make_sqlite_db(tmp_path / "shop.db", users=20, orders=20)
    checks = tmp_path / "checks.sql"
    checks.write_bytes("-- vérifier\nSELECT 1;\n".encode("latin-1"))
    extra = f'verify = {{ schedule = "0 5 * * *", check_sql = "{checks}" }}'
    targets = {"a": f"sqlite://{db}", "b": f"sqlite://{db}"}
    daemon = _scheduler(
        tmp_path, targets, channels=[_hook(loopback)], now=_utc(2026, 11, 22, 6), extra=extra
    )
    records = daemon.tick()
    assert [(r.target, r.kind, r.ok) for r in records] == [
        ("a", "backup", True),
        ("b", "backup", True),
        ("a", "verify", False),
        ("b", "verify", False),
    ]
    assert [(f.job, f.exit_code) for f in daemon.failures] == [
        ("restore drill of a", 70),
        ("restore drill of b", 70),
    ]
    assert _kinds(loopback).count("verify_failed") == 2
    # the crashed drills' records keep the slot they ran for: the job history lists them as
    # runs of their schedule, not as commands someone typed
    failed = [r for r in records if not r.ok]
    assert len(failed) == 2
    assert all((r.scheduled_for or "").startswith("2026-11-22T05:00") for r in failed), failed
    assert daemon.tick() == []  # marked done: not repeated at every pass


# --- real processes ----------------------------------------------------------------------
def _config(tmp_path: Path, url: str, receiver: Receiver, extra: str = "") -> Path:
    config = tmp_path / "strongroom.toml"
    config.write_text(
        f"""
[repository]
location = "{_repo(tmp_path)}"
key_file = "{tmp_path / "k"}"
[targets.shop]
url = "{url}"
schedule = {{ daily = "0 2 * * *" }}
retention = {{ keep_last = 50 }}
{extra}
[notifications]
[[notifications.channels]]
type = "webhook"
url = "{receiver.url}/hook"
"""
    )
    return config


def test_a_scheduler_killed_after_claiming_a_run_does_not_lose_it(tmp_path, loopback):
    """kill -9 between claiming the run and finishing it (here: from the pre_backup hook).
    The next `run --once` on this machine sees the claim's process is gone and runs the
    job (it used to wait out the 24-hour claim: the day's backup was lost); the one after
    runs nothing (no double run)."""
    db = make_sqlite_db(tmp_path / "shop.db", users=20, orders=20)
    marker = tmp_path / "killed-once"
    hook = (
        f'hooks = {{ pre_backup = ["test -e {marker} || {{ touch {marker}; kill -9 $PPID; }}"] }}'
    )
    config = _config(tmp_path, f"sqlite://{db}", loopback, extra=hook)
    killed = run_cli("run", "--once", "--config", str(config))
    assert killed.returncode == -9, killed.stderr.decode()
    assert list((tmp_path / "repo" / "jobs").rglob("claim.json"))  # left behind
    cli_ok(run_cli("run", "--once", "--config", str(config)))
    cli_ok(run_cli("run", "--once", "--config", str(config)))
    repo = Repository.open(LocalStorage(tmp_path / "repo"), KeySource(key_file=tmp_path / "k"))
    assert len(repo.list_backups()) == 1
    assert [r.ok for r in runs_of(repo.storage) if r.kind == "backup"] == [True]


def test_two_run_once_at_the_same_moment_run_once_and_alert_once(tmp_path, loopback):
    config = _config(tmp_path, f"sqlite://{tmp_path / 'gone.db'}", loopback)
    env = dict(__import__("os").environ, STRONGROOM_CONFIG=str(config))
    for name in ("STRONGROOM_REPO", "STRONGROOM_KEY_FILE"):
        env.pop(name, None)
    procs = [
        subprocess.Popen([*STRONGROOM, "run", "--once"], env=env, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    codes = sorted(p.wait(timeout=60) for p in procs)
    for p in procs:
        assert p.stderr is not None
        p.stderr.close()
    assert codes == [0, 5]  # one ran (and failed: exit 5), the other found it claimed
    assert sorted(_kinds(loopback)) == ["backup_failed", "backup_stale"]


# --- web jobs polled while they finish ----------------------------------------------------
def test_a_web_job_polled_concurrently_is_never_succeeded_before_its_backup_is_listed(tmp_path):
    from fastapi.testclient import TestClient

    from tests.web.conftest import build_app

    db = make_sqlite_db(tmp_path / "shop.db", users=200, orders=200)
    web = build_app(tmp_path, {"shop": f"sqlite://{db}"})
    seen: list[str] = []
    problems: list[str] = []
    with TestClient(web.app) as client:
        for _ in range(3):
            job_id = client.post("/api/backups", json={"target": "shop"}, headers=web.admin).json()[
                "job_id"
            ]
            done = threading.Event()

            def poll(job_id: str = job_id, done: threading.Event = done) -> None:
                deadline = time.monotonic() + 30
                while not done.is_set() and time.monotonic() < deadline:
                    job = client.get(f"/api/jobs/{job_id}", headers=web.admin).json()
                    seen.append(job["status"])
                    if job["status"] == "succeeded":
                        listed = client.get("/api/backups", headers=web.viewer).json()
                        ids = [b["backup_id"] for b in listed]
                        if job.get("backup_id") not in ids:
                            problems.append(f"{job.get('backup_id')} not in {ids}")
                        done.set()
                    elif job["status"] == "failed":
                        problems.append(str(job))
                        done.set()

            pollers = [threading.Thread(target=poll) for _ in range(3)]
            for t in pollers:
                t.start()
            for t in pollers:
                t.join()
    assert problems == []
    assert "succeeded" in seen
