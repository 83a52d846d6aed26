"""Measuring child processes: wall time, CPU (``wait4``), and the peak RSS of the process
itself (``VmHWM``, polled through a handle on its ``/proc`` directory)."""

from __future__ import annotations

import os
import shlex
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


class BenchError(RuntimeError):
    """A step failed; the message says which and where its log is."""


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
