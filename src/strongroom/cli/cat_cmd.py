"""strongroom cat"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from strongroom.cli.options import (
    ConfigOption,
    KeyFileOption,
    RepoOption,
    S3EndpointOption,
    location,
)
from strongroom.errors import UsageError


def cat(
    backup_id: Annotated[str, typer.Argument(metavar="ID", help="Backup id, prefix, or latest.")],
    target: Annotated[
        str | None, typer.Option("--target", help="With 'latest': the newest of this target.")
    ] = None,
    repo: RepoOption = None,
    key_file: KeyFileOption = None,
    s3_endpoint: S3EndpointOption = None,
    config: ConfigOption = None,
) -> None:
    """Write a backup's raw dump to stdout (pg_restore custom format, or the SQLite file)."""
    if sys.stdout.isatty():
        raise UsageError("refusing to write a binary dump to a terminal: redirect it, e.g. > dump")
    repository = location(repo, key_file, s3_endpoint, config).open()
    manifest = repository.resolve(backup_id, target)
    out = sys.stdout.buffer
    for data in repository.read_stream(manifest):
        out.write(data)
    out.flush()
