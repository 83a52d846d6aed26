"""strongroom wal-push / wal-fetch (PostgreSQL's archive_command and restore_command)

Exit codes (docs/design.md, "WAL archive and base backups"): 0 archived (or archived
already with the same content) / fetched; 1 wal-fetch: the file was never archived (no
message: PostgreSQL asks for files that do not exist); 7 wal-push: the name is archived
with other content, or the segment belongs to another cluster; the other codes as for
every command (2 usage, 3 repository, 4 key, 6 storage).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from strongroom import interrupts
from strongroom.cli.options import (
    ConfigOption,
    KeyFileOption,
    RepoOption,
    S3EndpointOption,
)
from strongroom.cli.wal_fast import fetch, push
from strongroom.errors import IntegrityError, UsageError

StreamOption = Annotated[
    str | None,
    typer.Option(
        "--stream",
        help="The log stream (default: postgresql-<system identifier> read from "
        "global/pg_control in the working directory, the data directory).",
    ),
]


SpoolOption = Annotated[
    str | None,
    typer.Option(
        "--spool",
        help="A local folder: wal-push stores the file there (fsynced) and returns, and "
        "wal-upload or `strongroom run` moves it to the repository; wal-fetch looks there "
        "first (else STRONGROOM_WAL_SPOOL, else [wal] spool of the configuration).",
    ),
]


def wal_push_cmd(
    path: Annotated[Path, typer.Argument(metavar="PATH", help="%p: the WAL file to archive.")],
    stream: StreamOption = None,
    repo: RepoOption = None,
    key_file: KeyFileOption = None,
    s3_endpoint: S3EndpointOption = None,
    config: ConfigOption = None,
    spool: SpoolOption = None,
) -> None:
    """Archive one WAL file (archive_command = 'strongroom wal-push %p'); returns once it
    is durable in the repository, or in the spool when one is configured (exit 6 when the
    spool is full: PostgreSQL keeps the WAL and retries)."""
    push(path, stream, repo, key_file, s3_endpoint, config, spool)


def wal_fetch_cmd(
    file_name: Annotated[str, typer.Argument(metavar="NAME", help="%f: the file wanted.")],
    destination: Annotated[Path, typer.Argument(metavar="PATH", help="%p: where to write it.")],
    stream: StreamOption = None,
    snapshots: Annotated[
        bool,
        typer.Option(
            "--snapshots",
            help="A segment never archived whole: write the newest snapshot of its "
            ".partial that wal-receive stored, padded with zeros (restore --to-datadir "
            "asks for this; a standby's restore_command should not).",
        ),
    ] = False,
    repo: RepoOption = None,
    key_file: KeyFileOption = None,
    s3_endpoint: S3EndpointOption = None,
    config: ConfigOption = None,
    spool: SpoolOption = None,
) -> None:
    """Write an archived WAL file (restore_command = 'strongroom wal-fetch %f %p'); exit 1
    without a message when it was never archived."""
    if not fetch(
        file_name, destination, stream, snapshots, repo, key_file, s3_endpoint, config, spool
    ):
        raise typer.Exit(1)


def wal_upload_cmd(
    once: Annotated[bool, typer.Option("--once", help="Empty the spool once, then exit.")] = False,
    spool: SpoolOption = None,
    repo: RepoOption = None,
    key_file: KeyFileOption = None,
    s3_endpoint: S3EndpointOption = None,
    config: ConfigOption = None,
) -> None:
    """Move the WAL files waiting in the spool into the repository (each deleted from the
    spool once durable there); without --once, keep doing so every second until stopped.
    Exit 7 when a file is archived with other content (it stays in the spool). SIGTERM or
    Ctrl-C: the file being uploaded finishes, then it exits 0."""
    from strongroom.services.settings_sources import Sources
    from strongroom.services.wal_spool import upload_until

    where, spool_dir = Sources.load(config).wal_location(repo, key_file, s3_endpoint, spool)
    if not spool_dir:
        raise UsageError(
            "no WAL spool configured: give --spool DIR, set STRONGROOM_WAL_SPOOL or "
            "[wal] spool in strongroom.toml"
        )
    stop = threading.Event()
    if not once and threading.current_thread() is threading.main_thread():

        def on_signal(signum: int, frame: FrameType | None) -> None:
            if stop.is_set():  # a second signal: stop now, through the usual cleanup
                interrupts.handle(signum, frame)
            stop.set()  # the file being uploaded finishes, the rest waits

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    report = upload_until(Path(spool_dir).expanduser(), where.open, once=once, stop=stop)
    typer.echo(f"uploaded {report.uploaded} WAL file(s) ({report.bytes} bytes)")
    if report.conflicts:
        raise IntegrityError(
            f"left in the spool, archived with other content: {', '.join(report.conflicts)} "
            "(or refused by the archive: the lines above say why)"
        )
