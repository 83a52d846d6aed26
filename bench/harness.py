"""The benchmark's harness: its throwaway PostgreSQL server, the machine's description, and
``Bench``, which runs and times the commands (alternately, best of ``--repeat``)."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import asdict
from pathlib import Path
from typing import Any

import datagen
import datagen_churn
from proc_measure import BenchError, Measured, Running
from report_format import mb, secs

from strongroom_servers.postgres import PgServer, find_server_bin_dir, free_port, run_as_user

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
STRONGROOM = ROOT / ".venv" / "bin" / "strongroom"
DB = "app"
DAYS_DB = "app_days"


def start_server(work: Path) -> PgServer:
    bin_dir = find_server_bin_dir()
    if bin_dir is None:
        raise BenchError(
            "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found: run "
            "`make system-tools` (Debian: apt-get install postgresql)"
        )
    run_as = run_as_user()
    last: Exception | None = None
    for _attempt in range(3):
        server = PgServer(
            bin_dir=bin_dir,
            base_dir=Path(tempfile.mkdtemp(prefix="pg-", dir=work)),
            port=free_port(),
            run_as=run_as,
        )
        try:
            server.start()
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            last = exc
            server.stop()
            continue
        with server.connect() as conn:
            # Same settings for every tool; the harness already runs with fsync=off.
            for name, value in (
                ("max_wal_size", "8GB"),
                ("checkpoint_timeout", "30min"),
                ("maintenance_work_mem", "256MB"),
            ):
                conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
            conn.execute("SELECT pg_reload_conf()")
        return server
    raise BenchError(f"could not start a throwaway PostgreSQL: {last}")


def environment(server: PgServer) -> dict[str, Any]:
    cpu = ""
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = 0
    with suppress(OSError, ValueError, IndexError):
        mem = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    commit = ""
    with suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    version = ""
    with suppress(Exception):
        from importlib.metadata import version as pkg_version

        version = pkg_version("strongroom")
    with server.connect() as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_bytes": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgresql": str(row[0]) if row else "",
        "strongroom": version,
        "git_commit": commit,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load_at_start": round(os.getloadavg()[0], 2),
    }


class Bench:
    """The run's server, scratch folders, environment and step runner; every measuring
    module takes one."""

    def __init__(self, args: argparse.Namespace, work: Path, server: PgServer) -> None:
        self.args = args
        self.work = work
        self.server = server
        self.logs = work / "logs"
        self.logs.mkdir()
        self.files = work / "files"
        self.files.mkdir()
        bin_dir = server.bin_dir
        self.pg_dump = bin_dir / "pg_dump"
        self.pg_restore = bin_dir / "pg_restore"
        self.psql = bin_dir / "psql"
        self.env = {
            **os.environ,
            "PGPASSWORD": server.password,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "LC_ALL": "C.UTF-8",
        }
        self.env.pop("STRONGROOM_REPO", None)
        self.env.pop("STRONGROOM_KEY_FILE", None)
        self.env.pop("STRONGROOM_PASSPHRASE", None)
        # the local index caches live in the scratch folder (measured, and removed with it)
        self.cache_dir = work / "cache"
        self.env["STRONGROOM_CACHE_DIR"] = str(self.cache_dir)
        self.clock = time.monotonic()

    def say(self, message: str) -> None:
        print(f"[{time.monotonic() - self.clock:6.0f}s] {message}", flush=True)

    def run(
        self,
        label: str,
        argv: Sequence[str],
        *,
        rss: bool = False,
        log: str = "steps",
        env: dict[str, str] | None = None,
    ) -> Measured:
        return self.start(label, argv, rss=rss, log=log, env=env).wait()

    def start(
        self,
        label: str,
        argv: Sequence[str],
        *,
        rss: bool = False,
        log: str = "steps",
        env: dict[str, str] | None = None,
    ) -> Running:
        return Running(
            label,
            argv,
            log_path=self.logs / f"{log}.log",
            env={**self.env, **(env or {})},
            sample_rss=rss,
        )

    def sr(self, *args: str | Path, upload_workers: int | None = None) -> list[str]:
        """The argv of a strongroom command; with ``upload_workers``, run through
        ``sr_workers.py``, which sets the number of pack upload threads first."""
        argv = [str(STRONGROOM), *(str(a) for a in args)]
        if upload_workers is not None:
            argv = [sys.executable, str(BENCH / "sr_workers.py"), str(upload_workers), *argv[1:]]
        if self.args.profile is not None:
            self.args.profile.mkdir(parents=True, exist_ok=True)
            name = f"{args[0]}-{time.monotonic() - self.clock:05.0f}"
            argv = [
                str(ROOT / ".venv" / "bin" / "py-spy"),
                "record",
                "--idle",
                "--threads",
                "--rate",
                "200",
                "--format",
                "speedscope",
                "-o",
                str(self.args.profile / f"{name}.speedscope.json"),
                "--",
                *argv,
            ]
        return argv

    # --- dataset
    def generate(self, dbname: str, scale: float) -> dict[str, Any]:
        self.server.create_database(dbname)
        started = time.monotonic()
        with self.server.connect(dbname) as conn:
            rows = datagen.generate(
                conn, scale=scale, seed=self.args.seed, log=lambda m: self.say(m.strip())
            )
            conn.execute("VACUUM (ANALYZE)")
            sizes = datagen_churn.table_sizes(conn)
            row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        seconds = time.monotonic() - started
        assert row is not None
        return {
            "database_bytes": int(row[0]),
            "table_bytes": sizes,
            "rows": rows,
            "generate_seconds": round(seconds, 1),
        }

    def churn(self, dbname: str, day: int) -> dict[str, int]:
        with self.server.connect(dbname) as conn:
            result = datagen_churn.churn_day(conn, day=day, seed=self.args.seed)
        return asdict(result)

    # --- measuring strongroom and a baseline alternately, best of --repeat
    def pair(
        self,
        what: str,
        baseline: tuple[str, Callable[[], Measured]],
        strongroom: tuple[str, Callable[[], Measured]],
    ) -> tuple[list[Measured], list[Measured]]:
        """Run baseline and strongroom alternately ``--repeat`` times (same conditions)."""
        base_runs, sr_runs = self.alternate(what, [baseline, strongroom])
        return base_runs, sr_runs

    def alternate(
        self, what: str, entries: Sequence[tuple[str, Callable[[], Measured]]]
    ) -> list[list[Measured]]:
        """Run ``entries`` one after the other, ``--repeat`` times; each one's runs."""
        all_runs: list[list[Measured]] = [[] for _ in entries]
        for i in range(self.args.repeat):
            suffix = f" (run {i + 1}/{self.args.repeat})" if self.args.repeat > 1 else ""
            for (label, once), runs in zip(entries, all_runs, strict=True):
                self.say(f"{what}: {label}{suffix}")
                m = once()
                runs.append(m)
                rss = f", peak RSS {mb(m.hwm_kib * 1024)}" if m.hwm_kib else ""
                self.say(f"  {secs(m.seconds)}{rss}")
        return all_runs
