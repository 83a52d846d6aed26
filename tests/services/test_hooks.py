"""Hooks (issue 14, point 7): how a command runs (environment, output, timeout), which
target's hooks a restore destination gets, and the scheduler running them once."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from strongroom.config import parse_settings
from strongroom.engines import open_engine
from strongroom.notify.dispatch import Notifier
from strongroom.repository.keys import KeySource
from strongroom.repository.repository import Repository
from strongroom.repository.runs import runs_of
from strongroom.services.daemon import Daemon
from strongroom.services.hooks import (
    HookFailed,
    TargetHooks,
    destination_hooks,
    run_hooks,
    run_post_restore,
)
from strongroom.storage.local import LocalStorage
from tests.helpers import make_sqlite_db


def _alive(pid: int) -> bool:
    """Running (a zombie nobody reaped yet counts as ended)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def test_a_hook_past_its_timeout_is_stopped_with_everything_it_started(tmp_path):
    pid_file = tmp_path / "pid"
    hooks = TargetHooks(
        "shop",
        pre_backup=(f"sleep 60 & echo $! > {pid_file}; wait",),
        timeout_seconds=0.5,
    )
    started = time.monotonic()
    with pytest.raises(HookFailed, match=r"pre_backup hook .* did not finish within 0.5 s") as exc:
        run_hooks(hooks, "pre_backup", {})
    assert exc.value.exit_code == 8
    assert time.monotonic() - started < 10
    deadline = time.monotonic() + 5
    while _alive(int(pid_file.read_text())) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(int(pid_file.read_text()))  # the child of the shell went with it


def test_the_environment_names_the_job_and_adds_no_secret(tmp_path):
    out = tmp_path / "env"
    engine = open_engine("postgresql://app:s3cr3t-pw@db.internal:5432/shop")
    hooks = TargetHooks(
        "shop",
        post_restore=(f"env > {out}", "echo next >> " + str(out)),
        env={"PATH": "/usr/bin:/bin", "APP_SETTING": "kept"},
    )
    run_post_restore(
        hooks, None, backup_id="B1", engine=engine, safety_backup_id="S1", old_kept_as=None
    )
    seen = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)
    assert seen["STRONGROOM_HOOK"] == "post_restore" and seen["STRONGROOM_TARGET"] == "shop"
    assert seen["STRONGROOM_BACKUP_ID"] == "B1" and seen["STRONGROOM_SAFETY_BACKUP_ID"] == "S1"
    assert (
        seen["STRONGROOM_ENGINE"] == "postgresql" and "db.internal" in seen["STRONGROOM_DATABASE"]
    )
    assert "STRONGROOM_OLD_KEPT_AS" not in seen  # nothing kept: not set at all
    assert seen["APP_SETTING"] == "kept"  # the caller's environment is passed on
    assert "s3cr3t-pw" not in out.read_text()
    assert out.read_text().endswith("next\n")  # commands run in order


def test_the_first_failing_command_stops_the_rest_and_its_last_line_is_quoted(tmp_path):
    marker = tmp_path / "ran"
    hooks = TargetHooks(
        "shop",
        post_backup=(
            "echo 'migrating'; echo 'postgresql://u:pw123@h/db unreachable' >&2; exit 2",
            f"touch {marker}",
        ),
    )
    with pytest.raises(HookFailed) as exc:
        run_hooks(hooks, "post_backup", {})
    assert "exited with status 2" in exc.value.message
    assert "(last output: postgresql://u:***@h/db unreachable)" in exc.value.message
    assert "pw123" not in exc.value.message  # neither from the output nor from the command
    assert not marker.exists()


def test_a_restore_runs_the_hooks_of_the_target_its_destination_is(tmp_path, monkeypatch):
    monkeypatch.setenv("SHOP_URL", "postgresql://app:pw@db.internal:5432/shop")
    (tmp_path / "app.db").touch()
    settings = parse_settings(
        f"""
        [repository]
        location = "{tmp_path / "repo"}"
        [targets.shop]
        url_env = "SHOP_URL"
        hooks = {{ post_restore = ["migrate"] }}
        [targets.app]
        url = "sqlite://{tmp_path / "app.db"}"
        hooks = {{ post_restore = ["reload"], timeout_seconds = 30 }}
        [targets.unset]
        url_env = "NOT_SET_ANYWHERE"
        hooks = {{ post_restore = ["never"] }}
        """
    )

    def hooks_for(url: str) -> TargetHooks:
        return destination_hooks(settings, open_engine(url))

    # the same database as another user (a superuser restoring): still shop's
    assert hooks_for("postgresql://postgres:x@db.internal:5432/shop").post_restore == ("migrate",)
    assert hooks_for("postgresql://app:pw@db.internal:5432/shop").target == "shop"
    # a copy beside it, or the same name on another server: no hooks
    assert hooks_for("postgresql://app:pw@db.internal:5432/shop_copy").post_restore == ()
    assert hooks_for("postgresql://app:pw@elsewhere:5432/shop").post_restore == ()
    # SQLite: the same file, however it is written
    monkeypatch.chdir(tmp_path)
    same_file = hooks_for("sqlite:///" + str(tmp_path / "." / "app.db"))
    assert same_file.post_restore == ("reload",) and same_file.timeout_seconds == 30
    assert hooks_for("app.db").target == "app"
    assert hooks_for(f"sqlite://{tmp_path / 'other.db'}").target is None
    # no configuration: no hooks
    assert destination_hooks(None, open_engine("app.db")).post_restore == ()


class _Recorder:
    name = "recorder"

    def __init__(self) -> None:
        self.events: list = []

    def send(self, event) -> None:
        self.events.append(event)


def test_the_scheduler_runs_backup_hooks_once_and_keeps_a_backup_whose_post_hook_failed(
    tmp_path,
):
    log = tmp_path / "hooks.log"
    repo_dir = tmp_path / "repo"
    Repository.init(LocalStorage(repo_dir), key_file=tmp_path / "k")
    db = make_sqlite_db(tmp_path / "shop.db", users=100, orders=100)
    settings = parse_settings(
        f"""
        [repository]
        location = "{repo_dir}"
        [targets.shop]
        url = "sqlite://{db}"
        schedule = {{ daily = "0 2 * * *" }}
        retention = {{ keep_last = 100 }}
        [targets.shop.hooks]
        pre_backup = ['echo "pre $STRONGROOM_TARGET" >> {log}']
        post_backup = ['echo "post $STRONGROOM_BACKUP_ID" >> {log}', "exit 9"]
        """
    )
    repo = Repository.open(LocalStorage(repo_dir), KeySource(key_file=tmp_path / "k"))
    recorder = _Recorder()
    notifier = Notifier([recorder], attempts=1, sleep=lambda _s: None)
    clock = lambda: datetime(2026, 11, 22, 11, 0, tzinfo=UTC)  # noqa: E731
    records = Daemon(settings, repo, {}, notifier=notifier, clock=clock).tick()
    (backup,) = repo.list_backups()
    assert log.read_text().splitlines() == ["pre shop", f"post {backup.backup_id}"]  # once each
    # the backup is complete and kept, its run succeeded; the hook's failure is notified
    assert [(r.kind, r.ok, r.backup_id) for r in records] == [("backup", True, backup.backup_id)]
    assert [r.ok for r in runs_of(repo.storage)] == [True]  # one run record, not two
    (event,) = recorder.events
    assert (
        event.kind == "hook_failed"
        and event.title() == "strongroom: post_backup hook of shop FAILED"
    )
    assert "is complete and kept" in event.summary and "status 9" in event.summary
