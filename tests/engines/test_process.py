"""Child processes (``engines.process``): they die with strongroom, even after kill -9;
``stop`` ends a whole process group, SIGTERM first, SIGKILL after the grace time; an
interrupted ``run_tool`` leaves no child."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from strongroom.engines.process import popen, stop
from tests.helpers import REPO_ROOT


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def until(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def children_of(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.add(int(entry.name))
    return found


def parent_script(body: str) -> subprocess.Popen[bytes]:
    script = textwrap.dedent(
        """
        import sys, time
        from strongroom import interrupts
        from strongroom.engines import process
        interrupts.install()
        """
    ) + textwrap.dedent(body)
    return subprocess.Popen([sys.executable, "-c", script], cwd=REPO_ROOT, stdout=subprocess.PIPE)


def test_a_child_dies_with_its_parent_even_after_kill_9():
    parent = parent_script(
        """
        child = process.popen(["sleep", "60"])
        print(child.pid, flush=True)
        time.sleep(60)
        """
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    assert alive(child)
    parent.kill()
    parent.wait()
    until(lambda: not alive(child), "the child to die with its parent")


def test_stop_ends_the_whole_group_and_kills_what_ignores_sigterm():
    proc = popen(["sh", "-c", "trap '' TERM; sleep 60 & sleep 60 & wait"])
    until(lambda: len(children_of(proc.pid)) == 2, "the shell's two children")
    workers = children_of(proc.pid)
    started = time.monotonic()
    stop(proc, grace=0.5)
    assert proc.returncode == -signal.SIGKILL
    assert time.monotonic() - started < 10
    until(lambda: not any(alive(p) for p in workers), "the workers to be gone")


def test_an_interrupted_tool_run_leaves_no_child():
    parent = parent_script(
        """
        print("ready", flush=True)
        try:
            process.run_tool(["sleep", "60"])
        except interrupts.Interrupted as exc:
            sys.exit(exc.exit_code)
        """
    )
    assert parent.stdout is not None
    assert parent.stdout.readline() == b"ready\n"
    until(lambda: children_of(parent.pid), "the tool to start")
    (child,) = children_of(parent.pid)
    os.kill(parent.pid, signal.SIGTERM)
    assert parent.wait(timeout=60) == 143
    assert not alive(child)


def test_an_interrupted_feed_stops_the_tool_it_feeds():
    """``pipe_into`` (pg_restore, the MySQL client: streaming restores) under SIGINT."""
    parent = parent_script(
        """
        def endless():
            print("feeding", flush=True)
            while True:
                yield b"x" * 65536
        try:
            process.pipe_into(["sh", "-c", "sleep 60"], endless())
        except interrupts.Interrupted as exc:
            sys.exit(exc.exit_code)
        """
    )
    assert parent.stdout is not None
    assert parent.stdout.readline() == b"feeding\n"
    until(lambda: children_of(parent.pid), "the tool to start")
    (child,) = children_of(parent.pid)
    os.kill(parent.pid, signal.SIGINT)
    assert parent.wait(timeout=60) == 130
    assert not alive(child)
