"""strongroom recover"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from strongroom.cli.output import stdout
from strongroom.engines import open_engine
from strongroom.errors import RestoreFailed, UsageError
from strongroom.services.swaps import recover_swaps


def recover(
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            help="The database (any database on the server, or the SQLite file) a restore "
            "was swapping into (default: $DATABASE_URL).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Complete or undo the swaps a killed restore left on a server or at a SQLite file.

    Works for PostgreSQL, MySQL/MariaDB and SQLite. Every command that uses a database
    does this first by itself; one line per swap settled.

    Exit codes: 0 nothing is left interrupted; 2 no URL;
    5 a swap could not be settled now (rights, still held, unreachable)."""
    url = to or os.environ.get("DATABASE_URL")
    if not url:
        raise UsageError("say which database: --to DATABASE_URL (or set $DATABASE_URL)")
    engine = open_engine(url)
    results = recover_swaps(engine)
    for result in results:
        stdout.print(result.message, markup=False)
    left = [r for r in results if r.outcome not in ("completed", "undone")]
    if left:
        raise RestoreFailed(f"{len(left)} interrupted swap(s) could not be settled (see above)")
    if not results:
        stdout.print(f"no interrupted swap found for {engine.describe()}", markup=False)
