"""Messages are true and quiet (issue 15, item 12): normal steps of a restore are not
warnings, counts read as English, the printed way to drop a kept database works when
pasted, and the command line's own usage errors are one ``error:`` line."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from urllib.parse import quote

import pytest

from tests.helpers import REPO_ROOT, make_sqlite_db, repository_env, run_cli
from tests.helpers import cli_ok as _ok


def _hint(out: str) -> str:
    """The statement after 'remove it with: ' up to ' (or restore'."""
    assert "remove it with: " in out, out
    return out.split("remove it with: ", 1)[1].split(" (or restore", 1)[0]


@pytest.mark.parametrize("name", ["plainname", "CamelCase Shop"])
def test_a_postgres_restore_is_quiet_and_its_drop_hint_works(pg_server, tmp_path, name):
    """The restore over a live database prints no WARNING line (every step is normal),
    '1 table', and a DROP statement that drops the kept database when pasted into psql,
    also for a name that needs quotes."""
    name = f"{name}_{uuid.uuid4().hex[:6]}"
    pg_server.create_database(name)
    url = pg_server.url(quote(name))
    try:
        pg_server.psql(
            name, 'CREATE TABLE "Orders" (id int PRIMARY KEY); INSERT INTO "Orders" VALUES (1);'
        )
        env = repository_env(tmp_path)
        _ok(run_cli("init", env=env))
        backup = run_cli("backup", url, env=env)
        # the dump's header and TOC are chunks of their own now (issue 19), so a one-row
        # database is a few chunks: the wording must still agree with the number
        said = _ok(backup)
        count = re.search(r" in (\d+) (chunks?)\n", said)
        fresh = re.search(r"(\d+) new (chunks?)\)", said)
        assert count and fresh, said
        for number, noun in (count.groups(), fresh.groups()):
            assert noun == ("chunk" if number == "1" else "chunks"), said
        result = run_cli("restore", "latest", "--to", url, "--yes", env=env)
        out = _ok(result)
        err = result.stderr.decode()
        assert "WARNING" not in err, err
        assert "1 table match" in out, out
        statement = _hint(out)
        kept = [
            r[0]
            for r in pg_server.query("postgres", "SELECT datname FROM pg_database")
            if r[0].startswith(f"{name}_old_")
        ]
        assert len(kept) == 1, kept
        pg_server.psql("postgres", statement)
        left = pg_server.query(
            "postgres", "SELECT count(*) FROM pg_database WHERE datname = %s", (kept[0],)
        )
        assert left[0][0] == 0, statement
    finally:
        for (db,) in pg_server.query(
            "postgres", "SELECT datname FROM pg_database WHERE datname LIKE %s", (f"{name}%",)
        ):
            pg_server.drop_database(db)


def test_a_sqlite_restore_prints_a_removal_that_works(tmp_path):
    db = make_sqlite_db(tmp_path / "it's app.db", users=20, orders=30)
    env = repository_env(tmp_path)
    _ok(run_cli("init", env=env))
    _ok(run_cli("backup", f"sqlite://{db}", env=env))
    result = run_cli("restore", "latest", "--to", f"sqlite://{db}", "--yes", env=env)
    out = _ok(result)
    assert "WARNING" not in result.stderr.decode(), result.stderr.decode()
    command = _hint(out)
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("it's app.db.old-")]
    assert len(kept) == 1
    subprocess.run(["sh", "-c", command], check=True, cwd=tmp_path)
    assert not kept[0].exists()


def test_no_command_is_one_error_line():
    result = run_cli()
    err = result.stderr.decode()
    assert result.returncode == 2
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: no command given (see "), err


def test_verbose_prints_the_details_an_unexpected_failure_promises():
    """'run with -v for details' must be true: with -v the traceback is printed (redacted),
    without it only the one line."""
    script = (
        "import sys\n"
        "from strongroom.cli import app as cli\n"
        "@cli.app.command('explode')\n"
        "def explode() -> None:\n"
        "    raise RuntimeError('boom postgresql://u:hunter2pw@h/db')\n"
        "sys.argv = ['strongroom', *sys.argv[1:]]\n"
        "cli.main()\n"
    )
    quiet = subprocess.run(
        [sys.executable, "-c", script, "explode"], capture_output=True, cwd=REPO_ROOT, check=False
    )
    loud = subprocess.run(
        [sys.executable, "-c", script, "-v", "explode"],
        capture_output=True,
        cwd=REPO_ROOT,
        check=False,
    )
    assert quiet.returncode == loud.returncode == 70
    quiet_err, loud_err = quiet.stderr.decode(), loud.stderr.decode()
    assert "run with -v for details" in quiet_err
    assert "Traceback" not in quiet_err
    assert "Traceback" in loud_err and "RuntimeError" in loud_err, loud_err
    assert "hunter2pw" not in quiet_err + loud_err
    assert loud_err.rstrip().splitlines()[-1].startswith("error: unexpected failure")


def test_a_restore_into_a_new_database_does_not_say_it_replaces_content(tmp_path):
    """The plan's 'its content will be replaced' warning is for a database that exists;
    a restore that creates the database replaces nothing, so the plan says nothing of it."""
    db = make_sqlite_db(tmp_path / "shop.db", users=5, orders=5)
    other = make_sqlite_db(tmp_path / "blog.db", users=5, orders=5)
    env = repository_env(tmp_path)
    _ok(run_cli("init", env=env))
    _ok(run_cli("backup", f"sqlite://{db}", env=env))
    fresh = _ok(
        run_cli(
            "restore",
            "latest",
            "--target",
            "shop",
            "--to",
            f"sqlite://{tmp_path / 'new.db'}",
            "--dry-run",
            env=env,
        )
    )
    assert "will be created" in fresh and "will be replaced" not in fresh, fresh
    existing = _ok(
        run_cli(
            "restore",
            "latest",
            "--target",
            "shop",
            "--to",
            f"sqlite://{other}",
            "--dry-run",
            env=env,
        )
    )
    assert "WARNING" in existing and "will be replaced" in existing, existing
