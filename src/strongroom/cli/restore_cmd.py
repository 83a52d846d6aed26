"""strongroom restore"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from strongroom.cli.options import KeyFileOption, RepoOption, S3EndpointOption, location
from strongroom.cli.output import human_bytes, human_seconds, progress_sink, stdout
from strongroom.engines import open_engine
from strongroom.errors import VerificationMismatch
from strongroom.services.restore import RestoreReport, run_restore


def restore(
    backup_id: Annotated[str, typer.Argument(metavar="ID", help="Backup id, prefix, or latest.")],
    to: Annotated[str, typer.Option("--to", help="Database URL to restore into (new or empty).")],
    yes: Annotated[
        bool, typer.Option("--yes", help="Do not ask for confirmation (for scripts).")
    ] = False,
    target: Annotated[
        str | None, typer.Option("--target", help="With 'latest': the newest of this target.")
    ] = None,
    repo: RepoOption = None,
    key_file: KeyFileOption = None,
    s3_endpoint: S3EndpointOption = None,
) -> None:
    """Restore a backup into a new or empty database, then compare row counts."""
    del yes  # a new or empty target needs no confirmation; safe replace will use it
    repository = location(repo, key_file, s3_endpoint).open()
    manifest = repository.resolve(backup_id, target)
    engine = open_engine(to)
    engine.check_restore_target()
    stdout.print(
        f"restoring {manifest.backup_id} ({manifest.target}, {human_bytes(manifest.raw_size)}) "
        f"into {engine.describe()}"
    )
    report = run_restore(repository, manifest, engine, progress=progress_sink())
    print_comparison(report)
    if not report.ok:
        bad = sum(1 for c in report.comparisons if not c.matches)
        raise VerificationMismatch(
            f"restored {engine.describe()} but {bad} table(s) differ from the backup's row counts"
        )
    stdout.print(
        f"restore complete and verified: {len(report.comparisons)} tables match "
        f"({human_seconds(report.duration_seconds)})"
    )


def print_comparison(report: RestoreReport) -> None:
    table = Table(box=None, pad_edge=False)
    table.add_column("TABLE")
    table.add_column("IN BACKUP", justify="right")
    table.add_column("RESTORED", justify="right")
    table.add_column("")
    for c in report.comparisons:
        table.add_row(
            c.name,
            "-" if c.expected is None else str(c.expected),
            "-" if c.actual is None else str(c.actual),
            "ok" if c.matches else "MISMATCH",
        )
    stdout.print(table)
