"""strongroom verify"""

from __future__ import annotations

from typing import Annotated

import typer

from strongroom.cli.options import KeyFileOption, RepoOption, S3EndpointOption, location
from strongroom.cli.output import human_bytes, human_seconds, progress_sink, stderr, stdout
from strongroom.errors import IntegrityError, UsageError
from strongroom.services.verify import verify_backup


def verify(
    backup_id: Annotated[
        str | None, typer.Argument(metavar="[ID]", help="Backup id, prefix, or latest.")
    ] = None,
    all_backups: Annotated[bool, typer.Option("--all", help="Verify every backup.")] = False,
    repo: RepoOption = None,
    key_file: KeyFileOption = None,
    s3_endpoint: S3EndpointOption = None,
) -> None:
    """Re-read backups: check every chunk's hash and the whole-stream checksum."""
    if all_backups == (backup_id is not None):
        raise UsageError("give one backup ID (or latest), or --all")
    repository = location(repo, key_file, s3_endpoint).open()
    manifests = repository.list_backups() if all_backups else [repository.resolve(str(backup_id))]
    failures = []
    for manifest in manifests:
        result = verify_backup(repository, manifest, progress_sink())
        if result.ok:
            stdout.print(
                f"ok       {manifest.backup_id} {manifest.target}: "
                f"{manifest.chunk_count} chunks, {human_bytes(result.bytes_checked)}, "
                f"checksum matches ({human_seconds(result.duration_seconds)})"
            )
        else:
            failures.append(result)
            stderr.print(f"DAMAGED  {manifest.backup_id} {manifest.target}: {result.problem}")
    if not manifests:
        stdout.print("no backups to verify")
    if failures:
        first = failures[0]
        raise IntegrityError(
            f"{len(failures)} of {len(manifests)} backup(s) damaged; first: {first.problem}"
        )
