"""Running the real ``strongroom`` command line: with a timeout, or killed at a moment.

Each command runs in its own session (process group), so that a command that does not
exit within its timeout can be stopped with everything it started. A kill -9 "at a random
moment" kills the strongroom process alone, as a crash would; what it started must die
with it (the product promises so), which :func:`survivors` checks.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def strongroom_bin() -> str:
    """The ``strongroom`` script of this interpreter's environment (the project's venv)."""
    beside = Path(sys.executable).parent / "strongroom"
    if beside.exists():
        return str(beside)
    return str(ROOT / ".venv" / "bin" / "strongroom")


@dataclass
class CliResult:
    """One finished (or stopped) command."""

    args: list[str]
    returncode: int | None  # None: did not exit within its timeout (stopped by us)
    stdout: str
    stderr: str
    seconds: float
    killed_by_us: bool = False  # the planned kill -9 landed while it ran

    @property
    def hung(self) -> bool:
        return self.returncode is None

    @property
    def command(self) -> str:
        """``strongroom ARGS`` with URLs' passwords masked (for reports)."""
        return "strongroom " + " ".join(mask(arg) for arg in self.args)

    def first_stderr_line(self) -> str:
        for line in self.stderr.splitlines():
            if line.startswith("error:"):
                return line.strip()
        lines = [line.strip() for line in self.stderr.splitlines() if line.strip()]
        return lines[-1] if lines else "(no output on stderr)"


def mask(text: str) -> str:
    """``postgresql://user:secret@host`` -> ``postgresql://user:***@host``."""
    if "://" not in text or "@" not in text:
        return text
    scheme, rest = text.split("://", 1)
    credentials, _, host = rest.partition("@")
    if ":" in credentials:
        credentials = credentials.split(":", 1)[0] + ":***"
    return f"{scheme}://{credentials}@{host}"


class Running:
    """A started command (see :func:`start`)."""

    def __init__(self, args: Sequence[str], env: dict[str, str], *, devnull_stdout: bool) -> None:
        self.args = list(args)
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [strongroom_bin(), *self.args],
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL if devnull_stdout else subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill_leader(self) -> bool:
        """SIGKILL the strongroom process only; True when it was still running."""
        if self.proc.poll() is not None:
            return False
        with suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGKILL)
        return True

    def finish(self, timeout: float, *, killed_by_us: bool = False) -> CliResult:
        """Wait for the command; after ``timeout`` seconds stop its whole group (hung)."""
        remaining = max(0.1, timeout - (time.monotonic() - self.started))
        try:
            out, err = self.proc.communicate(timeout=remaining)
            code: int | None = self.proc.returncode
        except subprocess.TimeoutExpired:
            kill_group(self.proc.pid)
            out, err = self.proc.communicate()
            code = None
        result = CliResult(
            args=self.args,
            returncode=code,
            stdout=(out or b"").decode(errors="replace"),
            stderr=(err or b"").decode(errors="replace"),
            seconds=time.monotonic() - self.started,
            killed_by_us=killed_by_us,
        )
        if os.environ.get("FAULTS_DEBUG"):
            said = f": {result.first_stderr_line()[:160]}" if code else ""
            print(
                f"    {result.seconds:5.2f} s exit {code} {result.command[:90]}{said}", flush=True
            )
        return result


def start(args: Sequence[str], env: dict[str, str], *, devnull_stdout: bool = False) -> Running:
    return Running(args, env, devnull_stdout=devnull_stdout)


def run(
    args: Sequence[str], env: dict[str, str], timeout: float, *, devnull_stdout: bool = False
) -> CliResult:
    return start(args, env, devnull_stdout=devnull_stdout).finish(timeout)


def kill_group(pgid: int) -> None:
    """SIGKILL every process of the group ``pgid`` (a session this module started)."""
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def survivors(pgid: int) -> list[str]:
    """Live (not zombie) processes of group ``pgid``: ``"pid name"`` each."""
    found: list[str] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name_end = stat.rfind(")")
        fields = stat[name_end + 2 :].split()
        if len(fields) < 3 or fields[0] == "Z":
            continue
        if int(fields[2]) == pgid:
            found.append(f"{entry.name} {stat[stat.find('(') + 1 : name_end]}")
    return found


def kill_at(
    args: Sequence[str], env: dict[str, str], delay: float, timeout: float
) -> tuple[CliResult, list[str]]:
    """Run a command and SIGKILL it ``delay`` seconds after its start (if still running).

    Returns its result and the processes of its group still alive 3 s after the kill
    (children that outlived strongroom; they are then killed)."""
    running = start(args, env)
    with suppress(subprocess.TimeoutExpired):
        running.proc.wait(timeout=delay)
    return _kill_now(running, timeout)


def kill_when(
    args: Sequence[str],
    env: dict[str, str],
    moment: Callable[[], bool],
    timeout: float,
    *,
    poll: float = 0.002,
) -> tuple[CliResult, list[str], bool]:
    """Run a command and SIGKILL it as soon as ``moment()`` is true (polled every ``poll``
    seconds while it runs, up to ``timeout``). Returns its result, the processes that
    outlived it (as :func:`kill_at`) and whether ``moment()`` was seen true."""
    running = start(args, env)
    deadline = time.monotonic() + timeout
    seen = False
    while running.proc.poll() is None and time.monotonic() < deadline:
        if moment():
            seen = True
            break
        time.sleep(poll)
    result, left = _kill_now(running, timeout)
    return result, left, seen


def _kill_now(running: Running, timeout: float) -> tuple[CliResult, list[str]]:
    landed = running.kill_leader()
    left: list[str] = []
    if landed:
        running.proc.wait()
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            left = survivors(running.pid)
            if not left:
                break
            time.sleep(0.1)
        if left:
            kill_group(running.pid)
    return running.finish(timeout, killed_by_us=landed), left
