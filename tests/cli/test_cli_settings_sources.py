"""Every command reads the same settings from the same places (issue 16): each variable of
the scripts strongroom replaces, set alone (plus the minimum a command needs), reaches
every command that should use it; the configuration file (--config, STRONGROOM_CONFIG,
./strongroom.toml) too. The real command line, a real SQLite database and a real local
repository or moto's S3 server."""

from __future__ import annotations

import json
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.helpers import make_sqlite_db, run_cli_alone, text_ok


def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """The real CLI with none of strongroom's or the scripts' variables but ``env``."""
    return run_cli_alone(*args, env=env, cwd=cwd, timeout=timeout)


ok = text_ok


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return make_sqlite_db(tmp_path / "shop.db", users=50, orders=100)


# --- the repository: BACKUP_DIR, BACKUP_PATH -------------------------------------------
@pytest.mark.parametrize("variable", ["BACKUP_DIR", "BACKUP_PATH"])
def test_a_repository_folder_variable_reaches_every_command(
    tmp_path: Path, db: Path, variable: str
) -> None:
    env = {variable: str(tmp_path / "repo"), "DATABASE_URL": str(db)}
    assert "created repository" in ok(run("init", "--no-encryption", env=env, cwd=tmp_path))
    assert "complete" in ok(run("backup", env=env, cwd=tmp_path))
    assert "shop" in ok(run("list", env=env, cwd=tmp_path))
    assert "shop" in ok(run("show", "latest", env=env, cwd=tmp_path))
    restored = str(tmp_path / "restored.db")
    ok(run("restore", "latest", "--to", restored, "--dry-run", env=env, cwd=tmp_path))
    assert "checksum matches" in ok(run("verify", "latest", env=env, cwd=tmp_path))
    assert "would be forgotten" in ok(run("forget", "--dry-run", env=env, cwd=tmp_path))
    assert "dry run" in ok(run("prune", "--dry-run", env=env, cwd=tmp_path))
    health = run("health", "--json", env=env, cwd=tmp_path)
    assert [t["target"] for t in json.loads(health.stdout)["targets"]] == ["shop"]
    once = run("run", "--once", env=env, cwd=tmp_path)
    assert once.returncode == 0, once.stderr
    # without the variable: one line saying every way to name the repository
    bare = run("list", env={"DATABASE_URL": str(db)}, cwd=tmp_path)
    assert bare.returncode == 2
    assert bare.stderr.strip().splitlines() == [
        "error: no repository given: use --repo PATH_OR_URL, set STRONGROOM_REPO (or "
        "BACKUP_DIR / BACKUP_S3_BUCKET), or write [repository] location in strongroom.toml"
    ]


# --- the repository: the bucket names, the endpoint and the R2 credentials ---------------
@pytest.mark.parametrize("variable", ["BACKUP_S3_BUCKET", "S3_BUCKET", "S3_BACKUP_BUCKET"])
def test_a_bucket_variable_reaches_init_backup_and_list(
    tmp_path: Path, db: Path, s3_bucket: tuple[str, str], variable: str
) -> None:
    endpoint, bucket = s3_bucket
    env = {**_aws(), variable: bucket, "AWS_ENDPOINT_URL": endpoint}
    assert f"s3://{bucket}" in ok(run("init", "--no-encryption", env=env, cwd=tmp_path))
    ok(run("backup", str(db), env=env, cwd=tmp_path))
    assert "shop" in ok(run("list", env=env, cwd=tmp_path))


@pytest.mark.parametrize("variable", ["AWS_ENDPOINT_URL_S3", "STRONGROOM_S3_ENDPOINT"])
def test_an_endpoint_variable_reaches_init_backup_and_list(
    tmp_path: Path, db: Path, s3_bucket: tuple[str, str], variable: str
) -> None:
    endpoint, bucket = s3_bucket
    env = {**_aws(), "STRONGROOM_REPO": f"s3://{bucket}/r", variable: endpoint}
    ok(run("init", "--no-encryption", env=env, cwd=tmp_path))
    ok(run("backup", str(db), env=env, cwd=tmp_path))
    assert "shop" in ok(run("list", env=env, cwd=tmp_path))


def test_the_configured_endpoint_serves_every_command_after_init(
    tmp_path: Path, db: Path, s3_bucket: tuple[str, str]
) -> None:
    """The issue's case: init with the endpoint, then a backup that went to AWS."""
    endpoint, bucket = s3_bucket
    (tmp_path / "strongroom.toml").write_text(
        f'[repository]\nlocation = "s3://{bucket}/r"\ns3_endpoint = "{endpoint}"\n'
    )
    env = {**_aws(), "STRONGROOM_STORAGE_DEADLINE": "10"}
    init = run("init", "--no-encryption", env=env, cwd=tmp_path)
    assert init.returncode == 0, init.stderr
    assert "note:" not in init.stderr  # the endpoint is where every command finds it
    ok(run("backup", str(db), env=env, cwd=tmp_path))
    assert "shop" in ok(run("list", env=env, cwd=tmp_path))
    # an endpoint only on init's command line: init says where to keep it
    flag_only = run(
        "init", "--no-encryption", "--repo", f"s3://{bucket}/other", "--s3-endpoint", endpoint,
        env=env, cwd=tmp_path / "..",
    )  # fmt: skip
    assert "note: every command needs this S3 endpoint" in flag_only.stderr


def test_r2_credentials_reach_the_store_and_are_never_shown(
    tmp_path: Path, db: Path, s3_bucket: tuple[str, str]
) -> None:
    endpoint, bucket = s3_bucket
    secret = "r2-Secret-Key-Value-0123456789"
    env = {
        "CLOUDFLARE_ACCESS_KEY_ID": "r2key",
        "CLOUDFLARE_SECRET_ACCESS_KEY": secret,
        "AWS_DEFAULT_REGION": "us-east-1",
        "S3_BUCKET": bucket,
    }
    missing = run("list", env=env, cwd=tmp_path)
    assert missing.returncode == 2
    assert "set CLOUDFLARE_ACCOUNT_ID" in missing.stderr
    env["STRONGROOM_S3_ENDPOINT"] = endpoint
    outputs = [run("init", "--no-encryption", env=env, cwd=tmp_path)]
    outputs.append(run("-v", "backup", str(db), env=env, cwd=tmp_path))
    outputs.append(run("list", env=env, cwd=tmp_path))
    for result in outputs:
        assert result.returncode == 0, result.stderr
        assert secret not in result.stdout + result.stderr
    assert "shop" in outputs[-1].stdout


def _aws() -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


# --- retention: BACKUP_RETENTION_DAYS, RETENTION_DAYS, the configuration -----------------
@pytest.fixture
def repo_with_backup(tmp_path: Path, db: Path) -> dict[str, str]:
    env = {"STRONGROOM_REPO": str(tmp_path / "repo")}
    ok(run("init", "--no-encryption", env=env, cwd=tmp_path))
    ok(run("backup", str(db), env=env, cwd=tmp_path))
    return env


@pytest.mark.parametrize("variable", ["BACKUP_RETENTION_DAYS", "RETENTION_DAYS"])
def test_a_retention_variable_reaches_forget(
    tmp_path: Path, repo_with_backup: dict[str, str], variable: str
) -> None:
    out = ok(run("forget", "--dry-run", env={**repo_with_backup, variable: "30"}, cwd=tmp_path))
    assert f"policy: within 30d (from {variable})" in out


def test_forget_applies_the_configured_policy(
    tmp_path: Path, db: Path, repo_with_backup: dict[str, str]
) -> None:
    config = tmp_path / "conf" / "strongroom.toml"
    config.parent.mkdir()
    config.write_text(
        f'[repository]\nlocation = "{tmp_path / "repo"}"\n\n[targets.shop]\nurl = "{db}"\n\n'
        "[targets.shop.retention]\nkeep_last = 3\n"
    )
    env = {"RETENTION_DAYS": "30"}  # the file comes first
    for how in (["--config", str(config)], []):
        cwd = tmp_path if how else config.parent  # --config, or ./strongroom.toml
        out = ok(run("forget", "--dry-run", *how, env=env, cwd=cwd))
        assert f"policy: 3 last (from {config}, targets.shop.retention)" in out
    via_env = ok(run("list", env={"STRONGROOM_CONFIG": str(config)}, cwd=tmp_path))
    assert "shop" in via_env


# --- the configuration file: every command ------------------------------------------------
def test_every_command_reads_the_configuration_file(tmp_path: Path, db: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "strongroom.toml").write_text(
        f'[repository]\nlocation = "{tmp_path / "repo"}"\nkey_file = "{tmp_path / "k.key"}"\n\n'
        f'[targets.shop]\nurl = "{db}"\nschedule = {{ daily = "0 2 * * *" }}\n'
    )
    env: dict[str, str] = {}
    init = ok(run("init", env=env, cwd=work))
    assert f"key file:   {tmp_path / 'k.key'}" in init  # the configured key file
    assert "target       shop" in ok(run("backup", env=env, cwd=work))  # the configured target
    for command in (["list"], ["show", "latest"], ["verify", "latest"], ["stats"], ["check"]):
        ok(run(*command, env=env, cwd=work))
    ok(run("restore", "latest", "--to", str(tmp_path / "r.db"), "--dry-run", env=env, cwd=work))
    ok(run("prune", "--dry-run", env=env, cwd=work))
    assert "shop" in run("health", env=env, cwd=work).stdout
    assert "configuration ok" in ok(run("config", "check", env=env, cwd=work))


# --- notifications: SLACK_WEBHOOK_URL, SLACK_WEBHOOK, BACKUP_NOTIFICATION_EMAIL ------------
class _Hook(BaseHTTPRequestHandler):
    received: list[bytes] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        _Hook.received.append(self.rfile.read(length))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize("variable", ["SLACK_WEBHOOK_URL", "SLACK_WEBHOOK"])
def test_a_slack_variable_hears_of_a_failed_backup(
    tmp_path: Path, repo_with_backup: dict[str, str], variable: str
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Hook.received = []
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/services/T0/B0/secret"
        env = {**repo_with_backup, variable: url}
        failed = run("backup", str(tmp_path / "missing" / "gone.db"), env=env, cwd=tmp_path)
        assert failed.returncode != 0
        assert any(b"failed" in body for body in _Hook.received), failed.stderr
    finally:
        server.shutdown()
        server.server_close()


def test_a_notification_email_without_an_smtp_server_says_what_to_set(
    tmp_path: Path, db: Path, repo_with_backup: dict[str, str]
) -> None:
    env = {**repo_with_backup, "BACKUP_NOTIFICATION_EMAIL": "ops@example.com"}
    result = run("backup", str(db), env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "BACKUP_NOTIFICATION_EMAIL is set but SMTP_HOST is not" in result.stderr
