"""strongroom benchmark: strongroom side by side with pg_dump baselines, in one run.

    make bench                                # default: --scale 1.0 (~500 MB database)
    make bench BENCH_ARGS="--scale 0.1"       # a quick run
    .venv/bin/python bench/run.py --help

It starts its own throwaway PostgreSQL cluster (src/strongroom_servers, which the tests use
too), generates a deterministic web-app database (bench/datagen.py), then measures, each to
local disk:

* backups: ``pg_dump | gzip``, ``pg_dump -Fc -Z9``, ``pg_dump -Fc -Z0 > file`` (the raw
  limit), and ``strongroom backup`` into a local repository (first, and after a day of churn);
* restores: ``gunzip | psql``, ``pg_restore -j2`` from the local -Z0 file, ``strongroom
  restore``;
* 30 simulated days (one backup a day): stored bytes of strongroom against 30 gzip dumps;
* the peak RSS of the strongroom process during backup and restore;
* the cost of the table checksums: ``strongroom backup`` without them
  (``STRONGROOM_PG_CHECKSUMS=0``), and the checksum scans themselves against ``pg_dump``
  (bench/checksum_cost.py).

Results go to bench/results/latest.{json,md} and bench/results/storage-30-days.png. The
targets are reported (PASS/MISS), never asserted. Work files live in bench/work/ and are
removed at the end; the server is stopped at the end, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from strongroom_servers.postgres import PgServer, find_server_bin_dir, free_port, run_as_user

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
if str(BENCH) not in sys.path:  # the sibling modules, also when imported from elsewhere
    sys.path.insert(0, str(BENCH))

import checksum_cost  # noqa: E402
import datagen  # noqa: E402

MB = 1_000_000
DEFAULT_DAYS_SCALE = 0.25
STRONGROOM = ROOT / ".venv" / "bin" / "strongroom"
DB = "app"
DAYS_DB = "app_days"

# The targets: (key, description, limit, unit).
TARGETS: dict[str, tuple[str, float, str]] = {
    "backup_time": ("first backup time / pg_dump -Fc -Z0 > file", 1.3, "x"),
    "backup_size": ("stored size / pg_dump | gzip file", 1.0, "x"),
    "repeat_time": ("repeat backup (1 day of churn) time / pg_dump -Z0", 1.15, "x"),
    "repeat_new": ("repeat backup new bytes / raw dump", 5.0, "%"),
    "restore_time": ("restore time / pg_restore -j2 (local -Z0 file)", 1.1, "x"),
    "days_storage": ("30 days stored / one full pg_dump | gzip", 4.0, "x"),
    "rss_backup": ("peak RSS, strongroom backup", 200.0, "MB"),
    "rss_restore": ("peak RSS, strongroom restore", 200.0, "MB"),
}


class BenchError(RuntimeError):
    """A step failed; the message says which and where its log is."""


# --- measuring child processes ---------------------------------------------------------------


class HwmSampler(threading.Thread):
    """Polls ``VmHWM`` (the process's own peak resident set) of one pid until it exits.

    The pid's ``/proc`` directory is opened once, so a reused pid can never be sampled.
    """

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.peak_kib = 0
        self._interval = interval
        self._stop_event = threading.Event()
        try:
            self._dir_fd: int | None = os.open(f"/proc/{pid}", os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            self._dir_fd = None

    def run(self) -> None:
        if self._dir_fd is None:
            return
        try:
            while not self._stop_event.is_set():
                if not self._sample():
                    return
                self._stop_event.wait(self._interval)
        finally:
            os.close(self._dir_fd)

    def _sample(self) -> bool:
        assert self._dir_fd is not None
        try:
            fd = os.open("status", os.O_RDONLY, dir_fd=self._dir_fd)
            try:
                text = os.read(fd, 8192).decode("ascii", "replace")
            finally:
                os.close(fd)
        except OSError:
            return False
        for line in text.splitlines():
            if line.startswith("VmHWM:"):
                self.peak_kib = max(self.peak_kib, int(line.split()[1]))
                return True
        return False  # a zombie has no memory lines: it has exited

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


@dataclass
class Measured:
    label: str
    seconds: float
    hwm_kib: int = 0  # VmHWM of the measured process itself (polled)
    maxrss_kib: int = 0  # ru_maxrss from wait4: the process and its reaped children, max
    cpu_seconds: float = 0.0  # user + system time of the process and its reaped children
    load: float = 0.0  # the machine's 1-minute load average when it started


class Running:
    """A started child process, measured from start to exit."""

    def __init__(
        self,
        label: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: dict[str, str],
        sample_rss: bool = False,
    ) -> None:
        self.label = label
        self.log_path = log_path
        self._log = log_path.open("ab")
        self._log.write(f"\n$ {shlex.join(argv)}\n".encode())
        self._log.flush()
        self.load = os.getloadavg()[0]
        self._start = time.perf_counter()
        self.proc = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log, env=env
        )
        self._sampler = HwmSampler(self.proc.pid) if sample_rss else None
        if self._sampler is not None:
            self._sampler.start()

    def wait(self) -> Measured:
        try:
            _, status, usage = os.wait4(self.proc.pid, 0)
            seconds = time.perf_counter() - self._start
            self.proc.returncode = os.waitstatus_to_exitcode(status)
        finally:
            if self._sampler is not None:
                self._sampler.stop()
            self._log.close()
        if self.proc.returncode != 0:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise BenchError(
                f"{self.label} failed (exit {self.proc.returncode}); log {self.log_path}:\n{tail}"
            )
        hwm = self._sampler.peak_kib if self._sampler is not None else 0
        cpu = usage.ru_utime + usage.ru_stime
        return Measured(self.label, seconds, hwm, int(usage.ru_maxrss), cpu, self.load)

    def kill(self) -> None:
        if self.proc.returncode is None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def shell(script: str) -> list[str]:
    return ["bash", "-o", "pipefail", "-c", script]


def q(value: str | Path) -> str:
    return shlex.quote(str(value))


# --- the throwaway cluster ----------------------------------------------------------------------


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


# --- results -------------------------------------------------------------------------------------


@dataclass
class Artifact:
    """One measured operation: its time, what it stored, its memory."""

    name: str
    seconds: float
    stored_bytes: int | None = None
    peak_rss_bytes: int | None = None  # strongroom's own process (VmHWM)
    tree_maxrss_bytes: int | None = None  # ru_maxrss: max over it and its reaped children
    note: str = ""
    samples: list[float] = field(default_factory=list)  # every run's seconds (best is used)
    cpu_seconds: float | None = None  # client-side CPU (user+sys) of the best run
    load: float | None = None  # 1-minute load average when the best run started


def artifact(
    name: str, runs: Sequence[Measured], stored: int | None = None, note: str = ""
) -> Artifact:
    """The best (fastest) of ``runs``, with the highest peak RSS seen in any of them."""
    hwm = max(m.hwm_kib for m in runs) * 1024
    best = min(runs, key=lambda m: m.seconds)
    return Artifact(
        name=name,
        seconds=round(min(m.seconds for m in runs), 2),
        stored_bytes=stored,
        peak_rss_bytes=hwm or None,
        tree_maxrss_bytes=(max(m.maxrss_kib for m in runs) * 1024) if hwm else None,
        note=note,
        samples=[round(m.seconds, 2) for m in runs],
        cpu_seconds=round(best.cpu_seconds, 2),
        load=round(best.load, 2),
    )


@dataclass
class DayRecord:
    day: int
    gzip_bytes: int
    gzip_cumulative: int
    strongroom_repo_bytes: int
    strongroom_new_stored: int
    raw_bytes: int
    new_plain_bytes: int
    backup_seconds: float
    churn: dict[str, int] = field(default_factory=dict)


@dataclass
class Target:
    key: str
    description: str
    value: float | None
    limit: float
    unit: str

    @property
    def passed(self) -> bool | None:
        return None if self.value is None else self.value <= self.limit

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "pass": self.passed}


@dataclass
class Results:
    config: dict[str, Any]
    environment: dict[str, Any]
    dataset: dict[str, Any] = field(default_factory=dict)
    backups: list[Artifact] = field(default_factory=list)
    restores: list[Artifact] = field(default_factory=list)
    repeat: dict[str, Any] = field(default_factory=dict)
    days: list[DayRecord] = field(default_factory=list)
    days_summary: dict[str, Any] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)
    timeline: dict[str, float] = field(default_factory=dict)
    checksums: dict[str, float] = field(default_factory=dict)  # checksum_cost.measure()

    def as_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "environment": self.environment,
            "dataset": self.dataset,
            "backups": [asdict(a) for a in self.backups],
            "restores": [asdict(a) for a in self.restores],
            "repeat": self.repeat,
            "days": [asdict(d) for d in self.days],
            "days_summary": self.days_summary,
            "targets": [t.as_dict() for t in self.targets],
            "timeline_seconds": self.timeline,
            "checksum_cost": self.checksums,
        }


def tree_bytes(path: Path) -> int:
    """Total size (st_size) of the regular files under ``path``."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with suppress(FileNotFoundError):
                total += (Path(dirpath) / name).stat().st_size
    return total


def manifests(repo: Path) -> list[dict[str, Any]]:
    """The repository's (public) manifests, oldest first."""
    docs = [json.loads(p.read_bytes()) for p in (repo / "backups").glob("*.json")]
    return sorted(docs, key=lambda d: (d["finished_at"], d["id"]))


def latest_backup_stats(repo: Path) -> dict[str, int]:
    """raw size, stored new bytes and new plaintext bytes of the newest backup."""
    docs = manifests(repo)
    if not docs:
        raise BenchError(f"no manifest in {repo}")
    newest = docs[-1]
    known = {chunk_id for doc in docs[:-1] for chunk_id, _size in doc["chunks"]}
    new_plain = 0
    for chunk_id, size in newest["chunks"]:
        if chunk_id not in known:
            known.add(chunk_id)
            new_plain += int(size)
    return {
        "raw_bytes": int(newest["raw_size"]),
        "stored_new_bytes": int(newest["stored_new_bytes"]),
        "new_plain_bytes": new_plain,
        "chunks": int(newest["chunk_count"]),
        "new_chunks": int(newest["new_chunk_count"]),
    }


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


# --- formatting --------------------------------------------------------------------------------


def mb(value: int | float | None) -> str:
    return "-" if value is None else f"{value / MB:,.1f} MB"


def secs(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f} s"


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def load(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def fx(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}x"


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    def cells(values: Sequence[str]) -> str:
        return "| " + " | ".join(v.replace("|", "\\|") for v in values) + " |"

    out = [cells(header)]
    out.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
    out.extend(cells(r) for r in rows)
    return out


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]

    def line(cells: Sequence[str]) -> str:
        parts = [cells[0].ljust(widths[0])]
        parts += [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=False)]
        return "  ".join(parts)

    return [line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)]


def verdict(target: Target) -> str:
    return {True: "PASS", False: "MISS", None: "n/a"}[target.passed]


def target_value(target: Target) -> str:
    if target.value is None:
        return "-"
    if target.unit == "x":
        return f"{target.value:.2f}x"
    if target.unit == "%":
        return f"{target.value:.2f} %"
    return f"{target.value:.0f} {target.unit}"


def target_limit(target: Target) -> str:
    if target.unit == "x":
        return f"<= {target.limit:g}x"
    if target.unit == "%":
        return f"<= {target.limit:g} %"
    return f"<= {target.limit:g} {target.unit}"


def report_sections(res: Results) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of every table, for stdout and Markdown alike."""
    raw = next((a for a in res.backups if a.name.startswith("pg_dump -Fc -Z0")), None)
    gz = next((a for a in res.backups if a.name.startswith("pg_dump | gzip")), None)
    sections: list[tuple[str, list[str], list[list[str]]]] = []
    rows = []
    for a in res.backups:
        rows.append(
            [
                a.name,
                secs(a.seconds),
                fx(ratio(a.seconds, raw.seconds if raw else None)),
                mb(a.stored_bytes),
                fx(ratio(a.stored_bytes, gz.stored_bytes if gz else None)),
                "-" if a.peak_rss_bytes is None else mb(a.peak_rss_bytes),
                secs(a.cpu_seconds),
                load(a.load),
            ]
        )
    sections.append(
        (
            "Backup (to local disk)",
            [
                "tool",
                "time",
                "time / raw",
                "stored",
                "stored / gzip",
                "peak RSS",
                "client CPU",
                "load",
            ],
            rows,
        )
    )
    pgr = next((a for a in res.restores if a.name.startswith("pg_restore -j2")), None)
    rows = [
        [
            a.name,
            secs(a.seconds),
            fx(ratio(a.seconds, pgr.seconds if pgr else None)),
            "-" if a.peak_rss_bytes is None else mb(a.peak_rss_bytes),
            secs(a.cpu_seconds),
            load(a.load),
        ]
        for a in res.restores
    ]
    sections.append(
        (
            "Restore",
            ["tool", "time", "time / pg_restore -j2", "peak RSS", "client CPU", "load"],
            rows,
        )
    )
    if res.repeat:
        r = res.repeat
        rows = [
            ["pg_dump -Fc -Z0 > file", secs(r["raw_seconds"]), "1.00x", mb(r["raw_bytes"]), ""],
            [
                "strongroom backup (repeat)",
                secs(r["strongroom_seconds"]),
                fx(ratio(r["strongroom_seconds"], r["raw_seconds"])),
                mb(r["stored_new_bytes"]) + " new",
                f"new data {r['new_plain_bytes'] / MB:,.1f} MB = "
                f"{100 * r['new_plain_bytes'] / max(r['raw_bytes'], 1):.2f} % of raw",
            ],
        ]
        sections.append(
            (
                "Repeat backup after one day of churn",
                ["tool", "time", "time / raw", "stored", "note"],
                rows,
            )
        )
    if res.days_summary:
        s = res.days_summary
        rows = [
            [
                f"{s['days']} x pg_dump | gzip",
                mb(s["gzip_total_bytes"]),
                fx(ratio(s["gzip_total_bytes"], s["full_gzip_bytes"])),
            ],
            [
                f"strongroom repository after {s['days']} backups",
                mb(s["strongroom_total_bytes"]),
                fx(ratio(s["strongroom_total_bytes"], s["full_gzip_bytes"])),
            ],
            [
                "strongroom / gzip total",
                fx(ratio(s["strongroom_total_bytes"], s["gzip_total_bytes"]), 3),
                "",
            ],
        ]
        sections.append(
            (
                f"{s['days']} simulated days (database at --scale {s['scale']:g}, "
                f"{s['database_bytes'] / MB:,.0f} MB)",
                ["what", "stored", "/ one full gzip dump"],
                rows,
            )
        )
    if res.checksums:
        sections.append(
            ("Cost of the table checksums", checksum_cost.HEADER, checksum_cost.rows(res.checksums))
        )
    rows = [[t.description, target_value(t), target_limit(t), verdict(t)] for t in res.targets]
    sections.append(("Targets (reported, not asserted)", ["target", "value", "limit", ""], rows))
    return sections


def dataset_lines(res: Results) -> list[str]:
    d = res.dataset
    rows = ", ".join(f"{k} {v:,}" for k, v in d["rows"].items())
    return [
        f"database: {d['database_bytes'] / MB:,.0f} MB (pg_database_size), scale "
        f"{res.config['scale']:g}, seed {res.config['seed']}, generated in "
        f"{d['generate_seconds']:.0f} s",
        f"rows: {rows}",
        f"raw dump (pg_dump -Fc -Z0): {d['raw_dump_bytes'] / MB:,.1f} MB; gzip ratio of the "
        f"data (raw / pg_dump|gzip): {d['gzip_ratio']:.2f}x (real app data: typically 3-5x)",
    ]


def environment_line(res: Results) -> str:
    e = res.environment
    return (
        f"{e['cpus']} CPUs ({e['cpu']}), {e['memory_bytes'] / 2**30:.0f} GiB RAM, "
        f"PostgreSQL {e['postgresql']}, Python {e['python']}, strongroom {e['strongroom']} "
        f"({e['git_commit']}), {e['date']}, load average {e['load_at_start']:.1f} at the start"
        + (f", {e['load_at_end']:.1f} at the end" if "load_at_end" in e else "")
    )


NOTES = [
    "Times: the raw dump and strongroom backup, pg_restore -j2 and strongroom restore, and "
    "the repeat pair run --repeat times alternately and the fastest run of each is shown "
    "(all runs are in latest.json); the other baselines run once. Times include process "
    "start-up. Every tool reads the same database on the same local server (fsync=off, data "
    "in the page cache) and writes to the same local disk.",
    "Peak RSS is VmHWM of the strongroom Python process itself, polled every 20 ms, the "
    "highest of its runs (pg_dump / pg_restore run as its children and are not included).",
    "strongroom's stored size is the whole repository folder (chunks, manifests, config).",
    "client CPU: user + system seconds of the measured command and its children (strongroom "
    "includes its pg_dump / pg_restore; the PostgreSQL server's CPU is not counted). load: the "
    "machine's 1-minute load average when the run started (other work on the machine slows "
    "every tool; CPU seconds are less sensitive to it than wall time).",
    "One day of churn: about 1 % new rows in every growing table; updates of 0.5 % of each "
    "table's row count, picked among its newest 10 % of rows; a few deletes (1 in 20,000 "
    "notes and workouts, and one user account a day, whose rows cascade).",
    "Repeat-backup new bytes: plaintext bytes of chunks not in any earlier backup, as a "
    "share of the raw dump (the number `strongroom backup` prints as 'new data').",
    "The daily simulation runs `pg_dump | gzip` and `strongroom backup` at the same time "
    "each day (only sizes are compared there).",
    "Checksum cost: " + checksum_cost.NOTE,
]


def notes(res: Results) -> list[str]:
    """The fixed notes, plus what this run's options changed."""
    extra = []
    cfg = res.config
    if res.days_summary and cfg["days_scale"] != cfg["scale"]:
        extra.append(
            f"The {cfg['days']}-day simulation ran on a separate, smaller database "
            f"(--days-scale {cfg['days_scale']:g}) so that the whole run fits in 10 minutes on "
            "2 cores; a smaller database has fewer chunks, so the same churn dirties a larger "
            "share of them (run with --days-scale equal to --scale for the full size)."
        )
    return NOTES + extra


def print_report(res: Results) -> None:
    print()
    print("=" * 78)
    print("strongroom benchmark — " + environment_line(res))
    for line in dataset_lines(res):
        print(line)
    for title, header, rows in report_sections(res):
        print()
        print(title)
        for line in text_table(header, rows):
            print("  " + line)
    print()
    for note in notes(res):
        print("* " + note)


def write_markdown(res: Results, path: Path, chart: Path | None) -> None:
    lines = ["# strongroom benchmark: latest run", ""]
    lines.append(environment_line(res) + ".")
    lines.append("")
    lines.append(
        f"Command: `{res.config['command']}` (total {res.timeline.get('total', 0):.0f} s)."
    )
    lines.append("")
    lines.extend(f"- {line}" for line in dataset_lines(res))
    for title, header, rows in report_sections(res):
        lines += ["", f"## {title}", ""]
        lines.extend(md_table(header, rows))
    if chart is not None:
        lines += ["", f"![cumulative stored bytes per day]({chart.name})"]
    if res.days:
        lines += ["", "<details><summary>Per day</summary>", ""]
        rows = [
            [
                str(d.day),
                mb(d.gzip_bytes),
                mb(d.gzip_cumulative),
                mb(d.strongroom_new_stored),
                mb(d.strongroom_repo_bytes),
                f"{100 * d.new_plain_bytes / max(d.raw_bytes, 1):.1f} %",
                secs(d.backup_seconds),
            ]
            for d in res.days
        ]
        lines.extend(
            md_table(
                [
                    "day",
                    "gzip dump",
                    "gzip cumulative",
                    "strongroom new",
                    "strongroom repository",
                    "new data",
                    "backup time*",
                ],
                rows,
            )
        )
        lines += ["", "\\* concurrent with that day's `pg_dump | gzip`.", "", "</details>"]
    lines += ["", "## Notes", ""]
    lines.extend(f"- {n}" for n in notes(res))
    path.write_text("\n".join(lines) + "\n")


def draw_chart(res: Results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    days = [d.day for d in res.days]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    ax.plot(
        days, [d.gzip_cumulative / MB for d in res.days], marker="o", ms=3, label="pg_dump | gzip"
    )
    ax.plot(
        days,
        [d.strongroom_repo_bytes / MB for d in res.days],
        marker="o",
        ms=3,
        label="strongroom repository",
    )
    full = res.days_summary["full_gzip_bytes"] / MB
    ax.axhline(4 * full, color="grey", ls="--", lw=1, label="target: 4x one full gzip dump")
    ax.set_xlabel("day (one backup a day)")
    ax.set_ylabel("cumulative stored MB")
    s = res.days_summary
    ax.set_title(
        f"Stored bytes over {s['days']} days — {s['database_bytes'] / MB:,.0f} MB database, "
        "~1 % new rows/day"
    )
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# --- the benchmark ---------------------------------------------------------------------------


class Bench:
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

    def sr(self, *args: str | Path) -> list[str]:
        argv = [str(STRONGROOM), *(str(a) for a in args)]
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
    def generate(self, res: Results, dbname: str, scale: float) -> dict[str, Any]:
        self.server.create_database(dbname)
        started = time.monotonic()
        with self.server.connect(dbname) as conn:
            rows = datagen.generate(
                conn, scale=scale, seed=self.args.seed, log=lambda m: self.say(m.strip())
            )
            conn.execute("VACUUM (ANALYZE)")
            sizes = datagen.table_sizes(conn)
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
            result = datagen.churn_day(conn, day=day, seed=self.args.seed)
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

    # --- backups
    def backups(self, res: Results, repo: Path, key: Path) -> None:
        url = self.server.url(DB)
        raw = self.files / "app.Z0.dump"
        gz = self.files / "app.sql.gz"
        z9 = self.files / "app.Z9.dump"

        def raw_dump() -> Measured:
            return self.run(
                "pg_dump -Fc -Z0", shell(f"{q(self.pg_dump)} -Fc -Z0 -d {q(url)} > {q(raw)}")
            )

        def first_backup(checksums: bool = True) -> Measured:
            shutil.rmtree(repo, ignore_errors=True)
            key.unlink(missing_ok=True)
            self.run("strongroom init", self.sr("init", "--repo", repo, "--key-file", key))
            return self.run(
                "strongroom backup" + ("" if checksums else " (no checksums)"),
                self.sr("backup", url, "--repo", repo, "--key-file", key),
                rss=True,
                env=None if checksums else {checksum_cost.CHECKSUMS_ENV: "0"},
            )

        raw_runs, no_sums_runs, sr_runs = self.alternate(
            "backup",
            [
                ("pg_dump -Fc -Z0 > file (raw)", raw_dump),
                ("strongroom backup (no checksums)", lambda: first_backup(checksums=False)),
                ("strongroom backup (first)", first_backup),
            ],
        )
        res.backups.append(artifact("pg_dump -Fc -Z0 > file (raw)", raw_runs, raw.stat().st_size))
        for label, script, out in (
            ("pg_dump | gzip", f"{q(self.pg_dump)} -d {q(url)} | gzip > {q(gz)}", gz),
            ("pg_dump -Fc -Z9", f"{q(self.pg_dump)} -Fc -Z9 -d {q(url)} > {q(z9)}", z9),
        ):
            self.say(f"backup: {label}")
            m = self.run(label, shell(script))
            res.backups.append(artifact(label, [m], out.stat().st_size))
            self.say(f"  {secs(m.seconds)}, {mb(out.stat().st_size)}")
        z9.unlink()
        res.backups.append(
            artifact(
                "strongroom backup (no checksums)",
                no_sums_runs,
                note=f"{checksum_cost.CHECKSUMS_ENV}=0: row counts only",
            )
        )
        res.backups.append(
            artifact(
                "strongroom backup (first)",
                sr_runs,
                tree_bytes(repo),
                note="local repository, zstd + age",
            )
        )
        self.say(f"  strongroom repository: {mb(tree_bytes(repo))}")
        self.say("checksum cost: the scans alone")
        res.checksums = checksum_cost.measure(
            url, pg_dump=self.pg_dump, env=self.env, repeat=self.args.repeat, say=self.say
        )
        res.checksums["backup_seconds"] = res.backups[-1].seconds
        res.checksums["backup_no_checksums_seconds"] = res.backups[-2].seconds
        res.dataset["raw_dump_bytes"] = raw.stat().st_size
        res.dataset["gzip_ratio"] = round(raw.stat().st_size / gz.stat().st_size, 3)

    # --- restores
    def restores(self, res: Results, repo: Path, key: Path) -> None:
        raw = self.files / "app.Z0.dump"
        gz = self.files / "app.sql.gz"

        def pg_restore() -> Measured:
            name = "restored_pgr"
            self.server.drop_database(name)
            self.server.create_database(name)
            argv = [str(self.pg_restore), "-j", "2", "--no-owner", "--exit-on-error"]
            m = self.run("pg_restore -j2", [*argv, "-d", self.server.url(name), str(raw)])
            self.server.drop_database(name)
            return m

        def sr_restore() -> Measured:
            name = "restored_sr"
            self.server.drop_database(name)
            m = self.run(
                "strongroom restore",
                self.sr(
                    "restore",
                    "latest",
                    "--to",
                    self.server.url(name),
                    "--repo",
                    repo,
                    "--key-file",
                    key,
                    "--yes",
                ),
                rss=True,
            )
            self.server.drop_database(name)
            return m

        name = "restored_gzip"
        self.server.create_database(name)
        self.say("restore: gunzip | psql")
        m = self.run(
            "gunzip | psql",
            shell(
                f"gunzip -c {q(gz)} | {q(self.psql)} -X -q -v ON_ERROR_STOP=1 "
                f"-d {q(self.server.url(name))} > /dev/null"
            ),
        )
        res.restores.append(artifact("gunzip | psql", [m]))
        self.say(f"  {secs(m.seconds)}")
        self.server.drop_database(name)
        gz.unlink()
        pgr_runs, sr_runs = self.pair(
            "restore",
            ("pg_restore -j2 (local -Z0 file)", pg_restore),
            ("strongroom restore", sr_restore),
        )
        res.restores.append(artifact("pg_restore -j2 (local -Z0 file)", pgr_runs))
        res.restores.append(
            artifact("strongroom restore", sr_runs, note="includes its row-count verification")
        )

    # --- repeat backup after one day of churn
    def repeat(self, res: Results, repo: Path, key: Path) -> None:
        url = self.server.url(DB)
        raw = self.files / "app.Z0.dump"
        snapshot = self.work / "repo-after-first"
        shutil.copytree(repo, snapshot)
        first_stored = tree_bytes(repo)
        self.say("churn: day 1 on the main database")
        churn = self.churn(DB, 1)
        self.say(
            f"  {churn['inserted']:,} rows inserted, {churn['updated']:,} updated, "
            f"{churn['deleted']:,} deleted (and their cascades)"
        )

        def raw_dump() -> Measured:
            return self.run(
                "pg_dump -Fc -Z0 (repeat)",
                shell(f"{q(self.pg_dump)} -Fc -Z0 -d {q(url)} > {q(raw)}"),
            )

        def repeat_backup() -> Measured:
            shutil.rmtree(repo)
            shutil.copytree(snapshot, repo)  # every run starts from the first backup alone
            return self.run(
                "strongroom backup (repeat)",
                self.sr("backup", url, "--repo", repo, "--key-file", key),
                rss=True,
            )

        raw_runs, sr_runs = self.pair(
            "repeat",
            ("pg_dump -Fc -Z0 > file (raw)", raw_dump),
            ("strongroom backup", repeat_backup),
        )
        shutil.rmtree(snapshot)
        stats = latest_backup_stats(repo)
        res.repeat = {
            "churn": churn,
            "raw_seconds": round(min(m.seconds for m in raw_runs), 2),
            "raw_samples": [round(m.seconds, 2) for m in raw_runs],
            "raw_cpu_seconds": round(min(raw_runs, key=lambda m: m.seconds).cpu_seconds, 2),
            "raw_bytes": raw.stat().st_size,
            "strongroom_seconds": round(min(m.seconds for m in sr_runs), 2),
            "strongroom_samples": [round(m.seconds, 2) for m in sr_runs],
            "strongroom_cpu_seconds": round(min(sr_runs, key=lambda m: m.seconds).cpu_seconds, 2),
            "strongroom_peak_rss_bytes": max(m.hwm_kib for m in sr_runs) * 1024,
            "repository_growth_bytes": tree_bytes(repo) - first_stored,
            "first_stored_bytes": first_stored,
            **stats,
        }
        self.say(
            f"  new data {mb(stats['new_plain_bytes'])} "
            f"({100 * stats['new_plain_bytes'] / max(stats['raw_bytes'], 1):.1f} % of raw), "
            f"stored {mb(stats['stored_new_bytes'])}"
        )
        raw.unlink()

    # --- 30 days
    def days(self, res: Results, dbname: str, database_bytes: int, scale: float) -> None:
        repo = self.work / "repo-days"
        key = self.work / "days.key"
        url = self.server.url(dbname)
        self.run("strongroom init (days)", self.sr("init", "--repo", repo, "--key-file", key))
        cumulative = 0
        for day in range(1, self.args.days + 1):
            churn: dict[str, int] = {}
            if day > 1:
                churn = self.churn(dbname, day - 1)
            gz = self.files / f"day-{day:02d}.sql.gz"
            before = tree_bytes(repo)
            dump = self.start(
                f"day {day}: pg_dump | gzip",
                shell(f"{q(self.pg_dump)} -d {q(url)} | gzip > {q(gz)}"),
                log="days",
            )
            try:
                m = self.run(
                    f"day {day}: strongroom backup",
                    self.sr("backup", url, "--repo", repo, "--key-file", key),
                    log="days",
                )
            except BaseException:
                dump.kill()
                raise
            dump.wait()
            size = gz.stat().st_size
            gz.unlink()
            cumulative += size
            total = tree_bytes(repo)
            stats = latest_backup_stats(repo)
            res.days.append(
                DayRecord(
                    day=day,
                    gzip_bytes=size,
                    gzip_cumulative=cumulative,
                    strongroom_repo_bytes=total,
                    strongroom_new_stored=total - before,
                    raw_bytes=stats["raw_bytes"],
                    new_plain_bytes=stats["new_plain_bytes"],
                    backup_seconds=round(m.seconds, 2),
                    churn=churn,
                )
            )
            self.say(
                f"day {day:2d}: gzip {mb(size)} (total {mb(cumulative)}), strongroom +"
                f"{mb(total - before)} (total {mb(total)}), new data "
                f"{100 * stats['new_plain_bytes'] / max(stats['raw_bytes'], 1):.1f} %"
            )
        res.days_summary = {
            "days": self.args.days,
            "scale": scale,
            "database_bytes": database_bytes,
            "full_gzip_bytes": res.days[0].gzip_bytes,
            "strongroom_first_bytes": res.days[0].strongroom_repo_bytes,
            "gzip_total_bytes": cumulative,
            "strongroom_total_bytes": res.days[-1].strongroom_repo_bytes,
        }

    def targets(self, res: Results) -> None:
        by = {a.name: a for a in res.backups}
        raw = by.get("pg_dump -Fc -Z0 > file (raw)")
        gz = by.get("pg_dump | gzip")
        sr = by.get("strongroom backup (first)")
        rs = {a.name: a for a in res.restores}
        pgr = rs.get("pg_restore -j2 (local -Z0 file)")
        srr = rs.get("strongroom restore")
        r = res.repeat
        s = res.days_summary
        values: dict[str, float | None] = {
            "backup_time": ratio(sr.seconds if sr else None, raw.seconds if raw else None),
            "backup_size": ratio(sr.stored_bytes if sr else None, gz.stored_bytes if gz else None),
            "repeat_time": ratio(r.get("strongroom_seconds"), r.get("raw_seconds")),
            "repeat_new": (
                100 * r["new_plain_bytes"] / r["raw_bytes"] if r.get("raw_bytes") else None
            ),
            "restore_time": ratio(srr.seconds if srr else None, pgr.seconds if pgr else None),
            "days_storage": ratio(s.get("strongroom_total_bytes"), s.get("full_gzip_bytes")),
            "rss_backup": (sr.peak_rss_bytes / MB) if sr and sr.peak_rss_bytes else None,
            "rss_restore": (srr.peak_rss_bytes / MB) if srr and srr.peak_rss_bytes else None,
        }
        days = f"{self.args.days} days"
        res.targets = []
        for key, (desc, lim, unit) in TARGETS.items():
            value = values[key]
            res.targets.append(
                Target(
                    key,
                    desc.replace("30 days", days),
                    None if value is None else round(value, 4),
                    lim,
                    unit,
                )
            )


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
    args = parser.parse_args(argv)
    if args.scale <= 0 or args.days < 0 or args.repeat < 1:
        parser.error("--scale must be > 0, --days >= 0 and --repeat >= 1")
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
            "command": command,
        },
        environment=environment(server),
    )
    bench = Bench(args, work, server)

    def mark(name: str) -> None:
        res.timeline[name] = round(time.monotonic() - started, 1)

    bench.say(f"server: PostgreSQL {res.environment['postgresql']} on port {server.port}")
    bench.say(f"generating the database (scale {args.scale:g}, seed {args.seed})")
    res.dataset = bench.generate(res, DB, args.scale)
    bench.say(f"  {mb(res.dataset['database_bytes'])} in {res.dataset['generate_seconds']:.0f} s")
    days_db_bytes = 0
    if args.days and args.days_scale == args.scale:
        with server.connect() as conn:  # an identical copy, before any churn
            conn.execute(f"CREATE DATABASE {DAYS_DB} TEMPLATE {DB}")
        days_db_bytes = res.dataset["database_bytes"]
    mark("generate")

    repo = work / "repo"
    key = work / "bench.key"
    bench.backups(res, repo, key)
    mark("backups")
    bench.restores(res, repo, key)
    mark("restores")
    bench.repeat(res, repo, key)
    mark("repeat")
    server.drop_database(DB)
    shutil.rmtree(repo, ignore_errors=True)

    if args.days:
        if args.days_scale != args.scale:
            bench.say(f"generating the daily-simulation database (scale {args.days_scale:g})")
            days_dataset = bench.generate(res, DAYS_DB, args.days_scale)
            days_db_bytes = days_dataset["database_bytes"]
            bench.say(f"  {mb(days_db_bytes)}")
        bench.say(f"simulating {args.days} days")
        bench.days(res, DAYS_DB, days_db_bytes, args.days_scale)
        mark("days")
    bench.targets(res)
    mark("total")
    res.environment["load_at_end"] = round(os.getloadavg()[0], 2)

    args.results.mkdir(parents=True, exist_ok=True)
    chart = None
    if res.days:
        chart = args.results / "storage-30-days.png"
        draw_chart(res, chart)
    (args.results / "latest.json").write_text(json.dumps(res.as_dict(), indent=2) + "\n")
    write_markdown(res, args.results / "latest.md", chart)
    print_report(res)
    print(
        f"\nresults: {args.results}/latest.json, latest.md" + (", " + chart.name if chart else "")
    )
    print(f"total time {res.timeline['total']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
