"""The safe-restore contract on a real PostgreSQL server, through the command line."""

import json
import os
import pty
import re
import signal
import subprocess
import time

import psycopg
import pytest

from tests.helpers import REPO_ROOT, STRONGROOM, run_cli
from tests.helpers import cli_ok as _ok

SCHEMA = """
CREATE TABLE accounts (id serial PRIMARY KEY, email text UNIQUE, balance numeric(12,2));
CREATE TABLE events (id bigserial PRIMARY KEY, account_id int REFERENCES accounts, note text);
SELECT setseed(0.4);
INSERT INTO accounts (email, balance)
  SELECT 'a' || g || '@example.com', round((random() * 1000)::numeric, 2)
  FROM generate_series(1, {n}) g;
INSERT INTO events (account_id, note)
  SELECT 1 + (g % {n}), md5(random()::text) FROM generate_series(1, {n} * 3) g;
"""


@pytest.fixture()
def env(tmp_path):
    return {
        "STRONGROOM_REPO": str(tmp_path / "repo"),
        "STRONGROOM_KEY_FILE": str(tmp_path / "repo.key"),
    }


@pytest.fixture()
def live(pg_server, pg_db, env):
    """A live database with a backup taken, then changed afterwards."""
    name = pg_db.rsplit("/", 1)[1]
    pg_server.psql(name, SCHEMA.format(n=2000))
    assert run_cli("init", env=env).returncode == 0
    assert run_cli("backup", pg_db, "--tag", "daily", env=env).returncode == 0
    pg_server.psql(name, "DELETE FROM events WHERE id > 5000; UPDATE accounts SET balance = 0;")
    return pg_db, name


def _count(pg_server, name, table="events"):
    return pg_server.query(name, f"SELECT count(*) FROM {table}")[0][0]


def _databases(pg_server):
    return {r[0] for r in pg_server.query("postgres", "SELECT datname FROM pg_database")}


def test_dry_run_shows_the_plan_and_changes_nothing(pg_server, live, env):
    url, name = live
    out = _ok(run_cli("restore", "latest", "--to", url, "--dry-run", env=env))
    assert "restore plan" in out and "safety backup" in out and "estimate" in out
    assert re.search(r"public\.events\s+5000\s+6000", out), out
    assert "dry run: nothing was changed" in out
    assert _count(pg_server, name) == 5000
    assert len(json.loads(_ok(run_cli("list", "--json", env=env)))) == 1


def test_replacing_needs_confirmation_without_a_terminal(pg_server, live, env):
    url, name = live
    result = run_cli("restore", "latest", "--to", url, env=env)
    assert result.returncode == 2
    assert "without confirmation" in result.stderr.decode()
    assert _count(pg_server, name) == 5000


def _run_on_terminal(args, env, answer):
    """Run the CLI with a pseudo-terminal as stdin and type ``answer`` at the prompt."""
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [*STRONGROOM, *args],
        env={**os.environ, **env},
        cwd=REPO_ROOT,
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    os.close(slave)
    time.sleep(2.5)  # the plan is printed, the prompt waits
    os.write(master, answer.encode() + b"\n")
    out, err = process.communicate(timeout=120)
    os.close(master)
    return process.returncode, out.decode(), err.decode()


def test_typed_confirmation_on_a_terminal(pg_server, live, env):
    url, name = live
    code, _, err = _run_on_terminal(["restore", "latest", "--to", url], env, "not-the-name")
    assert code == 2 and "did not match" in err
    assert _count(pg_server, name) == 5000
    code, out, err = _run_on_terminal(["restore", "latest", "--to", url], env, name)
    assert code == 0, err
    assert "verified" in out
    assert _count(pg_server, name) == 6000


def test_restore_swaps_keeps_the_old_database_and_rollback_returns(pg_server, live, env):
    url, name = live
    holder = psycopg.connect(url, autocommit=True)  # an application session on the target
    out = _ok(run_cli("restore", "latest", "--to", url, "--yes", env=env))
    assert "safety backup" in out and "kept as" in out
    assert _count(pg_server, name) == 6000
    assert pg_server.query(name, "SELECT min(balance) FROM accounts")[0][0] > 0
    with pytest.raises(psycopg.OperationalError):
        holder.execute("SELECT 1")  # terminated by the swap
    old = re.search(r"kept as (\S+);", out).group(1)
    assert _count(pg_server, old) == 5000  # the replaced database, renamed
    backups = json.loads(_ok(run_cli("list", "--json", env=env)))
    assert [b["tags"] for b in backups] == [["daily"], ["pre-restore"]]
    assert not any("_sr_" in d for d in _databases(pg_server))

    out = _ok(run_cli("rollback", "--to", url, "--yes", "--drop-old", env=env))
    assert "verified" in out
    assert _count(pg_server, name) == 5000
    assert pg_server.query(name, "SELECT max(balance) FROM accounts")[0][0] == 0
    assert len([d for d in _databases(pg_server) if d.startswith(f"{name}_old_")]) == 1


def test_a_role_that_does_not_own_the_target_gets_a_clear_error(pg_server, live, env):
    _, name = live
    pg_server.psql(
        "postgres", "DROP ROLE IF EXISTS helper; CREATE ROLE helper LOGIN CREATEDB PASSWORD 'pw';"
    )
    pg_server.psql(name, "GRANT SELECT ON ALL TABLES IN SCHEMA public TO helper;")
    helper_url = f"postgresql://helper:pw@{pg_server.host}:{pg_server.port}/{name}"
    result = run_cli(
        "restore", "latest", "--to", helper_url, "--yes", "--no-safety-backup", env=env
    )
    err = result.stderr.decode()
    assert result.returncode == 5, err
    assert "must own the database" in err and "unchanged" in err
    assert "pw@" not in err
    assert _count(pg_server, name) == 5000
    assert not any("_sr_" in d for d in _databases(pg_server))


def test_verify_by_restore_records_the_outcome_and_rto(pg_server, live, env, tmp_path):
    del live  # a backup exists
    checks = tmp_path / "checks.sql"
    checks.write_text(
        "-- orphans\nSELECT e.id FROM events e LEFT JOIN accounts a ON a.id = e.account_id"
        " WHERE a.id IS NULL;\nSELECT id FROM accounts WHERE balance < 0;\n"
    )
    scratch = pg_server.url("scratch_drill")
    out = _ok(
        run_cli(
            "verify",
            "latest",
            "--restore",
            "--scratch",
            scratch,
            "--check-sql",
            str(checks),
            env=env,
        )
    )
    assert "RTO" in out and "2 checks pass" in out
    assert "scratch_drill" not in _databases(pg_server)
    shown = json.loads(_ok(run_cli("show", "latest", "--json", env=env)))
    record = shown["last_verification"]
    assert record["ok"] and record["kind"] == "restore" and record["restore_seconds"] > 0
    assert record["tables_checked"] == 2 and record["checks_run"] == 2
    assert "ok " in _ok(run_cli("list", env=env))

    failing = tmp_path / "failing.sql"
    failing.write_text("SELECT id FROM accounts WHERE balance > 0")
    result = run_cli(
        "verify", "latest", "--restore", "--scratch", scratch, "--check-sql", str(failing), env=env
    )
    assert result.returncode == 7
    shown = json.loads(_ok(run_cli("show", "latest", "--json", env=env)))
    assert shown["last_verification"]["ok"] is False
    # --before skips a backup whose last verification failed
    before = run_cli(
        "restore", "--before", "2999-01-01 00:00", "--to", pg_server.url("x"), "--dry-run", env=env
    )
    assert before.returncode == 3 and "no good backup" in before.stderr.decode()


def test_restore_before_a_time_picks_the_newest_backup_before_it(pg_server, live, env):
    url, _ = live
    time.sleep(1.1)
    cut = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
    time.sleep(1.1)
    _ok(run_cli("backup", url, "--tag", "later", env=env))
    first = json.loads(_ok(run_cli("list", "--json", env=env)))[0]["id"]
    out = _ok(
        run_cli("restore", "--before", cut, "--to", pg_server.url("before_x"), "--dry-run", env=env)
    )
    assert first in out
    time.sleep(1.1)  # the time below has whole seconds: the later backup must start before it
    utc = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out = _ok(
        run_cli("restore", "--before", utc, "--to", pg_server.url("before_x"), "--dry-run", env=env)
    )
    assert first not in out  # the later backup is newer and still before now


def _wait_for_staged(pg_server, name, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        staged = [d for d in _databases(pg_server) if d.startswith(f"{name}_sr_")]
        if (
            staged
            and pg_server.query(
                "postgres",
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND query LIKE 'COPY%%'",
                (staged[0],),
            )[0][0]
        ):
            return staged[0]
        time.sleep(0.02)
    raise AssertionError("the staged restore never started")


@pytest.fixture()
def big_live(pg_server, pg_db, env):
    name = pg_db.rsplit("/", 1)[1]
    pg_server.psql(name, SCHEMA.format(n=150000))
    _ok(run_cli("init", env=env))
    _ok(run_cli("backup", pg_db, env=env))
    pg_server.psql(name, "DELETE FROM events WHERE id > 300000;")
    return pg_db, name


def test_a_restore_killed_halfway_leaves_the_original_untouched(pg_server, big_live, env):
    url, name = big_live
    process = subprocess.Popen(
        [*STRONGROOM, "restore", "latest", "--to", url, "--yes", "--no-safety-backup"],
        env={**os.environ, **env},
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _wait_for_staged(pg_server, name)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert _count(pg_server, name) == 300000
    assert pg_server.query(name, "SELECT count(*) FROM accounts")[0][0] == 150000


def test_a_lost_connection_during_restore_leaves_the_original_untouched(pg_server, big_live, env):
    url, name = big_live
    process = subprocess.Popen(
        [*STRONGROOM, "restore", "latest", "--to", url, "--yes", "--no-safety-backup"],
        env={**os.environ, **env},
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    staged = _wait_for_staged(pg_server, name)
    pg_server.query(
        "postgres",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
        (staged,),
    )
    _, err = process.communicate(timeout=120)
    err = err.decode()
    assert process.returncode == 5, err
    assert "untouched" in err and "Traceback" not in err
    assert _count(pg_server, name) == 300000
    assert not any(d.startswith(f"{name}_sr_") for d in _databases(pg_server))


def test_single_table_into_a_side_schema_next_to_the_live_data(pg_server, live, env):
    url, name = live
    out = _ok(
        run_cli(
            "restore",
            "latest",
            "--to",
            url,
            "--table",
            "public.events",
            "--into-schema",
            "restored",
            env=env,
        )
    )
    assert "restored.events" in out
    assert _count(pg_server, name, "restored.events") == 6000
    assert _count(pg_server, name, "public.events") == 5000  # live data untouched
    again = run_cli(
        "restore",
        "latest",
        "--to",
        url,
        "--table",
        "public.events",
        "--into-schema",
        "restored",
        env=env,
    )
    assert again.returncode == 5 and "Traceback" not in again.stderr.decode()
    unknown = run_cli("restore", "latest", "--to", url, "--table", "public.nope", env=env)
    assert unknown.returncode == 2 and "public.nope" in unknown.stderr.decode()


def test_parallel_restore_from_a_materialised_dump(pg_server, live, env):
    url, name = live
    result = run_cli(
        "-v",
        "restore",
        "latest",
        "--to",
        url,
        "--yes",
        "--drop-old",
        env={**env, "STRONGROOM_RESTORE_JOBS": "2"},
    )
    assert result.returncode == 0, result.stderr.decode()
    assert "-j 2" in result.stderr.decode()
    assert _count(pg_server, name) == 6000
    assert "verified" in result.stdout.decode()
