"""Client tools of MySQL/MariaDB (found, versioned, fed a stream) and error helpers."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import IO, Any, cast

from strongroom.engines.tools import first_line, tool_version
from strongroom.errors import ToolMissing

logger = logging.getLogger("strongroom.engines.mysql")

BINDIR_ENV = "STRONGROOM_MYSQL_BINDIR"
DUMP_TOOLS = ("mariadb-dump", "mysqldump")
CLIENT_TOOLS = ("mariadb", "mysql")
INSTALL_HINT = (
    "install the MariaDB or MySQL client tools (Debian: apt-get install mariadb-client), "
    f"or point {BINDIR_ENV} at their folder"
)
STOP_TIMEOUT = 10.0
MAX_NAME = 64  # MySQL identifier limit (characters)


def error_text(exc: BaseException) -> str:
    """The server's message of a PyMySQL error (without the code), else the text."""
    args: tuple[Any, ...] = tuple(getattr(exc, "args", ()))
    if len(args) >= 2 and isinstance(args[0], int):
        return first_line(str(args[1]))
    return first_line(str(exc))


def error_code(exc: BaseException) -> int | None:
    args: tuple[Any, ...] = tuple(getattr(exc, "args", ()))
    return args[0] if args and isinstance(args[0], int) else None


def limit_name(base: str, suffix: str) -> str:
    """``base + suffix`` cut to the 64-character identifier limit (suffix kept)."""
    return base[: MAX_NAME - len(suffix)] + suffix


def option_value(value: str) -> str:
    """A value for a MySQL option file: double-quoted, with escapes the parser undoes."""
    escaped = (
        value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    )
    return f'"{escaped}"'


def find_tool(names: Sequence[str], tool_dirs: Sequence[Path] | None) -> tuple[Path, str]:
    """The first runnable tool of ``names`` (in ``tool_dirs``, else on ``PATH``) and its
    ``--version`` text; ``ToolMissing`` if there is none."""
    found: list[Path] = []
    for name in names:
        if tool_dirs is None:
            which = shutil.which(name)
            if which:
                found.append(Path(which))
            continue
        for directory in tool_dirs:
            path = directory / name
            if path.is_file() and os.access(path, os.X_OK):
                found.append(path)
    wanted = " or ".join(names)
    if not found:
        raise ToolMissing(f"{wanted} not found: {INSTALL_HINT}")
    for path in found:
        version = tool_version(path)
        if version is not None:
            return path, version
    raise ToolMissing(f"{wanted} found at {found[0]} does not run: {INSTALL_HINT}")


def pipe_into(command: list[str], source: Iterable[bytes]) -> tuple[int, str]:
    """Run ``command`` with ``source`` on its stdin; (exit status, stderr). A failure of
    ``source`` kills the command and is re-raised."""
    with tempfile.TemporaryFile(prefix="strongroom-mysql-") as stderr_file:
        proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=stderr_file
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
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=STOP_TIMEOUT)
            raise
        finally:
            if proc.stdin is not None and not proc.stdin.closed:
                with suppress(BrokenPipeError):
                    proc.stdin.close()
        stderr_file.seek(0)
        stderr = stderr_file.read().decode("utf-8", "replace")
    return returncode, stderr
