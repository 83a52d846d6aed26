"""Issue 18, point 5, where the WAL's state reaches people, on a real archiving cluster
whose ``archive_command`` spools (``[wal] spool``): ``strongroom serve`` empties the spool
as ``run`` does (and stops its uploader cleanly; with ``--no-scheduler`` it does not
upload, and says so), ``list --json`` carries each target's recoverable window, last
segment, lag and gap, and ``run`` notifies WAL lag past the recovery point and a WAL gap
once per change of state, through a real HTTP receiver and a real SMTP server."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email import message_from_bytes
from pathlib import Path
from typing import Any

import httpx
import pytest

from strongroom_servers.postgres import PgServer, free_port
from tests.notify.conftest import Receiver, SmtpServer
from tests.notify.conftest import receiver as receiver
from tests.notify.conftest import smtp_plain as smtp_plain
from tests.wal.support import WalPlace, archived_up_to, make_place, start_archiving

WAL_NAME = re.compile(r"[0-9A-F]{24}")
WAL_KEYS = {
    "streams",
    "window_start",
    "window_end",
    "last_segment",
    "last_segment_at",
    "lag_seconds",
    "gap",
    "first_missing",
    "unsure",
}


@pytest.fixture(scope="module")
def spooling() -> Iterator[tuple[WalPlace, PgServer, Path]]:
    """A cluster archiving into a spool (``[wal] spool`` in the place's config), with one
    base backup; no automatic segment switch (``archive_timeout = 0``): WAL is archived
    only when a test switches."""
    place = make_place()
    spool = place.root / "spool"
    spool.mkdir(mode=0o700)
    place.chown(spool)
    with place.config.open("a") as conf:
        conf.write(f'[wal]\nspool = "{spool}"\n')
    server = start_archiving(
        place, {"archive_mode": "on", "wal_level": "replica", "archive_timeout": "0"}
    )
    try:
        server.query("postgres", "CREATE TABLE marker (id serial PRIMARY KEY, at timestamptz)")
        backup = place.run("backup", "--physical", "--config", str(place.config), server.url())
        assert backup.returncode == 0, backup.stderr
        upload(place)
        yield place, server, spool
    finally:
        server.stop()
        place.remove()


def upload(place: WalPlace) -> None:
    done = place.run("wal-upload", "--once", "--config", str(place.config))
    assert done.returncode == 0, done.stderr


def archived(place: WalPlace) -> dict[str, Path]:
    """Segment name -> object file, of the whole segments in the repository."""
    found: dict[str, Path] = {}
    for path in (place.repo / "logs").rglob("*"):
        name = path.name.rsplit("-", 1)[0]
        if path.is_file() and WAL_NAME.fullmatch(name):
            found[name] = path
    return found


def spooled(spool: Path) -> list[str]:
    return sorted(p.name for p in spool.rglob("*") if p.is_file() and WAL_NAME.fullmatch(p.name))


def new_segment(place: WalPlace, server: PgServer) -> str:
    """A marker row, a segment switch, the archiver's push into the spool, an upload."""
    server.query("postgres", "INSERT INTO marker (at) VALUES (now())")
    name = archived_up_to(server)
    upload(place)
    return name


def wait_for(predicate: Any, what: str, timeout: float = 60.0) -> float:
    """Seconds until ``predicate()`` holds."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# --- serve empties the spool ---------------------------------------------------------------
@contextlib.contextmanager
def serving(place: WalPlace, *extra: str) -> Iterator[subprocess.Popen[str]]:
    """The real ``strongroom serve`` as the server's OS user (who owns the spool and the
    repository), answering on a free port; SIGTERM after."""
    port = free_port()
    args = ["serve", "--config", str(place.config), "--port", str(port)]
    args += ["--service-db", str(place.root / "service.db"), *extra]
    user: dict[str, Any] = {}
    if place.user is not None:
        user = {"user": place.user.pw_uid, "group": place.user.pw_gid, "extra_groups": []}
    process = subprocess.Popen(
        [str(place.launcher), *args],
        env={**place.env(), "PYTHONUNBUFFERED": "1"},
        cwd=place.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **user,
    )
    try:

        def answers() -> bool:
            assert process.poll() is None, process.communicate()
            try:
                httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2)
            except httpx.TransportError:
                return False
            return True

        wait_for(answers, "serve to answer", 90)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def test_serve_uploads_the_spool_and_stops_its_uploader_cleanly(
    spooling: tuple[WalPlace, PgServer, Path],
) -> None:
    place, server, spool = spooling
    assert spooled(spool) == []
    with serving(place) as process:
        server.query("postgres", "INSERT INTO marker (at) VALUES (now())")
        name = archived_up_to(server)  # PostgreSQL counts it archived: it is in the spool
        seconds = wait_for(lambda: name in archived(place), f"{name} uploaded by serve", 30)
        wait_for(lambda: name not in spooled(spool), f"{name} removed from the spool", 10)
        print(f"serve uploaded {name} {seconds:.2f} s after PostgreSQL archived it")
        assert seconds < 10
        # a burst, then SIGTERM while the uploader may be at work: nothing is lost
        names = []
        for _ in range(4):
            server.query("postgres", "INSERT INTO marker (at) VALUES (now())")
            names.append(server.query("postgres", "SELECT pg_walfile_name(pg_switch_wal())")[0][0])
        wait_for(lambda: any(n in archived(place) or n in spooled(spool) for n in names), "a push")
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        _, err = process.communicate(timeout=60)
        stopped = time.monotonic() - started
    print(f"serve stopped {stopped:.2f} s after SIGTERM")
    assert process.returncode == 0, err
    assert "Traceback" not in err, err
    assert stopped < 15, err
    archived_up_to(server)  # the archiver finishes the burst (into the spool)
    for segment in names:  # each one archived, or still waiting: never gone
        assert segment in archived(place) or segment in spooled(spool), segment
    assert not [p for p in place.repo.rglob("*") if p.name.startswith(".tmp")]
    upload(place)
    assert spooled(spool) == []


def test_serve_without_scheduler_does_not_upload_and_says_so(
    spooling: tuple[WalPlace, PgServer, Path],
) -> None:
    place, server, spool = spooling
    upload(place)  # whatever an earlier test left waiting
    with serving(place, "--no-scheduler") as process:
        server.query("postgres", "INSERT INTO marker (at) VALUES (now())")
        name = archived_up_to(server)
        time.sleep(4)  # serve's uploader would have taken it within about a second
        assert spooled(spool) == [name] and name not in archived(place)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    warning = [line for line in err.splitlines() if "WAL spool" in line]
    assert len(warning) == 1, err
    assert str(spool) in warning[0] and "--no-scheduler" in warning[0], warning
    assert "wal-upload" in warning[0], warning
    upload(place)
    assert spooled(spool) == [] and name in archived(place)


# --- list --json ---------------------------------------------------------------------------
def list_json(place: WalPlace) -> list[dict[str, Any]]:
    listed = place.run("list", "--json", "--config", str(place.config))
    assert listed.returncode == 0, listed.stderr
    entries: list[dict[str, Any]] = json.loads(listed.stdout)
    return entries


def _utc(text: str) -> datetime:
    assert text.endswith("Z"), text
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert moment.utcoffset() is not None and moment.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    return moment


def test_list_json_carries_each_targets_wal(spooling: tuple[WalPlace, PgServer, Path]) -> None:
    place, server, _ = spooling
    newest = new_segment(place, server)
    db = place.root / "shop.db"
    import sqlite3

    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (x)")
    place.chown(db)
    dump = place.run("backup", "--config", str(place.config), f"sqlite://{db}")
    assert dump.returncode == 0, dump.stderr
    entries = list_json(place)
    bases = [e for e in entries if e["engine"] == "postgresql"]
    others = [e for e in entries if e["engine"] == "sqlite"]
    assert bases and others
    for entry in others:
        assert entry["wal"] is None  # no base backups: no WAL
    wal = bases[0]["wal"]
    assert all(e["wal"] == wal for e in bases)  # the target's, on each of its entries
    assert set(wal) == WAL_KEYS, wal
    assert wal["streams"] and wal["streams"][0].startswith("postgresql-")
    assert wal["last_segment"] == newest
    start, end, last = (_utc(wal[k]) for k in ("window_start", "window_end", "last_segment_at"))
    assert start <= end == last <= datetime.now(UTC)
    assert isinstance(wal["lag_seconds"], float) and 0 <= wal["lag_seconds"] < 120
    assert wal["gap"] is False and wal["first_missing"] is None and wal["unsure"] == []
    # the human listing says the same
    human = place.run("list", "--config", str(place.config))
    assert f"last segment {newest}" in human.stdout, human.stdout


# --- run notifies WAL lag and gaps -----------------------------------------------------------
def _alert_config(place: WalPlace, receiver: Receiver, smtp: SmtpServer) -> Path:
    """The place's configuration with a recovery point of 15 s, a webhook and an email
    channel (the ``[wal]`` table is the last one of the place's file)."""
    config = place.root / "alerts.toml"
    config.write_text(
        place.config.read_text()
        + 'recovery_point = "15s"\n'
        + "[notifications]\n"
        + f'[[notifications.channels]]\ntype = "webhook"\nurl = "{receiver.url}/hook"\n'
        + f'[[notifications.channels]]\ntype = "email"\nhost = "{smtp.host}"\n'
        + f'port = {smtp.port}\nsender = "strongroom@example.com"\n'
        + 'recipients = ["ops@example.com"]\nstarttls = false\n'
    )
    place.chown(config)
    return config


def _events(receiver: Receiver, kind: str) -> list[dict[str, Any]]:
    found = [json.loads(r.body) for r in receiver.requests]
    return [e for e in found if e["kind"] == kind]


def _mails(smtp: SmtpServer, word: str) -> list[str]:
    subjects = [str(message_from_bytes(m.content)["Subject"]) for m in smtp.handler.messages]
    return [s for s in subjects if word in s]


def _run_once(place: WalPlace, config: Path) -> str:
    done = place.run("-v", "run", "--once", "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    return done.stderr


def test_run_notifies_wal_lag_and_gap_once_per_change(
    spooling: tuple[WalPlace, PgServer, Path],
    receiver: Receiver,
    smtp_plain: SmtpServer,
) -> None:
    place, server, _ = spooling
    config = _alert_config(place, receiver, smtp_plain)
    # fresh WAL: nothing to say
    newest = new_segment(place, server)
    _run_once(place, config)
    assert _events(receiver, "wal_lagging") == [] and _events(receiver, "wal_gap") == []
    # lagging past the recovery point: one alert, on both channels, not repeated
    lag_at = archived(place)[newest].stat().st_mtime + 16
    time.sleep(max(0.0, lag_at - time.time()))
    _run_once(place, config)
    _run_once(place, config)
    lagging = _events(receiver, "wal_lagging")
    assert len(lagging) == 1, lagging
    event = lagging[0]
    target = next(e["target"] for e in list_json(place) if e["engine"] == "postgresql")
    assert event["target"] == target and "LAGS" in event["title"], event
    assert event["details"]["last_segment"] == newest
    assert event["details"]["recovery_point_seconds"] == 15
    assert event["details"]["lag_seconds"] > 15
    assert "recovery point" in event["summary"]
    assert len(_mails(smtp_plain, "WAL archiving")) == 1
    # archiving catches up: the record goes, a line says so, no new alert
    new_segment(place, server)
    caught_up = _run_once(place, config)
    assert "within the recovery point again" in caught_up, caught_up
    assert len(_events(receiver, "wal_lagging")) == 1
    assert not list((place.repo / "alerts" / "wal-lag").rglob("*.json"))
    # a gap: a segment the base backup needs is gone from the repository
    names = [new_segment(place, server) for _ in range(3)]
    objects = archived(place)
    aside = place.root / "aside"
    shutil.move(objects[names[1]], aside)
    try:
        _run_once(place, config)
        _run_once(place, config)
        gaps = _events(receiver, "wal_gap")
        assert len(gaps) == 1, gaps
        assert gaps[0]["details"]["first_missing"] == names[1]
        assert "GAP" in gaps[0]["title"] and names[1] in gaps[0]["summary"]
        assert len(_mails(smtp_plain, "GAP")) == 1
        wal = next(e["wal"] for e in list_json(place) if e["engine"] == "postgresql")
        assert wal["gap"] is True and wal["first_missing"] == names[1]
    finally:
        shutil.move(aside, objects[names[1]])
    healed = _run_once(place, config)
    assert "has no gap any more" in healed, healed
    assert len(_events(receiver, "wal_gap")) == 1
    assert not list((place.repo / "alerts" / "wal-gap").rglob("*.json"))
    assert os.path.exists(objects[names[1]])


# --- a base backup with no WAL at all (no server: a manifest as backup --physical writes) ---
class _Recorder:
    name = "recorder"

    def __init__(self) -> None:
        self.events: list[Any] = []

    def send(self, event: Any) -> None:
        self.events.append(event)


@pytest.mark.parametrize("on_stale", [True, False])
def test_a_base_backup_without_any_wal_alerts_once_past_the_recovery_point(
    tmp_path: Path, on_stale: bool
) -> None:
    from datetime import timedelta

    from strongroom.config import parse_settings
    from strongroom.notify.dispatch import Notifier
    from strongroom.repository.keys import KeySource
    from strongroom.repository.repository import Repository
    from strongroom.services.daemon import Daemon
    from strongroom.storage.local import LocalStorage
    from tests.services.test_wal_status import base_backup

    storage = LocalStorage(tmp_path / "repo")
    Repository.init(storage, key_file=tmp_path / "k")
    repo = Repository.open(storage, KeySource(key_file=tmp_path / "k"))
    ended = datetime.now(UTC) - timedelta(minutes=5)
    base_backup(repo, 1, 3, ended)
    settings = parse_settings(
        f'[repository]\nlocation = "{tmp_path / "repo"}"\n[wal]\nrecovery_point = "10m"\n'
        f"[notifications]\non_stale = {str(on_stale).lower()}\n"
    )
    recorder = _Recorder()
    notifier = Notifier([recorder], attempts=1, sleep=lambda _s: None)
    clock = {"now": datetime.now(UTC)}
    daemon = Daemon(settings, repo, {}, notifier=notifier, clock=lambda: clock["now"])
    daemon.tick()  # the base backup ended 5 min ago: its WAL may be on its way
    assert recorder.events == []
    clock["now"] += timedelta(minutes=6)  # 11 min: past the recovery point
    daemon.tick()
    daemon.tick()
    if not on_stale:  # on_stale = false: no lag alerts
        assert recorder.events == []
        return
    (event,) = recorder.events
    assert event.kind == "wal_lagging" and event.target == "cluster@db:5432"
    assert event.title() == "strongroom: WAL archiving of cluster@db:5432 LAGS (no WAL archived)"
    assert "no WAL archived for the base backups of cluster@db:5432" in event.summary
    assert event.details["last_segment"] is None
