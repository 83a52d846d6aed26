"""Break-it round on the engine restructuring (issue 12): where a drill restores without
--scratch, whether its scratch database is always dropped, single-table restores through
the Engine contract, and the help of every command."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT, cli_fails, cli_ok, make_sqlite_db, run_cli


@pytest.fixture()
def env(tmp_path):
    return {
        "STRONGROOM_REPO": str(tmp_path / "repo"),
        "STRONGROOM_KEY_FILE": str(tmp_path / "repo.key"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
    }


def _sqlite_backup(tmp_path: Path, env: dict[str, str]) -> Path:
    db = make_sqlite_db(tmp_path / "app.db", users=40, orders=40)
    cli_ok(run_cli("init", env=env))
    cli_ok(run_cli("backup", f"sqlite://{db}", env=env))
    return db


def _temp_scratch_files() -> set[str]:
    temp = Path(tempfile.gettempdir())  # private folders: strongroom-<uid>/<pid>-…/
    patterns = ("strongroom*verify*", "strongroom-*/*/strongroom*verify*")
    return {p.name for pattern in patterns for p in temp.glob(pattern)}


# --- SQLite drills without --scratch ---------------------------------------------------


def test_sqlite_drill_ignores_a_database_url_of_no_engine(tmp_path, env):
    _sqlite_backup(tmp_path, env)
    cli_ok(
        run_cli("verify", "latest", "--restore", env={**env, "DATABASE_URL": "redis://127.0.0.1/0"})
    )


def test_sqlite_drill_with_a_database_url_in_a_missing_folder(tmp_path, env):
    _sqlite_backup(tmp_path, env)
    url = f"sqlite://{tmp_path / 'gone' / 'other.db'}"
    cli_ok(run_cli("verify", "latest", "--restore", env={**env, "DATABASE_URL": url}))


def test_sqlite_drill_beside_database_url_leaves_no_file(tmp_path, env):
    db = _sqlite_backup(tmp_path, env)
    before = {p.name for p in tmp_path.iterdir()}
    out = cli_ok(
        run_cli("verify", "latest", "--restore", env={**env, "DATABASE_URL": f"sqlite://{db}"})
    )
    assert "ok" in out
    assert {p.name for p in tmp_path.iterdir()} == before


def test_sqlite_drill_with_a_failing_check_leaves_no_file(tmp_path, env):
    db = _sqlite_backup(tmp_path, env)
    checks = tmp_path / "checks.sql"
    checks.write_text("SELECT 1 FROM users LIMIT 1;\n")
    bad = tmp_path / "bad.sql"
    bad.write_text("SELEC nonsense;\n")
    before = {p.name for p in tmp_path.iterdir()}
    temp_before = _temp_scratch_files()
    for check in (checks, bad):
        for extra in ({}, {"DATABASE_URL": f"sqlite://{db}"}):
            result = run_cli(
                "verify", "latest", "--restore", "--check-sql", str(check), env={**env, **extra}
            )
            assert result.returncode != 0, result.stdout
            assert "Traceback" not in result.stderr.decode()
            assert {p.name for p in tmp_path.iterdir()} == before
            assert _temp_scratch_files() == temp_before


# --- PostgreSQL drills without --scratch -----------------------------------------------


def _pg_names(server) -> set[str]:
    return {r[0] for r in server.query("postgres", "SELECT datname FROM pg_database")}


def _pg_backup(pg_server, pg_db, env) -> None:
    name = pg_db.rsplit("/", 1)[1]
    pg_server.psql(
        name,
        "CREATE TABLE t (id int PRIMARY KEY, v text);"
        "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 200) g;",
    )
    cli_ok(run_cli("init", env=env))
    cli_ok(run_cli("backup", pg_db, env=env))


def test_pg_drill_needs_a_server_url_of_its_engine(pg_server, pg_db, env, tmp_path):
    _pg_backup(pg_server, pg_db, env)
    cli_fails(run_cli("verify", "latest", "--restore", env=env), 2, "scratch")
    mysql_url = {"DATABASE_URL": "mysql://u:pw@127.0.0.1:1/shop"}
    cli_fails(run_cli("verify", "latest", "--restore", env={**env, **mysql_url}), 2, "scratch")
    sqlite_url = {"DATABASE_URL": f"sqlite://{tmp_path / 'x.db'}"}
    cli_fails(run_cli("verify", "latest", "--restore", env={**env, **sqlite_url}), 2, "scratch")


def test_pg_drill_on_another_server_and_failing_checks_drop_the_scratch(
    pg_server, pg_server2, pg_db, env, tmp_path
):
    _pg_backup(pg_server, pg_db, env)
    one, two = _pg_names(pg_server), _pg_names(pg_server2)
    other = {"DATABASE_URL": pg_server2.url("postgres")}
    cli_ok(run_cli("verify", "latest", "--restore", env={**env, **other}))
    rows = tmp_path / "rows.sql"
    rows.write_text("SELECT * FROM t WHERE id = 1;")
    broken = tmp_path / "broken.sql"
    broken.write_text("SELECT * FROM no_such_table;")
    for check in (rows, broken):
        for server_env in (other, {"DATABASE_URL": pg_db}):
            result = run_cli(
                "verify",
                "latest",
                "--restore",
                "--check-sql",
                str(check),
                env={**env, **server_env},
            )
            assert result.returncode != 0
            assert "Traceback" not in result.stderr.decode()
    assert _pg_names(pg_server) == one
    assert _pg_names(pg_server2) == two


def test_pg_drill_into_an_existing_nonempty_scratch_is_refused_and_kept(pg_server, pg_db, env):
    _pg_backup(pg_server, pg_db, env)
    cli_fails(run_cli("verify", "latest", "--restore", "--scratch", pg_db, env=env), 5, "not empty")
    assert pg_server.query(pg_db.rsplit("/", 1)[1], "SELECT count(*) FROM t") == [(200,)]


# --- MySQL drills ----------------------------------------------------------------------


def test_mysql_drill_beside_database_url_with_failing_check_drops_scratch(
    mariadb_server, mysql_db, env, tmp_path
):
    name = mysql_db.rsplit("/", 1)[1]
    mariadb_server.execute(
        name, ["CREATE TABLE t (id INT PRIMARY KEY, v TEXT)", "INSERT INTO t VALUES (1, 'a')"]
    )
    cli_ok(run_cli("init", env=env))
    cli_ok(run_cli("backup", mysql_db, env=env))
    cli_fails(run_cli("verify", "latest", "--restore", env=env), 2, "scratch")
    before = mariadb_server.databases()
    cli_ok(run_cli("verify", "latest", "--restore", env={**env, "DATABASE_URL": mysql_db}))
    rows = tmp_path / "rows.sql"
    rows.write_text("SELECT * FROM t;")
    result = run_cli(
        "verify",
        "latest",
        "--restore",
        "--check-sql",
        str(rows),
        env={**env, "DATABASE_URL": mysql_db},
    )
    assert result.returncode != 0
    assert mariadb_server.databases() == before
    # restore --table of a table the backup lacks: one error line
    cli_fails(
        run_cli("restore", "latest", "--to", mysql_db, "--table", "nope", "--yes", env=env),
        2,
        "nope",
    )


# --- restore --table -------------------------------------------------------------------


def test_sqlite_table_restore_is_one_usage_error(tmp_path, env):
    db = _sqlite_backup(tmp_path, env)
    cli_fails(
        run_cli("restore", "latest", "--to", f"sqlite://{db}", "--table", "users", env=env),
        2,
        "",
    )


# --- help ------------------------------------------------------------------------------


def _commands() -> list[str]:
    out = subprocess.run(
        [sys.executable, "-m", "strongroom.cli.app", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, "COLUMNS": "300"},
        check=True,
    ).stdout
    names = []
    for line in out.splitlines():
        parts = line.strip("│ ").split()
        # a command's row starts right after the border; a wrapped help line is indented
        if parts and line.startswith("│ ") and line[2:3] != " " and not parts[0].startswith("-"):
            names.append(parts[0])
    return names


def test_every_command_and_bench_script_has_help():
    commands = _commands()
    assert "restore" in commands and "verify" in commands
    for command in commands:
        cli_ok(run_cli(command, "--help"))
    for script in ("run.py", "mysql_bench.py", "checksum_cost.py"):
        result = subprocess.run(
            [sys.executable, str(REPO_ROOT / "bench" / script), "--help"],
            capture_output=True,
            cwd=REPO_ROOT,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr.decode()
    faults = subprocess.run(
        [sys.executable, "-m", "bench.faults", "--help"],
        capture_output=True,
        cwd=REPO_ROOT,
        timeout=60,
        check=False,
    )
    assert faults.returncode == 0 and b"--seed" in faults.stdout, faults.stderr.decode()


def test_pg_drill_of_a_damaged_backup_fails_and_drops_its_scratch(pg_server, pg_db, env, tmp_path):
    name = pg_db.rsplit("/", 1)[1]
    pg_server.psql(
        name,
        "CREATE TABLE big AS SELECT g AS id, md5(g::text) || md5((g * 3)::text) AS v "
        "FROM generate_series(1, 60000) g;",
    )
    cli_ok(run_cli("init", env=env))
    cli_ok(run_cli("backup", pg_db, env=env))
    # chunks live in packs since issue 19: a byte in the middle of the largest pack
    chunks = sorted((tmp_path / "repo" / "packs").rglob("*"), key=lambda p: p.stat().st_size)
    victim = [p for p in chunks if p.is_file()][-1]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    before = _pg_names(pg_server)
    result = run_cli("verify", "latest", "--restore", env={**env, "DATABASE_URL": pg_db})
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr.decode()
    assert _pg_names(pg_server) == before
