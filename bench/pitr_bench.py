"""strongroom PITR benchmark: WAL archiving, base backups and restore to a time, each beside
its PostgreSQL baseline measured in the same run.

    make bench-pitr                                   # --scale 1.0 (~500 MB database)
    make bench-pitr PITR_ARGS="--quick"               # the smallest run (about a minute)
    .venv/bin/python bench/pitr_bench.py --help

It starts its own PostgreSQL (src/strongroom_servers) with ``archive_mode = on`` and an
``archive_command`` that times ``strongroom wal-push`` (bench/pitr_place.py), generates the
app database (bench/datagen.py), then measures:

* ``wal-push`` under a bulk load (the app's tables copied server-side, faster than the
  archiver can take the WAL): latency p50/p95 of the archiver's real calls, segments
  archived per second, pg_stat_archiver's failed_count and the archive lag;
* base backups: ``strongroom backup --physical`` against ``pg_basebackup -Ft -X fetch -D - >
  file`` (time, stored bytes), and a second base backup after one day of churn
  (``datagen_churn.churn_day``): its new stored bytes / the first's;
* restore to a time (RTO): ``restore --to-datadir --to-time T --start`` (the second base
  backup + the WAL of ``--replay-minutes`` of churn) against laying the base backup down
  alone and against extracting and starting the ``pg_basebackup`` tar.

Results: bench/results/pitr.{json,md}, targets PASS/MISS (reported, never asserted). The
servers are stopped and the work files removed at the end, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from strongroom_servers.postgres import PgServer, find_server_bin_dir, free_port, run_as_user

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:  # the sibling modules, also when imported from elsewhere
    sys.path.insert(0, str(BENCH))

import datagen  # noqa: E402
import datagen_churn  # noqa: E402
import pitr_report  # noqa: E402
from pitr_place import (  # noqa: E402
    BacklogSampler,
    BenchError,
    MarkerWriter,
    Place,
    Timed,
    archiver,
    can_enter,
    push_stats,
    segment_end,
    start_server,
    stop_cluster,
    timed,
    wait_archived,
)
from run import (  # noqa: E402
    environment,
    latest_backup_stats,
    manifests,
    q,
    scratch,
    shell,
    tree_bytes,
)

DB = "app"
MB = 1_000_000
QUICK = {"scale": 0.02, "load_segments": 4, "replay_minutes": 0.05, "repeat": 1}
FULL = {"scale": 1.0, "load_segments": 96, "replay_minutes": 2.0, "repeat": 2}


class PitrBench:
    """One run: the phases in order (``start`` … ``finish``), each adding its part to
    ``res`` (the content of pitr.json); ``close`` stops every cluster it started."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.user = run_as_user()
        if not can_enter(work, self.user):
            raise BenchError(
                f"the server's OS user cannot enter {work}: pass --work in a folder every "
                "user can enter (e.g. under /tmp)"
            )
        self.logs = work / "logs"
        self.logs.mkdir()
        self.files = work / "files"
        self.files.mkdir(mode=0o755)
        self.place = Place(work / "place", self.user, self.logs / "steps.log")
        self.server: PgServer | None = None
        self.running: list[Path] = []  # data dirs of restored clusters that may run
        self.clock = time.monotonic()
        self.res: dict[str, Any] = {"timeline_seconds": {}}
        self.segment_bytes = 16 * 1024 * 1024  # read from the server once it runs
        self.target: datetime | None = None  # the recovery target (restore --to-time)

    @property
    def pg(self) -> PgServer:
        assert self.server is not None
        return self.server

    def say(self, message: str) -> None:
        print(f"[{time.monotonic() - self.clock:6.0f}s] {message}", flush=True)

    def mark(self, phase: str) -> None:
        self.res["timeline_seconds"][phase] = round(time.monotonic() - self.clock, 1)

    def close(self) -> None:
        """Stop every cluster this run started (restored ones, then the server)."""
        if self.server is None:
            return
        for datadir in self.running:
            with suppress(OSError, subprocess.SubprocessError):
                stop_cluster(self.server, datadir, self.user)
        self.server.stop()

    def env(self) -> dict[str, str]:
        env = {
            **os.environ,
            "PGPASSWORD": self.pg.password,
            "PATH": f"{self.pg.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "LC_ALL": "C.UTF-8",
        }
        for name in ("STRONGROOM_REPO", "STRONGROOM_KEY_FILE", "STRONGROOM_PASSPHRASE"):
            env.pop(name, None)
        return env

    def run(self, label: str, argv: Sequence[str], *, as_server_user: bool = False) -> Timed:
        return timed(
            label,
            argv,
            log_path=self.logs / "steps.log",
            env=self.env(),
            cwd=self.place.root if as_server_user else self.work,
            user=self.user if as_server_user else None,
        )

    def lsn(self) -> int:
        return int(self.pg.query("postgres", "SELECT pg_current_wal_lsn() - '0/0'")[0][0])

    # --- set-up -------------------------------------------------------------------------
    def start(self) -> None:
        self.say("setting up the repository and the archive_command wrapper")
        self.place.setup(self.args.config_extra)
        bin_dir = find_server_bin_dir()
        if bin_dir is None:
            raise BenchError("PostgreSQL server binaries not found: run `make system-tools`")
        settings = {
            "archive_mode": "on",
            "archive_command": self.place.archive_command(),
            "wal_level": "replica",
            "track_commit_timestamp": "on",
            "max_wal_size": "8GB",
            "checkpoint_timeout": "30min",
            "maintenance_work_mem": "256MB",
        }
        self.server = start_server(bin_dir, self.work, settings, self.user)
        query = "SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'"
        self.segment_bytes = int(self.pg.query("postgres", query)[0][0])
        self.res["environment"] = environment(self.pg)
        self.say(f"server: PostgreSQL {self.res['environment']['postgresql']} on {self.pg.port}")

    def generate(self) -> None:
        self.say(f"generating the database (scale {self.args.scale:g}, seed {self.args.seed})")
        calls = len(self.place.calls())
        self.pg.create_database(DB)
        started = time.monotonic()
        with self.pg.connect(DB) as conn:
            rows = datagen.generate(
                conn, scale=self.args.scale, seed=self.args.seed, log=lambda m: self.say(m.strip())
            )
            conn.execute("VACUUM (ANALYZE)")
            row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        assert row is not None
        self.pg.query("postgres", "CREATE TABLE marker (id int PRIMARY KEY)")
        wait_archived(self.pg)
        self.res["dataset"] = {
            "database_bytes": int(row[0]),
            "rows": rows,
            "generate_seconds": round(time.monotonic() - started, 1),
        }
        self.res["wal_push"] = {"generate": push_stats(self.place.calls()[calls:])}
        self.say(f"  {int(row[0]) / MB:,.0f} MB in {self.res['dataset']['generate_seconds']} s")

    # --- wal-push under a bulk load -----------------------------------------------------
    def bulk_load(self) -> None:
        target = self.args.load_segments * self.segment_bytes
        self.say(f"bulk load: about {target / MB:,.0f} MB of WAL, copying the app's tables")
        wait_archived(self.pg)
        before = archiver(self.pg)
        calls_before = len(self.place.calls())
        sampler = BacklogSampler(self.pg)
        sampler.start()
        started = time.monotonic()
        copies = 0
        try:
            with self.pg.connect(DB) as conn:
                for table in datagen.TABLES:
                    conn.execute(f"CREATE TABLE bulk_{table} (LIKE {table})")
                while self.lsn() - before["current_lsn_bytes"] < target:
                    for table in datagen.TABLES:
                        conn.execute(f"INSERT INTO bulk_{table} SELECT * FROM {table}")
                        copies += 1
                        if self.lsn() - before["current_lsn_bytes"] >= target:
                            break
            load_seconds = time.monotonic() - started
            at_end = archiver(self.pg)
            switched = wait_archived(self.pg)
            drain_seconds = time.monotonic() - started - load_seconds
        finally:
            sampler.stop()
        after = archiver(self.pg)
        window = self.place.calls()[calls_before:]
        stats = push_stats([c for c in window if c.name != switched])
        generated = at_end["current_lsn_bytes"] - before["current_lsn_bytes"]
        lag = at_end["current_lsn_bytes"] - segment_end(
            at_end["last_archived_wal"], self.segment_bytes
        )
        self.res["wal_push"]["load"] = {
            **stats,
            "table_copies": copies,
            "load_seconds": round(load_seconds, 2),
            "wal_generated_bytes": generated,
            "wal_generated_segments_per_second": round(
                generated / self.segment_bytes / load_seconds, 3
            ),
            "backlog_max_files": max(sampler.samples, default=0),
            "backlog_median_files": sorted(sampler.samples)[len(sampler.samples) // 2]
            if sampler.samples
            else 0,
            "lag_at_load_end_files": at_end["ready_files"],
            "lag_at_load_end_bytes": max(lag, 0),
            "drain_seconds": round(drain_seconds, 2),
            "files_archived": sum(1 for c in window if c.code == 0),
            "segments_archived": sum(1 for c in window if c.code == 0 and c.is_segment),
            "archived_count_delta": after["archived_count"] - before["archived_count"],
            "failed_count_delta": after["failed_count"] - before["failed_count"],
            "failed_count": after["failed_count"],
            "excluded_switched_segment": switched,
            "calls": [  # every call: file, seconds after the first call's start, ms, exit code
                [c.name, round(c.start - window[0].start, 3), round(1000 * c.seconds, 1), c.code]
                for c in window
            ],
        }
        with self.pg.connect(DB) as conn:
            for table in datagen.TABLES:
                conn.execute(f"DROP TABLE bulk_{table}")
            conn.execute("CHECKPOINT")
        load = self.res["wal_push"]["load"]
        self.say(
            f"  {load['segments']} segments: p50 {load.get('p50_ms')} ms, p95 "
            f"{load.get('p95_ms')} ms, {load.get('segments_per_second')} segments/s "
            f"(the load wrote {load['wal_generated_segments_per_second']} segments/s)"
        )

    # --- base backups -------------------------------------------------------------------
    def pg_basebackup(self, path: Path) -> dict[str, Any]:
        tool = self.pg.bin_dir / "pg_basebackup"
        m = self.run(
            "pg_basebackup",
            shell(
                f"{q(tool)} -D - -Ft -X fetch --checkpoint=fast -d {q(self.pg.url())} > {q(path)}"
            ),
        )
        os.chmod(path, 0o644)  # extracted by the server's user
        return {"seconds": round(m.seconds, 2), "bytes": path.stat().st_size, "load": m.load}

    def physical_backup(self) -> dict[str, Any]:
        repo = self.place.repo

        def stored() -> int:
            return tree_bytes(repo) - tree_bytes(repo / "logs")

        before, lsn_before = stored(), self.lsn()
        m = self.place.run(
            "strongroom backup --physical",
            ["backup", "--physical", "--config", str(self.place.config), self.pg.url()],
        )
        stats = latest_backup_stats(repo)
        return {
            "id": str(manifests(repo)[-1]["id"]),
            "seconds": round(m.seconds, 2),
            "cpu_seconds": round(m.cpu_seconds, 2),
            "load": m.load,
            "stored_bytes": stored() - before,
            "lsn_before": lsn_before,
            **stats,
        }

    def base_backups(self) -> None:
        out: dict[str, Any] = {}
        self.say("base backup: pg_basebackup -Ft -X fetch -D - > file")
        out["pg_basebackup"] = self.pg_basebackup(self.files / "base-1.tar")
        (self.files / "base-1.tar").unlink()
        self.say("base backup: strongroom backup --physical (first)")
        out["first"] = self.physical_backup()
        self.say("churn: day 1")
        with self.pg.connect(DB) as conn:
            out["churn"] = asdict(datagen_churn.churn_day(conn, day=1, seed=self.args.seed))
        # the baseline first, as before the first pair: strongroom's second base backup
        # then starts right after the baseline's segment switch (the RTO replays from there)
        self.say("base backup: pg_basebackup (after one day of churn, kept for the RTO)")
        out["pg_basebackup_after_churn"] = self.pg_basebackup(self.files / "base-2.tar")
        self.say("base backup: strongroom backup --physical (after one day of churn)")
        out["second"] = self.physical_backup()
        self.res["base_backups"] = out
        for key in ("pg_basebackup", "first", "second", "pg_basebackup_after_churn"):
            b = out[key]
            size = b.get("stored_bytes", b.get("bytes", 0))
            self.say(f"  {key}: {b['seconds']:.1f} s, {size / MB:,.1f} MB")

    # --- restore to a time --------------------------------------------------------------
    def replay_window(self) -> None:
        """Markers every 0.1 s and days of churn for ``--replay-minutes`` after the second
        base backup; the target T is a marker's commit time after the last churn."""
        window = self.args.replay_minutes * 60
        self.say(f"writing WAL to replay: churn days and markers for {window:.0f} s")
        lsn_start = self.lsn()
        writer = MarkerWriter(self.pg)
        writer.start()
        started, day, churn = time.monotonic(), 2, []
        try:
            while True:
                with self.pg.connect(DB) as conn:
                    churn.append(
                        asdict(datagen_churn.churn_day(conn, day=day, seed=self.args.seed))
                    )
                day += 1
                if time.monotonic() - started >= window:
                    break
            churned = self.pg.query("postgres", "SELECT clock_timestamp()")[0][0]
            while sum(1 for at in self._markers().values() if at > churned) < 3:
                if not writer.is_alive():
                    break  # stop() says why
                time.sleep(0.1)
        finally:
            writer.stop()
        markers = self._markers()
        after = sorted((at, i) for i, at in markers.items() if at > churned)
        target, target_id = after[1]  # a later commit follows: recovery knows it got there
        wait_archived(self.pg)
        self.target = target
        target_lsn = writer.lsn_after[target_id]
        backup_lsn = self.res["base_backups"]["second"]["lsn_before"]
        replayed = target_lsn - backup_lsn
        self.res["rto"] = {
            "target_time": target.isoformat(),
            "window_seconds": round(time.monotonic() - started, 1),
            "churn_days": len(churn),
            "churn_rows": {k: sum(int(c[k]) for c in churn) for k in churn[0]},
            "wal_churn_bytes": writer.lsn_after[target_id] - lsn_start,
            "wal_replayed_bytes": replayed,
            "wal_segments_replayed": target_lsn // self.segment_bytes
            - backup_lsn // self.segment_bytes
            + 1,
            "markers_expected": sum(1 for at in markers.values() if at <= target),
        }
        self.say(
            f"  {len(churn)} days of churn; recovery target {target.isoformat()}, "
            f"{replayed / MB:,.1f} MB of WAL to replay ({self.res['rto']['wal_segments_replayed']}"
            " segments)"
        )

    def _markers(self) -> dict[int, datetime]:
        rows = self.pg.query("postgres", "SELECT id, pg_xact_commit_timestamp(xmin) FROM marker")
        return {int(i): at for i, at in rows}

    def restore_tar(self, number: int) -> tuple[Timed, Timed]:
        datadir = self.place.mkdir(f"tar-{number}")
        extract = self.run(
            "tar -x",
            ["tar", "-xf", str(self.files / "base-2.tar"), "-C", str(datadir)],
            as_server_user=True,
        )
        self.running.append(datadir)
        options = f"-p {free_port()} -k {shlex.quote(str(datadir))} -c archive_mode=off"
        start = self.run(
            "pg_ctl start (pg_basebackup tar)",
            [
                str(self.pg.bin_dir / "pg_ctl"),
                "-D",
                str(datadir),
                "-l",
                str(datadir / "log"),
                "-o",
                options,
                "-w",
                "-t",
                "600",
                "start",
            ],
            as_server_user=True,
        )
        self._remove(datadir)
        return extract, start

    def restore_laydown(self, number: int) -> Timed:
        datadir = self.place.root / f"laid-{number}"
        second = self.res["base_backups"]["second"]["id"]
        m = self.place.run(
            "strongroom restore --to-datadir (lay down only)",
            ["restore", second, "--config", str(self.place.config), "--to-datadir", str(datadir)],
        )
        self._remove(datadir)
        return m

    def restore_pitr(self, number: int) -> tuple[Timed, int]:
        assert self.target is not None, "replay_window() chooses the target"
        datadir = self.place.root / f"pitr-{number}"
        port = free_port()
        self.running.append(datadir)
        m = self.place.run(
            "strongroom restore --to-time --start",
            [
                "restore",
                "--config",
                str(self.place.config),
                "--to-datadir",
                str(datadir),
                "--to-time",
                self.target.isoformat(),
                "--start",
                "--port",
                str(port),
            ],
        )
        url = f"host=127.0.0.1 port={port} dbname=postgres user={self.pg.user}"
        with psycopg.connect(url, password=self.pg.password, autocommit=True) as conn:
            row = conn.execute("SELECT count(*) FROM marker").fetchone()
        self._remove(datadir)
        return m, int(row[0]) if row else -1

    def _remove(self, datadir: Path) -> None:
        stop_cluster(self.pg, datadir, self.user)
        subprocess.run(["rm", "-rf", str(datadir)], check=True)
        if datadir in self.running:
            self.running.remove(datadir)

    def restores(self) -> None:
        runs: dict[str, list[float]] = {k: [] for k in ("tar_x", "tar_start", "laydown", "pitr")}
        found: list[int] = []
        pitr_output = ""
        for number in range(self.args.repeat):
            suffix = f" (run {number + 1}/{self.args.repeat})" if self.args.repeat > 1 else ""
            self.say(f"restore: pg_basebackup tar: tar -x, pg_ctl start{suffix}")
            extract, start = self.restore_tar(number)
            runs["tar_x"].append(extract.seconds)
            runs["tar_start"].append(extract.seconds + start.seconds)
            self.say(f"  {extract.seconds:.1f} s + {start.seconds:.1f} s")
            self.say(f"restore: strongroom base backup laid down, no WAL replay{suffix}")
            runs["laydown"].append(self.restore_laydown(number).seconds)
            self.say(f"  {runs['laydown'][-1]:.1f} s")
            self.say(f"restore: strongroom restore --to-time T --start{suffix}")
            pitr, markers = self.restore_pitr(number)
            runs["pitr"].append(pitr.seconds)
            found.append(markers)
            pitr_output = pitr.output
            self.say(f"  {pitr.seconds:.1f} s, {markers} markers")
        rto = self.res["rto"]
        for key, values in runs.items():
            rto[f"{key}_seconds"] = round(min(values), 2)
            rto[f"{key}_samples"] = [round(v, 2) for v in values]
        rto["markers_found"] = found
        rto["markers_exact"] = all(n == rto["markers_expected"] for n in found)
        rto["base_backup_used"] = self.res["base_backups"]["second"]["id"] in pitr_output
        rto["recovered_to"] = next(
            (
                line.split("recovered to", 1)[1].strip()
                for line in pitr_output.splitlines()
                if "recovered to" in line
            ),
            "",
        )
        replay = rto["pitr_seconds"] - rto["laydown_seconds"]
        rto["replay_mb_per_second"] = (
            round(rto["wal_replayed_bytes"] / MB / replay, 1) if replay > 0 else None
        )
        if not rto["markers_exact"]:
            self.say(f"WARNING: markers {found}, expected {rto['markers_expected']}")

    def finish(self) -> None:
        self.res["wal_push"]["archiver_end"] = archiver(self.pg)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/pitr_bench.py",
        description="Benchmark strongroom's WAL archiving, base backups and restore to a time "
        "against PostgreSQL's own tools (see bench/README.md).",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the smallest run (under a minute): "
        + ", ".join(f"--{k.replace('_', '-')} {v:g}" for k, v in QUICK.items()),
    )
    parser.add_argument("--scale", type=float, help="database size: 1.0 = about 500 MB")
    parser.add_argument("--seed", type=int, default=1, help="data generator seed (default 1)")
    parser.add_argument(
        "--load-segments", type=int, help="WAL segments the bulk load writes (default 96)"
    )
    parser.add_argument(
        "--replay-minutes",
        type=float,
        help="minutes of churn after the second base backup, replayed by the restore to a "
        "time (default 2)",
    )
    parser.add_argument(
        "--repeat", type=int, help="runs of each restore, alternately; fastest kept (default 2)"
    )
    parser.add_argument(
        "--results", type=Path, default=BENCH / "results", help="pitr.json/md go here"
    )
    parser.add_argument("--work", type=Path, default=BENCH / "work", help="scratch space")
    parser.add_argument("--keep", action="store_true", help="keep the scratch files")
    parser.add_argument(
        "--config-extra",
        default="",
        metavar="TOML",
        help="lines appended to the strongroom.toml every command of the run reads (e.g. to "
        "measure another wal-push mode); recorded in pitr.json",
    )
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.scale <= 0 or args.load_segments < 1 or args.replay_minutes < 0 or args.repeat < 1:
        parser.error(
            "--scale must be > 0, --load-segments and --repeat >= 1, --replay-minutes >= 0"
        )
    return args


def _terminate(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    given = list(sys.argv[1:] if argv is None else argv)
    command = f'make bench-pitr PITR_ARGS="{shlex.join(given)}"' if given else "make bench-pitr"
    with scratch(args.work.resolve(), args.keep) as work:
        bench: PitrBench | None = None
        try:
            bench = PitrBench(args, work)
            skip = ("results", "work", "keep")
            config = {k: v for k, v in vars(args).items() if k not in skip}
            bench.res["config"] = {**config, "command": command}
            for phase in (
                "start",
                "generate",
                "bulk_load",
                "base_backups",
                "replay_window",
                "restores",
                "finish",
            ):
                getattr(bench, phase)()
                bench.mark(phase)
        except BenchError as exc:
            print(f"\nbenchmark failed: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("\ninterrupted: servers stopped, work files removed", file=sys.stderr)
            return 130
        finally:
            if bench is not None:
                bench.close()
        res = bench.res
        res["environment"]["load_at_end"] = round(os.getloadavg()[0], 2)
        res["targets"] = pitr_report.targets(res)
        args.results.mkdir(parents=True, exist_ok=True)
        (args.results / "pitr.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
        (args.results / "pitr.md").write_text(pitr_report.markdown(res))
        print(pitr_report.text(res))
        print(f"\nresults: {args.results}/pitr.json, pitr.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
