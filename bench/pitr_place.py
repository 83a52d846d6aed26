"""The PITR benchmark's side of the server: a folder its OS user owns, commands run as that
user and timed, and the archiver's calls as a timing wrapper recorded them.

As root, the throwaway PostgreSQL runs as ``strongroom-test`` (src/strongroom_servers), who
cannot enter /root where the virtualenv's interpreter lives: the ``strongroom`` launcher then
runs the system's python3 of the same version with the checkout's ``src`` and the venv's
site-packages (or, when that user cannot read them, a copy of what strongroom imports, made
in the place and removed with it). ``archive_command`` is a bash wrapper around ``launcher
wal-push`` that appends ``start end exit-code %p`` (wall clock, ``$EPOCHREALTIME``) to a log:
the whole process, start-up included, which is what PostgreSQL waits for.
"""

from __future__ import annotations

import math
import os
import pwd
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from strongroom_servers.postgres import PgServer, free_port

ROOT = Path(__file__).resolve().parent.parent
SEGMENT_NAME_LENGTH = 24  # 000000010000000000000012: timeline, log, segment (hex)


class BenchError(RuntimeError):
    """A step failed; the message says which and where its log is."""


def user_kwargs(user: pwd.struct_passwd | None) -> dict[str, Any]:
    """``subprocess`` arguments that run a child as ``user`` (nothing for ourselves)."""
    if user is None:
        return {}
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def can_enter(path: Path, user: pwd.struct_passwd | None) -> bool:
    """Whether ``user`` can enter ``path`` (every folder above it must be searchable)."""
    if user is None:
        return True
    probe = subprocess.run(
        ["/bin/sh", "-c", 'cd "$1"', "sh", str(path)],
        capture_output=True,
        check=False,
        cwd="/",
        timeout=30,
        **user_kwargs(user),
    )
    return probe.returncode == 0


@dataclass(frozen=True)
class Timed:
    """One finished command: wall seconds (start to exit), client CPU (user + system of it
    and its children), the 1-minute load average at its start, and its output."""

    label: str
    seconds: float
    cpu_seconds: float
    load: float
    output: str


@dataclass(frozen=True)
class ArchiveCall:
    """One ``archive_command`` call as the wrapper saw it (wall clock, seconds since the epoch)."""

    start: float
    end: float
    code: int
    path: str

    @property
    def seconds(self) -> float:
        return self.end - self.start

    @property
    def name(self) -> str:
        return Path(self.path).name

    @property
    def is_segment(self) -> bool:
        """A WAL segment (not a ``.history``, ``.backup`` or ``.partial`` file)."""
        return len(self.name) == SEGMENT_NAME_LENGTH and all(
            c in "0123456789ABCDEF" for c in self.name
        )


def percentile(values: Sequence[float], share: float) -> float:
    """The ``share`` (0..1) percentile of ``values``, linearly interpolated (numpy's default);
    ``ValueError`` for no values."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    at = share * (len(ordered) - 1)
    low = math.floor(at)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (at - low)


class Place:
    """``root`` (owned by the server's OS user): the repository, its key file,
    strongroom.toml, the launcher, the archive wrapper and its log, restored data dirs."""

    def __init__(self, root: Path, user: pwd.struct_passwd | None, log_path: Path) -> None:
        self.root = root
        self.user = user
        self.log_path = log_path
        root.mkdir(mode=0o755)
        os.chmod(root, 0o755)
        self.chown(root)

    @property
    def repo(self) -> Path:
        return self.root / "repo"

    @property
    def key(self) -> Path:
        return self.root / "repo.key"

    @property
    def config(self) -> Path:
        return self.root / "strongroom.toml"

    @property
    def launcher(self) -> Path:
        return self.root / "strongroom"

    @property
    def wrapper(self) -> Path:
        return self.root / "timed-wal-push"

    @property
    def push_log(self) -> Path:
        return self.root / "wal-push-times.log"

    def chown(self, path: Path) -> None:
        if self.user is not None:
            os.chown(path, self.user.pw_uid, self.user.pw_gid)

    def mkdir(self, name: str, mode: int = 0o700) -> Path:
        """A new folder ``name`` in the place, owned by the server's user."""
        path = self.root / name
        path.mkdir(mode=mode)
        os.chmod(path, mode)
        self.chown(path)
        return path

    def setup(self, config_extra: str = "") -> None:
        """Write the launcher, the config (``config_extra``: TOML appended to it) and the
        archive wrapper; initialise the repository."""
        python = _python_for(self.user)
        paths = self._import_paths(python)
        self.launcher.write_text(
            "#!/bin/sh\n"
            f"PYTHONPATH={shlex.quote(os.pathsep.join(paths))} "
            f'exec {shlex.quote(python)} -m strongroom.cli.entry "$@"\n'
        )
        self.config.write_text(
            f'[repository]\nlocation = "{self.repo}"\nkey_file = "{self.key}"\n'
            + (f"\n{config_extra}\n" if config_extra else "")
        )
        self.push_log.touch()
        launcher, config, log = (
            shlex.quote(str(p)) for p in (self.launcher, self.config, self.push_log)
        )
        self.wrapper.write_text(
            "#!/bin/bash\n"
            "# archive_command of the PITR benchmark: times the whole wal-push process\n"
            "start=$EPOCHREALTIME\n"
            f'{launcher} wal-push --config {config} "$1"\n'
            "code=$?\n"
            "end=$EPOCHREALTIME\n"
            f'printf \'%s %s %s %s\\n\' "$start" "$end" "$code" "$1" >> {log}\n'
            "exit $code\n"
        )
        for path, mode in ((self.launcher, 0o755), (self.wrapper, 0o755), (self.config, 0o644)):
            os.chmod(path, mode)
            self.chown(path)
        self.chown(self.push_log)
        self.run("strongroom init", ["init", "--config", str(self.config)])

    def archive_command(self) -> str:
        return f"{shlex.quote(str(self.wrapper))} %p"

    def env(self) -> dict[str, str]:
        """The environment of commands run as the server's user: none of strongroom's
        variables, HOME in the place, C locale (the wrapper's decimal point)."""
        from strongroom.services.settings_sources import ENVIRONMENT_VARIABLES

        env = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT_VARIABLES}
        env.pop("XDG_CONFIG_HOME", None)
        env.update(HOME=str(self.root), LC_ALL="C.UTF-8")
        return env

    def run(self, label: str, args: Sequence[str]) -> Timed:
        """``strongroom ARGS`` through the launcher, as the server's user, timed."""
        return timed(
            label,
            [str(self.launcher), *args],
            log_path=self.log_path,
            env=self.env(),
            cwd=self.root,
            user=self.user,
        )

    def calls(self) -> list[ArchiveCall]:
        """Every archive_command call recorded so far, in order."""
        found = []
        for line in self.push_log.read_text(errors="replace").splitlines():
            parts = line.split(" ", 3)
            if len(parts) == 4:
                start, end, code, path = parts
                found.append(
                    ArchiveCall(
                        float(start.replace(",", ".")),
                        float(end.replace(",", ".")),
                        int(code),
                        path,
                    )
                )
        return found

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def _import_paths(self, python: str) -> list[str]:
        """PYTHONPATH from which the server's user imports strongroom: the checkout's
        ``src`` and the venv's site-packages, else a copy in the place."""
        purelib = sysconfig.get_paths()["purelib"]
        direct = [str(ROOT / "src"), purelib]
        if _can_import(python, self.user, direct):
            return direct
        _import_everything_strongroom_may_load()
        names = {"strongroom"}
        for module in list(sys.modules.values()):
            file = getattr(module, "__file__", None) or ""
            if file.startswith(purelib + os.sep):
                names.add(Path(file).relative_to(purelib).parts[0])
        site = Path(purelib)
        names |= {p.name for p in site.glob("*.libs")}  # shared libraries of binary wheels
        lib = self.root / "lib"
        lib.mkdir()
        for name in sorted(names):
            source = ROOT / "src" / name if name == "strongroom" else site / name
            if source.is_dir():
                shutil.copytree(source, lib / name, ignore=shutil.ignore_patterns("*.pyc"))
            elif source.exists():
                shutil.copy2(source, lib / name)
        for path in [lib, *lib.rglob("*")]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644 | (path.stat().st_mode & 0o111))
        if not _can_import(python, self.user, [str(lib)]):
            raise BenchError(f"{python} cannot import strongroom as the server's user")
        return [str(lib)]


def _python_for(user: pwd.struct_passwd | None) -> str:
    """An interpreter of this one's version that ``user`` can run."""
    if user is None:
        return sys.executable
    wanted = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (f"/usr/bin/{wanted}", "/usr/bin/python3", f"/usr/local/bin/{wanted}"):
        if os.path.exists(candidate):
            probe = subprocess.run(
                [candidate, "-c", "import sys; print(sys.version_info[:2])"],
                capture_output=True,
                text=True,
                check=False,
                timeout=60,
                **user_kwargs(user),
            )
            if probe.stdout.strip() == str(tuple(sys.version_info[:2])):
                return candidate
    raise BenchError(f"no {wanted} the user {user.pw_name} can run (apt-get install {wanted})")


def _import_everything_strongroom_may_load() -> None:
    """Every strongroom module and what they load on first use, so the copy holds every
    package a command may import: the command line loads its commands (and psycopg, Typer,
    rich's markdown help) only when one runs, so importing ``cli.app`` alone no longer
    brings them (as tests/wal/support.py does)."""
    import importlib
    import pkgutil

    import rich.markdown  # noqa: F401

    import strongroom

    for info in pkgutil.walk_packages(strongroom.__path__, "strongroom."):
        importlib.import_module(info.name)


def _can_import(python: str, user: pwd.struct_passwd | None, paths: list[str]) -> bool:
    probe = subprocess.run(
        [python, "-c", "import strongroom.cli.app"],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": os.pathsep.join(paths)},
        cwd="/",
        capture_output=True,
        check=False,
        timeout=120,
        **user_kwargs(user),
    )
    return probe.returncode == 0


def timed(
    label: str,
    argv: Sequence[str],
    *,
    log_path: Path,
    env: dict[str, str],
    cwd: Path | None = None,
    user: pwd.struct_passwd | None = None,
) -> Timed:
    """Run ``argv`` to its end, its output appended to ``log_path``; ``BenchError`` with
    the output's tail when it fails."""
    load = os.getloadavg()[0]
    with log_path.open("ab") as log:
        log.write(f"\n$ {shlex.join(argv)}\n".encode())
    output_path = log_path.with_name(log_path.name + ".last")
    with output_path.open("wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            **user_kwargs(user),
        )
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
    output = output_path.read_text(errors="replace")
    output_path.unlink()
    with log_path.open("a") as log:
        log.write(output)
    if proc.returncode != 0:
        raise BenchError(
            f"{label} failed (exit {proc.returncode}); log {log_path}:\n{output[-3000:]}"
        )
    return Timed(label, seconds, usage.ru_utime + usage.ru_stime, load, output)


def archiver(server: PgServer) -> dict[str, Any]:
    """pg_stat_archiver now, and the files waiting to be archived (``.ready``)."""
    row = server.query(
        "postgres",
        "SELECT archived_count, failed_count, last_archived_wal, last_archived_time,"
        " last_failed_wal, pg_current_wal_lsn(), pg_current_wal_lsn() - '0/0'::pg_lsn,"
        " now() - last_archived_time FROM pg_stat_archiver",
    )[0]
    return {
        "archived_count": int(row[0]),
        "failed_count": int(row[1]),
        "last_archived_wal": row[2],
        "last_archived_time": row[3].isoformat() if row[3] is not None else None,
        "last_failed_wal": row[4],
        "current_lsn": str(row[5]),
        "current_lsn_bytes": int(row[6]),
        "seconds_since_last_archived": row[7].total_seconds() if row[7] is not None else None,
        "ready_files": ready_files(server),
    }


def ready_files(server: PgServer) -> int:
    """WAL files the server has finished and not yet archived (``archive_status/*.ready``)."""
    try:
        return sum(1 for p in (server.data_dir / "pg_wal" / "archive_status").glob("*.ready"))
    except OSError:
        return 0


def wait_archived(server: PgServer, timeout: float = 600.0) -> str:
    """Switch to a new segment and wait until the archiver has archived every finished
    file (the old segment included); its name. ``BenchError`` after ``timeout`` seconds."""
    segment = str(server.query("postgres", "SELECT pg_walfile_name(pg_switch_wal())")[0][0])
    deadline = time.monotonic() + timeout
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        state = archiver(server)
        last = state["last_archived_wal"]
        if last is not None and last[:SEGMENT_NAME_LENGTH] >= segment and not state["ready_files"]:
            return segment
        time.sleep(0.05)
    raise BenchError(f"segment {segment} not archived within {timeout:.0f} s: {state}")


def start_server(
    bin_dir: Path, work: Path, settings: dict[str, str], user: pwd.struct_passwd | None
) -> PgServer:
    """A throwaway cluster in a new folder under ``work`` with extra ``settings``
    (postgresql.conf lines), run as ``user``; three attempts (a free port can be taken
    between choosing and binding), then ``BenchError``."""
    last: Exception | None = None
    for _attempt in range(3):
        server = PgServer(
            bin_dir=bin_dir,
            base_dir=Path(tempfile.mkdtemp(prefix="pg-", dir=work)),
            port=free_port(),
            run_as=user,
            settings=settings,
        )
        try:
            server.start()
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            last = exc
            server.stop()
            continue
        return server
    raise BenchError(f"could not start a throwaway PostgreSQL: {last}")


def stop_cluster(server: PgServer, datadir: Path, user: pwd.struct_passwd | None) -> None:
    """Stop (immediate) a cluster started from ``datadir``, if it runs."""
    if (datadir / "postmaster.pid").exists():
        subprocess.run(
            [str(server.bin_dir / "pg_ctl"), "-D", str(datadir), "-m", "immediate", "-w", "stop"],
            capture_output=True,
            check=False,
            timeout=60,
            cwd="/",
            **user_kwargs(user),
        )


class BacklogSampler(threading.Thread):
    """Counts the server's ``.ready`` files every 0.1 s until stopped: the archiver's backlog."""

    def __init__(self, server: PgServer) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.samples: list[int] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.samples.append(ready_files(self.server))
            self._stop_event.wait(0.1)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


class MarkerWriter(threading.Thread):
    """Commits a marker row every 0.1 s (table ``marker`` in ``postgres``) and keeps the WAL
    insert position after each commit: recovery to a time needs a commit after it."""

    def __init__(self, server: PgServer) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.lsn_after: dict[int, int] = {}
        self.failure: BaseException | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            with self.server.connect() as conn:
                i = len(self.lsn_after)
                while not self._stop_event.is_set():
                    conn.execute("INSERT INTO marker VALUES (%s)", (i,))
                    row = conn.execute("SELECT pg_current_wal_insert_lsn() - '0/0'").fetchone()
                    self.lsn_after[i] = int(row[0]) if row else 0
                    i += 1
                    self._stop_event.wait(0.1)
        except BaseException as exc:  # reported by the main thread
            self.failure = exc

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=30)
        if self.failure is not None:
            raise BenchError(f"the marker writer failed: {self.failure}")


def push_stats(calls: Sequence[ArchiveCall]) -> dict[str, Any]:
    """Latency (ms) of successful segment pushes and their sustained rate (segments per
    second from the first call's start to the last one's end)."""
    done = [c for c in calls if c.code == 0 and c.is_segment]
    if not done:
        return {"segments": 0}
    ms = [1000 * c.seconds for c in done]
    span = max(c.end for c in done) - min(c.start for c in done)
    return {
        "segments": len(done),
        "failed_calls": sum(1 for c in calls if c.code != 0),
        "p50_ms": round(percentile(ms, 0.50), 1),
        "p95_ms": round(percentile(ms, 0.95), 1),
        "max_ms": round(max(ms), 1),
        "mean_ms": round(sum(ms) / len(ms), 1),
        "span_seconds": round(span, 3),
        "segments_per_second": round(len(done) / span, 3) if span > 0 else None,
    }


def segment_end(name: str | None, segment_bytes: int) -> int:
    """The byte position (LSN) where the segment ``name`` ends; 0 for none."""
    if not name:
        return 0
    log, seg = int(name[8:16], 16), int(name[16:24], 16)
    return log * 0x1_0000_0000 + (seg + 1) * segment_bytes
