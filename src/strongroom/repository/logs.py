"""Log streams in the repository: PostgreSQL WAL now, MySQL binlogs and SQLite replication
streams later (docs/design.md, "WAL archive and base backups").

Each archived file is one object, addressed by its name (not by content, unlike chunks):

    logs/<stream>/<group>/<file name>-<digest>

``stream`` names one source of a log (``postgresql-<system identifier>``), ``group`` a
folder that keeps listings short (for WAL: timeline and log, or ``history``), ``file
name`` the name the database gave the file, and ``digest`` the keyed BLAKE3 (the
repository's chunk-naming key) of ``"strongroom-log-v1\\0" + stream + "\\0" + file name +
"\\0" + content``: it binds the object to its name and content, so a second push is compared
without downloading anything, and a renamed or swapped object fails its check on fetch.
The object itself is ``age(zstd(content))`` like a chunk (``age -d … | zstd -d`` opens it).

Nothing here is under ``chunks/``: prune, which deletes unreferenced chunks, never sees a
log object, and check does not count one as a chunk.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import zstandard
from blake3 import blake3

from strongroom.errors import IntegrityError, ObjectNotFound, StrongroomError, UsageError
from strongroom.pipeline.encryption import DecryptionFailed, Sealer
from strongroom.repository.layout import LOGS_PREFIX
from strongroom.storage.base import Storage

if TYPE_CHECKING:
    from strongroom.repository.repository import Repository

LOG_DIGEST_PREFIX = b"strongroom-log-v1\0"
DEFAULT_LOG_LEVEL = 1  # zstd level: WAL compresses well even at 1, and the archiver waits
_MAX_LOG_FILE = 2 * 1024 * 1024 * 1024  # 2 GiB: above any WAL segment size (max 1 GiB)
_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_DIGEST = re.compile(r"[0-9a-f]{64}")


class LogConflict(IntegrityError):
    """A file pushed again with other content than the copy already archived (exit 7).

    Archived log files are never replaced: two clusters (a split brain, a restored copy
    archiving into its original's stream) would otherwise overwrite each other's WAL."""


def _part(value: str, what: str) -> str:
    if _PART.fullmatch(value) is None:
        raise UsageError(f"{value[:60]!r} is not a valid log {what} name")
    return value


@dataclass(frozen=True)
class LogFile:
    """One archived file: where it is and what its name promises."""

    stream: str
    group: str
    name: str
    digest: str

    @property
    def key(self) -> str:
        return f"{LOGS_PREFIX}{self.stream}/{self.group}/{self.name}-{self.digest}"


@dataclass(frozen=True)
class PushResult:
    file: LogFile
    stored: bool  # False: the same content was archived already
    stored_bytes: int  # the object's size (compressed, encrypted); 0 when not stored


class LogArchive:
    """Pushes and fetches log files of a repository (needs its key: names are keyed)."""

    def __init__(self, repo: Repository, level: int = DEFAULT_LOG_LEVEL) -> None:
        self._storage: Storage = repo.storage
        self._key = repo.keyring.hash_key()
        self._sealer: Sealer = repo.keyring.sealer(for_reading=True)
        self._level = level

    def digest(self, stream: str, name: str, data: bytes) -> str:
        head = LOG_DIGEST_PREFIX + f"{stream}\0{name}\0".encode()
        hasher = blake3(head, key=self._key)
        hasher.update(data)
        return hasher.hexdigest()

    def copies(self, stream: str, group: str, name: str) -> list[LogFile]:
        """Every archived copy of ``name`` (normally none or one)."""
        prefix = f"{LOGS_PREFIX}{_part(stream, 'stream')}/{_part(group, 'group')}/"
        prefix += f"{_part(name, 'file')}-"
        found = []
        for key in self._storage.list(prefix):
            digest = key[len(prefix) :]
            if _DIGEST.fullmatch(digest):
                found.append(LogFile(stream, group, name, digest))
        return sorted(found, key=lambda f: f.digest)

    def push(self, stream: str, group: str, name: str, data: bytes) -> PushResult:
        """Archive ``data`` as ``name`` and make it durable before returning. The same
        content archived already is success (nothing written); other content raises
        ``LogConflict`` (exit 7) and changes nothing."""
        digest = self.digest(stream, name, data)
        existing = self.copies(stream, group, name)
        if any(copy.digest == digest for copy in existing):
            return PushResult(LogFile(stream, group, name, digest), False, 0)
        if existing:
            raise LogConflict(
                f"{name} is already archived in log stream {stream} with different content: "
                "refusing to replace it (two clusters archiving into one stream? a restored "
                "copy with archiving on?)"
            )
        compressed = zstandard.ZstdCompressor(level=self._level, write_content_size=True)
        blob = self._sealer.seal(compressed.compress(data))
        file = LogFile(stream, group, name, digest)
        self._storage.put(file.key, blob)  # atomic: a temp file renamed, or one S3 PUT
        self._storage.sync()  # durable before PostgreSQL may recycle the segment
        return PushResult(file, True, len(blob))

    def fetch(self, stream: str, group: str, name: str) -> bytes | None:
        """The archived content of ``name``, checked against its digest; ``None`` when it
        was never archived. Two different copies, or one that does not decrypt,
        decompress or match its name: ``IntegrityError`` (exit 7)."""
        copies = self.copies(stream, group, name)
        if not copies:
            return None
        if len(copies) > 1:
            raise IntegrityError(
                f"{name} is archived {len(copies)} times with different content in log "
                f"stream {stream}: refusing to choose ({', '.join(c.key for c in copies)})"
            )
        return self.read(copies[0])

    def read(self, file: LogFile) -> bytes:
        """One archived file's content, checked; raises ``IntegrityError`` on any damage
        and ``StrongroomError`` when it vanished."""
        try:
            blob = self._storage.get(file.key)
        except ObjectNotFound as exc:
            raise StrongroomError(f"{file.key} vanished while it was being read") from exc
        try:
            frame = self._sealer.open(blob)
            data = zstandard.ZstdDecompressor().decompress(frame, max_output_size=_MAX_LOG_FILE)
        except DecryptionFailed as exc:
            raise IntegrityError(f"{file.key} is damaged: it does not decrypt") from exc
        except zstandard.ZstdError as exc:
            raise IntegrityError(f"{file.key} is damaged: it does not decompress") from exc
        if self.digest(file.stream, file.name, data) != file.digest:
            raise IntegrityError(f"{file.key} is damaged: its content does not match its name")
        return data

    def files(self, stream: str) -> Iterator[LogFile]:
        """Every archived file of ``stream`` (any order)."""
        prefix = f"{LOGS_PREFIX}{_part(stream, 'stream')}/"
        for key in self._storage.list(prefix):
            parts = key[len(prefix) :].split("/")
            if len(parts) != 2:
                continue
            name, _, digest = parts[1].rpartition("-")
            if _PART.fullmatch(parts[0]) and _PART.fullmatch(name) and _DIGEST.fullmatch(digest):
                yield LogFile(stream, parts[0], name, digest)


def log_object_count(storage: Storage) -> int:
    """How many objects ``logs/`` holds (for check's report)."""
    return sum(1 for _ in storage.list(LOGS_PREFIX))
