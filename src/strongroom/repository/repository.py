"""A strongroom repository: its config, keys, chunks and manifests, on any storage."""

from __future__ import annotations

import base64
import logging
import secrets
import uuid
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from strongroom.errors import (
    BackupNotFound,
    IntegrityError,
    ObjectNotFound,
    RepositoryAlreadyInitialised,
    RepositoryNotInitialised,
    WrongKey,
)
from strongroom.pipeline.chunking import ChunkerParams
from strongroom.pipeline.compression import DEFAULT_LEVEL, ChunkCompressor
from strongroom.pipeline.encryption import (
    AgeSealer,
    DecryptionFailed,
    new_identity,
    passphrase_seal,
)
from strongroom.pipeline.hashing import HASH_KEY_BYTES, ChunkNamer, StreamChecksum
from strongroom.repository.chunks import ChunkStore
from strongroom.repository.config import (
    ENCRYPTION_AGE,
    ENCRYPTION_NONE,
    IDENTITY_IN_KEY_FILE,
    IDENTITY_WRAPPED_BY_PASSPHRASE,
    RepositoryConfig,
)
from strongroom.repository.ids import is_backup_id, utc_now_iso
from strongroom.repository.keys import Keyring, KeySource, default_key_path, write_key_file
from strongroom.repository.layout import (
    BACKUPS_PREFIX,
    CONFIG_KEY,
    MANIFEST_SUFFIX,
    WRAPPED_IDENTITY_KEY,
    manifest_key,
)
from strongroom.repository.manifest import Manifest, PrivateSection, open_private
from strongroom.storage.base import Storage

log = logging.getLogger("strongroom.repository")

DEFAULT_READ_WORKERS = 4


@dataclass(frozen=True)
class InitResult:
    repository_id: str
    encryption: str
    key_file: Path | None
    public_key: str | None


class Repository:
    """Opened repository. Reading data needs the identity; listing does not."""

    def __init__(self, storage: Storage, config: RepositoryConfig, keyring: Keyring) -> None:
        self.storage = storage
        self.config = config
        self.keyring = keyring
        self._chunks: ChunkStore | None = None
        self._manifests: dict[str, Manifest] = {}  # manifests never change: safe to keep

    # --- creating and opening ---------------------------------------------------------
    @classmethod
    def init(
        cls,
        storage: Storage,
        *,
        encryption: str = ENCRYPTION_AGE,
        key_file: Path | None = None,
        passphrase: str | None = None,
        chunker: ChunkerParams | None = None,
        compression_level: int = DEFAULT_LEVEL,
    ) -> InitResult:
        """Create a new repository. Writes the key file (encrypted, no passphrase) first."""
        if storage.exists(CONFIG_KEY):
            raise RepositoryAlreadyInitialised(
                f"a strongroom repository already exists at {storage.describe()}"
            )
        repository_id = uuid.uuid4().hex
        created = utc_now_iso()
        hash_key = secrets.token_bytes(HASH_KEY_BYTES)
        params = chunker or ChunkerParams()
        if encryption == ENCRYPTION_NONE:
            config = RepositoryConfig(
                repository_id,
                created,
                params,
                compression_level,
                ENCRYPTION_NONE,
                (),
                None,
                None,
                hash_key.hex(),
            )
            storage.put(CONFIG_KEY, config.to_json())
            storage.sync()
            return InitResult(repository_id, ENCRYPTION_NONE, None, None)

        identity, recipient = new_identity()
        wrapped_hash_key = AgeSealer([recipient], None).seal(hash_key)
        storage_mode = IDENTITY_WRAPPED_BY_PASSPHRASE if passphrase else IDENTITY_IN_KEY_FILE
        config = RepositoryConfig(
            repository_id,
            created,
            params,
            compression_level,
            ENCRYPTION_AGE,
            (recipient,),
            storage_mode,
            base64.b64encode(wrapped_hash_key).decode(),
            None,
        )
        written_key: Path | None = None
        if passphrase:
            storage.put(WRAPPED_IDENTITY_KEY, passphrase_seal(identity.encode(), passphrase))
        if key_file is not None or not passphrase:
            written_key = key_file or default_key_path(repository_id)
            write_key_file(written_key, identity, recipient, repository_id, created)
        storage.sync()
        storage.put(CONFIG_KEY, config.to_json())  # last: the repository now exists
        storage.sync()
        return InitResult(repository_id, ENCRYPTION_AGE, written_key, recipient)

    @classmethod
    def open(cls, storage: Storage, source: KeySource) -> Repository:
        try:
            raw = storage.get(CONFIG_KEY)
        except ObjectNotFound as exc:
            raise RepositoryNotInitialised(
                f"no strongroom repository at {storage.describe()} (run: strongroom init --repo …)"
            ) from exc
        config = RepositoryConfig.from_json(raw)
        return cls(storage, config, Keyring(config, storage, source))

    # --- chunks -------------------------------------------------------------------------
    @property
    def chunks(self) -> ChunkStore:
        if self._chunks is None:
            self._chunks = ChunkStore(
                self.storage,
                ChunkNamer(self.keyring.hash_key()),
                ChunkCompressor(self.config.compression_level, self.config.compression_fast_level),
                self.keyring.sealer(for_reading=True),
            )
        return self._chunks

    # --- manifests ----------------------------------------------------------------------
    def write_manifest(self, manifest: Manifest) -> None:
        """The commit point of a backup: written after every chunk is stored and durable."""
        self.storage.sync()
        self.storage.put(manifest_key(manifest.backup_id), manifest.to_json())
        self.storage.sync()

    def load_manifest(self, backup_id: str) -> Manifest:
        cached = self._manifests.get(backup_id)
        if cached is not None:
            return cached
        key = manifest_key(backup_id)
        try:
            raw = self.storage.get(key)
        except ObjectNotFound as exc:
            raise BackupNotFound(f"no backup {backup_id!r} in {self.storage.describe()}") from exc
        manifest = Manifest.from_json(raw, key)
        self._manifests[backup_id] = manifest
        return manifest

    def backup_ids(self) -> list[str]:
        ids = []
        for key in self.storage.list(BACKUPS_PREFIX):
            name = key[len(BACKUPS_PREFIX) :]
            if name.endswith(MANIFEST_SUFFIX) and "/" not in name:
                backup_id = name[: -len(MANIFEST_SUFFIX)]
                if is_backup_id(backup_id):
                    ids.append(backup_id)
        return sorted(ids)

    def list_backups(self, target: str | None = None) -> list[Manifest]:
        """Every complete backup, oldest first (optionally of one target)."""
        manifests = [self.load_manifest(backup_id) for backup_id in self.backup_ids()]
        manifests.sort(key=lambda m: (m.finished_at, m.backup_id))  # ids share a second
        return [m for m in manifests if target is None or m.target == target]

    def resolve(self, reference: str, target: str | None = None) -> Manifest:
        """Find a backup by full id, unique id prefix, or ``latest``."""
        if reference == "latest":
            backups = self.list_backups(target)
            if not backups:
                where = f" of target {target!r}" if target else ""
                raise BackupNotFound(f"there is no backup{where} in {self.storage.describe()}")
            return backups[-1]
        ids = self.backup_ids()
        if reference in ids:
            return self.load_manifest(reference)
        matches = [backup_id for backup_id in ids if backup_id.startswith(reference)]
        if len(matches) == 1 and len(reference) >= 8:
            return self.load_manifest(matches[0])
        if len(matches) > 1:
            raise BackupNotFound(f"backup id {reference!r} is ambiguous ({len(matches)} match)")
        raise BackupNotFound(f"no backup {reference!r} in {self.storage.describe()}")

    def private_section(self, manifest: Manifest) -> PrivateSection:
        """The manifest's encrypted part (table statistics); needs the key."""
        try:
            return open_private(manifest.private_sealed, self.keyring.sealer(for_reading=True))
        except DecryptionFailed as exc:
            raise WrongKey(f"the key does not open backup {manifest.backup_id}") from exc

    # --- reading a backup back ------------------------------------------------------------
    def read_stream(
        self, manifest: Manifest, workers: int = DEFAULT_READ_WORKERS
    ) -> Iterator[bytes]:
        """Yield the backup's raw dump, chunk by chunk, each checked against its hash.

        Chunks are fetched ahead in parallel (a bounded window). After the last chunk the
        whole-stream BLAKE3 checksum is compared with the manifest; a mismatch raises.
        """
        store = self.chunks
        checksum = StreamChecksum()
        window = max(2, workers * 2)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sr-read") as pool:
            pending: deque[Future[bytes]] = deque()
            refs = iter(manifest.chunks)
            try:
                for ref in refs:
                    pending.append(pool.submit(store.load, ref.chunk_id))
                    if len(pending) >= window:
                        break
                while pending:
                    data = pending.popleft().result()
                    next_ref = next(refs, None)
                    if next_ref is not None:
                        pending.append(pool.submit(store.load, next_ref.chunk_id))
                    checksum.update(data)
                    yield data
            finally:
                for future in pending:
                    future.cancel()
        if checksum.hexdigest() != manifest.stream_checksum:
            raise IntegrityError(
                f"backup {manifest.backup_id} is damaged: the whole-stream checksum does not match"
            )


def repository_summary(repo: Repository) -> dict[str, str]:
    """A few safe facts for display."""
    return {
        "location": repo.storage.describe(),
        "id": repo.config.repository_id,
        "encryption": repo.config.encryption,
        "created": repo.config.created,
    }


__all__ = ["InitResult", "Repository", "repository_summary"]
