"""A strongroom repository: its config, keys, chunks and manifests, on any storage."""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import secrets
import threading
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from strongroom.errors import (
    BackupForgotten,
    BackupNotFound,
    ChunkMissing,
    IntegrityError,
    ManifestDamaged,
    ObjectNotFound,
    RepositoryAlreadyInitialised,
    RepositoryError,
    RepositoryNotInitialised,
    StrongroomError,
    UsageError,
)
from strongroom.malloc_arenas import limit_arenas
from strongroom.pipeline.chunking import ChunkerParams, ChunkerParamsInvalid
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
    PACKED_VERSION,
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
from strongroom.repository.manifest import (
    ChunkRef,
    Manifest,
    PrivateSection,
    chunk_order_digest,
    open_private,
)
from strongroom.repository.names import normalized
from strongroom.repository.pack_index import IndexCache, cache_path
from strongroom.storage.base import Storage

log = logging.getLogger("strongroom.repository")

DEFAULT_READ_WORKERS = 4


@dataclass(frozen=True)
class DamagedBackup:
    """A manifest that cannot be read: listed as damaged, never chosen, never deleted.
    ``target`` is what the manifest's text still tells, ``None`` when nothing does."""

    backup_id: str
    reason: str  # the one-line error (it names the manifest)
    target: str | None = None


@dataclass(frozen=True)
class BackupListing:
    """Every backup of the repository: the readable ones (oldest first) and the damaged."""

    backups: list[Manifest]
    damaged: list[DamagedBackup]


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
        self._chunks_lock = threading.Lock()  # threads' first use: one store, one cache
        self._manifests: dict[str, Manifest] = {}  # manifests never change: safe to keep
        self._damaged: dict[str, DamagedBackup] = {}
        self._warned: set[str] = set()  # damaged manifests already warned about

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
        try:
            params.validate()
        except ChunkerParamsInvalid as exc:
            raise UsageError(str(exc)) from exc
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
        config = RepositoryConfig.from_json(
            raw, f"the repository config ({CONFIG_KEY} at {storage.describe()})"
        )
        return cls(storage, config, Keyring(config, storage, source))

    # --- chunks -------------------------------------------------------------------------
    @property
    def chunks(self) -> ChunkStore:
        """The chunk store (made on first use, once, whichever thread asks first)."""
        with self._chunks_lock:
            return self._chunks or self._make_chunks()

    def _make_chunks(self) -> ChunkStore:
        if self._chunks is None:
            sealer = self.keyring.sealer(for_reading=True)
            self._chunks = ChunkStore(
                self.storage,
                ChunkNamer(self.keyring.hash_key()),
                ChunkCompressor(self.config.compression_level, self.config.compression_fast_level),
                sealer,
                index=lambda: IndexCache(
                    cache_path(self.config.repository_id),
                    self.storage,
                    sealer,
                    self.chunks.name,
                ),
                before_first_pack=self._bump_to_packed_version,
            )
        return self._chunks

    def _bump_to_packed_version(self) -> None:
        """Before the first pack goes into a version 1 repository: rewrite ``config``
        with version 2 (the stored text re-read, everything else unchanged), so that a
        strongroom that predates packs refuses the repository instead of missing chunks."""
        if self.config.version >= PACKED_VERSION:
            return
        where = f"the repository config ({CONFIG_KEY} at {self.storage.describe()})"
        stored = RepositoryConfig.from_json(self.storage.get(CONFIG_KEY), where)
        if stored.version < PACKED_VERSION:
            stored = dataclasses.replace(stored, version=PACKED_VERSION)
            self.storage.put(CONFIG_KEY, stored.to_json())
            self.storage.sync()
            log.info(
                "%s holds packs from now on: config rewritten as version %d",
                self.storage.describe(),
                PACKED_VERSION,
            )
        self.config = stored

    # --- manifests ----------------------------------------------------------------------
    def write_manifest(self, manifest: Manifest) -> None:
        """The commit point of a backup: written after every chunk is stored and durable."""
        self.storage.sync()
        self.storage.put(manifest_key(manifest.backup_id), manifest.to_json())
        self.storage.sync()

    def load_manifest(self, backup_id: str) -> Manifest:
        """The manifest of ``backup_id``. Raises ``BackupNotFound`` when there is none,
        ``ManifestDamaged`` (exit 7, naming it) when it cannot be read, and
        ``UnsupportedFormat`` for a newer version."""
        cached = self._manifests.get(backup_id)
        if cached is not None:
            return cached
        key = manifest_key(backup_id)
        try:
            raw = self.storage.get(key)
        except ObjectNotFound as exc:
            raise BackupNotFound(f"no backup {backup_id!r} in {self.storage.describe()}") from exc
        try:
            manifest = Manifest.from_json(raw, key, backup_id)
        except RepositoryError as exc:
            self._damaged[backup_id] = DamagedBackup(backup_id, exc.message, _target_hint(raw))
            raise
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

    def scan_backups(self, target: str | None = None) -> BackupListing:
        """Every backup (of ``target``): the readable ones oldest first, and those whose
        manifest cannot be read (a damaged one whose target is unknown counts for every
        target). A manifest deleted meanwhile (forget) is left out. Target names compare
        in Unicode normal form C (``names.normalized``): ``café`` typed either way."""
        wanted = None if target is None else normalized(target)

        def of_target(name: str | None) -> bool:
            return wanted is None or name is None or normalized(name) == wanted

        manifests: list[Manifest] = []
        damaged: list[DamagedBackup] = []
        for backup_id in self.backup_ids():
            try:
                manifests.append(self.load_manifest(backup_id))
            except BackupNotFound:
                continue
            except RepositoryError as exc:
                found = self._damaged.get(backup_id) or DamagedBackup(backup_id, exc.message)
                if of_target(found.target):
                    damaged.append(found)
        manifests.sort(key=lambda m: (m.finished_at, m.backup_id))  # ids share a second
        return BackupListing([m for m in manifests if of_target(m.target)], damaged)

    def list_backups(self, target: str | None = None) -> list[Manifest]:
        """Every readable backup, oldest first (optionally of one target). A damaged
        manifest is left out with a warning (once): it never stops the others."""
        listing = self.scan_backups(target)
        for found in listing.damaged:
            if found.backup_id not in self._warned:
                self._warned.add(found.backup_id)
                log.warning("left out backup %s: %s", found.backup_id, found.reason)
        return listing.backups

    def resolve(self, reference: str, target: str | None = None) -> Manifest:
        """Find a backup by full id, unique id prefix, or ``latest`` (the newest readable
        one: a damaged manifest is passed over with a warning). A damaged manifest named by
        its id raises ``ManifestDamaged``."""
        if reference == "latest":
            backups = self.list_backups(target)
            if not backups:
                where = f" of target {target!r}" if target else ""
                self.raise_if_only_damaged(target, f"there is no readable backup{where}")
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

    def raise_if_only_damaged(self, target: str | None, what: str) -> None:
        """When no readable backup (of ``target``) qualifies but a damaged manifest could
        have (one that names this target, or whose target cannot be read): raise
        ``ManifestDamaged`` (exit 7) saying ``what`` and naming the newest such manifest,
        rather than "no backup"."""
        damaged = self.scan_backups(target).damaged
        if damaged:
            newest = damaged[-1]
            raise ManifestDamaged(
                f"{what}: {len(damaged)} damaged manifest(s); the newest: {newest.reason}",
                newest.backup_id,
            )

    def private_section(self, manifest: Manifest) -> PrivateSection:
        """The manifest's encrypted part (table statistics); needs the key.

        ``KeyMissing``/``WrongKey`` (exit 4) when the key does not open the repository;
        ``ManifestDamaged`` (exit 7) when it does but this section does not open."""
        sealer = self.keyring.sealer(for_reading=True)  # the key opens the repository
        where = manifest_key(manifest.backup_id)
        try:
            return open_private(manifest.private_sealed, sealer)
        except DecryptionFailed as exc:
            self.keyring.hash_key()  # raises if the key does not open the repository
            raise ManifestDamaged(
                f"manifest {where} is damaged: its private section does not decrypt with the "
                "key that opens this repository",
                manifest.backup_id,
            ) from exc
        except ValueError as exc:
            raise ManifestDamaged(
                f"manifest {where} is damaged: {exc}", manifest.backup_id
            ) from exc

    def chunk_order(self, chunks: Iterable[ChunkRef]) -> str:
        """The keyed digest of an ordered chunk list, as manifests record it (needs the
        key; see ``manifest.chunk_order_digest``)."""
        return chunk_order_digest(self.chunks.hasher, chunks)

    def check_chunk_order(self, manifest: Manifest) -> None:
        """Raise ``IntegrityError`` naming the backup when its chunk list is not the one
        recorded at backup time (chunks swapped, dropped or added). Manifests written
        before the order was recorded pass (their stream checksum still binds it)."""
        if manifest.chunk_order is None:
            return
        if self.chunk_order(manifest.chunks) != manifest.chunk_order:
            raise IntegrityError(
                f"backup {manifest.backup_id} is damaged: its manifest's list of chunks is not "
                "the one recorded at backup time (chunks swapped, dropped or added)"
            )

    # --- reading a backup back ------------------------------------------------------------
    def read_stream(
        self, manifest: Manifest, workers: int = DEFAULT_READ_WORKERS
    ) -> Iterator[bytes]:
        """Yield the backup's raw dump, chunk by chunk, each checked against its hash.

        The chunk order is checked first (``check_chunk_order``), so a manifest with
        swapped chunks fails before a byte is yielded. Chunks are fetched ahead in parallel
        (a bounded window); each must hold the size the manifest records. After the last
        chunk the whole-stream BLAKE3 checksum is compared with the manifest; a mismatch
        raises. A missing chunk of a backup whose manifest is gone meanwhile raises
        ``BackupForgotten`` (forget and prune ran), not damage.
        """
        self.check_chunk_order(manifest)
        limit_arenas()  # before the read threads start: see malloc_arenas.py
        checksum = StreamChecksum()
        reader = self.chunks.read_many((ref.chunk_id for ref in manifest.chunks), workers)
        try:
            for ref in manifest.chunks:
                try:
                    data = next(reader)
                except ChunkMissing as exc:
                    self._raise_if_forgotten(manifest, exc)
                    raise
                if len(data) != ref.size:
                    raise IntegrityError(
                        f"backup {manifest.backup_id} is damaged: chunk {ref.chunk_id} holds "
                        f"{len(data)} bytes, its manifest records {ref.size}"
                    )
                checksum.update(data)
                yield data
        finally:
            reader.close()
        if checksum.hexdigest() != manifest.stream_checksum:
            raise IntegrityError(
                f"backup {manifest.backup_id} is damaged: the whole-stream checksum does not match"
            )

    def _raise_if_forgotten(self, manifest: Manifest, missing: ChunkMissing) -> None:
        if not self.storage.exists(manifest_key(manifest.backup_id)):
            raise BackupForgotten(
                f"backup {manifest.backup_id} was forgotten (deleted by forget/prune) while it "
                "was being read"
            ) from missing

    def stream_problem(self, manifest: Manifest) -> IntegrityError | None:
        """Read the whole backup again and return what is wrong with it (``None``: nothing).
        For a restore whose tool failed: a damaged stream, not the tool, is then the cause.
        A manifest with a recorded chunk order was checked in full as it was read
        (order first, then every chunk against its name), so it is not read again."""
        if manifest.chunk_order is not None:
            return None
        try:
            for _ in self.read_stream(manifest):
                pass
        except IntegrityError as exc:
            return exc
        except StrongroomError as exc:  # cannot tell (storage, forgotten): not damage
            log.info("could not re-read backup %s: %s", manifest.backup_id, exc.message)
        return None


def _target_hint(raw: bytes) -> str | None:
    """The target a damaged manifest still names, if its text is JSON that does."""
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):  # ValueError: also an int of 5000 digits
        return None
    target = doc.get("target") if isinstance(doc, dict) else None
    return target if isinstance(target, str) else None


def repository_summary(repo: Repository) -> dict[str, str]:
    """A few safe facts for display."""
    return {
        "location": repo.storage.describe(),
        "id": repo.config.repository_id,
        "encryption": repo.config.encryption,
        "created": repo.config.created,
    }


__all__ = [
    "BackupListing",
    "DamagedBackup",
    "InitResult",
    "Repository",
    "repository_summary",
]
