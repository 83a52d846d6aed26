"""Options shared by every command, and turning them into a repository location.

Every command finds its settings the same way (``services/settings_sources.py``): its
flags, then ``STRONGROOM_*`` variables, then the configuration file, then the scripts'
variables (docs/configuration.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from strongroom.services.repository_access import RepositoryLocation
from strongroom.services.settings_sources import (
    EMAIL_VARIABLE,
    SLACK_VARIABLES,
    SPOOL_VARIABLE,
    TRUSTED_PROXIES_VARIABLE,
    Sources,
)

# The variables ``Sources.settings`` reads into sections other than [repository] (its
# ``complete``: the WAL spool, trusted proxies, the scripts' notification channels).
OTHER_SECTIONS = (SPOOL_VARIABLE, TRUSTED_PROXIES_VARIABLE, EMAIL_VARIABLE, *SLACK_VARIABLES)

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


def environment_only(sources: Sources) -> bool:
    """No configuration file and none of ``OTHER_SECTIONS``: the repository's fields are
    all the settings there are (and no notification channel is configured)."""
    return sources.text is None and not any(
        sources.env.get(name, "").strip() for name in OTHER_SECTIONS
    )


def location_from(
    sources: Sources, repo: str | None, key_file: Path | None, s3_endpoint: str | None
) -> RepositoryLocation:
    """``sources.location``; when ``environment_only``, through ``wal_location``, which
    takes the repository's fields as they are when they are plain, without importing and
    validating the whole ``Settings`` (its pydantic models cost ``list``, ``stats``,
    ``backup``... 0.2 s of start-up); anything else goes through ``Sources.location`` and
    its error lines, as before."""
    if environment_only(sources):
        return sources.wal_location(repo, key_file, s3_endpoint, None)[0]
    return sources.location(repo, key_file, s3_endpoint)


def location(
    repo: str | None,
    key_file: Path | None,
    s3_endpoint: str | None,
    config: str | None = None,
) -> RepositoryLocation:
    """The repository the user named, by flags, variables or the configuration file (the
    passphrase from STRONGROOM_PASSPHRASE or the configuration's passphrase_env)."""
    return location_from(Sources.load(config), repo, key_file, s3_endpoint)
