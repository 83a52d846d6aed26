"""wal-push latency per 16 MB segment: the code before the light path (a git revision),
today's direct push, and today's spool, each timed from PostgreSQL's own archiver calls.

    .venv/bin/python bench/wal_push_latency.py                 # 10 sequential, 48 under load
    .venv/bin/python bench/wal_push_latency.py --quick         # 4 and 16
    .venv/bin/python bench/wal_push_latency.py --before 7ee3313

For each variant a throwaway PostgreSQL (``archive_mode = on``) runs ``archive_command`` =
bench/pitr_place.py's wrapper, which records the start and end of every ``strongroom
wal-push`` process. Two phases:

* **sequential**: about one segment of rows inserted, ``pg_switch_wal()``, wait until it is
  archived; repeated (one push at a time on a quiet server);
* **bulk load**: rows inserted server-side as fast as PostgreSQL writes them, two sessions
  (the machine's 2 cores busy), for ``--load-segments`` segments; the archiver's calls
  during it give p50/p95 and the sustained segments/s (first start to last end).

The spool variant also runs ``strongroom wal-upload`` (the loop ``strongroom run``'s
uploader does) during both phases, as a deployment would, and reports how long the
spool took to drain after the load. Bytecode is compiled first for every variant (an
installed package has it; ``PYTHONDONTWRITEBYTECODE`` would make every push compile the
modules it imports). The launcher starts ``python -S`` and calls
``strongroom.cli.entry.main`` as the installed console script does. Results:
bench/results/wal-push-latency.{json,md}; targets (p95 <= 100 ms, >= 3 segments/s under
load) reported, never asserted.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

from pitr_place import (  # noqa: E402
    ROOT,
    BenchError,
    Place,
    percentile,
    push_stats,
    start_server,
    user_kwargs,
    wait_archived,
)

from strongroom_servers.postgres import PgServer, find_server_bin_dir, run_as_user  # noqa: E402

DEFAULT_BEFORE = "7ee3313"  # the last commit before the light path and the spool
ROW_SQL = (
    "INSERT INTO filler SELECT g, md5(g::text) || repeat('x', 120) FROM generate_series(1, %s) g"
)
ROWS_PER_SEGMENT = 80_000  # about 16 MB of WAL
# what pip's/uv's `strongroom` console script runs, without site (see Variant.start)
CONSOLE_SCRIPT = " -S -c 'import sys; from strongroom.cli.entry import main; sys.exit(main())'"


def _export_before(revision: str, into: Path) -> Path:
    """``src/strongroom`` of ``revision`` under ``into`` (readable by every user)."""
    into.mkdir(mode=0o755)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision, "src/strongroom"],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    for path in [into, *into.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    return into / "src"


class Variant:
    """One place, one server, one way of archiving."""

    def __init__(self, name: str, work: Path, user: Any, src: Path | None, spool: bool) -> None:
        self.name = name
        self.user = user
        self.place = Place(work / name, user, work / f"{name}-steps.log")
        self.spool = spool
        self.src = src  # None: the checkout
        self.server: PgServer | None = None
        self.uploader: subprocess.Popen[bytes] | None = None

    def start(self, bin_dir: Path) -> None:
        extra = ""
        if self.spool:
            spool = self.place.mkdir("spool")
            extra = f'[wal]\nspool = "{spool}"'
        self.place.setup(extra)
        lib = self.place.root / "lib"  # a copy for a user who cannot read the checkout
        if lib.is_dir():
            compileall.compile_dir(str(lib), quiet=1)
            for path in lib.rglob("__pycache__"):
                os.chmod(path, 0o755)
                for pyc in path.iterdir():
                    os.chmod(pyc, 0o644)
        # python -S: this host's system interpreter runs a sandbox .pth at every start that
        # imports certifi (8-75 ms, nothing of strongroom's); PYTHONPATH names the
        # virtualenv's site-packages, so nothing strongroom needs comes from site. And
        # main() called as the installed console script calls it, not through runpy's
        # -m (~4 ms of CPU importing importlib.util and friends)
        text = self.place.launcher.read_text()
        self.place.launcher.write_text(text.replace(" -m strongroom.cli.entry", CONSOLE_SCRIPT))
        if self.src is not None:
            text = self.place.launcher.read_text()
            checkout = str(ROOT / "src")
            if checkout not in text:
                raise BenchError("the server's user cannot read the checkout: no 'before' run")
            self.place.launcher.write_text(text.replace(checkout, str(self.src)))
        settings = {
            "archive_mode": "on",
            "archive_command": self.place.archive_command(),
            "wal_level": "replica",
            "max_wal_size": "8GB",
            "checkpoint_timeout": "30min",
            "synchronous_commit": "off",
        }
        self.server = start_server(bin_dir, self.place.root.parent, settings, self.user)
        self.server.query("postgres", "CREATE UNLOGGED TABLE IF NOT EXISTS warm (i int)")
        self.server.query("postgres", "CREATE TABLE filler (id bigint, pad text)")
        if self.spool:
            self.uploader = subprocess.Popen(
                [str(self.place.launcher), "wal-upload", "--config", str(self.place.config)],
                env=self.place.env(),
                cwd=self.place.root,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                **user_kwargs(self.user),
            )

    @property
    def pg(self) -> PgServer:
        assert self.server is not None
        return self.server

    def sequential(self, count: int) -> dict[str, Any]:
        wait_archived(self.pg)
        first = len(self.place.calls())
        for _ in range(count):
            self.pg.query("postgres", ROW_SQL % ROWS_PER_SEGMENT)
            wait_archived(self.pg)  # switches and waits: one push at a time
        return push_stats(self.place.calls()[first:])

    def bulk_load(self, segments: int) -> dict[str, Any]:
        wait_archived(self.pg)
        first = len(self.place.calls())
        lsn = "SELECT pg_current_wal_lsn() - '0/0'"
        start_lsn = int(self.pg.query("postgres", lsn)[0][0])
        target = start_lsn + segments * 16 * 1024 * 1024
        failures: list[BaseException] = []

        def load() -> None:
            try:
                with self.pg.connect() as conn:
                    conn.autocommit = True
                    while int(conn.execute(lsn).fetchone()[0]) < target:  # type: ignore[index]
                        conn.execute(ROW_SQL % (ROWS_PER_SEGMENT // 4))
            except BaseException as exc:  # reported below
                failures.append(exc)

        started = time.monotonic()
        sessions = [threading.Thread(target=load) for _ in range(2)]
        for session in sessions:
            session.start()
        for session in sessions:
            session.join()
        load_seconds = time.monotonic() - started
        if failures:
            raise BenchError(f"the bulk load failed: {failures[0]}")
        switched = wait_archived(self.pg)
        drain = time.monotonic() - started - load_seconds
        calls = [c for c in self.place.calls()[first:] if c.name != switched]
        written = int(self.pg.query("postgres", lsn)[0][0]) - start_lsn
        result = push_stats(calls)
        result["load_seconds"] = round(load_seconds, 2)
        result["wal_written_segments_per_second"] = round(written / 16 / 2**20 / load_seconds, 2)
        result["archive_drain_seconds"] = round(drain, 2)
        if self.spool:
            result["spool_drain_seconds"] = round(self._spool_drained(), 2)
        return result

    def process_cost(self, count: int) -> dict[str, Any]:
        """``count`` wal-push processes run one after another on copies of a real segment
        (new names, in a data directory with the server's pg_control): wall and CPU
        (user + system, from wait4) per process. CPU does not grow with other processes'
        load the way wall time does on a shared host."""
        data = self.place.mkdir("cost-data", 0o755)
        for sub in ("global", "pg_wal"):
            self.place.mkdir(f"cost-data/{sub}", 0o755)
        shutil.copy(self.pg.data_dir / "global" / "pg_control", data / "global" / "pg_control")
        self.place.chown(data / "global" / "pg_control")
        real = sorted(
            p for p in (self.pg.data_dir / "pg_wal").iterdir()
            if len(p.name) == 24 and p.stat().st_size == 16 * 1024 * 1024
        )  # fmt: skip
        if not real:
            raise BenchError("no WAL segment in pg_wal to copy")
        walls, cpus = [], []
        for i in range(count):
            name = f"00000001000000FF{i:08X}"
            shutil.copy(real[-1], data / "pg_wal" / name)
            self.place.chown(data / "pg_wal" / name)
            argv = [str(self.place.launcher), "wal-push", "--config", str(self.place.config)]
            started = time.monotonic()
            proc = subprocess.Popen(
                [*argv, f"pg_wal/{name}"],
                env=self.place.env(),
                cwd=data,
                **user_kwargs(self.user),
            )
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            walls.append(1000 * (time.monotonic() - started))
            cpus.append(1000 * (usage.ru_utime + usage.ru_stime))
            if proc.returncode != 0:
                raise BenchError(f"wal-push of {name} failed ({proc.returncode})")
        return {
            "segments": count,
            "p50_ms": round(percentile(walls, 0.5), 1),
            "p95_ms": round(percentile(walls, 0.95), 1),
            "max_ms": round(max(walls), 1),
            "cpu_p50_ms": round(percentile(cpus, 0.5), 1),
            "cpu_p95_ms": round(percentile(cpus, 0.95), 1),
            "segments_per_second": round(1000 * count / sum(walls), 3),
        }

    def _spool_drained(self, timeout: float = 600.0) -> float:
        started = time.monotonic()
        spool = self.place.root / "spool"
        while time.monotonic() - started < timeout:
            if not [p for p in spool.rglob("0000*") if p.is_file()]:
                return time.monotonic() - started
            time.sleep(0.2)
        raise BenchError("the spool did not drain")

    def close(self) -> None:
        if self.uploader is not None and self.uploader.poll() is None:
            self.uploader.send_signal(signal.SIGTERM)
            try:
                self.uploader.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.uploader.kill()
        if self.server is not None:
            self.server.stop()


def _markdown(res: dict[str, Any]) -> str:
    lines = [
        "# wal-push latency per 16 MB segment",
        "",
        f"{res['started']}, {res['cpus']} CPUs, load average at start {res['load_at_start']}; "
        f"before = `{res['before']}`. Times from PostgreSQL's archiver calls (the whole "
        "`strongroom wal-push` process, bytecode compiled, `python -S` calling the console "
        "script's `main()`: see the module's "
        "docstring). Targets (issue 18): p95 <= 100 ms, "
        ">= 3 segments/s under a bulk load.",
        "",
        "| variant | phase | segments | p50 ms | p95 ms | max ms | segments/s | CPU p50/p95 ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, phases in res["variants"].items():
        for phase, stats in phases.items():
            cpu = f"{stats['cpu_p50_ms']} / {stats['cpu_p95_ms']}" if "cpu_p50_ms" in stats else ""
            lines.append(
                f"| {name} | {phase} | {stats.get('segments')} | {stats.get('p50_ms')} | "
                f"{stats.get('p95_ms')} | {stats.get('max_ms')} | "
                f"{stats.get('segments_per_second')} | {cpu} |"
            )
    lines += ["", "Under load, the WAL written per second and the drain after it:", ""]
    for name, phases in res["variants"].items():
        load = phases.get("bulk load", {})
        drained = (
            f", the spool emptied {load['spool_drain_seconds']} s after the archiver caught up"
            if "spool_drain_seconds" in load
            else ""
        )
        lines.append(
            f"- {name}: the load wrote {load.get('wal_written_segments_per_second')} "
            f"segments/s for {load.get('load_seconds')} s; the archiver caught up "
            f"{load.get('archive_drain_seconds')} s after it{drained}."
        )
    lines += [
        "",
        "'one process at a time': the launcher run directly on copies of a real segment "
        "(no archiver, no bulk load; the other users of this shared host still run), with "
        "its CPU time (user + system) from wait4: the part of the latency that does not "
        "depend on how busy the host is.",
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequential", type=int, default=10, help="segments one at a time")
    parser.add_argument("--load-segments", type=int, default=48, help="segments of bulk load")
    parser.add_argument("--before", default=DEFAULT_BEFORE, help="git revision of 'before'")
    parser.add_argument("--quick", action="store_true", help="4 sequential, 16 under load")
    parser.add_argument("--variants", default="before,direct,spool")
    parser.add_argument("--out", type=Path, default=BENCH / "results")
    args = parser.parse_args(argv)
    if args.quick:
        args.sequential, args.load_segments = 4, 16
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # installed packages have bytecode
    bin_dir = find_server_bin_dir()
    if bin_dir is None:
        raise BenchError("PostgreSQL server binaries not found: run `make system-tools`")
    work = Path(tempfile.mkdtemp(prefix="wal-push-bench-", dir="/tmp"))
    os.chmod(work, 0o755)
    user = run_as_user()
    res: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "cpus": os.cpu_count(),
        "load_at_start": round(os.getloadavg()[0], 2),
        "before": args.before,
        "variants": {},
    }
    compileall.compile_dir(str(ROOT / "src" / "strongroom"), quiet=1)
    before_src = None
    if "before" in args.variants:
        before_src = _export_before(args.before, work / "before-src")
        compileall.compile_dir(str(before_src), quiet=1)
        for path in before_src.rglob("*"):
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
    try:
        for name in args.variants.split(","):
            src = before_src if name == "before" else None
            variant = Variant(name, work, user, src, spool=name == "spool")
            try:
                print(f"{name}: starting", flush=True)
                variant.start(bin_dir)
                sequential = variant.sequential(args.sequential)
                print(f"{name}: sequential {sequential}", flush=True)
                load = variant.bulk_load(args.load_segments)
                print(f"{name}: bulk load {load}", flush=True)
                cost = variant.process_cost(args.sequential)
                print(f"{name}: process cost {cost}", flush=True)
                res["variants"][name] = {
                    "sequential": sequential,
                    "bulk load": load,
                    "one process at a time": cost,
                }
            finally:
                variant.close()
    finally:
        subprocess.run(["rm", "-rf", str(work)], check=False)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "wal-push-latency.json").write_text(json.dumps(res, indent=2) + "\n")
    (args.out / "wal-push-latency.md").write_text(_markdown(res))
    print(_markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
