"""strongroom init"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from strongroom.cli.options import (
    ConfigOption,
    KeyFileOption,
    RepoOption,
    S3EndpointOption,
    location_from,
)
from strongroom.cli.output import stderr, stdout
from strongroom.errors import UsageError
from strongroom.repository.config import ENCRYPTION_AGE, ENCRYPTION_NONE
from strongroom.repository.repository import Repository
from strongroom.services.settings_sources import Sources

MIN_PASSPHRASE_LENGTH = 8


def _passphrase(from_env: str | None) -> str:
    if from_env:
        return from_env
    if not sys.stdin.isatty():
        raise UsageError("--passphrase needs STRONGROOM_PASSPHRASE (no terminal to ask on)")
    first = typer.prompt("New repository passphrase", hide_input=True)
    second = typer.prompt("Repeat the passphrase", hide_input=True)
    if first != second:
        raise UsageError("the two passphrases differ")
    return str(first)


def init(
    repo: RepoOption = None,
    key_file: KeyFileOption = None,
    s3_endpoint: S3EndpointOption = None,
    passphrase: Annotated[
        bool,
        typer.Option(
            "--passphrase",
            help="Store the key in the repository, wrapped by a passphrase "
            "(from STRONGROOM_PASSPHRASE or asked on the terminal).",
        ),
    ] = False,
    no_encryption: Annotated[
        bool, typer.Option("--no-encryption", help="Store backups unencrypted (not advised).")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Create a new repository (encrypted with a new age key by default)."""
    if passphrase and no_encryption:
        raise UsageError("--passphrase and --no-encryption exclude each other")
    sources = Sources.load(config)
    where = location_from(sources, repo, key_file, s3_endpoint)
    storage = where.storage()
    secret = _passphrase(where.passphrase) if passphrase else None
    if secret is not None and len(secret) < MIN_PASSPHRASE_LENGTH:
        raise UsageError(f"the passphrase must have at least {MIN_PASSPHRASE_LENGTH} characters")
    result = Repository.init(
        storage,
        encryption=ENCRYPTION_NONE if no_encryption else ENCRYPTION_AGE,
        key_file=where.key_file.expanduser().absolute() if where.key_file else None,
        passphrase=secret,
    )
    stdout.print(f"created repository {result.repository_id} at {storage.describe()}")
    if where.s3_endpoint and not sources.endpoint_remembered():
        stderr.print(  # the endpoint is not stored in the repository: it is needed to reach it
            "note: every command needs this S3 endpoint: keep --s3-endpoint, or set "
            "STRONGROOM_S3_ENDPOINT (or AWS_ENDPOINT_URL), or write s3_endpoint in "
            "strongroom.toml",
            markup=False,
        )
    if no_encryption:
        stderr.print(
            "warning: this repository is NOT encrypted: anyone who can read it can read your data"
        )
        return
    stdout.print(f"public key: {result.public_key}")
    if result.key_file is not None:
        stdout.print(f"key file:   {result.key_file} (mode 0600)")
        stdout.print(
            "Keep a copy of this key file somewhere safe, away from this machine: "
            "if it is lost, the backups cannot be read by anyone."
        )
    if secret is not None:
        stdout.print(
            "The key is also stored in the repository, wrapped by your passphrase: "
            "if the passphrase is lost (and no key file is kept), the backups cannot be read."
        )
