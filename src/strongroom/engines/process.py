"""Child processes of the engines: starting, stopping, and a tool fed from a stream.

One implementation for every engine, so a fix to broken-pipe, kill or time-out handling is
made once. Every child the engines start goes through :func:`popen`:

- it dies with its parent: on Linux ``prctl(PR_SET_PDEATHSIG, SIGTERM)`` in the child
  before ``exec``, so a ``kill -9`` of strongroom still ends ``pg_dump``, ``pg_restore``
  and the MySQL clients (``pg_restore -j`` passes the SIGTERM on to its workers and cancels
  their queries). The signal comes when the *thread* that started the child ends, so a
  child must be waited for by the thread that started it (all are).
- it leads its own process group, so :func:`stop` reaches the workers a tool forked
  (``pg_restore -j``), and Ctrl-C on a terminal reaches strongroom alone, which then stops
  its children in order instead of racing them.

:func:`stop` sends SIGTERM to the group, waits ``TERM_GRACE`` seconds, then SIGKILL.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import suppress
from pathlib import Path
from typing import IO, cast

from strongroom import interrupts, tempfiles
from strongroom.engines.base import DumpResult
from strongroom.errors import DumpFailed

logger = logging.getLogger("strongroom.engines.process")

STOP_TIMEOUT = 10.0  # seconds to wait for a killed child to exit
TERM_GRACE = 5.0  # seconds a child gets to exit after SIGTERM before SIGKILL
DEATH_SIGNAL = signal.SIGTERM  # what a child gets when strongroom dies
_PR_SET_PDEATHSIG = 1

# Children started by popen() that lead their own process group.
_GROUP_LEADERS: weakref.WeakSet[subprocess.Popen[bytes]] = weakref.WeakSet()


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    function.restype = ctypes.c_int
    return cast(Callable[..., int], function)


_PRCTL = _load_prctl()


def _child_setup(own_group: bool) -> Callable[[], None] | None:
    """The function the child runs between ``fork`` and ``exec`` (Linux), or ``None``.

    It only makes system calls (no imports, no locks), so it is safe in a process with
    threads."""
    prctl = _PRCTL
    if prctl is None:
        return None
    parent = os.getpid()
    death_signal = int(DEATH_SIGNAL)

    def setup() -> None:
        if own_group:
            os.setpgid(0, 0)
        prctl(_PR_SET_PDEATHSIG, death_signal, 0, 0)
        if os.getppid() != parent:  # the parent died before the request took effect
            os._exit(1)

    return setup


def popen(
    command: Sequence[str],
    *,
    stdin: int | IO[bytes] | None = None,
    stdout: int | IO[bytes] | None = None,
    stderr: int | IO[bytes] | None = None,
    env: Mapping[str, str] | None = None,
    pass_fds: Sequence[int] = (),
    bufsize: int = -1,
    own_group: bool = True,
) -> subprocess.Popen[bytes]:
    """``subprocess.Popen`` for a child that dies with strongroom and (``own_group``) leads
    its own process group; see the module docstring."""
    setup = _child_setup(own_group)
    proc = subprocess.Popen(
        list(command),
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        env=dict(env) if env is not None else None,
        pass_fds=tuple(pass_fds),
        bufsize=bufsize,
        preexec_fn=setup,  # system calls only, see _child_setup
        process_group=0 if own_group and setup is None else None,
    )
    if own_group:
        _GROUP_LEADERS.add(proc)
    return proc


def _send(proc: subprocess.Popen[bytes], signum: int, group: bool) -> None:
    with suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(proc.pid, signum)
        else:
            proc.send_signal(signum)


def _name(proc: subprocess.Popen[bytes]) -> str:
    args = proc.args
    first = args[0] if isinstance(args, list | tuple) and args else args
    return Path(str(first)).name


def stop(proc: subprocess.Popen[bytes], *, grace: float = TERM_GRACE) -> None:
    """End ``proc`` if it still runs, with every process of its group: SIGTERM, up to
    ``grace`` seconds, then SIGKILL. A signal to strongroom meanwhile waits until this is
    done (``interrupts.deferred``)."""
    with interrupts.deferred():
        if proc.poll() is not None:
            return
        group = proc in _GROUP_LEADERS
        logger.debug("stopping %s (pid %d)", _name(proc), proc.pid)
        _send(proc, signal.SIGTERM, group)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            _send(proc, signal.SIGKILL, group)
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                logger.warning("%s (pid %d) did not exit after kill", _name(proc), proc.pid)
        if group:  # workers the leader forked and did not take with it
            _send(proc, signal.SIGKILL, True)


def run_tool(
    command: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    pass_fds: Sequence[int] = (),
    timeout: float | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``command`` to its end (no input), capturing its output, like ``subprocess.run``
    but through :func:`popen`; an interrupt or a time-out stops it (:func:`stop`) and is
    re-raised."""
    with popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        pass_fds=pass_fds,
    ) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except BaseException:
            stop(proc)
            raise
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def pipe_into(
    command: list[str],
    source: Iterable[bytes],
    *,
    env: Mapping[str, str] | None = None,
    pass_fds: tuple[int, ...] = (),
) -> tuple[int, str]:
    """Run ``command`` with ``source`` on its standard input; return (exit status, stderr).

    A child that closes its input early (it failed) stops the feeding; the rest of
    ``source`` is still read (and discarded) so that a damaged source raises its own error;
    otherwise the child's status and stderr tell why. ``source`` is closed after use. A
    failure of ``source`` (a damaged chunk) or an interrupt kills the child, waits up to
    ``STOP_TIMEOUT`` seconds for it and is re-raised. ``pass_fds``: descriptors the child
    inherits (an in-memory option file)."""
    with tempfiles.anonymous_file("stderr-") as stderr_file:
        proc = popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=stderr_file,
            env=env,
            pass_fds=pass_fds,
        )
        try:
            stdin = cast(IO[bytes], proc.stdin)
            iterator = iter(source)
            try:
                for chunk in iterator:
                    try:
                        stdin.write(chunk)
                    except BrokenPipeError:
                        # the child stopped reading (it failed, or took a damaged stream
                        # for a shorter one): read the rest anyway, so a damaged stream
                        # raises its own error (the whole-stream checksum) instead of
                        # passing for the child's failure or a short success
                        logger.debug("%s closed its input early", Path(command[0]).name)
                        for _ in iterator:
                            pass
                        break
            finally:
                close = getattr(iterator, "close", None)
                if callable(close):
                    close()
            with suppress(BrokenPipeError):
                stdin.close()
            returncode = proc.wait()
        except BaseException:
            stop(proc)
            raise
        finally:
            if proc.stdin is not None and not proc.stdin.closed:
                with suppress(BrokenPipeError):
                    proc.stdin.close()
        stderr_file.seek(0)
        stderr = stderr_file.read().decode("utf-8", "replace")
    return returncode, stderr


class DumpProcess:
    """The call-order contract of a running dump (``RunningDump``) that both engines share:
    ``finish`` waits once (``_wait``) and then always closes; after ``close`` (or a failed
    ``finish``) it raises ``DumpFailed``. Subclasses set ``_result = None`` and
    ``_closed = False`` and implement ``_where``, ``_wait`` and ``close``."""

    _result: DumpResult | None
    _closed: bool

    def _where(self) -> str:
        raise NotImplementedError

    def _wait(self) -> DumpResult:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def finish(self) -> DumpResult:
        """Wait for the dump and its statistics; raise ``DumpFailed`` on any failure."""
        if self._result is not None:
            return self._result
        if self._closed:
            raise DumpFailed(f"the dump of {self._where()} was already stopped")
        try:
            self._result = self._wait()
        finally:
            self.close()
        return self._result
