"""strongroom wal-push / wal-fetch (PostgreSQL's archive_command and restore_command)

Exit codes (docs/design.md, "WAL archive and base backups"): 0 archived (or archived
already with the same content) / fetched; 1 wal-fetch: the file was never archived (no
message: PostgreSQL asks for files that do not exist); 7 wal-push: the name is archived
with other content, or the segment belongs to another cluster; the other codes as for
every command (2 usage, 3 repository, 4 key, 6 storage).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from strongroom.cli.options import (
    ConfigOption,
    KeyFileOption,
    RepoOption,
    S3EndpointOption,
    location,
)
from strongroom.services.wal import check_destination, wal_fetch, wal_push

StreamOption = Annotated[
    str | None,
    typer.Option(
        "--stream",
        help="The log stream (default: postgresql-<system identifier> read from "
        "global/pg_control in the working directory, the data directory).",
    ),
]


def wal_push_cmd(
    path: Annotated[Path, typer.Argument(metavar="PATH", help="%p: the WAL file to archive.")],
    stream: StreamOption = None,
    repo: RepoOption = None,
    key_file: KeyFileOption = None,
    s3_endpoint: S3EndpointOption = None,
    config: ConfigOption = None,
) -> None:
    """Archive one WAL file (archive_command = 'strongroom wal-push %p'); returns once it
    is durable in the repository."""
    repository = location(repo, key_file, s3_endpoint, config).open()
    wal_push(repository, path, stream=stream)


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
) -> None:
    """Write an archived WAL file (restore_command = 'strongroom wal-fetch %f %p'); exit 1
    without a message when it was never archived."""
    check_destination(destination)
    repository = location(repo, key_file, s3_endpoint, config).open()
    if not wal_fetch(repository, file_name, destination, stream=stream, snapshots=snapshots):
        raise typer.Exit(1)
