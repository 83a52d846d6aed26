"""Settings break-it round (issue 16, environment and configuration parts): a hostile user
and a newcomer against the one order every command reads its settings in (flags,
STRONGROOM_*, the configuration file, the scripts' variables). A stray or broken
./strongroom.toml, relative paths in the file from cron's working directory, empty and
odd variables, bucket variables in every form people write, retention days, a webhook that
is down or not a URL, R2 beside AWS variables, and the precedence of every pair. The real
command line in a subprocess, real SQLite files, moto's S3 server, a loopback receiver."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from strongroom.errors import UsageError
from strongroom.services.settings_sources import Sources
from tests.helpers import make_sqlite_db, run_cli_alone, text_ok

DEAD_ENDPOINT = "http://127.0.0.1:9"  # discard port: nothing listens


def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """The real CLI with none of strongroom's or the scripts' variables but ``env``."""
    return run_cli_alone(*args, env=env, cwd=cwd, timeout=timeout)


ok = text_ok


def one_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The one ``error:`` line of a failed command with exit ``code``."""
    assert result.returncode == code, result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return errors[0]


def aws(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "STRONGROOM_STORAGE_DEADLINE": "2",
    }


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return make_sqlite_db(tmp_path / "shop.db", users=20, orders=40)


@pytest.fixture
def work(tmp_path: Path) -> Path:
    folder = tmp_path / "work"
    folder.mkdir()
    return folder


# --- a stray ./strongroom.toml ----------------------------------------------------------
def test_a_broken_file_in_the_working_directory_is_named_as_such(work: Path) -> None:
    """--help and --version still work; a command given every flag fails in one line that
    says the file was found in the working directory (a cron job's cwd is a surprise)."""
    (work / "strongroom.toml").write_text("this is [not toml\n")
    assert "Usage" in ok(run("--help", cwd=work))
    assert "strongroom" in ok(run("--version", cwd=work))
    line = one_error(run("init", "--repo", str(work / "r"), "--no-encryption", cwd=work), 2)
    assert str(work / "strongroom.toml") in line and "not valid TOML" in line
    assert "working directory" in line
    assert not (work / "r").exists()


def test_another_projects_file_and_a_directory_of_that_name(work: Path) -> None:
    (work / "strongroom.toml").write_text('[tool.poetry]\nname = "x"\n')
    line = one_error(run("list", "--repo", str(work / "r"), cwd=work), 2)
    assert "strongroom.toml" in line and "tool" in line
    (work / "strongroom.toml").unlink()
    (work / "strongroom.toml").mkdir()  # not a file: not a configuration
    ok(run("init", "--repo", str(work / "r"), "--no-encryption", cwd=work))
    assert "no backups" in ok(run("list", "--repo", str(work / "r"), cwd=work))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file of mode 000")
def test_an_unreadable_file_in_the_working_directory(work: Path) -> None:
    (work / "strongroom.toml").write_text("[repository]\nlocation = 'x'\n")
    (work / "strongroom.toml").chmod(0)
    line = one_error(run("list", "--repo", str(work / "r"), cwd=work), 2)
    assert "cannot read configuration" in line


def test_a_file_that_overrides_backup_dir_says_so(work: Path, tmp_path: Path) -> None:
    """A strongroom.toml beats BACKUP_DIR (documented), but never silently."""
    (work / "strongroom.toml").write_text(f"[repository]\nlocation = '{tmp_path / 'theirs'}'\n")
    result = run("init", "--no-encryption", env={"BACKUP_DIR": str(tmp_path / "mine")}, cwd=work)
    assert str(tmp_path / "theirs") in ok(result)
    assert "BACKUP_DIR" in result.stderr and str(work / "strongroom.toml") in result.stderr
    # the same value twice: nothing to announce
    quiet = run("list", env={"BACKUP_DIR": str(tmp_path / "theirs")}, cwd=work)
    assert "BACKUP_DIR" not in ok(quiet) + quiet.stderr


# --- relative paths in the file: from the file's folder, not the working directory ----
def test_relative_paths_in_the_file_are_relative_to_the_file(tmp_path: Path, db: Path) -> None:
    """cron runs commands with cwd=/; `--config /etc/strongroom/strongroom.toml` with
    `location = "repo"` must not mean /repo."""
    folder = tmp_path / "etc"
    folder.mkdir()
    config = folder / "strongroom.toml"
    config.write_text('[repository]\nlocation = "repo"\nkey_file = "keys/main.key"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = ok(run("init", "--config", str(config), cwd=elsewhere))
    assert str(folder / "repo") in out and str(folder / "keys" / "main.key") in out
    ok(run("backup", str(db), "--config", str(config), cwd=Path("/")))
    ok(run("verify", "latest", env={"STRONGROOM_CONFIG": str(config)}, cwd=Path("/")))
    assert not (elsewhere / "repo").exists() and not (elsewhere / "keys").exists()


# --- empty and odd variables ------------------------------------------------------------
def test_empty_and_blank_variables_are_unset(work: Path, tmp_path: Path, db: Path) -> None:
    repo = str(tmp_path / "r")
    ok(run("init", "--no-encryption", env={"BACKUP_DIR": "", "BACKUP_PATH": repo}, cwd=work))
    env = {"STRONGROOM_REPO": "  ", "BACKUP_DIR": repo, "STRONGROOM_KEY_FILE": ""}
    assert "no backups" in ok(run("list", env=env, cwd=work))
    line = one_error(run("list", env={"BACKUP_DIR": ""}, cwd=work), 2)
    assert "no repository given" in line
    # a blank DATABASE_URL is no target (health: none configured, not "unsupported URL")
    blank = run("health", env={"BACKUP_DIR": repo, "DATABASE_URL": "  "}, cwd=work)
    assert "unsupported database URL" not in blank.stderr, blank.stderr


def test_backup_dir_as_tilde_relative_and_a_file(work: Path, tmp_path: Path, db: Path) -> None:
    out = ok(run("init", "--no-encryption", env={"BACKUP_DIR": "~/bk"}, cwd=work))
    assert str(work / "bk") in out  # HOME is the working folder here
    out = ok(run("init", "--no-encryption", env={"BACKUP_DIR": "rel/bk"}, cwd=work))
    assert str(work / "rel" / "bk") in out
    line = one_error(run("list", env={"BACKUP_DIR": str(db)}, cwd=work), 3)
    assert str(db) in line


# --- bucket variables ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "location"),
    [
        ("my-bucket", "s3://my-bucket"),
        ("s3://my-bucket", "s3://my-bucket"),
        ("my-bucket/", "s3://my-bucket"),
        ("s3://my-bucket/sub/dir/", "s3://my-bucket/sub/dir"),
        ("S3://my-bucket/db", "s3://my-bucket/db"),
        (" my-bucket ", "s3://my-bucket"),
        ("MyLegacyBucket", "s3://MyLegacyBucket"),  # us-east-1 before 2018: left to the store
    ],
)
def test_bucket_variable_forms(tmp_path: Path, value: str, location: str) -> None:
    sources = Sources.load(env={"BACKUP_S3_BUCKET": value}, cwd=tmp_path)
    assert sources.settings(targets=False).repository.location == location


@pytest.mark.parametrize(
    "value", ["https://my-bucket.s3.amazonaws.com/db", "s3://", "/", "my_bucket!", "my-bucket:db"]
)
def test_a_bucket_variable_that_is_no_bucket(tmp_path: Path, value: str) -> None:
    sources = Sources.load(env={"S3_BUCKET": value}, cwd=tmp_path)
    with pytest.raises(UsageError, match=r"S3_BUCKET=.* is not an S3 bucket"):
        sources.settings(targets=False)
    # a file's location wins: the variable is not even read
    (tmp_path / "strongroom.toml").write_text("[repository]\nlocation = 'r'\n")
    configured = Sources.load(env={"S3_BUCKET": value}, cwd=tmp_path).settings(targets=False)
    assert configured.repository.location == str(tmp_path / "r")


def test_a_bucket_variable_that_is_no_bucket_is_one_line(work: Path) -> None:
    env = {"S3_BUCKET": "https://my-bucket.s3.amazonaws.com/db", **aws(DEAD_ENDPOINT)}
    line = one_error(run("list", env=env, cwd=work), 2)
    assert "S3_BUCKET" in line and "AWS_ENDPOINT_URL" in line
    assert "repository s3://my-bucket/db," in ok(
        run("config", "check", env={"BACKUP_S3_BUCKET": "s3://my-bucket/db/"}, cwd=work)
    )


# --- retention days ---------------------------------------------------------------------
@pytest.fixture
def repo_with_backup(tmp_path: Path, db: Path, work: Path) -> Path:
    repo = tmp_path / "repo"
    ok(run("init", "--repo", str(repo), "--no-encryption", cwd=work))
    ok(run("backup", str(db), "--repo", str(repo), cwd=work))
    return repo


def test_bad_retention_days_are_one_line(work: Path, repo_with_backup: Path) -> None:
    for value in ("0", "-1", "abc", "7d", "1e3", "3.5", "99999999999"):
        env = {"BACKUP_DIR": str(repo_with_backup), "BACKUP_RETENTION_DAYS": value}
        if value in ("0", "abc", "7d", "1e3"):  # the CLI (each costs a second)
            line = one_error(run("forget", "--dry-run", env=env, cwd=work), 2)
            assert "BACKUP_RETENTION_DAYS" in line
        with pytest.raises(UsageError, match="BACKUP_RETENTION_DAYS"):
            Sources.load(env=env, cwd=work).retention(None, None, None)


def test_bad_retention_days_fail_the_configuration_check(work: Path, db: Path) -> None:
    """`run` and `serve` would start and fail every scheduled forget: refuse at once."""
    env = {"BACKUP_DIR": str(work / "r"), "DATABASE_URL": str(db), "RETENTION_DAYS": "abc"}
    line = one_error(run("config", "check", env=env, cwd=work), 2)
    assert "RETENTION_DAYS" in line


def test_backup_retention_days_beats_retention_days(work: Path, repo_with_backup: Path) -> None:
    env = {
        "BACKUP_DIR": str(repo_with_backup),
        "BACKUP_RETENTION_DAYS": "3",
        "RETENTION_DAYS": "9",
    }
    assert "policy: within 3d (from BACKUP_RETENTION_DAYS)" in ok(
        run("forget", "--dry-run", env=env, cwd=work)
    )


# --- a Slack webhook that is down, or not a URL -----------------------------------------
TOKEN = "xoxbSECRETtoken0123456789"


@pytest.fixture
def echoing_receiver() -> Iterator[str]:
    """Answers 500 with the request's path in the body (a token in an error page)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = f"internal error at {self.path}".encode()
            self.send_response(500)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/services/T0/B0/{TOKEN}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_webhook_that_is_down_never_shows_its_token(
    work: Path, tmp_path: Path, echoing_receiver: str
) -> None:
    env = {"BACKUP_DIR": str(tmp_path / "r"), "SLACK_WEBHOOK_URL": echoing_receiver}
    ok(run("init", "--no-encryption", env=env, cwd=work))
    missing = str(tmp_path / "missing.db")
    result = run("--log-format", "json", "-v", "backup", missing, env=env, cwd=work)
    one_error(result, 5)
    assert "slack" in result.stderr and TOKEN not in result.stderr + result.stdout
    for line in result.stderr.splitlines()[:-1]:
        json.loads(line)


def test_a_webhook_variable_that_is_no_url_is_one_line(
    work: Path, tmp_path: Path, db: Path
) -> None:
    """Was exit 70 (ValueError) before the backup even started."""
    value = f"hooks.slack.com/services/T0/B0/{TOKEN}"  # https:// left out
    env = {"BACKUP_DIR": str(tmp_path / "r"), "SLACK_WEBHOOK": value}
    ok(run("init", "--no-encryption", env=env, cwd=work))
    line = one_error(run("backup", str(db), env=env, cwd=work), 2)
    assert "SLACK_WEBHOOK" in line and TOKEN not in line


def test_a_configured_webhook_url_that_is_no_url_fails_the_check(work: Path) -> None:
    (work / "strongroom.toml").write_text(
        "[repository]\nlocation = 'r'\n"
        f"[[notifications.channels]]\ntype = 'slack'\nwebhook_url = 'hooks.slack.com/{TOKEN}'\n"
    )
    result = run("config", "check", cwd=work)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "line 5: notifications.channels.0.webhook_url: must be an http" in result.stdout
    assert TOKEN not in result.stdout + result.stderr


# --- R2 beside AWS variables ------------------------------------------------------------
def test_r2_credentials_with_empty_aws_variables(work: Path, s3_bucket: tuple[str, str]) -> None:
    """docker compose writes `AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID}`: an empty AWS key
    must not shadow the R2 key."""
    endpoint, bucket = s3_bucket
    secret = "R2secretKEY0123456789abcdef"
    env = {
        "AWS_ACCESS_KEY_ID": "",
        "AWS_SECRET_ACCESS_KEY": "",
        "AWS_DEFAULT_REGION": "",
        "CLOUDFLARE_ACCESS_KEY_ID": "r2key",
        "CLOUDFLARE_SECRET_ACCESS_KEY": secret,
        "STRONGROOM_S3_ENDPOINT": endpoint,
        "BACKUP_S3_BUCKET": f"{bucket}/r2",
        "STRONGROOM_STORAGE_DEADLINE": "5",
    }
    result = run("init", "--no-encryption", env=env, cwd=work)
    assert f"s3://{bucket}/r2" in ok(result)
    wrong = run("list", env={**env, "BACKUP_S3_BUCKET": "no-such-bucket-r2"}, cwd=work)
    one_error(wrong, 6)
    assert secret not in result.stdout + result.stderr + wrong.stdout + wrong.stderr


# --- precedence, pair by pair -----------------------------------------------------------
def test_location_precedence(work: Path, tmp_path: Path) -> None:
    """flag > STRONGROOM_REPO > the file > BACKUP_DIR (a missing repository's error line
    names the location chosen)."""
    where = {n: str(tmp_path / n) for n in ("flag", "own", "file", "script")}
    (work / "strongroom.toml").write_text(f"[repository]\nlocation = '{where['file']}'\n")
    env = {"STRONGROOM_REPO": where["own"], "BACKUP_DIR": where["script"]}
    assert where["flag"] in one_error(run("list", "--repo", where["flag"], env=env, cwd=work), 3)
    assert where["own"] in one_error(run("list", env=env, cwd=work), 3)
    # STRONGROOM_REPO also overrides the file for run/serve/health (load_settings)
    assert f"repository {where['own']}," in ok(run("config", "check", env=env, cwd=work))
    del env["STRONGROOM_REPO"]
    assert where["file"] in one_error(run("list", env=env, cwd=work), 3)


def test_endpoint_precedence(work: Path, s3_bucket: tuple[str, str]) -> None:
    """--s3-endpoint > STRONGROOM_S3_ENDPOINT > the file's s3_endpoint > AWS_ENDPOINT_URL:
    only the winner is reachable (the losers are dead ports)."""
    endpoint, bucket = s3_bucket
    base = {**aws(DEAD_ENDPOINT), "BACKUP_S3_BUCKET": f"{bucket}/p"}
    toml = work / "strongroom.toml"
    toml.write_text(f"[repository]\ns3_endpoint = '{endpoint}'\n")
    assert "no strongroom repository" in one_error(run("list", env=base, cwd=work), 3)
    toml.write_text(f"[repository]\ns3_endpoint = '{DEAD_ENDPOINT}'\n")
    own = {**base, "STRONGROOM_S3_ENDPOINT": endpoint}
    assert "no strongroom repository" in one_error(run("list", env=own, cwd=work), 3)
    own["STRONGROOM_S3_ENDPOINT"] = DEAD_ENDPOINT
    flag = run("list", "--s3-endpoint", endpoint, env=own, cwd=work)
    assert "no strongroom repository" in one_error(flag, 3)


def test_key_file_precedence(work: Path, tmp_path: Path) -> None:
    """--key-file > STRONGROOM_KEY_FILE > the file's key_file: init writes the key there."""
    (work / "strongroom.toml").write_text("[repository]\nkey_file = 'file.key'\n")
    env = {"STRONGROOM_KEY_FILE": str(tmp_path / "own.key")}
    ok(run("init", "--repo", str(tmp_path / "a"), "--key-file", "flag.key", env=env, cwd=work))
    assert (work / "flag.key").exists()
    ok(run("init", "--repo", str(tmp_path / "b"), env=env, cwd=work))
    assert (tmp_path / "own.key").exists()
    ok(run("init", "--repo", str(tmp_path / "c"), cwd=work))
    assert (work / "file.key").exists()


def test_retention_precedence(work: Path, repo_with_backup: Path, db: Path) -> None:
    """--keep-* > the target's retention in the file > BACKUP_RETENTION_DAYS > default;
    several configured policies without --target: one line."""
    toml = work / "strongroom.toml"
    toml.write_text(
        f"[repository]\nlocation = '{repo_with_backup}'\n"
        f"[targets.shop]\nurl = '{db}'\nretention = {{ keep_last = 2 }}\n"
    )
    env = {"BACKUP_RETENTION_DAYS": "5"}
    out = ok(run("forget", "--dry-run", "--keep-last", "1", env=env, cwd=work))
    assert "(from options)" in out
    assert "targets.shop.retention" in ok(run("forget", "--dry-run", env=env, cwd=work))
    toml.write_text(f"[repository]\nlocation = '{repo_with_backup}'\n")
    assert "(from BACKUP_RETENTION_DAYS)" in ok(run("forget", "--dry-run", env=env, cwd=work))
    toml.write_text(
        f"[repository]\nlocation = '{repo_with_backup}'\n"
        f"[targets.shop]\nurl = '{db}'\nretention = {{ keep_last = 2 }}\n"
        f"[targets.blog]\nurl = '{db}'\nretention = {{ keep_daily = 3 }}\n"
    )
    line = one_error(run("forget", "--dry-run", cwd=work), 2)
    assert "--target" in line
    assert "2 last" in ok(run("forget", "--dry-run", "--target", "shop", cwd=work))
    # and init twice with the file: already initialised, one line, exit 3
    assert "already exists" in one_error(run("init", "--no-encryption", cwd=work), 3)


@pytest.mark.parametrize("port", ["abc", "0", "99999", "٣"])
def test_an_smtp_port_that_is_no_port(tmp_path: Path, port: str) -> None:
    env = {"BACKUP_NOTIFICATION_EMAIL": "ops@example.com", "SMTP_HOST": "127.0.0.1"}
    with pytest.raises(UsageError, match="SMTP_PORT must be a port number"):
        Sources.load(env={**env, "SMTP_PORT": port}, cwd=tmp_path).notifications()
