"""strongroom benchmark: strongroom side by side with pg_dump baselines, in one run.

    make bench                                # default: --scale 1.0 (~500 MB database)
    make bench BENCH_ARGS="--scale 0.1"       # a quick run
    .venv/bin/python bench/run.py --help

It starts its own throwaway PostgreSQL cluster (src/strongroom_servers, which the tests use
too), generates a deterministic web-app database (bench/datagen.py), then measures (see
bench/README.md): the backups against the pg_dump baselines (measure_backup.py), the restores
(measure_restore.py), a repeat backup after one day of churn, S3 requests and upload
concurrency against moto on loopback (measure_s3.py), the second backup of an unchanged small
database, the daily simulation (measure_days.py), the peak RSS at several database sizes and
the index cache per chunk (measure_memory.py), and the cost of the table checksums
(checksum_cost.py). This module is the command line and the order of the steps.

Results go to bench/results/latest.{json,md} and bench/results/storage-30-days.png
(report.py, chart.py). The targets (targets.py: issue 19's table and the bench's own rows)
are reported (PASS/MISS), never asserted. Work files live in bench/work/ and are removed at
the end; the server is stopped at the end, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
if str(BENCH) not in sys.path:  # the sibling modules, also when imported from elsewhere
    sys.path.insert(0, str(BENCH))

import chart  # noqa: E402
import measure_backup  # noqa: E402
import measure_days  # noqa: E402
import measure_memory  # noqa: E402
import measure_restore  # noqa: E402
import measure_s3  # noqa: E402
import report  # noqa: E402
import targets  # noqa: E402
from harness import DAYS_DB, DB, STRONGROOM, Bench, environment, start_server  # noqa: E402
from proc_measure import BenchError, q, shell  # noqa: E402
from repo_stats import latest_backup_stats, manifests, tree_bytes  # noqa: E402
from report_format import fx, mb, md_table, ratio, secs, text_table  # noqa: E402
from results_model import GB, Results  # noqa: E402

from strongroom.repository.chunks import UPLOAD_WORKERS  # noqa: E402
from strongroom_servers.postgres import PgServer  # noqa: E402

# Other bench scripts (checksum_cost, chunk_size, profile_path, pitr_bench, pitr_report) take
# the server, scratch folder and formatting helpers from here.
__all__ = [
    "DB",
    "environment",
    "fx",
    "latest_backup_stats",
    "main",
    "manifests",
    "mb",
    "md_table",
    "q",
    "ratio",
    "scratch",
    "secs",
    "shell",
    "start_server",
    "text_table",
    "tree_bytes",
]

DEFAULT_DAYS_SCALE = 0.25
DEFAULT_BIG_GB = 1.0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description="Benchmark strongroom against pg_dump baselines (see bench/README.md).",
    )
    parser.add_argument(
        "--scale", type=float, default=1.0, help="database size: 1.0 = about 500 MB (default)"
    )
    parser.add_argument("--seed", type=int, default=1, help="data generator seed (default 1)")
    parser.add_argument(
        "--days", type=int, default=30, help="simulated days, one backup each (0 skips)"
    )
    parser.add_argument(
        "--days-scale",
        type=float,
        default=None,
        help=f"database size for the daily simulation (default: {DEFAULT_DAYS_SCALE} x --scale, "
        "so the whole run fits 10 minutes on 2 cores; --days-scale equal to --scale simulates "
        "the full-size database)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=2,
        help="run the timed strongroom-vs-baseline pairs this many times, alternately, and "
        "keep the fastest of each (default 2)",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=BENCH / "results",
        help="where latest.json, latest.md and the chart go (default bench/results)",
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=BENCH / "work",
        help="scratch space for the server, dumps and repositories (default bench/work)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the scratch files (the server is still stopped)"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="run every strongroom command under py-spy (pip install py-spy) and write "
        "speedscope profiles to DIR (times are then not representative)",
    )
    parser.add_argument(
        "--big-gb",
        type=float,
        default=None,
        help="raw dump size (GB) of the large database for the memory-at-size step: one table "
        f"of 1 MiB text values (default {DEFAULT_BIG_GB:g} x --scale; 0 skips it)",
    )
    parser.add_argument(
        "--s3-workers",
        default=None,
        metavar="N,N,...",
        help=f"pack upload threads to compare against the local S3 endpoint (default "
        f"1,{UPLOAD_WORKERS},{2 * UPLOAD_WORKERS}: one, strongroom's default and twice it; "
        "'0' skips the S3 step)",
    )
    args = parser.parse_args(argv)
    if args.scale <= 0 or args.days < 0 or args.repeat < 1:
        parser.error("--scale must be > 0, --days >= 0 and --repeat >= 1")
    if args.big_gb is None:
        args.big_gb = round(args.scale * DEFAULT_BIG_GB, 4)
    if args.big_gb < 0:
        parser.error("--big-gb must be >= 0")
    workers = args.s3_workers or f"1,{UPLOAD_WORKERS},{2 * UPLOAD_WORKERS}"
    try:
        args.s3_workers = [int(n) for n in workers.split(",") if int(n) > 0]
    except ValueError:
        parser.error("--s3-workers takes whole numbers separated by commas, e.g. 1,2,4")
    if args.days_scale is None:
        args.days_scale = round(args.scale * DEFAULT_DAYS_SCALE, 4)
    return args


@contextmanager
def scratch(base: Path, keep: bool) -> Iterator[Path]:
    base.mkdir(parents=True, exist_ok=True)
    os.chmod(base, 0o755)  # the server may run as an unprivileged user below it
    work = Path(tempfile.mkdtemp(prefix="run-", dir=base))
    os.chmod(work, 0o755)
    try:
        yield work
    finally:
        if keep:
            print(f"scratch files kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _terminate(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    if not STRONGROOM.exists():
        print(f"error: {STRONGROOM} not found: run `make venv` first", file=sys.stderr)
        return 2
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("error: matplotlib is missing: .venv/bin/pip install matplotlib", file=sys.stderr)
        return 2
    if args.profile is not None and not (ROOT / ".venv" / "bin" / "py-spy").exists():
        print("error: --profile needs py-spy: .venv/bin/pip install py-spy", file=sys.stderr)
        return 2
    given = list(sys.argv[1:] if argv is None else argv)
    command = f'make bench BENCH_ARGS="{shlex.join(given)}"' if given else "make bench"
    started = time.monotonic()
    with scratch(args.work.resolve(), args.keep) as work:
        server = start_server(work)
        try:
            return run_all(args, work, server, command, started)
        except BenchError as exc:
            print(f"\nbenchmark failed: {exc}", file=sys.stderr)
            return 1
        finally:
            server.stop()


def run_all(
    args: argparse.Namespace, work: Path, server: PgServer, command: str, started: float
) -> int:
    res = Results(
        config={
            "scale": args.scale,
            "seed": args.seed,
            "days": args.days,
            "days_scale": args.days_scale,
            "repeat": args.repeat,
            "big_gb": args.big_gb,
            "s3_workers": args.s3_workers,
            "command": command,
        },
        environment=environment(server),
    )
    bench = Bench(args, work, server)

    def mark(name: str) -> None:
        res.timeline[name] = round(time.monotonic() - started, 1)

    bench.say(f"server: PostgreSQL {res.environment['postgresql']} on port {server.port}")
    bench.say(f"generating the database (scale {args.scale:g}, seed {args.seed})")
    res.dataset = bench.generate(DB, args.scale)
    bench.say(f"  {mb(res.dataset['database_bytes'])} in {res.dataset['generate_seconds']:.0f} s")
    days_db_bytes = 0
    if args.days and args.days_scale == args.scale:
        with server.connect() as conn:  # an identical copy, before any churn
            conn.execute(f"CREATE DATABASE {DAYS_DB} TEMPLATE {DB}")
        days_db_bytes = res.dataset["database_bytes"]
    mark("generate")

    repo = work / "repo"
    key = work / "bench.key"
    measure_backup.backups(bench, res, repo, key)
    mark("backups")
    measure_restore.restores(bench, res, repo, key)
    mark("restores")
    measure_backup.repeat(bench, res, repo, key)
    mark("repeat")
    shutil.rmtree(repo, ignore_errors=True)
    if args.s3_workers:
        measure_s3.measure(bench, res, args.s3_workers)
        mark("s3")
    server.drop_database(DB)
    measure_backup.unchanged_small(bench, res)
    mark("unchanged")

    if args.days:
        if args.days_scale != args.scale:
            bench.say(f"generating the daily-simulation database (scale {args.days_scale:g})")
            days_dataset = bench.generate(DAYS_DB, args.days_scale)
            days_db_bytes = days_dataset["database_bytes"]
            bench.say(f"  {mb(days_db_bytes)}")
        bench.say(f"simulating {args.days} days")
        measure_days.days(bench, res, DAYS_DB, days_db_bytes, args.days_scale)
        server.drop_database(DAYS_DB)
        shutil.rmtree(work / "repo-days", ignore_errors=True)
        mark("days")
    measure_memory.measure(bench, res, round(args.big_gb * GB))
    mark("memory")
    res.targets = targets.compute(res, args.days)
    mark("total")
    res.environment["load_at_end"] = round(os.getloadavg()[0], 2)

    args.results.mkdir(parents=True, exist_ok=True)
    chart_path = None
    if res.days:
        chart_path = args.results / "storage-30-days.png"
        chart.draw_chart(res, chart_path)
    (args.results / "latest.json").write_text(json.dumps(res.as_dict(), indent=2) + "\n")
    report.write_markdown(res, args.results / "latest.md", chart_path)
    report.print_report(res)
    print(
        f"\nresults: {args.results}/latest.json, latest.md"
        + (", " + chart_path.name if chart_path else "")
    )
    print(f"total time {res.timeline['total']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
