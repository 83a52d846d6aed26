"""strongroom index rebuild"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer

from strongroom.cli.options import (
    ConfigOption,
    JsonOption,
    KeyFileOption,
    RepoOption,
    S3EndpointOption,
    location,
)
from strongroom.cli.output import stderr, stdout
from strongroom.repository.locks import PRUNE_WAIT
from strongroom.services.index_rebuild import rebuild_index
from strongroom.wording import counted

index_app = typer.Typer(
    help="The index of packs (which pack holds which chunk).", no_args_is_help=True
)


@index_app.command("rebuild")
def index_rebuild(
    wait: Annotated[
        float,
        typer.Option(
            "--wait", min=0, metavar="SECONDS", help="How long to wait for running backups."
        ),
    ] = PRUNE_WAIT,
    as_json: JsonOption = False,
    repo: RepoOption = None,
    key_file: KeyFileOption = None,
    s3_endpoint: S3EndpointOption = None,
    config: ConfigOption = None,
) -> None:
    """Rewrite the index objects from the packs alone (each pack's key stanza and header),
    for when index objects are lost or damaged. Needs the key; waits for running backups."""
    repository = location(repo, key_file, s3_endpoint, config).open()
    report = rebuild_index(repository, wait=wait)
    if as_json:
        stdout.print_json(json.dumps(asdict(report)))
        return
    stdout.print(
        f"index rebuilt from {counted(report.packs, 'pack')} ({counted(report.chunks, 'chunk')}): "
        f"{counted(report.index_written, 'index object')} written, "
        f"{report.index_deleted} old replaced"
    )
    for line in report.skipped:
        stderr.print(f"left out: {line}", markup=False)
