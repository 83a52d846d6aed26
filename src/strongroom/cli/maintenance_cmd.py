"""strongroom prune / check / stats"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated, Any

import typer
from rich.table import Table

from strongroom.cli.options import (
    ConfigOption,
    JsonOption,
    KeyFileOption,
    RepoOption,
    S3EndpointOption,
    location,
)
from strongroom.cli.output import human_bytes, stderr, stdout
from strongroom.errors import IntegrityError, UsageError
from strongroom.repository.locks import PRUNE_WAIT
from strongroom.services.check import check_repository, parse_subset
from strongroom.services.prune import PruneReport, WalPruneLine
from strongroom.services.prune import prune as run_prune
from strongroom.services.repack import REPACK_THRESHOLD
from strongroom.services.stats import Totals, repository_stats
from strongroom.wording import counted


def prune(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report what would be freed; delete nothing.")
    ] = False,
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
    """Delete chunks no backup references and WAL no retained base backup needs (safe
    while backups run elsewhere: it waits)."""
    repository = location(repo, key_file, s3_endpoint, config).open()
    report = run_prune(repository, dry_run=dry_run, wait=wait)
    if as_json:
        stdout.print_json(json.dumps(asdict(report)))
        return
    stdout.print(
        f"{report.backups} backups reference {report.referenced_chunks} chunks; "
        f"{report.unreferenced_chunks} of {report.stored_chunks} stored chunks are unreferenced"
    )
    size = human_bytes(report.unreferenced_bytes)
    if dry_run:
        what = "would" if report.packed else f"would delete {report.unreferenced_chunks} chunks and"
        stdout.print(
            f"dry run: {what} free {size} ({report.unreferenced_bytes} bytes); nothing was deleted"
        )
        if report.running_backups:
            stdout.print(
                f"{report.running_backups} backup(s) are running: chunks they have stored so "
                "far count as unreferenced here, but prune waits for them and keeps those"
            )
        if report.partial_files:
            stdout.print(
                f"would remove {counted(report.partial_files, 'partial file')} left by "
                "interrupted writes"
            )
        _print_packs(report, "would delete", "would repack")
        _print_wal(report.wal, "would delete")
        return
    loose = f"deleted {report.deleted_chunks} {'loose ' if report.packed else ''}chunks, "
    stdout.print(f"{loose}freed {size} ({report.unreferenced_bytes} bytes)")
    if report.orphan_records:
        stdout.print(f"removed {report.orphan_records} pins/records of forgotten backups")
    _print_packs(report, "deleted", "repacked")
    if report.partial_files:
        stdout.print(
            f"removed {counted(report.partial_files, 'partial file')} left by interrupted writes"
        )
    _print_wal(report.wal, "deleted")


def _print_packs(report: PruneReport, deleted: str, repacked: str) -> None:
    """One line about packs (deleted, repacked, bytes freed), when there was pack work."""
    if report.packs_note:
        stdout.print(report.packs_note)
    if report.kept_in_packs:
        stdout.print(
            f"{counted(report.kept_in_packs, 'unreferenced chunk')} "
            f"({human_bytes(report.kept_in_packs_bytes)}) stay inside packs still at least "
            f"{REPACK_THRESHOLD:.0%} in use"
        )
    if not (report.packs_deleted or report.packs_repacked or report.index_objects_deleted):
        return
    written = f" into {counted(report.packs_written, 'new pack')}" if report.packs_written else ""
    orphans = f", {report.orphan_packs} listed by no index" if report.orphan_packs else ""
    stdout.print(
        f"packs: {deleted} {counted(report.packs_deleted, 'pack')} ({repacked} "
        f"{report.packs_repacked} of them{written}{orphans}); "
        f"{human_bytes(report.pack_bytes_freed)} ({report.pack_bytes_freed} bytes) of packs "
        f"freed; {counted(report.index_objects_deleted, 'index object')} replaced"
    )


def _print_wal(lines: tuple[WalPruneLine, ...], verb: str) -> None:
    """One line per WAL stream: what went (or would go), or why all of it stays."""
    for line in lines:
        if line.files:
            stdout.print(
                f"WAL {line.stream}: {verb} {counted(line.files, 'file')} no retained base "
                f"backup needs ({line.first} … {line.last}); {line.kept} kept"
            )
        elif line.kept_whole:
            stdout.print(f"WAL {line.stream}: all {line.kept} files kept: {line.kept_whole}")
        else:
            stdout.print(f"WAL {line.stream}: nothing to delete ({line.kept} files kept)")


def check(
    read_data: Annotated[
        bool, typer.Option("--read-data", help="Also decrypt and hash-check the chunks.")
    ] = False,
    subset: Annotated[
        str | None,
        typer.Option(
            "--subset", metavar="PERCENT", help="With --read-data: read only this share, e.g. 10%."
        ),
    ] = None,
    as_json: JsonOption = False,
    repo: RepoOption = None,
    key_file: KeyFileOption = None,
    s3_endpoint: S3EndpointOption = None,
    config: ConfigOption = None,
) -> None:
    """Check that every backup's chunks exist (and with --read-data, are intact)."""
    if subset is not None and not read_data:
        raise UsageError("--subset needs --read-data")
    share = parse_subset(subset) if subset is not None else None
    repository = location(repo, key_file, s3_endpoint, config).open()
    report = check_repository(repository, read_data=read_data, subset=share)
    if as_json:
        document = asdict(report)
        document["ok"] = report.ok
        stdout.print_json(json.dumps(document))
    else:
        stdout.print(
            f"{report.backups} backups reference {report.referenced_chunks} chunks; "
            f"{report.stored_chunks} chunks stored ({report.unreferenced_chunks} unreferenced)"
        )
        if report.index_objects or report.packs:
            unlisted = (
                f"; {counted(report.unlisted_packs, 'pack')} listed by no index "
                "(`strongroom prune` deletes them)"
                if report.unlisted_packs
                else ""
            )
            stdout.print(
                f"{counted(report.packs, 'pack')}, "
                f"{counted(report.index_objects, 'index object')}{unlisted}"
            )
        if read_data:
            share_text = f" ({share:.0%} sample)" if share is not None and share < 1 else ""
            packs_text = (
                f" in {counted(report.packs_read, 'pack')} read whole" if report.packs else ""
            )
            stdout.print(
                f"read {report.chunks_read} chunks{packs_text}{share_text}, "
                f"{human_bytes(report.bytes_read)} of plaintext"
            )
        if report.wal_streams:
            stdout.print(
                f"WAL: {counted(report.wal_streams, 'stream')}, "
                f"{counted(report.wal_segments, 'segment')} archived; continuity checked "
                "from each retained base backup's start"
            )
        for problem in report.problems:
            needed = f" (needed by {len(problem.backups)}: {', '.join(problem.backups[:3])}"
            needed += ", …)" if len(problem.backups) > 3 else ")"
            needed = needed if problem.backups else ""
            stderr.print(f"{problem.kind.upper():<9}{problem.message}{needed}", markup=False)
        if report.ok:
            stdout.print("no problems found")
        elif report.unlisted_packs and any(p.kind in ("missing", "index") for p in report.problems):
            stderr.print(
                f"{counted(report.unlisted_packs, 'pack')} no index lists may hold what is "
                "missing: `strongroom index rebuild` lists every pack again"
            )
    if not report.ok:
        first = report.problems[0]
        raise IntegrityError(
            f"check found {len(report.problems)} problem(s); first: {first.message}"
        )


def _totals_json(t: Totals) -> dict[str, Any]:
    document = asdict(t)
    document["dedup_ratio"] = round(t.dedup_ratio, 3)
    document["reduction_ratio"] = round(t.reduction_ratio, 3)
    return document


def stats(
    target: Annotated[str | None, typer.Option("--target", help="Only this target.")] = None,
    as_json: JsonOption = False,
    repo: RepoOption = None,
    key_file: KeyFileOption = None,
    s3_endpoint: S3EndpointOption = None,
    config: ConfigOption = None,
) -> None:
    """Sizes, deduplication, backup count and age, per target."""
    result = repository_stats(location(repo, key_file, s3_endpoint, config).open(), target)
    if as_json:
        document: dict[str, Any] = {
            "targets": [_totals_json(t) for t in result.targets],
            "total": _totals_json(result.total),
            "all_chunks": result.all_chunks,
            "all_chunk_bytes": result.all_chunk_bytes,
            "packs": result.packs,
            "pack_bytes": result.pack_bytes,
            "index_objects": result.index_objects,
            "loose_chunks": result.loose_chunks,
            "objects": result.objects,
        }
        stdout.print_json(json.dumps(document))
        return
    if not result.targets:
        stdout.print("no backups" + (f" of target {target!r}" if target else ""))
        return
    table = Table(box=None, pad_edge=False)
    columns = ("TARGET", "BACKUPS", "RAW", "UNIQUE", "STORED", "DEDUP", "OLDEST", "NEWEST")
    for column in columns:
        table.add_column(column, justify="right" if column in columns[1:6] else "left")
    rows = [*result.targets, result.total] if len(result.targets) > 1 else result.targets
    for t in rows:
        table.add_row(
            t.target or "(all)",
            str(t.backups),
            human_bytes(t.raw_bytes),
            human_bytes(t.unique_bytes),
            human_bytes(t.stored_bytes),
            f"{t.dedup_ratio:.1f}x",
            t.oldest or "-",
            t.newest or "-",
        )
    stdout.print(table)
    stdout.print(
        "RAW: dump sizes summed; UNIQUE: distinct data; STORED: compressed and encrypted "
        "chunks; DEDUP: raw / unique"
    )
    if result.all_chunk_bytes is not None and result.all_chunks is not None:
        loose = result.all_chunk_bytes - result.total.stored_bytes
        stdout.print(
            f"repository holds {result.all_chunks} chunks, {human_bytes(result.all_chunk_bytes)}"
            f" ({human_bytes(loose)} unreferenced: `strongroom prune` frees it)"
        )
    if result.objects:
        stdout.print(
            f"objects: {counted(result.packs, 'pack')} ({human_bytes(result.pack_bytes)}), "
            f"{counted(result.index_objects, 'index object')}, "
            f"{counted(result.loose_chunks, 'loose chunk')}"
        )
