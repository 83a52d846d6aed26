"""Break-it round on the engine restructuring (issue 12): the drill's scratch rule from the
scheduler and the web, the scratch always dropped, PostgreSQL single-table verification,
and child processes of a killed restore."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from strongroom.engines.base import TableStats
from strongroom.engines.postgresql import PostgresEngine
from strongroom.errors import VerificationMismatch
from strongroom.services.drill import scratch_for
from tests.helpers import REPO_ROOT, STRONGROOM, cli_ok, make_sqlite_db, run_cli
from tests.services.test_drill import _manifest
from tests.web.conftest import build_app
from tests.web.test_api import wait_job

# --- scratch_for -----------------------------------------------------------------------


def test_scratch_for_sqlite_ignores_a_server_url_of_no_engine() -> None:
    engine = scratch_for(_manifest("sqlite"), scratch_url=None, server_url="redis://h/0")
    assert engine.kind == "sqlite"


def test_scratch_names_differ_and_never_name_the_server_database() -> None:
    url = "postgresql://u:pw@127.0.0.1:5999/strongroom_verify"
    names = {
        scratch_for(_manifest("postgresql"), scratch_url=None, server_url=url).database_name()
        for _ in range(50)
    }
    assert len(names) == 50 and "strongroom_verify" not in names


# --- scheduler (strongroom run --once --config) ----------------------------------------


def _config(tmp_path: Path, url: str) -> Path:
    config = tmp_path / "strongroom.toml"
    config.write_text(
        f"""
timezone = "UTC"
[repository]
location = "{tmp_path / "repo"}"
key_file = "{tmp_path / "repo.key"}"

[targets.shop]
url = "{url}"
schedule = {{ daily = "0 2 * * *" }}
verify = {{ schedule = "0 5 * * *" }}
retention = {{ keep_last = 50 }}
"""
    )
    repo_env = {
        "STRONGROOM_REPO": str(tmp_path / "repo"),
        "STRONGROOM_KEY_FILE": str(tmp_path / "repo.key"),
    }
    cli_ok(run_cli("init", env=repo_env))
    return config


def _drilled(tmp_path: Path) -> bool:
    import json

    env = {
        "STRONGROOM_REPO": str(tmp_path / "repo"),
        "STRONGROOM_KEY_FILE": str(tmp_path / "repo.key"),
    }
    shown = json.loads(cli_ok(run_cli("show", "latest", "--json", env=env)))
    last = shown["last_verification"]
    return bool(last and last["kind"] == "restore" and last["ok"])


def test_scheduled_sqlite_drill_leaves_nothing_beside_the_target(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    db = make_sqlite_db(data / "shop.db", users=30, orders=30)
    config = _config(tmp_path, f"sqlite://{db}")
    cli_ok(run_cli("run", "--once", "--config", str(config)))
    assert sorted(p.name for p in data.iterdir()) == ["shop.db"]
    assert _drilled(tmp_path)


def test_scheduled_pg_drill_drops_its_scratch(tmp_path, pg_server, pg_db):
    name = pg_db.rsplit("/", 1)[1]
    pg_server.psql(name, "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 50) g;")
    before = {r[0] for r in pg_server.query("postgres", "SELECT datname FROM pg_database")}
    config = _config(tmp_path, pg_db)
    cli_ok(run_cli("run", "--once", "--config", str(config)))
    assert _drilled(tmp_path)
    after = {r[0] for r in pg_server.query("postgres", "SELECT datname FROM pg_database")}
    assert after == before


# --- web drill ---------------------------------------------------------------------------


def test_web_drill_of_sqlite_leaves_nothing_and_refuses_the_live_file(tmp_path):
    from fastapi.testclient import TestClient

    make_sqlite_db(tmp_path / "shop.db", users=30, orders=30)
    web = build_app(tmp_path, {"shop": f"sqlite://{tmp_path / 'shop.db'}"})
    with TestClient(web.app) as client:
        job = client.post("/api/backups", json={"target": "shop"}, headers=web.admin)
        done = wait_job(client, job.json()["job_id"], web.admin)
        backup_id = done["result"]["backup_id"]
        before = sorted(p.name for p in tmp_path.iterdir())
        drill = client.post(f"/api/backups/{backup_id}/verify-restore", headers=web.admin)
        assert wait_job(client, drill.json()["job_id"], web.admin)["status"] == "succeeded"
        assert sorted(p.name for p in tmp_path.iterdir()) == before
        live = f"sqlite://{tmp_path / 'shop.db'}"
        refused = client.post(
            f"/api/backups/{backup_id}/verify-restore", headers=web.admin, json={"scratch": live}
        )
        if refused.status_code == 202:
            assert wait_job(client, refused.json()["job_id"], web.admin)["status"] == "failed"
        else:
            assert refused.status_code in (400, 409, 422)
    assert (tmp_path / "shop.db").stat().st_size > 0


# --- PostgreSQL single-table restore verification ----------------------------------------

PARTITIONED = """
CREATE TABLE public.meas (id int, at date, v text) PARTITION BY RANGE (at);
CREATE TABLE public.meas_a PARTITION OF public.meas
  FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE public.meas_b PARTITION OF public.meas
  FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
INSERT INTO public.meas
  SELECT g, date '2024-06-01' + g, md5(g::text) FROM generate_series(1, 400) g;
CREATE TABLE public.plain (id int GENERATED ALWAYS AS IDENTITY, v text);
INSERT INTO public.plain (v) SELECT md5(g::text) FROM generate_series(1, 40) g;
"""


def _dump(engine: PostgresEngine) -> tuple[bytes, list[TableStats]]:
    with engine.dump() as running:
        data = running.stream.read()
        result = running.finish()
    return data, result.tables


def _wrong(stats: list[TableStats]) -> list[TableStats]:
    return [TableStats(t.name, t.rows + 1, t.checksum) for t in stats]


def test_a_wrong_single_table_is_caught(pg_server, pg_db):
    pg_server.psql(pg_db.rsplit("/", 1)[1], PARTITIONED)
    engine = PostgresEngine(pg_db)
    data, stats = _dump(engine)
    with pytest.raises(VerificationMismatch):
        engine.restore_tables(
            iter([data]),
            ["public.plain"],
            into="side x",
            expected=_wrong(stats),
            source_database="x",
        )


def test_a_partitioned_table_restore_checks_its_partitions(pg_server, pg_db):
    pg_server.psql(pg_db.rsplit("/", 1)[1], PARTITIONED)
    engine = PostgresEngine(pg_db)
    data, stats = _dump(engine)
    with pytest.raises(VerificationMismatch):
        engine.restore_tables(
            iter([data]),
            ["public.meas"],
            into="side y",
            expected=_wrong(stats),
            source_database="x",
        )


# --- kill -9 -----------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _kill_during_restore(args: list[str], env: dict[str, str], marker: str) -> list[int]:
    """Start the CLI, wait for a child whose command line holds ``marker``, kill -9 the CLI;
    return the children it had then."""
    full = {**os.environ, **env}
    full.pop("DATABASE_URL", None)
    proc = subprocess.Popen(
        [*STRONGROOM, *args],
        env=full,
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    children: list[int] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        children = _children(proc.pid)
        if any(marker in _cmdline(c) for c in children):
            break
        time.sleep(0.01)
    assert children, "the restore started no child process"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return children


def _option_files() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("strongroom-my-*.cnf")}


def test_killed_mysql_restore_leaves_no_child_and_no_password_file(
    tmp_path, mariadb_server, mysql_db, mysql_new_db
):
    from tests.fixtures.mariadb import fill_sample

    fill_sample(mariadb_server, mysql_db.rsplit("/", 1)[1], customers=3000)
    env = {"STRONGROOM_REPO": str(tmp_path / "r"), "STRONGROOM_KEY_FILE": str(tmp_path / "k")}
    cli_ok(run_cli("init", env=env))
    cli_ok(run_cli("backup", mysql_db, env=env))
    files = _option_files()
    children = _kill_during_restore(
        ["restore", "latest", "--to", mysql_new_db, "--yes"], env, "--defaults-file"
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(_alive(c) for c in children):
        time.sleep(0.1)
    assert not any(_alive(c) for c in children)
    leaked = _option_files() - files
    for name in leaked:  # they hold the server's password
        (Path(tempfile.gettempdir()) / name).unlink(missing_ok=True)
    assert not leaked


def test_killed_pg_restore_leaves_no_child(tmp_path, pg_server, pg_db, pg_new_db):
    pg_server.psql(
        pg_db.rsplit("/", 1)[1],
        "CREATE TABLE big AS SELECT g AS id, md5(g::text) || md5((g*7)::text) AS v "
        "FROM generate_series(1, 300000) g;",
    )
    env = {"STRONGROOM_REPO": str(tmp_path / "r"), "STRONGROOM_KEY_FILE": str(tmp_path / "k")}
    cli_ok(run_cli("init", env=env))
    cli_ok(run_cli("backup", pg_db, env=env))
    children = _kill_during_restore(
        ["restore", "latest", "--to", pg_new_db, "--yes"], env, "--no-password"
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(_alive(c) for c in children):
        time.sleep(0.1)
    assert not any(_alive(c) for c in children)
