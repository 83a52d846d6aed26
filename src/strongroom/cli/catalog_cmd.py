"""strongroom list / show"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from strongroom.cli.options import (
    JsonOption,
    KeyFileOption,
    RepoOption,
    S3EndpointOption,
    location,
)
from strongroom.cli.output import human_bytes, human_seconds, stdout
from strongroom.errors import KeyMissing
from strongroom.repository.manifest import Manifest
from strongroom.repository.repository import Repository
from strongroom.services import records
from strongroom.services.records import VerificationRecord


def verification_summary(record: VerificationRecord | None) -> dict[str, Any] | None:
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


def verification_text(record: VerificationRecord | None) -> str:
    if record is None:
        return "never"
    outcome = "ok" if record.ok else "FAILED"
    rto = f", restore {human_seconds(record.restore_seconds)}" if record.restore_seconds else ""
    return f"{outcome} {record.verified_at}{rto}"


def manifest_summary(m: Manifest, record: VerificationRecord | None = None) -> dict[str, Any]:
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
        "last_verification": verification_summary(record),
    }


def list_backups(
    target: Annotated[str | None, typer.Option("--target", help="Only this target.")] = None,
    as_json: JsonOption = False,
    repo: RepoOption = None,
    key_file: KeyFileOption = None,
    s3_endpoint: S3EndpointOption = None,
) -> None:
    """List the backups in the repository, oldest first."""
    repository = location(repo, key_file, s3_endpoint).open()
    backups = repository.list_backups(target)
    verified = records.last_verifications(repository)
    if as_json:
        stdout.print_json(
            json.dumps([manifest_summary(m, verified.get(m.backup_id)) for m in backups])
        )
        return
    if not backups:
        stdout.print("no backups" + (f" of target {target!r}" if target else ""))
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
        table.add_row(
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
    stdout.print(table)


def show(
    backup_id: Annotated[str, typer.Argument(metavar="ID", help="Backup id, prefix, or latest.")],
    as_json: JsonOption = False,
    repo: RepoOption = None,
    key_file: KeyFileOption = None,
    s3_endpoint: S3EndpointOption = None,
) -> None:
    """Show one backup, with the per-table row counts recorded at dump time."""
    repository = location(repo, key_file, s3_endpoint).open()
    m = repository.resolve(backup_id)
    record = records.last_verification(repository, m.backup_id)
    details = manifest_summary(m, record)
    tables = _tables(repository, m)
    if as_json:
        details["database"] = tables[0] if tables else None
        details["tables"] = (
            [{"name": n, "rows": r, "checksum": c} for n, r, c in tables[1]]
            if tables is not None
            else None
        )
        stdout.print_json(json.dumps(details))
        return
    for key, value in details.items():
        if key in ("raw_size", "stored_new_bytes"):
            value = f"{human_bytes(int(value))} ({value} bytes)"
        elif key == "tags":
            value = ", ".join(value) or "-"
        elif key == "duration_seconds":
            value = human_seconds(float(value))
        elif key == "last_verification":
            value = verification_text(record)
        stdout.print(f"{key:<18} {value}")
    if tables is None:
        stdout.print("tables             (encrypted: give the key to see table statistics)")
        return
    stdout.print(f"{'database':<18} {tables[0]}")
    table = Table(box=None, pad_edge=False)
    table.add_column("TABLE")
    table.add_column("ROWS", justify="right")
    table.add_column("CHECKSUM")
    for name, rows, checksum in tables[1]:
        table.add_row(name, str(rows), checksum or "-")
    stdout.print(table)


def _tables(
    repository: Repository, m: Manifest
) -> tuple[str, list[tuple[str, int, str | None]]] | None:
    try:
        private = repository.private_section(m)
    except KeyMissing:
        return None
    return private.database, [(t.name, t.rows, t.checksum) for t in private.tables]
