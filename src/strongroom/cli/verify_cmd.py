"""strongroom verify"""

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
from strongroom.cli.output import human_bytes, human_seconds, progress_sink, stderr, stdout
from strongroom.cli.restore_cmd import print_comparison
from strongroom.engines.base import Engine
from strongroom.errors import BackupForgotten, IntegrityError, UsageError
from strongroom.repository.manifest import Manifest
from strongroom.repository.names import printable
from strongroom.repository.repository import DamagedBackup, Repository
from strongroom.services.drill import read_check_queries, scratch_for, verify_by_restore
from strongroom.services.restore import RestoreReport
from strongroom.services.settings_sources import Sources
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
    config: ConfigOption = None,
) -> None:
    """Re-read backups (each chunk's hash, the whole-stream checksum), or with --restore
    restore one into a throwaway database and verify it."""
    if all_backups == (backup_id is not None):
        raise UsageError("give one backup ID (or latest), or --all")
    if (scratch or check_sql) and not by_restore:
        raise UsageError("--scratch and --check-sql go with --restore")
    repository = location(repo, key_file, s3_endpoint, config).open()
    damaged: list[DamagedBackup] = []
    if all_backups:
        listing = repository.scan_backups()
        manifests, damaged = listing.backups, listing.damaged
        for found in damaged:
            stderr.print(f"DAMAGED  {found.backup_id}: {printable(found.reason)}", markup=False)
    else:
        manifests = [repository.resolve(str(backup_id))]
    if by_restore:
        queries = read_check_queries(check_sql) if check_sql else []
        failures = [m for m in manifests if not _drill(repository, m, scratch, queries, config)]
        if failures or damaged:
            raise IntegrityError(
                f"{len(failures)} of {len(manifests)} restore drill(s) failed; the record "
                f"is kept in the repository{_unreadable(damaged)}"
            )
        return
    _read_all(repository, manifests, damaged, single=not all_backups)


def _unreadable(damaged: list[DamagedBackup]) -> str:
    if not damaged:
        return ""
    names = ", ".join(found.backup_id for found in damaged[:3])
    more = f" and {len(damaged) - 3} more" if len(damaged) > 3 else ""
    return f"; {len(damaged)} manifest(s) damaged, not verified: {names}{more}"


def _read_all(
    repository: Repository,
    manifests: list[Manifest],
    damaged: list[DamagedBackup] | None = None,
    *,
    single: bool = False,
) -> None:
    """Read checks; each outcome is recorded (kind ``read``) by ``verify_backup``. With
    ``--all`` a backup forgotten meanwhile (forget, prune) is noted and passed over (it is
    no longer a backup); ``verify ID`` says so and exits 3."""
    damaged = damaged or []
    failures = []
    checked = 0
    for manifest in manifests:
        try:
            result = verify_backup(repository, manifest, progress_sink())
        except BackupForgotten as exc:
            if single:
                raise
            stderr.print(f"gone     {manifest.backup_id}: {exc.message}", markup=False)
            continue
        checked += 1
        if result.ok:
            stdout.print(
                f"ok       {manifest.backup_id} {printable(manifest.target)}: "
                f"{manifest.chunk_count} chunks, {human_bytes(result.bytes_checked)}, "
                f"checksum matches ({human_seconds(result.duration_seconds)})",
                markup=False,  # the target is text from the repository, not markup
            )
        else:
            failures.append(result)
            stderr.print(
                f"DAMAGED  {manifest.backup_id} {printable(manifest.target)}: "
                f"{printable(result.problem or '')}",
                markup=False,
            )
    if not manifests and not damaged:
        stdout.print("no backups to verify")
    elif checked:
        stdout.print(
            f"recorded {checked} read check(s) in the repository; only a passed "
            "restore drill (verify --restore) makes a backup verified good"
        )
    if failures:
        first = failures[0]
        raise IntegrityError(
            f"{len(failures)} of {checked} backup(s) damaged (recorded in the "
            f"repository); first: {first.problem}{_unreadable(damaged)}"
        )
    if damaged:
        raise IntegrityError(
            f"{checked} backup(s) verified; {len(damaged)} manifest(s) damaged, not verified: "
            f"{damaged[0].reason}" + (f" (and {len(damaged) - 1} more)" if len(damaged) > 1 else "")
        )


def scratch_engine(manifest: Manifest, scratch: str | None, config: str | None = None) -> Engine:
    """Where a drill restores: ``--scratch``, else beside the configured target's database,
    else beside ``$DATABASE_URL`` (see ``services.drill.scratch_for``)."""
    server = Sources.load(config).server_url(manifest.target) if scratch is None else None
    return scratch_for(manifest, scratch_url=scratch, server_url=server)


def _drill(
    repository: Repository,
    manifest: Manifest,
    scratch: str | None,
    queries: list[str],
    config: str | None = None,
) -> bool:
    engine = scratch_engine(manifest, scratch, config)
    stdout.print(
        f"verify --restore {manifest.backup_id} into {engine.describe()} (dropped after)",
        markup=False,
    )
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
    problem = result.detail or result.record.problem or ""
    stderr.print(f"FAILED   {manifest.backup_id}: {printable(problem)}", markup=False)
    return False
