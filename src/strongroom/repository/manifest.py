"""Backup manifests: the commit point of a backup (written last, read first).

The clear part holds what listing, retention and garbage collection need; everything that
tells about the data itself (database name, table names, row counts) lives in the
``private`` section, encrypted to the repository's recipients.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from strongroom.errors import RepositoryError, UnsupportedFormat
from strongroom.pipeline.encryption import Sealer

MANIFEST_FORMAT = "strongroom-manifest"
MANIFEST_VERSION = 1
STATUS_COMPLETE = "complete"


@dataclass(frozen=True)
class ChunkRef:
    """One chunk of the raw stream, in order: its keyed-hash name and plaintext size."""

    chunk_id: str
    size: int


@dataclass(frozen=True)
class TableRecord:
    name: str
    rows: int
    checksum: str | None = None  # order-independent content checksum (engine-specific form)


@dataclass(frozen=True)
class PrivateSection:
    """What the manifest tells about the data; encrypted at rest."""

    database: str
    source: str  # redacted URL of the database that was dumped
    tables: list[TableRecord] = field(default_factory=list)
    # The engine's record of what the dump leaves out (PostgreSQL: the database object and
    # the roles; see strongroom.engines.postgresql.state); absent in older backups.
    engine_state: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "database": self.database,
            "source": self.source,
            "tables": [
                {"name": t.name, "rows": t.rows}
                | ({"checksum": t.checksum} if t.checksum is not None else {})
                for t in self.tables
            ],
        }
        if self.engine_state is not None:
            document["engine_state"] = self.engine_state
        return document

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PrivateSection:
        return cls(
            database=str(data.get("database", "")),
            source=str(data.get("source", "")),
            tables=[
                TableRecord(str(t["name"]), int(t["rows"]), t.get("checksum"))
                for t in data.get("tables", [])
            ],
            engine_state=data.get("engine_state"),
        )


@dataclass(frozen=True)
class Manifest:
    """A complete backup. It exists in the repository if and only if the backup is whole."""

    backup_id: str
    target: str
    engine: str
    engine_version: str
    tool_version: str
    dump_format: str
    started_at: str
    finished_at: str
    duration_seconds: float
    tags: tuple[str, ...]
    status: str
    created_by: str
    raw_size: int
    stored_new_bytes: int
    new_chunk_count: int
    stream_checksum: str
    chunks: tuple[ChunkRef, ...]
    private_sealed: dict[str, Any]  # {"encoding": "age"|"plain", "data": ...}

    @property
    def chunk_count(self) -> int:
        return len(self.chunks)

    @property
    def unique_chunk_ids(self) -> set[str]:
        return {ref.chunk_id for ref in self.chunks}

    def to_json(self) -> bytes:
        document = {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "id": self.backup_id,
            "target": self.target,
            "engine": self.engine,
            "engine_version": self.engine_version,
            "tool_version": self.tool_version,
            "dump_format": self.dump_format,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration_seconds": round(self.duration_seconds, 3),
            "tags": list(self.tags),
            "status": self.status,
            "created_by": self.created_by,
            "raw_size": self.raw_size,
            "stored_new_bytes": self.stored_new_bytes,
            "new_chunk_count": self.new_chunk_count,
            "chunk_count": self.chunk_count,
            "stream_checksum": {"algorithm": "blake3", "hex": self.stream_checksum},
            "chunks": [[ref.chunk_id, ref.size] for ref in self.chunks],
            "private": self.private_sealed,
        }
        return json.dumps(document, separators=(",", ":")).encode() + b"\n"

    @classmethod
    def from_json(cls, raw: bytes, where: str) -> Manifest:
        try:
            doc = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RepositoryError(f"manifest {where} is not valid JSON ({exc})") from exc
        if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
            raise RepositoryError(f"{where} is not a strongroom manifest")
        if doc.get("version") != MANIFEST_VERSION:
            raise UnsupportedFormat(
                f"manifest {where} has version {doc.get('version')}; this strongroom reads "
                f"version {MANIFEST_VERSION}"
            )
        try:
            return cls(
                backup_id=doc["id"],
                target=doc["target"],
                engine=doc["engine"],
                engine_version=doc.get("engine_version", ""),
                tool_version=doc.get("tool_version", ""),
                dump_format=doc["dump_format"],
                started_at=doc["started_at"],
                finished_at=doc["finished_at"],
                duration_seconds=float(doc["duration_seconds"]),
                tags=tuple(doc.get("tags", ())),
                status=doc["status"],
                created_by=doc.get("created_by", ""),
                raw_size=int(doc["raw_size"]),
                stored_new_bytes=int(doc["stored_new_bytes"]),
                new_chunk_count=int(doc["new_chunk_count"]),
                stream_checksum=doc["stream_checksum"]["hex"],
                chunks=tuple(ChunkRef(str(c[0]), int(c[1])) for c in doc["chunks"]),
                private_sealed=doc["private"],
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise RepositoryError(f"manifest {where} is incomplete ({exc!r})") from exc


def seal_private(section: PrivateSection, sealer: Sealer) -> dict[str, Any]:
    """Encrypt the private section for the manifest (plain JSON when unencrypted)."""
    if not sealer.encrypted:
        return {"encoding": "plain", "data": section.to_dict()}
    payload = json.dumps(section.to_dict()).encode()
    return {"encoding": "age", "data": base64.b64encode(sealer.seal(payload)).decode()}


def open_private(sealed: dict[str, Any], sealer: Sealer) -> PrivateSection:
    """Decrypt the private section (raises ``DecryptionFailed`` with a wrong key)."""
    if sealed.get("encoding") == "plain":
        return PrivateSection.from_dict(sealed["data"])
    payload = sealer.open(base64.b64decode(sealed["data"]))
    return PrivateSection.from_dict(json.loads(payload))
