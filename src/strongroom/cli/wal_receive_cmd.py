"""strongroom wal-receive: stream a PostgreSQL cluster's WAL into the repository.

Exit codes (docs/design.md, "Streaming WAL (wal-receive)"): 2 a bad slot name, a spool
another wal-receive uses, or no database given; 5 the URL is not a PostgreSQL one, the
server cannot be reached, the user may not stream (no REPLICATION, no pg_hba
``replication`` line), the slot does not exist without ``--create-slot``, or
``pg_receivewal`` is missing; 7 WAL the repository refuses (another cluster's, or a name
archived with other content); 130 / 143 after SIGINT / SIGTERM (everything received is
archived first); 3/4/6 as for every command.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from strongroom.cli.options import KeyFileOption, RepoOption, S3EndpointOption
from strongroom.cli.output import stdout
from strongroom.errors import UsageError
from strongroom.services.settings_sources import Sources

if TYPE_CHECKING:
    from strongroom.services.wal_receive import ReceiveStats

# engines.postgresql.receivewal.DEFAULT_SLOT, which imports psycopg: the service is
# imported when the command runs, not by the whole command line's --help (a test checks
# the two agree: tests/cli/test_lazy_commands.py)
DEFAULT_SLOT = "strongroom"


def _started(stats: ReceiveStats) -> None:
    if stats.created_slot:
        stdout.print("created the replication slot")
    stdout.print(f"streaming WAL into log stream {stats.stream} (spool {stats.spool})")


def wal_receive_cmd(
    database_url: Annotated[
        str | None,
        typer.Argument(
            metavar="URL",
            help="The cluster (default: the configured target's database, or $DATABASE_URL); "
            "its user needs the REPLICATION attribute.",
            show_default=False,
        ),
    ] = None,
    target: Annotated[
        str | None,
        typer.Option("--target", help="A configured target whose database to stream."),
    ] = None,
    slot: Annotated[
        str, typer.Option("--slot", help="The physical replication slot to stream through.")
    ] = DEFAULT_SLOT,
    create_slot: Annotated[
        bool,
        typer.Option("--create-slot", help="Create the slot if it does not exist (idempotent)."),
    ] = False,
    spool: Annotated[
        Path | None,
        typer.Option(
            "--spool",
            help="Private folder pg_receivewal writes into (default: "
            "~/.local/state/strongroom/wal-receive/postgresql-<system identifier>).",
        ),
    ] = None,
    repo: RepoOption = None,
    key_file: KeyFileOption = None,
    s3_endpoint: S3EndpointOption = None,
    config: Annotated[
        str | None,
        typer.Option(
            "--config",
            envvar="STRONGROOM_CONFIG",
            help="strongroom.toml: the repository, and the target's database without a URL.",
        ),
    ] = None,
) -> None:
    """Stream WAL over a replication connection (pg_receivewal, a replication slot) into
    the repository: completed segments as wal-push stores them, the growing segment as a
    snapshot every second. Runs until SIGTERM/SIGINT."""
    from strongroom.services.wal_receive import ReceiveOptions, wal_receive

    sources = Sources.load(config)
    url, _target = sources.database(database_url, target)
    if not url:
        raise UsageError(
            "no database given: pass URL as an argument, set $DATABASE_URL, or configure a "
            "target in strongroom.toml"
        )
    repository = sources.location(repo, key_file, s3_endpoint).open()
    options = ReceiveOptions(slot=slot, create_slot=create_slot, spool=spool)
    wal_receive(repository, url, options, on_start=_started)
