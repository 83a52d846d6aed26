"""strongroom verify"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from strongroom.cli.options import KeyFileOption, RepoOption, S3EndpointOption, location
from strongroom.cli.output import human_bytes, human_seconds, progress_sink, stderr, stdout
from strongroom.cli.restore_cmd import print_comparison
from strongroom.engines.base import Engine
from strongroom.errors import IntegrityError, UsageError
from strongroom.repository.manifest import Manifest
from strongroom.repository.repository import Repository
from strongroom.services.drill import read_check_queries, scratch_for, verify_by_restore
from strongroom.services.restore import RestoreReport
from strongroom.services.verify import verify_backup


def verify(
    backup_id: Annotated[
        str | None, typer.Argument(metavar="[ID]", help="Backup id, prefix, or latest.")
    ] = None,
    all_backups: Annotated[bool, typer.Option("--all", help="Verify every backup.")] = False,
    by_restore: Annotated[
        bool,
        typer.Option(
            "--restore",
            help="Restore into a throwaway database, verify tables, record the restore time.",
        ),
    ] = False,
    scratch: Annotated[
        str | None,
        typer.Option(
            "--scratch",
            help="With --restore: where to restore (default: a new database on the server of "
            "$DATABASE_URL, or a temp file for SQLite). It is dropped afterwards.",
        ),
    ] = None,
    check_sql: Annotated[
        Path | None,
        typer.Option(
            "--check-sql", help="With --restore: SQL checks; each query must return no rows."
        ),
    ] = None,
    repo: RepoOption = None,
    key_file: KeyFileOption = None,
    s3_endpoint: S3EndpointOption = None,
) -> None:
    """Re-read backups (each chunk's hash, the whole-stream checksum), or with --restore
    restore one into a throwaway database and verify it."""
    if all_backups == (backup_id is not None):
        raise UsageError("give one backup ID (or latest), or --all")
    if (scratch or check_sql) and not by_restore:
        raise UsageError("--scratch and --check-sql go with --restore")
    repository = location(repo, key_file, s3_endpoint).open()
    manifests = repository.list_backups() if all_backups else [repository.resolve(str(backup_id))]
    if by_restore:
        queries = read_check_queries(check_sql) if check_sql else []
        failures = [m for m in manifests if not _drill(repository, m, scratch, queries)]
        if failures:
            raise IntegrityError(
                f"{len(failures)} of {len(manifests)} restore drill(s) failed; the record "
                "is kept in the repository"
            )
        return
    _read_all(repository, manifests)


def _read_all(repository: Repository, manifests: list[Manifest]) -> None:
    """Read checks; each outcome is recorded (kind ``read``) by ``verify_backup``."""
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
    else:
        stdout.print(
            f"recorded {len(manifests)} read check(s) in the repository; only a passed "
            "restore drill (verify --restore) makes a backup verified good"
        )
    if failures:
        first = failures[0]
        raise IntegrityError(
            f"{len(failures)} of {len(manifests)} backup(s) damaged (recorded in the "
            f"repository); first: {first.problem}"
        )


def scratch_engine(manifest: Manifest, scratch: str | None) -> Engine:
    """Where a drill restores: ``--scratch``, else beside ``$DATABASE_URL`` (see
    ``services.drill.scratch_for``)."""
    return scratch_for(manifest, scratch_url=scratch, server_url=os.environ.get("DATABASE_URL"))


def _drill(
    repository: Repository, manifest: Manifest, scratch: str | None, queries: list[str]
) -> bool:
    engine = scratch_engine(manifest, scratch)
    stdout.print(f"verify --restore {manifest.backup_id} into {engine.describe()} (dropped after)")
    result = verify_by_restore(
        repository, manifest, engine, checks=queries, progress=progress_sink()
    )
    if result.comparisons:
        print_comparison(
            RestoreReport(
                manifest, engine.describe(), result.comparisons, result.restore_seconds, False
            )
        )
    for check in result.checks:
        verdict = "ok" if check.ok else f"FAILED ({check.rows} rows)"
        first_line = check.query.splitlines()[0][:70]
        stdout.print(f"check  {verdict:<16} {first_line}")
    rto = human_seconds(result.restore_seconds)
    if result.ok:
        stdout.print(
            f"ok       {manifest.backup_id}: restored in {rto} (RTO), {len(result.comparisons)} "
            f"tables and {len(result.checks)} checks pass; recorded in the repository"
        )
        return True
    stderr.print(f"FAILED   {manifest.backup_id}: {result.detail or result.record.problem}")
    return False
