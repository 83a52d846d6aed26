"""Where each CPU-second of a backup and a restore goes (issue 19 point 3).

    .venv/bin/python bench/profile_path.py --scale 0.25          # iteration
    .venv/bin/python bench/profile_path.py --scale 1.0           # the benchmark database

Starts a throwaway PostgreSQL (bench/run.py), generates the benchmark database
(bench/datagen.py), then measures every stage of the path in isolation on the same dump
bytes, each as wall seconds, CPU seconds of this process (``time.process_time``: all
threads), of the client tools it ran (``pg_dump``, ``pg_restore``: reaped children) and of
the server (the postmaster's own and reaped children's CPU plus its live children's, from
``/proc``, before and after; autovacuum is off, or a restored copy's would land in a later
stage), with the 1-minute load average:

* backup side: ``pg_dump -Fc -Z0`` to /dev/null and to a file; FastCDC at 512, 32 and
  16 KiB averages; keyed BLAKE3 per chunk; the whole-stream BLAKE3; zstd levels 1, 3, 6
  per chunk; age per chunk and ChaCha20-Poly1305 per blob; one file + fsync per chunk
  against 16 MiB pack files; the statistics query in a snapshot (checksums, counts only);
* restore side: reading + decrypting + decompressing + checking the chunks (today's files
  with age, and packs with ChaCha20-Poly1305), writing the temp dump file, ``pg_restore
  --list``, ``pg_restore -j2``, the verification scan on 4 connections;
* end to end: ``strongroom backup`` and ``strongroom restore``, once plain (own CPU polled
  from ``/proc``) and once under ``py-spy record`` (on-CPU samples of every thread, put in
  categories by the innermost strongroom frame).

Results: ``--out`` (default bench/results/profile-path) ``.json`` and ``.md``. CPU seconds
are the claim (less sensitive to other load than wall seconds); nothing is asserted.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import blake3
import psycopg
import pyrage
import zstandard
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from strongroom.engines.postgresql.stats import parallel_table_stats, snapshot_table_stats
from strongroom.pipeline.chunking import ChunkerParams, iter_chunks
from strongroom.storage.local import LocalStorage

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import checksum_cost  # noqa: E402
import datagen  # noqa: E402
import run as bench_run  # noqa: E402
import spy_report  # noqa: E402

KIB = 1024
MB = 1_000_000
PACK_BYTES = 16 * 1024 * 1024
TICK = os.sysconf("SC_CLK_TCK")
SIZES_KIB = (512, 32, 16)
PYSPY = ROOT / ".venv" / "bin" / "py-spy"
STRONGROOM = ROOT / ".venv" / "bin" / "strongroom"
PYSPY_RATE = 100  # samples per second per thread


@dataclass
class Stage:
    """One measured stage: seconds of wall and CPU (this process, client tools, server)."""

    side: str
    name: str
    wall: float
    cpu_self: float
    cpu_tools: float
    cpu_server: float
    load: float
    note: str = ""

    @property
    def cpu(self) -> float:
        return self.cpu_self + self.cpu_tools + self.cpu_server


@dataclass
class Results:
    environment: dict[str, Any] = field(default_factory=dict)
    dataset: dict[str, Any] = field(default_factory=dict)
    stages: list[Stage] = field(default_factory=list)
    profiles: dict[str, dict[str, float]] = field(default_factory=dict)
    top_frames: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    phases: dict[str, dict[str, float]] = field(default_factory=dict)  # main-thread wall s


def proc_stat(pid: int) -> tuple[int, float, float, str]:
    """(ppid, own CPU seconds, reaped children's CPU seconds, state) of ``pid`` (/proc)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    rest = text.rsplit(")", 1)[1].split()
    own = (int(rest[11]) + int(rest[12])) / TICK
    children = (int(rest[13]) + int(rest[14])) / TICK
    return int(rest[1]), own, children, rest[0]


def server_cpu(postmaster: int) -> float:
    """CPU seconds of the whole server so far: the postmaster with the backends it reaped,
    plus its live children (a backend's CPU moves from the second term to the first when it
    is reaped, so a difference across a stage is that stage's server CPU). A backend that
    has exited and is not reaped yet shows no CPU in /proc: wait (up to 2 s) until none is."""
    deadline = time.monotonic() + 2.0
    while True:
        total, zombies = 0.0, 0
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                ppid, c_own, c_reaped, state = proc_stat(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile
            if ppid == postmaster:
                total += c_own + c_reaped
                zombies += state == "Z"
        _, own, reaped, _ = proc_stat(postmaster)
        if not zombies or time.monotonic() > deadline:
            return total + own + reaped
        time.sleep(0.02)


def tools_cpu() -> float:
    times = os.times()
    return times.children_user + times.children_system


class Profiler:
    def __init__(self, args: argparse.Namespace, work: Path, server: Any) -> None:
        self.args = args
        self.work = work
        self.server = server
        self.res = Results()
        pid_file = Path(server.data_dir) / "postmaster.pid"
        self.postmaster = int(pid_file.read_text().split()[0])
        bin_dir = Path(server.bin_dir)
        self.pg_dump, self.pg_restore = bin_dir / "pg_dump", bin_dir / "pg_restore"
        self.env = {
            **os.environ,
            "PGPASSWORD": server.password,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "LC_ALL": "C.UTF-8",
        }
        for name in ("STRONGROOM_REPO", "STRONGROOM_KEY_FILE", "STRONGROOM_PASSPHRASE"):
            self.env.pop(name, None)
        self.clock = time.monotonic()

    def say(self, message: str) -> None:
        print(f"[{time.monotonic() - self.clock:6.0f}s] {message}", flush=True)

    @contextmanager
    def stage(self, side: str, name: str, note: str = "") -> Iterator[None]:
        """Measure the body as one stage (appended to the results)."""
        load = os.getloadavg()[0]
        server0, tools0 = server_cpu(self.postmaster), tools_cpu()
        wall0, self0 = time.perf_counter(), time.process_time()
        yield
        wall, own = time.perf_counter() - wall0, time.process_time() - self0
        tools, server = tools_cpu() - tools0, server_cpu(self.postmaster) - server0
        st = Stage(side, name, wall, own, tools, server, load, note)
        self.res.stages.append(st)
        self.say(
            f"{side:8} {name:58} wall {wall:6.2f}  cpu self {own:6.2f} tools {tools:6.2f} "
            f"server {server:6.2f}"
        )

    def add(self, st: Stage) -> None:
        self.res.stages.append(st)
        self.say(
            f"{st.side:8} {st.name:58} wall {st.wall:6.2f}  cpu self {st.cpu_self:6.2f} "
            f"tools {st.cpu_tools:6.2f} server {st.cpu_server:6.2f}"
        )

    def sh(self, argv: Sequence[str], **kwargs: Any) -> None:
        subprocess.run(list(argv), env=self.env, check=True, **kwargs)

    # --- dataset ---------------------------------------------------------------------
    def generate(self) -> None:
        self.server.create_database("app")
        started = time.monotonic()
        with self.server.connect("app") as conn:
            rows = datagen.generate(
                conn, scale=self.args.scale, seed=1, log=lambda m: self.say(m.strip())
            )
            conn.execute("VACUUM (ANALYZE)")
            row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        self.res.dataset = {
            "scale": self.args.scale,
            "database_bytes": int(row[0]) if row else None,
            "rows": rows,
            "generate_seconds": round(time.monotonic() - started, 1),
        }

    # --- backup side -----------------------------------------------------------------
    def dump_stages(self) -> bytes:
        url = self.server.url("app")
        dump = self.work / "app.dump"
        with self.stage("backup", "pg_dump -Fc -Z0 > /dev/null (pg_dump + server)"):
            self.sh([str(self.pg_dump), "-Fc", "-Z0", "-d", url], stdout=subprocess.DEVNULL)
        with (
            self.stage("backup", "pg_dump -Fc -Z0 > file (the raw baseline)"),
            dump.open("wb") as out,
        ):
            self.sh([str(self.pg_dump), "-Fc", "-Z0", "-d", url], stdout=out)
        with (
            self.stage("backup", "pg_dump -Fc -Z0 | cat > file (a pipe, as strongroom reads)"),
            (self.work / "piped.dump").open("wb") as out,
        ):
            dumping = subprocess.Popen(
                [str(self.pg_dump), "-Fc", "-Z0", "-d", url], stdout=subprocess.PIPE, env=self.env
            )
            assert dumping.stdout is not None
            shutil.copyfileobj(dumping.stdout, out, 1 << 20)
            if dumping.wait() != 0:
                raise RuntimeError("pg_dump failed")
        data = dump.read_bytes()
        self.res.dataset["raw_dump_bytes"] = len(data)
        return data

    def chunk_stages(self, data: bytes) -> dict[int, list[bytes]]:
        chunked: dict[int, list[bytes]] = {}
        for kib in SIZES_KIB:
            avg = kib * KIB
            params = ChunkerParams(min_size=avg // 4, avg_size=avg, max_size=avg * 4)
            with self.stage("backup", f"FastCDC {kib} KiB avg (iter_chunks)"):
                chunks = list(iter_chunks(io.BytesIO(data), params))
            chunked[kib] = chunks
            self.res.dataset[f"chunks_{kib}k"] = len(chunks)
        with self.stage("backup", "whole-stream BLAKE3 (StreamChecksum, 512 KiB updates)"):
            whole = blake3.blake3()
            for c in chunked[512]:
                whole.update(c)
            whole.hexdigest()
        key = os.urandom(32)
        for kib in SIZES_KIB:
            with self.stage("backup", f"keyed BLAKE3 name per chunk, {kib} KiB"):
                for c in chunked[kib]:
                    blake3.blake3(c, key=key).hexdigest()
        return chunked

    def compress_stages(self, chunked: dict[int, list[bytes]]) -> dict[int, list[bytes]]:
        level1: dict[int, list[bytes]] = {}
        for kib in SIZES_KIB:
            for level in (1, 3, 6) if kib == 512 else (1, 3):
                comp = zstandard.ZstdCompressor(level=level, write_content_size=True)
                with self.stage("backup", f"zstd level {level} per chunk, {kib} KiB"):
                    out = [comp.compress(c) for c in chunked[kib]]
                if level == 1:
                    level1[kib] = out
                    raw = sum(len(c) for c in chunked[kib])
                    self.res.dataset[f"zstd1_ratio_{kib}k"] = round(
                        raw / sum(len(c) for c in out), 3
                    )
        return level1

    def crypto_stages(
        self, level1: dict[int, list[bytes]]
    ) -> tuple[list[bytes], dict[int, tuple[bytes, list[bytes]]], Any]:
        identity = pyrage.x25519.Identity.generate()
        recipient = identity.to_public()
        aged: list[bytes] = []
        for kib in SIZES_KIB:
            with self.stage("backup", f"age encrypt per chunk (today), {kib} KiB"):
                out = [bytes(pyrage.encrypt(c, [recipient])) for c in level1[kib]]
            if kib == 512:
                aged = out
        sealed: dict[int, tuple[bytes, list[bytes]]] = {}
        for kib in SIZES_KIB:
            pack_key = ChaCha20Poly1305.generate_key()
            aead = ChaCha20Poly1305(pack_key)
            with self.stage("backup", f"ChaCha20-Poly1305 per blob (packs), {kib} KiB"):
                blobs = []
                for c in level1[kib]:
                    nonce = os.urandom(12)
                    blobs.append(nonce + aead.encrypt(nonce, c, None))
            sealed[kib] = (pack_key, blobs)
        return aged, sealed, identity

    def write_stages(self, aged: list[bytes], sealed: dict[int, tuple[bytes, list[bytes]]]) -> None:
        for kib, blobs in ((512, aged), (32, sealed[32][1])):
            root = self.work / f"files-{kib}k"
            storage = LocalStorage(root)
            with self.stage("backup", f"one file + fsync per chunk (LocalStorage.put), {kib} KiB"):
                for i, blob in enumerate(blobs):
                    h = blake3.blake3(i.to_bytes(8, "big")).hexdigest()
                    storage.put(f"chunks/{h[:2]}/{h}", blob)
                storage.sync()
        for kib in SIZES_KIB:
            storage = LocalStorage(self.work / f"packs-{kib}k")
            with self.stage("backup", f"16 MiB pack files + fsync each, {kib} KiB blobs"):
                for n, pack in enumerate(packs_of(sealed[kib][1])):
                    storage.put(f"packs/{n:02x}/{n:064x}", pack)
                storage.sync()

    def stats_stages(self) -> None:
        url = self.server.url("app")
        for enabled, label in ((True, "checksums"), (False, "row counts only")):
            with (
                checksum_cost.checksums(enabled),
                self.stage("backup", f"statistics query in the snapshot ({label})"),
            ):
                checksum_cost.in_snapshot(url, snapshot_table_stats)()

    # --- restore side ----------------------------------------------------------------
    def read_stages(
        self, identity: Any, sealed: dict[int, tuple[bytes, list[bytes]]]
    ) -> list[bytes]:
        key = os.urandom(32)
        files = sorted((self.work / "files-512k" / "chunks").rglob("*"))
        files = [f for f in files if f.is_file()]
        dec = zstandard.ZstdDecompressor()
        plain: list[bytes] = []
        with self.stage("restore", "read + age decrypt + zstd -d + BLAKE3 check, 512 KiB files"):
            whole = blake3.blake3()
            for f in files:
                c = dec.decompress(bytes(pyrage.decrypt(f.read_bytes(), [identity])))
                blake3.blake3(c, key=key).hexdigest()
                whole.update(c)
                plain.append(c)
            whole.hexdigest()
        pack_key, blobs = sealed[32]
        aead = ChaCha20Poly1305(pack_key)
        packs = sorted(p for p in (self.work / "packs-32k" / "packs").rglob("*") if p.is_file())
        lengths = iter([len(b) for b in blobs])
        with self.stage("restore", "read pack + ChaCha20 decrypt + zstd -d + BLAKE3, 32 KiB"):
            whole = blake3.blake3()
            for pack_file in packs:
                view = memoryview(pack_file.read_bytes())
                for blob in blobs_in(view, lengths):
                    c = dec.decompress(aead.decrypt(bytes(blob[:12]), bytes(blob[12:]), None))
                    blake3.blake3(c, key=key).hexdigest()
                    whole.update(c)
            whole.hexdigest()
        del blobs
        return plain

    def restore_stages(self, plain: list[bytes]) -> None:
        with self.stage("restore", f"write the temp dump file ({tempfile.gettempdir()})"):
            handle = tempfile.TemporaryFile(prefix="sr-profile-")  # noqa: SIM115 (closed below)
            for c in plain:
                handle.write(c)
            handle.flush()
        dump = self.work / "app.dump"
        with self.stage("restore", "pg_restore --list (done before -j)"):
            self.sh([str(self.pg_restore), "--list", str(dump)], stdout=subprocess.DEVNULL)
        handle.close()
        self.server.drop_database("restored")
        self.server.create_database("restored")
        url = self.server.url("restored")
        flags = ["--no-owner", "--exit-on-error", "-j", "2", "-d"]
        piped = self.work / "piped.dump"
        with self.stage("restore", "pg_restore -j2 from the piped dump (no data offsets)"):
            self.sh([str(self.pg_restore), *flags, url, str(piped)])
        self.server.drop_database("restored")
        self.server.create_database("restored")
        with self.stage("restore", "pg_restore -j2 --no-owner from the file (the baseline)"):
            self.sh([str(self.pg_restore), *flags, url, str(dump)])

        def connect() -> psycopg.Connection[Any]:
            return psycopg.connect(url, autocommit=True)

        for enabled, label in ((True, "checksums"), (False, "row counts only")):
            with (
                checksum_cost.checksums(enabled),
                self.stage("restore", f"verification scan, 4 connections ({label})"),
            ):
                parallel_table_stats(connect, workers=4)
        self.server.drop_database("restored")

    # --- end to end ------------------------------------------------------------------
    def strongroom(
        self, side: str, args: Sequence[str], spy: Path | None, mode: str
    ) -> tuple[Stage, int]:
        """Run ``strongroom args`` (under py-spy when ``spy``); its stage, with its own CPU
        polled from /proc (tools = the rest), and its pid."""
        argv = [str(STRONGROOM), *args]
        if spy is not None:
            argv = [
                str(PYSPY), "record", "--threads", "--rate", str(PYSPY_RATE), "--format",
                "raw", "-o", str(spy), *(["--idle"] if mode == "wall" else []), "--", *argv,
            ]  # fmt: skip
        load = os.getloadavg()[0]
        server0 = server_cpu(self.postmaster)
        wall0 = time.perf_counter()
        log = (self.work / "strongroom.log").open("ab")
        proc = subprocess.Popen(argv, env=self.env, stdout=log, stderr=log)
        own = 0.0
        watched = proc.pid
        while proc.poll() is None:
            try:
                if spy is not None and watched == proc.pid:
                    kids = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
                    watched = int(kids[0]) if kids else proc.pid
                own = proc_stat(watched)[1]
            except (OSError, IndexError, ValueError):
                pass
            time.sleep(0.05)
        wall = time.perf_counter() - wall0
        log.close()
        if proc.returncode != 0:
            raise RuntimeError(f"strongroom {args[0]} failed; see {self.work / 'strongroom.log'}")
        server = server_cpu(self.postmaster) - server0
        what = {"plain": "plain", "cpu": "under py-spy", "wall": "under py-spy --idle"}[mode]
        name = f"strongroom {args[0]} end to end ({what})"
        return Stage(side, name, wall, own, 0.0, server, load), watched

    def end_to_end(self) -> None:
        """``strongroom backup`` then ``restore``: plain, under py-spy for the CPU
        categories, and under ``py-spy --idle`` for the main thread's wall phases."""
        url = self.server.url("app")
        for mode in ("plain", "cpu", "wall"):
            repo, key = self.work / f"repo-{mode}", self.work / f"key-{mode}"
            common = ["--repo", str(repo), "--key-file", str(key)]
            self.sh([str(STRONGROOM), "init", *common], stdout=subprocess.DEVNULL)
            self.server.drop_database("restored_sr")
            target = self.server.url("restored_sr")
            for what, args in (
                ("backup", ["backup", url, *common]),
                ("restore", ["restore", "latest", "--to", target, *common, "--yes"]),
            ):
                out = self.work / f"spy-{what}-{mode}.txt"
                tools0 = tools_cpu()
                st, pid = self.strongroom(what, args, None if mode == "plain" else out, mode)
                st.cpu_tools = max(0.0, tools_cpu() - tools0 - st.cpu_self)
                self.add(st)
                if mode == "cpu":
                    cats, top = spy_report.cpu_categories(out, PYSPY_RATE)
                    self.res.profiles[what], self.res.top_frames[what] = cats, top
                elif mode == "wall":
                    self.res.phases[what] = spy_report.main_thread_phases(out, PYSPY_RATE, pid)
            self.server.drop_database("restored_sr")


def packs_of(blobs: Sequence[bytes]) -> Iterator[bytes]:
    """Concatenations of ``blobs`` of about PACK_BYTES each."""
    current: list[bytes] = []
    size = 0
    for blob in blobs:
        current.append(blob)
        size += len(blob)
        if size >= PACK_BYTES:
            yield b"".join(current)
            current, size = [], 0
    if current:
        yield b"".join(current)


def blobs_in(view: memoryview, lengths: Iterator[int]) -> Iterator[memoryview]:
    """Slices of a pack, their lengths taken from ``lengths`` (as an index gives them)."""
    offset = 0
    while offset < len(view):
        n = next(lengths)
        yield view[offset : offset + n]
        offset += n


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--scale", type=float, default=0.25, help="database scale (1.0: ~500 MB)")
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "profile-path")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, bench_run._terminate)  # the server is stopped on a kill too
    with bench_run.scratch(BENCH / "work", args.keep) as work:
        res = profile(args, work)
    write_results(res, args.out)
    return 0


def profile(args: argparse.Namespace, work: Path) -> Results:
    """Every stage on a fresh server and database in ``work``."""
    server = bench_run.start_server(work)
    with server.connect() as conn:  # no autovacuum of a restored copy inside a later stage
        conn.execute("ALTER SYSTEM SET autovacuum = off")
        conn.execute("SELECT pg_reload_conf()")
    prof = Profiler(args, work, server)
    try:
        prof.res.environment = {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "postgresql": server.version,
            "load_start": os.getloadavg()[0],
            "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "commit": git_head(),
            "work_tree": "with uncommitted changes of other engineers (packs in progress)"
            if subprocess.run(
                ["git", "-C", str(ROOT), "diff", "--quiet", "HEAD", "--", "src"], check=False
            ).returncode
            else "clean",
        }
        prof.say(f"generating the database at scale {args.scale}")
        prof.generate()
        run_stages(prof)
        prof.res.environment["load_end"] = os.getloadavg()[0]
    finally:
        server.stop()
    return prof.res


def run_stages(prof: Profiler) -> None:
    data = prof.dump_stages()
    chunked = prof.chunk_stages(data)
    level1 = prof.compress_stages(chunked)
    aged, sealed, identity = prof.crypto_stages(level1)
    prof.write_stages(aged, sealed)
    del level1, aged, data, chunked
    prof.stats_stages()
    plain = prof.read_stages(identity, sealed)
    del sealed
    prof.restore_stages(plain)
    del plain
    prof.end_to_end()


def git_head() -> str:
    done = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return done.stdout.strip()


def write_results(res: Results, out: Path) -> None:
    doc = asdict(res)
    for st, row in zip(res.stages, doc["stages"], strict=True):
        row["cpu"] = round(st.cpu, 3)
        for k in ("wall", "cpu_self", "cpu_tools", "cpu_server", "load"):
            row[k] = round(row[k], 3)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = [
        "# Where the CPU-seconds go: one backup and one restore (bench/profile_path.py)",
        "",
        f"{res.environment.get('cpus')} CPUs, PostgreSQL {res.environment.get('postgresql')}, "
        f"Python {res.environment.get('python')}, strongroom {res.environment.get('commit')}, "
        f"work tree {res.environment.get('work_tree')}, "
        f"{res.environment.get('started')}, load {res.environment.get('load_start', 0):.1f} "
        f"at the start, {res.environment.get('load_end', 0):.1f} at the end.",
        "",
        f"Database: scale {res.dataset.get('scale')}, "
        f"{res.dataset.get('database_bytes', 0) / MB:.0f} MB; "
        f"raw dump {res.dataset.get('raw_dump_bytes', 0) / MB:.1f} MB; chunks "
        + ", ".join(f"{res.dataset.get(f'chunks_{k}k')} at {k} KiB" for k in SIZES_KIB)
        + ".",
        "",
        "| side | stage | wall s | CPU self | CPU tools | CPU server | CPU total | load |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for st in res.stages:
        lines.append(
            f"| {st.side} | {st.name} | {st.wall:.2f} | {st.cpu_self:.2f} | {st.cpu_tools:.2f} "
            f"| {st.cpu_server:.2f} | {st.cpu:.2f} | {st.load:.1f} |"
        )
    for what, cats in res.profiles.items():
        lines += ["", f"## py-spy: strongroom {what}, on-CPU seconds by category", ""]
        work = sum(v for k, v in cats.items() if k != spy_report.WAITING_LABEL) or 1.0
        lines += ["| category | sampled s | share of the work |", "|---|---:|---:|"]
        lines += [
            f"| {k} | {v:.2f} | "
            + ("-" if k == spy_report.WAITING_LABEL else f"{100 * v / work:.0f} %")
            + " |"
            for k, v in cats.items()
        ]
        lines += ["", "Top innermost frames:", "", "| frame | CPU s |", "|---|---:|"]
        lines += [f"| `{k}` | {v:.2f} |" for k, v in res.top_frames.get(what, [])]
    for what, phases in res.phases.items():
        lines += ["", f"## py-spy --idle: strongroom {what}, main thread wall seconds", ""]
        lines += ["| phase | wall s |", "|---|---:|"]
        lines += [f"| {k} | {v:.2f} |" for k, v in phases.items()]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
