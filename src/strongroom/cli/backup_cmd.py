"""strongroom backup"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from strongroom.cli.options import KeyFileOption, RepoOption, S3EndpointOption, location
from strongroom.cli.output import human_bytes, human_seconds, progress_sink, stdout
from strongroom.engines import open_engine
from strongroom.errors import UsageError
from strongroom.repository.repository import Repository
from strongroom.services import records
from strongroom.services.backup import run_recorded_backup
from strongroom.services.metrics import build_registry, write_metrics_file


def backup(
    database_url: Annotated[
        str | None,
        typer.Argument(help="Database URL (default: $DATABASE_URL).", show_default=False),
    ] = None,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", help="Tag the backup (repeatable), e.g. daily.")
    ] = None,
    target: Annotated[
        str | None, typer.Option("--target", help="Target name (default: the database name).")
    ] = None,
    repo: RepoOption = None,
    key_file: KeyFileOption = None,
    s3_endpoint: S3EndpointOption = None,
    metrics_file: Annotated[
        Path | None,
        typer.Option("--metrics-file", help="Also write Prometheus metrics to this textfile."),
    ] = None,
) -> None:
    """Back up a database into the repository."""
    url = database_url or os.environ.get("DATABASE_URL")
    if not url:
        raise UsageError("no database given: pass DATABASE_URL as an argument or set $DATABASE_URL")
    repository = location(repo, key_file, s3_endpoint).open()
    engine = open_engine(url)
    try:
        report = run_recorded_backup(
            repository, engine, target=target, tags=tuple(tag or ()), progress=progress_sink()
        )
    finally:
        _write_metrics(repository, metrics_file)
    m = report.manifest
    share = 100.0 * report.new_plain_bytes / m.raw_size if m.raw_size else 0.0
    stdout.print(f"backup {m.backup_id} complete")
    stdout.print(f"  target       {m.target} ({m.engine} {m.engine_version})")
    stdout.print(f"  raw size     {human_bytes(m.raw_size)} in {m.chunk_count} chunks")
    stdout.print(
        f"  new data     {human_bytes(report.new_plain_bytes)} ({share:.1f}% of raw, "
        f"{m.new_chunk_count} new chunks)"
    )
    stdout.print(f"  new stored   {human_bytes(m.stored_new_bytes)} (compressed, encrypted)")
    if report.new_plain_bytes:
        stdout.print(f"  dedup ratio  {report.dedup_ratio:.1f}x (raw size / new data)")
    else:
        stdout.print("  dedup ratio  all data was already stored (nothing new)")
    stdout.print(f"  duration     {human_seconds(m.duration_seconds)}")


def _write_metrics(repository: Repository, metrics_file: Path | None) -> None:
    if metrics_file is None:
        return
    registry = build_registry(
        repository.list_backups(),
        records.runs(repository),
        records.last_verifications(repository),
    )
    write_metrics_file(metrics_file, registry)
