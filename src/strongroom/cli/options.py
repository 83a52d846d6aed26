"""Options shared by every command, and turning them into a repository location.

Every command finds its settings the same way (``services/settings_sources.py``): its
flags, then ``STRONGROOM_*`` variables, then the configuration file, then the scripts'
variables (docs/configuration.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from strongroom.services.repository_access import RepositoryLocation
from strongroom.services.settings_sources import Sources

RepoOption = Annotated[
    str | None,
    typer.Option(
        "--repo",
        envvar="STRONGROOM_REPO",
        help="Repository: a local folder or s3://bucket/prefix (else [repository] location "
        "of the configuration, else BACKUP_DIR / BACKUP_S3_BUCKET).",
        show_envvar=True,
    ),
]
KeyFileOption = Annotated[
    Path | None,
    typer.Option(
        "--key-file",
        envvar="STRONGROOM_KEY_FILE",
        help="The repository's key file (else the configuration's key_file, else "
        "~/.config/strongroom/keys/<repository id>.key).",
        show_envvar=True,
    ),
]
S3EndpointOption = Annotated[
    str | None,
    typer.Option(
        "--s3-endpoint",
        envvar="STRONGROOM_S3_ENDPOINT",
        help="S3-compatible endpoint URL (R2, MinIO, B2…); else the configuration's "
        "s3_endpoint, else AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, else R2's from "
        "CLOUDFLARE_ACCOUNT_ID.",
        show_envvar=True,
    ),
]
ConfigOption = Annotated[
    str | None,
    typer.Option(
        "--config",
        envvar="STRONGROOM_CONFIG",
        help="strongroom.toml (default: ./strongroom.toml when it exists; without one, the "
        "environment variables DATABASE_URL, BACKUP_DIR…).",
        show_envvar=True,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]


def location(
    repo: str | None,
    key_file: Path | None,
    s3_endpoint: str | None,
    config: str | None = None,
) -> RepositoryLocation:
    """The repository the user named, by flags, variables or the configuration file (the
    passphrase from STRONGROOM_PASSPHRASE or the configuration's passphrase_env)."""
    return Sources.load(config).location(repo, key_file, s3_endpoint)
