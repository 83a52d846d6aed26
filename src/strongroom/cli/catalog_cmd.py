"""strongroom list / show"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from strongroom.cli.options import (
    ConfigOption,
    JsonOption,
    KeyFileOption,
    RepoOption,
    S3EndpointOption,
    location,
)
from strongroom.cli.output import human_bytes, human_seconds, stdout
from strongroom.errors import KeyMissing
from strongroom.repository.manifest import Manifest
from strongroom.repository.names import printable
from strongroom.repository.repository import DamagedBackup, Repository
from strongroom.services import records
from strongroom.services.records import VerificationRecord, VerificationStatus
from strongroom.services.wal_status import target_summary, wal_status

KIND_NAMES = {"read": "read", "restore": "drill"}  # what the VERIFIED column calls a kind


def verification_summary(record: VerificationRecord | None) -> dict[str, Any] | None:
    """One verification record as JSON (``kind``: ``read`` or ``restore``)."""
    if record is None:
        return None
    return {
        "verified_at": record.verified_at,
        "kind": record.kind,
        "ok": record.ok,
        "restore_seconds": record.restore_seconds,
        "tables_checked": record.tables_checked,
        "checks_run": record.checks_run,
        "problem": record.problem,
    }


def _record_text(record: VerificationRecord) -> str:
    outcome = "ok" if record.ok else "FAILED"
    rto = f", restore {human_seconds(record.restore_seconds)}" if record.restore_seconds else ""
    return f"{KIND_NAMES.get(record.kind, record.kind)} {outcome} {record.verified_at}{rto}"


def verification_text(status: VerificationStatus | None) -> str:
    """The VERIFIED column: ``never``; else the newest record (and the newest restore drill
    when that is older), prefixed ``good:`` only when the backup is verified good (a passed
    drill, nothing failed since). E.g. ``good: drill ok 2026-…, restore 3.1 s``,
    ``read ok 2026-… (no restore drill)``, ``read FAILED 2026-…; drill ok 2026-…``."""
    if status is None:
        return "never"
    parts = [_record_text(status.last)]
    drill = status.last_drill
    if drill is None:
        parts[0] += " (no restore drill)"
    elif drill != status.last:
        parts.append(_record_text(drill))
    text = "; ".join(parts)
    return f"good: {text}" if status.verified_good else text


def manifest_summary(m: Manifest, status: VerificationStatus | None = None) -> dict[str, Any]:
    """A backup as JSON: its manifest's clear fields, its newest verification of any kind
    (``last_verification``), its newest restore drill (``last_restore_drill``) and
    ``verified_good`` (a drill passed and nothing failed since: what retention keeps)."""
    return {
        "id": m.backup_id,
        "target": m.target,
        "engine": m.engine,
        "engine_version": m.engine_version,
        "tool_version": m.tool_version,
        "dump_format": m.dump_format,
        "status": m.status,
        "tags": list(m.tags),
        "started_at": m.started_at,
        "finished_at": m.finished_at,
        "duration_seconds": m.duration_seconds,
        "created_by": m.created_by,
        "raw_size": m.raw_size,
        "stored_new_bytes": m.stored_new_bytes,
        "chunk_count": m.chunk_count,
        "new_chunk_count": m.new_chunk_count,
        "stream_checksum": m.stream_checksum,
        "last_verification": verification_summary(status.last if status else None),
        "last_restore_drill": verification_summary(status.last_drill if status else None),
        "verified_good": status.verified_good if status else False,
    }


def damaged_summary(found: DamagedBackup) -> dict[str, Any]:
    """A damaged manifest as JSON: its id, the target its text still names (or null), and
    ``damaged``: the one-line reason (``status`` is ``damaged``)."""
    return {
        "id": found.backup_id,
        "target": found.target,
        "status": "damaged",
        "damaged": found.reason,
    }


def list_backups(
    target: Annotated[str | None, typer.Option("--target", help="Only this target.")] = None,
    as_json: JsonOption = False,
    repo: RepoOption = None,
    key_file: KeyFileOption = None,
    s3_endpoint: S3EndpointOption = None,
    config: ConfigOption = None,
) -> None:
    """List the backups in the repository, oldest first; damaged manifests last, as
    damaged (they are never chosen, deleted or counted as backups)."""
    repository = location(repo, key_file, s3_endpoint, config).open()
    listing = repository.scan_backups(target)
    backups, damaged = listing.backups, listing.damaged
    verified = records.verification_statuses(repository)
    if as_json:
        wal = _wal_of(repository, backups)
        entries = [
            {**manifest_summary(m, verified.get(m.backup_id)), "wal": wal.get(m.target)}
            for m in backups
        ]
        entries += [damaged_summary(found) for found in damaged]
        _print_json(entries)
        return
    if not backups and not damaged:
        stdout.print("no backups" + (f" of target {target!r}" if target else ""), markup=False)
        return
    table = Table(box=None, pad_edge=False)
    columns = (
        "ID",
        "TARGET",
        "ENGINE",
        "TAGS",
        "FINISHED",
        "RAW",
        "NEW STORED",
        "TIME",
        "VERIFIED",
    )
    for column in columns:
        table.add_column(column)
    for m in backups:
        _add_row(
            table,
            m.backup_id,
            m.target,
            m.engine,
            ",".join(m.tags) or "-",
            m.finished_at,
            human_bytes(m.raw_size),
            human_bytes(m.stored_new_bytes),
            human_seconds(m.duration_seconds),
            verification_text(verified.get(m.backup_id)),
        )
    for found in damaged:
        _add_row(
            table, found.backup_id, found.target or "?", *["-"] * 6, f"damaged: {found.reason}"
        )
    stdout.print(table)
    if any(m.is_base_backup for m in backups):
        _print_wal(repository, sorted({m.target for m in backups if m.is_base_backup}))


def _wal_of(repository: Repository, backups: list[Manifest]) -> dict[str, dict[str, Any] | None]:
    """``list --json``'s ``wal`` of each entry: the WAL of its target's base backups
    (``wal_status.target_summary``: the same object on each entry of the target), ``null``
    for a target without base backups."""
    targets = sorted({m.target for m in backups if m.is_base_backup})
    if not targets:
        return {}
    status = wal_status(repository)
    return {target: target_summary(status.for_target(target)) for target in targets}


def _print_wal(repository: Repository, targets: list[str]) -> None:
    """Per target with base backups: the recoverable window, the last WAL segment and its
    lag, and any gap (services/wal_status.py)."""
    status = wal_status(repository)
    for target in targets:
        for s in status.for_target(target):
            window = (
                f"recoverable {s.window_start:%Y-%m-%d %H:%M:%S} to "
                f"{s.window_end:%Y-%m-%d %H:%M:%S} UTC"
                if s.window_start is not None and s.window_end is not None
                else "no recoverable window"
            )
            last = (
                f"last segment {s.newest_segment}"
                + (f" at {s.newest_time:%Y-%m-%d %H:%M:%S} UTC" if s.newest_time else "")
                + (f" (lag {human_seconds(s.lag_seconds)})" if s.lag_seconds is not None else "")
                if s.newest_segment
                else "no WAL archived"
            )
            gap = f"; GAP: {s.gaps[0].first_missing} missing" if s.gaps else ""
            stdout.print(Text(printable(f"WAL of {target} ({s.stream}): {window}; {last}{gap}")))


def _print_json(data: object) -> None:
    """JSON on stdout, non-ASCII text as it is unless it cannot be written as UTF-8 (a lone
    surrogate in a name an older version stored): then as ``\\u`` escapes."""
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
        as_ascii = False
    except UnicodeEncodeError:
        as_ascii = True
    stdout.print_json(json.dumps(data), ensure_ascii=as_ascii)


def _add_row(table: Table, *cells: str) -> None:
    """A row of text read from the repository: shown as it is, never read as Rich markup
    (a tag ``[/]`` from an older version must not stop the listing) nor obeyed as terminal
    control (``names.printable``)."""
    table.add_row(*(Text(printable(cell)) for cell in cells))


def show(
    backup_id: Annotated[str, typer.Argument(metavar="ID", help="Backup id, prefix, or latest.")],
    as_json: JsonOption = False,
    repo: RepoOption = None,
    key_file: KeyFileOption = None,
    s3_endpoint: S3EndpointOption = None,
    config: ConfigOption = None,
) -> None:
    """Show one backup, with the per-table row counts recorded at dump time."""
    repository = location(repo, key_file, s3_endpoint, config).open()
    m = repository.resolve(backup_id)
    status = records.verification_status(repository, m.backup_id)
    details = manifest_summary(m, status)
    tables = _tables(repository, m)
    if as_json:
        details["database"] = tables[0] if tables else None
        details["tables"] = (
            [{"name": n, "rows": r, "checksum": c} for n, r, c in tables[1]]
            if tables is not None
            else None
        )
        _print_json(details)
        return
    for key, value in details.items():
        if key in ("raw_size", "stored_new_bytes"):
            value = f"{human_bytes(int(value))} ({value} bytes)"
        elif key == "tags":
            value = ", ".join(value) or "-"
        elif key == "duration_seconds":
            value = human_seconds(float(value))
        elif key == "last_verification":
            value = verification_text(status)
        elif key in ("last_restore_drill", "verified_good"):
            continue  # in the line above
        stdout.print(f"{key:<18} {printable(str(value))}", markup=False)
    if tables is None:
        stdout.print("tables             (encrypted: give the key to see table statistics)")
        return
    stdout.print(f"{'database':<18} {printable(tables[0])}", markup=False)
    table = Table(box=None, pad_edge=False)
    table.add_column("TABLE")
    table.add_column("ROWS", justify="right")
    table.add_column("CHECKSUM")
    for name, rows, checksum in tables[1]:
        _add_row(table, name, str(rows), checksum or "-")
    stdout.print(table)


def _tables(
    repository: Repository, m: Manifest
) -> tuple[str, list[tuple[str, int, str | None]]] | None:
    try:
        private = repository.private_section(m)
    except KeyMissing:
        return None
    return private.database, [(t.name, t.rows, t.checksum) for t in private.tables]
