"""What the table checksums cost (src/strongroom/engines/postgresql/stats.py).

    .venv/bin/python bench/checksum_cost.py                 # quick: --scale 0.4 (~200 MB)
    .venv/bin/python bench/checksum_cost.py --scale 1.0     # the benchmark database

On one database (bench/datagen.py), each the best of --repeat runs:

* ``pg_dump -Fc -Z0 > /dev/null`` (what the dump-side scan runs beside);
* the dump-side scan (``snapshot_table_stats``: one connection, REPEATABLE READ): counting
  rows only (``STRONGROOM_PG_CHECKSUMS=0``), with the portable checksums, and with the
  checksums strongroom computed before them (``rec64sum``: whole-row hash, not portable);
* the restore-side scan (``parallel_table_stats`` on 4 connections, as a restore verifies);
* ``strongroom backup`` into a local repository with and without checksums.

``bench/run.py`` calls :func:`measure` on its database too, and reports the same table.
Results of a standalone run: bench/results/checksum-cost.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from strongroom.engines.postgresql import stats as postgres_checksum
from strongroom.engines.postgresql.stats import (
    TABLES_SQL,
    parallel_table_stats,
    prepare_session,
    snapshot_table_stats,
)

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import datagen  # noqa: E402

CHECKSUMS_ENV = postgres_checksum.CHECKSUMS_ENV
STRONGROOM = ROOT / ".venv" / "bin" / "strongroom"
VERIFY_WORKERS = 4


@contextmanager
def checksums(enabled: bool) -> Iterator[None]:
    """``STRONGROOM_PG_CHECKSUMS`` for this process, restored afterwards."""
    before = os.environ.get(CHECKSUMS_ENV)
    os.environ[CHECKSUMS_ENV] = "1" if enabled else "0"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(CHECKSUMS_ENV, None)
        else:
            os.environ[CHECKSUMS_ENV] = before


def best_of(repeat: int, once: Callable[[], object]) -> float:
    """The fastest of ``repeat`` runs of ``once``, in seconds."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        once()
        times.append(time.perf_counter() - started)
    return round(min(times), 3)


def in_snapshot(url: str, scan: Callable[[psycopg.Connection[Any]], object]) -> Callable[[], None]:
    """``scan`` on one connection inside a REPEATABLE READ READ ONLY transaction (as the
    dump's row counter runs)."""

    def once() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            scan(conn)
            conn.execute("ROLLBACK")

    return once


def old_checksums(conn: psycopg.Connection[Any]) -> None:
    """The checksums before portable ones: ``sum(hash_record_extended(t, 0))`` per table,
    ``sum(hashtextextended(t::text, 0))`` when a column type has no hash function."""
    record = "SELECT count(*), coalesce(sum(hash_record_extended(t, 0)), 0) FROM {}.{} AS t"
    text = "SELECT count(*), coalesce(sum(hashtextextended(t::text, 0)), 0) FROM {}.{} AS t"
    for schema, name in conn.execute(TABLES_SQL).fetchall():
        table = (sql.Identifier(schema), sql.Identifier(name))
        conn.execute("SAVEPOINT old")
        try:
            conn.execute(sql.SQL(record).format(*table)).fetchone()
            conn.execute("RELEASE SAVEPOINT old")
        except psycopg.errors.UndefinedFunction:
            conn.execute("ROLLBACK TO SAVEPOINT old")
            conn.execute(sql.SQL(text).format(*table)).fetchone()


def measure(
    url: str,
    *,
    pg_dump: Path,
    env: dict[str, str],
    repeat: int = 3,
    say: Callable[[str], None] = print,
) -> dict[str, float]:
    """Seconds of each scan (see the module docstring) on the database at ``url``."""
    result: dict[str, float] = {}

    def run_pg_dump() -> None:
        subprocess.run(
            [str(pg_dump), "-Fc", "-Z0", "-d", url],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            check=True,
        )

    def connect() -> psycopg.Connection[Any]:
        return psycopg.connect(url, autocommit=True)

    def restore_side() -> None:
        parallel_table_stats(connect, workers=VERIFY_WORKERS)

    def new(conn: psycopg.Connection[Any]) -> None:
        snapshot_table_stats(conn)

    def old(conn: psycopg.Connection[Any]) -> None:
        prepare_session(conn)
        old_checksums(conn)

    steps: list[tuple[str, bool, Callable[[], object]]] = [
        ("pg_dump_seconds", True, run_pg_dump),
        ("count_only_seconds", False, in_snapshot(url, new)),
        ("checksums_seconds", True, in_snapshot(url, new)),
        ("old_checksums_seconds", True, in_snapshot(url, old)),
        ("verify_count_only_seconds", False, restore_side),
        ("verify_checksums_seconds", True, restore_side),
    ]
    for key, enabled, once in steps:
        with checksums(enabled):
            result[key] = best_of(repeat, once)
        say(f"  {key.removesuffix('_seconds').replace('_', ' ')}: {result[key]:.2f} s")
    return result


def ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None or b == 0 else f"{a / b:.2f}x"


def secs(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f} s"


def rows(m: dict[str, Any]) -> list[list[str]]:
    """(what, time, / pg_dump -Z0) rows of the report."""
    dump = m.get("pg_dump_seconds")
    out = [
        ["pg_dump -Fc -Z0 > /dev/null", secs(dump), ratio(dump, dump)],
        [
            "dump-side scan, rows only (1 connection)",
            secs(m.get("count_only_seconds")),
            ratio(m.get("count_only_seconds"), dump),
        ],
        [
            "dump-side scan, portable checksums (pgrow2)",
            secs(m.get("checksums_seconds")),
            ratio(m.get("checksums_seconds"), dump),
        ],
        [
            "dump-side scan, old checksums (rec64sum/h64sum)",
            secs(m.get("old_checksums_seconds")),
            ratio(m.get("old_checksums_seconds"), dump),
        ],
        [
            f"restore-side verification, rows only ({VERIFY_WORKERS} connections)",
            secs(m.get("verify_count_only_seconds")),
            ratio(m.get("verify_count_only_seconds"), dump),
        ],
        [
            f"restore-side verification, checksums ({VERIFY_WORKERS} connections)",
            secs(m.get("verify_checksums_seconds")),
            ratio(m.get("verify_checksums_seconds"), dump),
        ],
    ]
    with_sums, without = m.get("backup_seconds"), m.get("backup_no_checksums_seconds")
    if with_sums is not None and without is not None:
        out += [
            ["strongroom backup, no checksums", secs(without), ratio(without, dump)],
            [
                "strongroom backup, checksums (the default)",
                secs(with_sums),
                ratio(with_sums, dump) + f" ({ratio(with_sums, without)} of no checksums)",
            ],
        ]
    return out


HEADER = ["what", "time", "/ pg_dump -Z0"]
NOTE = (
    "The dump-side scan runs beside pg_dump, inside its snapshot, so a backup pays for it "
    "only as far as the two compete for CPU and disk; the restore-side verification runs "
    "after pg_restore, so a restore pays for all of it. Rows only: "
    f"{CHECKSUMS_ENV}=0. Times are the best of the runs."
)


# --- standalone ------------------------------------------------------------------------------


def backup_times(
    url: str, work: Path, env: dict[str, str], repeat: int, say: Callable[[str], None]
) -> dict[str, float]:
    """``strongroom backup`` into a fresh local repository, with and without checksums,
    alternately, best of ``repeat``."""
    key = work / "cost.key"
    repo = work / "cost-repo"
    times: dict[str, list[float]] = {"backup_seconds": [], "backup_no_checksums_seconds": []}
    for _ in range(repeat):
        for name, enabled in (("backup_no_checksums_seconds", False), ("backup_seconds", True)):
            shutil.rmtree(repo, ignore_errors=True)
            key.unlink(missing_ok=True)
            run_env = {**env, CHECKSUMS_ENV: "1" if enabled else "0"}
            init = [str(STRONGROOM), "init", "--repo", str(repo), "--key-file", str(key)]
            subprocess.run(init, env=run_env, check=True, capture_output=True)
            started = time.perf_counter()
            subprocess.run(
                [str(STRONGROOM), "backup", url, "--repo", str(repo), "--key-file", str(key)],
                env=run_env,
                check=True,
                capture_output=True,
            )
            times[name].append(time.perf_counter() - started)
    shutil.rmtree(repo, ignore_errors=True)
    result = {k: round(min(v), 3) for k, v in times.items()}
    say(
        f"  strongroom backup: {result['backup_seconds']:.2f} s with checksums, "
        f"{result['backup_no_checksums_seconds']:.2f} s without"
    )
    return result


def write_results(
    results: Path, config: dict[str, Any], dataset: dict[str, Any], m: dict[str, Any]
) -> None:
    results.mkdir(parents=True, exist_ok=True)
    doc = {"config": config, "dataset": dataset, "checksum_cost": m}
    (results / "checksum-cost.json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = [
        "# strongroom benchmark: cost of the table checksums",
        "",
        f"Command: `{config['command']}`; PostgreSQL {config['postgresql']}, "
        f"{os.cpu_count()} CPUs; database {dataset['database_bytes'] / 1e6:,.0f} MB "
        f"(scale {config['scale']:g}).",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|---|---:|---:|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows(m)]
    lines += ["", NOTE]
    (results / "checksum-cost.md").write_text("\n".join(lines) + "\n")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/checksum_cost.py", description="What the table checksums cost."
    )
    parser.add_argument("--scale", type=float, default=0.4, help="database size (1.0 = ~500 MB)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the best is kept")
    parser.add_argument("--results", type=Path, default=BENCH / "results")
    parser.add_argument("--work", type=Path, default=BENCH / "work")
    args = parser.parse_args(argv)
    if args.scale <= 0 or args.repeat < 1:
        parser.error("--scale must be > 0 and --repeat >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    import run  # bench/run.py: the throwaway server and the scratch folder

    args = parse_args(argv)
    given = list(sys.argv[1:] if argv is None else argv)
    command = " ".join([".venv/bin/python bench/checksum_cost.py", *given])
    with run.scratch(args.work.resolve(), keep=False) as work:
        server = run.start_server(work)
        try:
            env = {
                **os.environ,
                "PGPASSWORD": server.password,
                "PATH": f"{server.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            }
            for name in ("STRONGROOM_REPO", "STRONGROOM_KEY_FILE", "STRONGROOM_PASSPHRASE"):
                env.pop(name, None)
            server.create_database(run.DB)
            print(f"generating the database (scale {args.scale:g})", flush=True)
            with server.connect(run.DB) as conn:
                generated = datagen.generate(conn, scale=args.scale, seed=args.seed)
                conn.execute("VACUUM (ANALYZE)")
                size = conn.execute("SELECT pg_database_size(current_database())").fetchone()
            database_bytes = int(size[0]) if size else 0
            dataset = {"database_bytes": database_bytes, "rows": generated}
            print(f"  {database_bytes / 1e6:,.0f} MB; measuring", flush=True)
            url = server.url(run.DB)
            m: dict[str, Any] = measure(
                url, pg_dump=server.bin_dir / "pg_dump", env=env, repeat=args.repeat
            )
            if STRONGROOM.exists():
                m.update(backup_times(url, work, env, args.repeat, print))
            with server.connect() as conn:
                version = conn.execute("SHOW server_version").fetchone()
            config = {
                "scale": args.scale,
                "seed": args.seed,
                "repeat": args.repeat,
                "command": command,
                "postgresql": str(version[0]) if version else "",
            }
            write_results(args.results, config, dataset, m)
        finally:
            with suppress(Exception):
                server.stop()
    print()
    for line in run.text_table(HEADER, rows(m)):
        print("  " + line)
    print(f"\nresults: {args.results}/checksum-cost.json, checksum-cost.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
