"""Child processes of the engines: a dump or client tool fed from a stream.

One implementation for every engine, so a fix to broken-pipe, kill or time-out handling is
made once.
"""

from __future__ import annotations

import logging
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from contextlib import suppress
from pathlib import Path
from typing import IO, cast

from strongroom.engines.base import DumpResult
from strongroom.errors import DumpFailed

logger = logging.getLogger("strongroom.engines.process")

STOP_TIMEOUT = 10.0  # seconds to wait for a killed child to exit


def pipe_into(
    command: list[str],
    source: Iterable[bytes],
    *,
    env: Mapping[str, str] | None = None,
    pass_fds: tuple[int, ...] = (),
) -> tuple[int, str]:
    """Run ``command`` with ``source`` on its standard input; return (exit status, stderr).

    A child that closes its input early (it failed) stops the feeding; its status and
    stderr tell why. ``source`` is closed after use. A failure of ``source`` (a damaged
    chunk) or an interrupt kills the child, waits up to ``STOP_TIMEOUT`` seconds for it and
    is re-raised. ``pass_fds``: descriptors the child inherits (an in-memory option file)."""
    with tempfile.TemporaryFile(prefix="strongroom-stderr-") as stderr_file:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=stderr_file,
            env=dict(env) if env is not None else None,
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
                        logger.debug("%s closed its input early", Path(command[0]).name)
                        break
            finally:
                close = getattr(iterator, "close", None)
                if callable(close):
                    close()
            with suppress(BrokenPipeError):
                stdin.close()
            returncode = proc.wait()
        except BaseException:
            if proc.poll() is None:
                proc.kill()
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                logger.warning("%s (pid %d) did not exit after kill", command[0], proc.pid)
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
