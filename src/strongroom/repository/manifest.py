"""Backup manifests: the commit point of a backup (written last, read first).

The clear part holds what listing, retention and garbage collection need; everything that
tells about the data itself (database name, table names, row counts) lives in the
``private`` section, encrypted to the repository's recipients.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from strongroom.errors import ManifestDamaged, UnsupportedFormat
from strongroom.pipeline.encryption import DecryptionFailed, Sealer
from strongroom.repository.chunk_list import ChunkList, ChunkListBuilder
from strongroom.repository.chunk_list import ChunkRef as ChunkRef  # re-exported
from strongroom.repository.ids import parse_iso
from strongroom.repository.layout import is_chunk_id
from strongroom.repository.manifest_chunks import split_chunks
from strongroom.repository.names import printable

#: ``to_json`` writes this string in place of the chunk list, then splices the list's
#: bytes in; random per process, so no value of another field can hold its text
_CHUNKS_SLOT = f"strongroom-chunks-{secrets.token_hex(16)}"
_CHUNKS_SLOT_JSON = f'"{_CHUNKS_SLOT}"'.encode()

MANIFEST_FORMAT = "strongroom-manifest"
MANIFEST_VERSION = 1
STATUS_COMPLETE = "complete"
PRIVATE_AGE = "age"
PRIVATE_PLAIN = "plain"


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
            tables=[_table_record(t) for t in data.get("tables", [])],
            engine_state=data.get("engine_state"),
        )


def _table_record(item: Any) -> TableRecord:
    rows, checksum = item["rows"], item.get("checksum")
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 0:
        raise ValueError(f"table {printable(_short(item['name']))} has no row count")
    if checksum is not None and not isinstance(checksum, str):
        raise ValueError(f"table {printable(_short(item['name']))} has no valid checksum")
    return TableRecord(str(item["name"]), rows, checksum)


# dump formats of physical backups of a whole cluster (see docs/design.md, "WAL archive and
# base backups"); everything else is a logical dump of one database
BASE_BACKUP_FORMAT_POSTGRESQL = "pg_basebackup-tar"
BASE_BACKUP_FORMATS = frozenset({BASE_BACKUP_FORMAT_POSTGRESQL})


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
    chunks: Sequence[ChunkRef]  # held as a ChunkList (40 bytes per chunk): __post_init__
    private_sealed: dict[str, Any]  # {"encoding": "age"|"plain", "data": ...}
    # keyed digest of the ordered chunk list (chunk_order_digest); None in manifests
    # written before it was recorded
    chunk_order: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.chunks, ChunkList):
            object.__setattr__(self, "chunks", ChunkList(self.chunks))

    @property
    def chunk_count(self) -> int:
        return len(self.chunks)

    @property
    def is_base_backup(self) -> bool:
        """A physical backup of a whole cluster (``pg_basebackup``), restored only by
        point-in-time recovery (``restore --to-datadir``), never into a database."""
        return self.dump_format in BASE_BACKUP_FORMATS

    @property
    def unique_chunk_ids(self) -> set[str]:
        return set(self.chunk_list.ids())

    @property
    def chunk_list(self) -> ChunkList:
        """``chunks`` as the ``ChunkList`` it is held as."""
        chunks = self.chunks
        assert isinstance(chunks, ChunkList)  # __post_init__
        return chunks

    def to_json(self) -> bytes:
        document: dict[str, Any] = {
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
            "chunks": _CHUNKS_SLOT,  # spliced in as bytes below (~76 B per chunk)
            "private": self.private_sealed,
        }
        if self.chunk_order is not None:
            document["chunk_order"] = {"algorithm": "blake3-keyed", "hex": self.chunk_order}
        head, tail = (
            json.dumps(document, separators=(",", ":")).encode().split(_CHUNKS_SLOT_JSON)
        )  # the slot's text is in no other field: it holds a random value (below)
        out = io.BytesIO()  # getvalue() hands over its buffer: the JSON is held once
        out.write(head)
        self.chunk_list.write_json_array(out)
        out.write(tail + b"\n")
        return out.getvalue()

    @classmethod
    def from_json(cls, raw: bytes, where: str, backup_id: str | None = None) -> Manifest:
        """Parse a manifest stored at ``where`` (the storage key, named in messages).

        Raises ``ManifestDamaged`` (exit 7) for anything that is not a whole manifest:
        not JSON, a field missing or of the wrong kind, a chunk id that is not 64 hex
        characters, an id that is not ``backup_id``; ``UnsupportedFormat`` (exit 3) for a
        version this strongroom does not read. Target names and tags are not checked
        against today's rules: older versions wrote what they allowed.
        """

        def damaged(reason: str) -> ManifestDamaged:
            return ManifestDamaged(f"manifest {where} is damaged: {reason}", backup_id)

        fast = _split_chunks(raw)  # the chunk list read without an object per chunk
        try:
            doc = json.loads(raw if fast is None else fast[0])
        except (ValueError, RecursionError) as exc:  # ValueError: also an int of 5000 digits
            raise damaged(f"it is not valid JSON ({_short(exc)})") from exc
        if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
            raise damaged("it is not a strongroom manifest")
        if doc.get("version") != MANIFEST_VERSION:
            raise UnsupportedFormat(
                f"manifest {where} has version {_short(doc.get('version'))}; this strongroom "
                f"reads version {MANIFEST_VERSION}"
            )
        try:
            manifest = cls._from_document(doc, None if fast is None else fast[1])
        except _FieldProblem as exc:
            raise damaged(str(exc)) from exc
        if backup_id is not None and manifest.backup_id != backup_id:
            raise damaged(f"it names backup {_short(manifest.backup_id)}")
        return manifest

    @classmethod
    def _from_document(cls, doc: dict[str, Any], read: ChunkList | None = None) -> Manifest:
        listed = _field(doc, "chunks", list)
        chunks = _chunk_refs(listed) if read is None else read
        checksum = _field(doc, "stream_checksum", dict)
        order = doc.get("chunk_order")
        tags = _field(doc, "tags", list, ())
        if not all(isinstance(tag, str) for tag in tags):
            raise _FieldProblem("field 'tags' is not a list of text")
        private = _field(doc, "private", dict)
        if private.get("encoding") not in (PRIVATE_AGE, PRIVATE_PLAIN):
            raise _FieldProblem("its private section has no known encoding")
        duration = doc.get("duration_seconds")
        if (
            isinstance(duration, bool)
            or not isinstance(duration, int | float)
            or not 0 <= duration < _MAX_COUNT  # NaN and Infinity fail this too
        ):
            raise _FieldProblem("field 'duration_seconds' is missing or not a number")
        return cls(
            backup_id=_text(doc, "id"),
            target=_text(doc, "target"),
            engine=_text(doc, "engine"),
            engine_version=_text(doc, "engine_version", ""),
            tool_version=_text(doc, "tool_version", ""),
            dump_format=_text(doc, "dump_format"),
            started_at=_time(doc, "started_at"),
            finished_at=_time(doc, "finished_at"),
            duration_seconds=float(duration),
            tags=tuple(tags),
            status=_text(doc, "status"),
            created_by=_text(doc, "created_by", ""),
            raw_size=_count(doc, "raw_size"),
            stored_new_bytes=_count(doc, "stored_new_bytes"),
            new_chunk_count=_count(doc, "new_chunk_count"),
            stream_checksum=_hex(checksum.get("hex"), "stream_checksum"),
            chunks=chunks,
            private_sealed=private,
            chunk_order=(
                None
                if order is None
                else _hex(order.get("hex") if isinstance(order, dict) else None, "chunk_order")
            ),
        )


class _FieldProblem(ValueError):
    """Why a manifest document is not a whole manifest (one short clause)."""


_HEX64 = re.compile(r"[0-9a-f]{64}")
_CHUNK_IDS = re.compile(r"(?:[0-9a-f]{64}\n)*")  # chunk ids, each followed by a newline
_MISSING = object()
_MAX_COUNT = 2**63  # sizes and counts are below it (S3, SQL bigint); above: damage


def _short(value: object, limit: int = 60) -> str:
    """``value`` as a message may quote it: cut at ``limit`` characters, and with its
    control characters escaped (see ``names.printable``): a damaged manifest's text must
    not move the cursor, retitle the terminal or fake a second ``error:`` line."""
    text = str(value)
    return printable(text if len(text) <= limit else text[:limit] + "…")


def _field(doc: dict[str, Any], name: str, kind: type, default: Any = _MISSING) -> Any:
    value = doc.get(name, default)
    if value is _MISSING:
        raise _FieldProblem(f"field {name!r} is missing")
    if value is default:
        return value
    if not isinstance(value, kind) or isinstance(value, bool):
        raise _FieldProblem(f"field {name!r} is not a {kind.__name__}")
    return value


def _text(doc: dict[str, Any], name: str, default: Any = _MISSING) -> str:
    value = doc.get(name, default)
    if value is _MISSING:
        raise _FieldProblem(f"field {name!r} is missing")
    if not isinstance(value, str):
        raise _FieldProblem(f"field {name!r} is not text")
    return value


def _time(doc: dict[str, Any], name: str) -> str:
    value = _text(doc, name)
    try:
        parse_iso(value)
    except ValueError as exc:
        raise _FieldProblem(f"field {name!r} is not a time") from exc
    return value


def _count(doc: dict[str, Any], name: str) -> int:
    value = doc.get(name, _MISSING)
    if value is _MISSING:
        raise _FieldProblem(f"field {name!r} is missing")
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _MAX_COUNT:
        raise _FieldProblem(f"field {name!r} is not a count")
    return value


def _hex(value: object, name: str) -> str:
    if not isinstance(value, str) or _HEX64.fullmatch(value) is None:
        raise _FieldProblem(f"field {name!r} is not a 64-hex-character digest")
    return value


def _split_chunks(raw: bytes) -> tuple[str, ChunkList] | None:
    """The manifest's text without its chunk list, and the list (``manifest_chunks``);
    ``None`` for text that is not plain UTF-8 (the full parser reads or refuses it)."""
    if raw.startswith(b"\xef\xbb\xbf"):
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return split_chunks(text, _MAX_COUNT)


def _chunk_refs(items: list[Any]) -> ChunkList:
    """The manifest's ``chunks``: checked as a whole first (a manifest lists thousands;
    ``list`` reads every manifest), item by item only to name what is wrong."""
    try:
        ids = "".join(f"{chunk_id}\n" for chunk_id, _size in items if type(chunk_id) is str)
        if (
            len(ids) == 65 * len(items)
            and _CHUNK_IDS.fullmatch(ids) is not None
            and all(type(size) is int and 0 <= size < _MAX_COUNT for _id, size in items)
        ):
            builder = ChunkListBuilder()
            for chunk_id, size in items:
                builder.append(chunk_id, size)
            return builder.build()
    except (TypeError, ValueError):  # an item that is not a pair
        pass
    return ChunkList(_chunk_ref(item) for item in items)


def _chunk_ref(item: object) -> ChunkRef:
    if not isinstance(item, list) or len(item) != 2:
        raise _FieldProblem("an entry of 'chunks' is not [chunk id, size]")
    chunk_id, size = item
    if not isinstance(chunk_id, str) or not is_chunk_id(chunk_id):
        raise _FieldProblem(f"it lists {_short(repr(chunk_id), 80)}, which is not a chunk id")
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size < _MAX_COUNT:
        raise _FieldProblem(f"chunk {chunk_id} has no valid size")
    return ChunkRef(chunk_id, size)


class IncrementalHash(Protocol):
    """A hash fed in pieces (a keyed ``blake3``)."""

    def update(self, data: bytes, /) -> object: ...

    def hexdigest(self) -> str: ...


def chunk_order_digest(new_hash: Callable[[], IncrementalHash], chunks: Iterable[ChunkRef]) -> str:
    """The keyed digest (``new_hash``: the repository's chunk-naming hash, fed in pieces) of
    a backup's ordered list of chunks and sizes -- of ``"strongroom-chunk-order-v1\n"``
    then ``"<id> <size>\n"`` per chunk: recorded as ``chunk_order`` at backup time, it
    binds the order, so chunks swapped or dropped in a manifest are caught before a byte is
    read. Hashed in blocks: no text of the whole list is made."""
    listing = chunks if isinstance(chunks, ChunkList) else ChunkList(chunks)
    digest = new_hash()
    digest.update(b"strongroom-chunk-order-v1\n")
    for piece in listing.text_blocks(b"%s %d\n"):
        digest.update(piece)
    return digest.hexdigest()


def seal_private(section: PrivateSection, sealer: Sealer) -> dict[str, Any]:
    """Encrypt the private section for the manifest (plain JSON when unencrypted)."""
    if not sealer.encrypted:
        return {"encoding": PRIVATE_PLAIN, "data": section.to_dict()}
    payload = json.dumps(section.to_dict()).encode()
    return {"encoding": PRIVATE_AGE, "data": base64.b64encode(sealer.seal(payload)).decode()}


def open_private(sealed: dict[str, Any], sealer: Sealer) -> PrivateSection:
    """Decrypt the private section. Raises ``DecryptionFailed`` when it does not decrypt
    (a wrong key, or damage), ``ValueError`` when it is not a private section at all."""
    try:
        if sealed.get("encoding") == PRIVATE_PLAIN:
            document = sealed["data"]
        else:
            data = sealed["data"]
            if not isinstance(data, str):
                raise ValueError("its data is not text")
            payload = sealer.open(base64.b64decode(data.encode("ascii"), validate=True))
            document = json.loads(payload)
        if not isinstance(document, dict):
            raise ValueError("it is not a JSON object")
        return PrivateSection.from_dict(document)
    except DecryptionFailed:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError, binascii.Error) as exc:
        raise ValueError(f"the private section is not readable ({_short(exc)})") from exc
