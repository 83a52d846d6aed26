"""Who a process is, precisely enough to tell on this machine that it is gone: host name,
boot id, pid namespace and the process's start time (``/proc``, Linux). Repository locks
(``repository/locks.py``) and the scheduler's run claims (``services/daemon.py``) use it
so that what a killed process left is taken over at once on the same machine, while
anything from another machine (or an older version) is left to its lease or expiry."""

from __future__ import annotations

import functools
import os
import socket
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcessIdentity:
    """What tells a process on this machine apart from any other, now or later."""

    hostname: str
    boot_id: str | None  # /proc/sys/kernel/random/boot_id: changes at each boot
    pid_namespace: str | None  # "pid:[4026531836]": the pids below mean this namespace
    start_ticks: int | None  # the process's start, in clock ticks since boot


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip() or None
    except OSError:
        return None


def process_start_ticks(pid: int) -> int | None:
    """When ``pid`` started (field 22 of ``/proc/PID/stat``); None if no such process runs
    (a zombie counts as gone) or ``/proc`` cannot tell."""
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # the name, in parentheses, may hold spaces
    try:
        return None if fields[0] in ("Z", "X") else int(fields[19])
    except (IndexError, ValueError):
        return None


@functools.cache
def _machine() -> tuple[str | None, str | None]:
    try:
        namespace: str | None = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = None
    return _read("/proc/sys/kernel/random/boot_id"), namespace


def this_process() -> ProcessIdentity:
    boot_id, namespace = _machine()
    pid = os.getpid()
    return ProcessIdentity(socket.gethostname(), boot_id, namespace, process_start_ticks(pid))
