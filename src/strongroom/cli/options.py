"""Options shared by every command, and turning them into a repository location."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from strongroom.services.repository_access import RepositoryLocation

RepoOption = Annotated[
    str | None,
    typer.Option(
        "--repo",
        envvar="STRONGROOM_REPO",
        help="Repository: a local folder or s3://bucket/prefix.",
        show_envvar=True,
    ),
]
KeyFileOption = Annotated[
    Path | None,
    typer.Option(
        "--key-file",
        envvar="STRONGROOM_KEY_FILE",
        help="The repository's key file (default: ~/.config/strongroom/keys/<repository id>.key).",
        show_envvar=True,
    ),
]
S3EndpointOption = Annotated[
    str | None,
    typer.Option(
        "--s3-endpoint",
        envvar="AWS_ENDPOINT_URL",
        help="S3-compatible endpoint URL (R2, MinIO, B2…).",
        show_envvar=True,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]


def location(
    repo: str | None, key_file: Path | None, s3_endpoint: str | None
) -> RepositoryLocation:
    """The repository the user named; the passphrase comes only from the environment."""
    return RepositoryLocation(
        location=repo,
        s3_endpoint=s3_endpoint,
        key_file=key_file,
        passphrase=os.environ.get("STRONGROOM_PASSPHRASE") or None,
    )
