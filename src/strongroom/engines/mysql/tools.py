"""Client tools of MySQL/MariaDB (found, versioned, fed a stream) and error helpers."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from strongroom.engines.tools import first_line, tool_candidates, tool_version
from strongroom.errors import ToolMissing

logger = logging.getLogger("strongroom.engines.mysql")

BINDIR_ENV = "STRONGROOM_MYSQL_BINDIR"
DUMP_TOOLS = ("mariadb-dump", "mysqldump")
CLIENT_TOOLS = ("mariadb", "mysql")
INSTALL_HINT = (
    "install the MariaDB or MySQL client tools (Debian: apt-get install mariadb-client), "
    f"or point {BINDIR_ENV} at their folder"
)
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
    """A value for a MySQL option file: double-quoted, with escapes the parser undoes.

    The quotes keep ``#`` (a comment outside quotes), ``'`` and leading or trailing
    spaces in the value; backslashes, double quotes and line breaks are escaped. Any
    other character, non-ASCII included, stays as it is: the file is written as UTF-8
    and the clients take its bytes unchanged. A NUL cannot be written (the parser reads
    C strings); ``parse_url`` refuses one before it gets here."""
    if "\0" in value:
        raise ValueError("an option file value cannot hold a NUL character")
    escaped = (
        value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    )
    return f'"{escaped}"'


def find_tool(names: Sequence[str], tool_dirs: Sequence[Path] | None) -> tuple[Path, str]:
    """The first runnable tool of ``names`` (in ``tool_dirs``, else on ``PATH``) and its
    ``--version`` text; ``ToolMissing`` if there is none."""
    found = [path for name in names for path in tool_candidates(name, tool_dirs)]
    wanted = " or ".join(names)
    if not found:
        raise ToolMissing(f"{wanted} not found: {INSTALL_HINT}")
    for path in found:
        version = tool_version(path)
        if version is not None:
            return path, version
    raise ToolMissing(f"{wanted} found at {found[0]} does not run: {INSTALL_HINT}")
