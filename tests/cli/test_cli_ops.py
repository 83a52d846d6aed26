"""config check, run, schedule, health, metrics and logs, as a user runs them."""

import json
import os
import signal
import subprocess
import time

import pytest

from tests.helpers import REPO_ROOT, STRONGROOM, make_sqlite_db, run_cli
from tests.helpers import cli_ok as _ok


@pytest.fixture()
def setup(tmp_path):
    db = make_sqlite_db(tmp_path / "shop.db", users=800, orders=800)
    config = tmp_path / "strongroom.toml"
    config.write_text(
        f"""
timezone = "UTC"
[repository]
location = "{tmp_path / "repo"}"
key_file = "{tmp_path / "repo.key"}"

[targets.shop]
url = "sqlite://{db}"
schedule = {{ daily = "0 2 * * *" }}
retention = {{ keep_last = 50 }}
"""
    )
    env = {"STRONGROOM_CONFIG": str(config)}
    result = run_cli(
        "init",
        env={
            "STRONGROOM_REPO": str(tmp_path / "repo"),
            "STRONGROOM_KEY_FILE": str(tmp_path / "repo.key"),
        },
    )
    assert result.returncode == 0
    return tmp_path, db, config, env


def test_config_check_names_field_and_line(tmp_path, setup):
    env = setup[3]
    assert "configuration ok" in _ok(run_cli("config", "check", env=env))
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[repository]\nlocation = "/x"\n[targets.shop]\nurl = "sqlite:///x.db"\n'
        'schedule = { daily = "25 * * *" }\n'
    )
    result = run_cli("config", "check", "--config", str(bad), env=env)
    out = result.stdout.decode()
    assert result.returncode == 2
    assert "line 5: targets.shop.schedule" in out and "not a cron expression" in out


def test_run_once_then_health_and_metrics(setup):
    tmp_path, _, _, env = setup
    assert "backup:shop:daily" in _ok(run_cli("schedule", env=env))
    _ok(run_cli("run", "--once", env=env))
    listed = json.loads(_ok(run_cli("list", "--json", "--repo", str(tmp_path / "repo"), env=env)))
    assert [b["tags"] for b in listed] == [["daily"]]

    result = run_cli("health", "--json", "--metrics-file", str(tmp_path / "m.prom"), env=env)
    assert result.returncode == 1  # recent backup, but no restore drill yet: warning
    report = json.loads(result.stdout)
    assert report["status"] == "warning"
    assert "no restore drill" in report["targets"][0]["reasons"][0]
    assert (
        'strongroom_last_success_timestamp_seconds{target="shop"}'
        in (tmp_path / "m.prom").read_text()
    )

    repo = ["--repo", str(tmp_path / "repo"), "--key-file", str(tmp_path / "repo.key")]
    _ok(run_cli("verify", "latest", "--restore", *repo, env=env))
    result = run_cli("health", env=env)
    assert result.returncode == 0 and "overall: healthy" in result.stdout.decode()


def test_health_is_critical_after_a_failed_run(setup):
    tmp_path, db, _, env = setup
    _ok(run_cli("run", "--once", env=env))
    db.rename(tmp_path / "moved.db")
    repo = ["--repo", str(tmp_path / "repo"), "--key-file", str(tmp_path / "repo.key")]
    failed = run_cli("backup", str(db), "--target", "shop", *repo, env=env)
    assert failed.returncode == 5
    result = run_cli("health", env=env)
    assert result.returncode == 2
    assert "last backup run failed (DatabaseUnreachable)" in result.stdout.decode()


def test_the_scripts_environment_variables_alone(tmp_path):
    db = make_sqlite_db(tmp_path / "app.db", users=300, orders=300)
    env = {
        "BACKUP_DIR": str(tmp_path / "backups"),
        "DATABASE_URL": f"sqlite://{db}",
        "STRONGROOM_KEY_FILE": str(tmp_path / "k"),
        "BACKUP_RETENTION_DAYS": "30",
    }
    _ok(run_cli("init", "--repo", str(tmp_path / "backups"), env=env))
    _ok(run_cli("run", "--once", env=env))
    listed = json.loads(
        _ok(run_cli("list", "--json", "--repo", str(tmp_path / "backups"), env=env))
    )
    assert len(listed) == 1 and listed[0]["target"] == "app"


def test_json_logs_carry_backup_id_and_target_and_no_secrets(tmp_path, setup):
    _, db, _, env = setup
    repo = ["--repo", str(tmp_path / "repo"), "--key-file", str(tmp_path / "repo.key")]
    result = run_cli("-v", "--log-format", "json", "backup", str(db), *repo, env=env)
    assert result.returncode == 0
    records = [
        json.loads(line) for line in result.stderr.decode().splitlines() if line.startswith("{")
    ]
    assert records, result.stderr.decode()
    complete = [r for r in records if "complete" in r["message"]]
    assert complete and complete[0]["target"] == "shop" and complete[0]["backup_id"]
    failing = run_cli(
        "-v",
        "--log-format",
        "json",
        "backup",
        "postgresql://u:topsecret@127.0.0.1:1/x",
        *repo,
        env=env,
    )
    assert "topsecret" not in failing.stderr.decode() + failing.stdout.decode()


def test_sigterm_lets_the_running_backup_finish(tmp_path, setup):
    _, db, _, env = setup
    make_sqlite_db(db, users=40000, orders=120000, seed=11)  # a backup that takes a moment
    process = subprocess.Popen(
        [*STRONGROOM, "-v", "run"],
        env={**os.environ, **env},
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    locks = tmp_path / "repo" / "locks"
    while time.monotonic() < deadline and not (locks.exists() and any(locks.iterdir())):
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0, err.decode()
    assert "stopped" in err.decode()
    repo = ["--repo", str(tmp_path / "repo"), "--key-file", str(tmp_path / "repo.key")]
    listed = json.loads(_ok(run_cli("list", "--json", *repo, env=env)))
    assert len(listed) == 1  # finished, not abandoned
    assert not any(locks.iterdir())
    _ok(run_cli("verify", "latest", *repo, env=env))
