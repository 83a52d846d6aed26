"""Key files and the keyring that opens an encrypted repository.

A key file is a standard age identity file (``age -d -i KEYFILE`` reads it) with comment
lines naming the repository. It is created with mode 0600 and never overwritten.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from strongroom.errors import (
    KeyMissing,
    ObjectNotFound,
    RepositoryDamaged,
    RepositoryError,
    WrongKey,
)
from strongroom.pipeline.encryption import (
    AgeSealer,
    DecryptionFailed,
    PlainSealer,
    Sealer,
    passphrase_open,
    public_of,
)
from strongroom.pipeline.hashing import HASH_KEY_BYTES
from strongroom.repository.config import IDENTITY_WRAPPED_BY_PASSPHRASE, RepositoryConfig
from strongroom.repository.layout import WRAPPED_IDENTITY_KEY
from strongroom.storage.base import Storage

log = logging.getLogger("strongroom.keys")

IDENTITY_PREFIX = "AGE-SECRET-KEY-"
AGE_HEADER = b"age-encryption.org/v1\n"


def default_key_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "strongroom" / "keys"


def default_key_path(repository_id: str) -> Path:
    return default_key_dir() / f"{repository_id}.key"


def write_key_file(
    path: Path, identity: str, recipient: str, repository_id: str, created: str
) -> None:
    """Write a new key file with mode 0600; refuse to overwrite an existing file."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    text = (
        "# strongroom repository key. Keep it secret; keep a copy away from this machine.\n"
        "# Without it the backups in this repository cannot be read by anyone.\n"
        f"# repository: {repository_id}\n"
        f"# created: {created}\n"
        f"# public key: {recipient}\n"
        f"{identity}\n"
    )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise RepositoryError(
            f"key file {path} already exists; refusing to overwrite a key"
        ) from exc
    except OSError as exc:
        raise RepositoryError(f"cannot write key file {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(path, 0o600)


def read_key_file(path: Path) -> str:
    """Return the age identity in ``path``; raise ``KeyMissing``/``WrongKey`` clearly."""
    try:
        mode = path.stat().st_mode
        text = path.read_text()
    except FileNotFoundError as exc:
        raise KeyMissing(f"key file {path} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyMissing(f"cannot read key file {path}: {exc}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("key file %s is readable by other users; run: chmod 600 %s", path, path)
    for line in text.splitlines():
        line = line.strip()
        if line.startswith(IDENTITY_PREFIX):
            return line
    raise WrongKey(f"{path} is not a key file (it holds no {IDENTITY_PREFIX}… line)")


@dataclass(frozen=True)
class KeySource:
    """Where the user said the key is: a key file, a passphrase, or neither (use defaults)."""

    key_file: Path | None = None
    passphrase: str | None = None


class Keyring:
    """Opens what the repository's key protects, asking for the identity only when needed."""

    def __init__(self, config: RepositoryConfig, storage: Storage, source: KeySource) -> None:
        self._config = config
        self._storage = storage
        self._source = source
        self._identity: str | None = None
        self._hash_key: bytes | None = None

    @property
    def encrypted(self) -> bool:
        return self._config.encrypted

    def identity(self) -> str:
        """The repository's age identity; raises ``KeyMissing`` or ``WrongKey``."""
        if self._identity is None:
            self._identity = self._load_identity()
        return self._identity

    def _load_identity(self) -> str:
        config = self._config
        if self._source.key_file is not None:
            return self._checked(read_key_file(self._source.key_file), str(self._source.key_file))
        if config.identity_storage == IDENTITY_WRAPPED_BY_PASSPHRASE and self._source.passphrase:
            return self._unwrap_identity(self._source.passphrase)
        default = default_key_path(config.repository_id)
        if default.exists():
            return self._checked(read_key_file(default), str(default))
        hint = "--key-file or STRONGROOM_KEY_FILE"
        if config.identity_storage == IDENTITY_WRAPPED_BY_PASSPHRASE:
            hint += ", or the passphrase in STRONGROOM_PASSPHRASE"
        raise KeyMissing(f"this repository is encrypted: give its key with {hint}")

    def _unwrap_identity(self, passphrase: str) -> str:
        """The identity in ``keys/identity.age``, opened with ``passphrase``."""
        where = f"{WRAPPED_IDENTITY_KEY} in the repository"
        try:
            wrapped = self._storage.get(WRAPPED_IDENTITY_KEY)
        except ObjectNotFound as exc:
            raise RepositoryDamaged(
                f"{where} is missing: the passphrase has nothing to open"
            ) from exc
        if not wrapped.startswith(AGE_HEADER):
            raise RepositoryDamaged(f"{where} is damaged: it is not an age file")
        try:
            identity = passphrase_open(wrapped, passphrase).decode().strip()
        except DecryptionFailed as exc:
            raise WrongKey(f"wrong passphrase for this repository (or {where} is damaged)") from exc
        except UnicodeDecodeError as exc:
            raise RepositoryDamaged(f"{where} is damaged: it holds no age identity") from exc
        try:
            public_of(identity)
        except ValueError as exc:  # age authenticated it: the passphrase was right
            raise RepositoryDamaged(f"{where} is damaged: it holds no age identity") from exc
        return self._checked(identity, "the passphrase-wrapped identity")

    def _checked(self, identity: str, where: str) -> str:
        try:
            public = public_of(identity)
        except ValueError as exc:
            raise WrongKey(f"{where} does not hold a valid age identity") from exc
        if public not in self._config.recipients:
            raise WrongKey(
                f"{where} does not open this repository (its public key {public[:16]}… "
                "is not one of the repository's recipients)"
            )
        return identity

    def sealer(self, *, for_reading: bool) -> Sealer:
        """A sealer that encrypts to the recipients; with ``for_reading`` it can decrypt too."""
        if not self._config.encrypted:
            return PlainSealer()
        identity = self.identity() if for_reading else self._identity
        return AgeSealer(list(self._config.recipients), identity)

    def hash_key(self) -> bytes:
        """The 32-byte key that names chunks (unwrapped with the identity)."""
        if self._hash_key is None:
            config = self._config
            if not config.encrypted:
                if config.hash_key_plain is None:
                    raise RepositoryDamaged("the repository config has no hash.key")
                try:
                    key = bytes.fromhex(config.hash_key_plain)
                except ValueError as exc:
                    raise RepositoryDamaged(
                        "the repository config is damaged: hash.key is not hex"
                    ) from exc
            else:
                if config.hash_key_wrapped is None:
                    raise RepositoryDamaged("the repository config has no hash.key_wrapped")
                sealer = AgeSealer(list(config.recipients), self.identity())
                try:
                    blob = base64.b64decode(config.hash_key_wrapped.encode("ascii"), validate=True)
                except (UnicodeError, binascii.Error) as exc:
                    raise RepositoryDamaged(
                        "the repository config is damaged: hash.key_wrapped is not valid base64"
                    ) from exc
                try:
                    key = sealer.open(blob)
                except DecryptionFailed as exc:
                    # the identity is one of the recipients (``_checked``): it opens this
                    # repository, so what does not open is the config's wrapped key
                    raise RepositoryDamaged(
                        "the repository config is damaged: hash.key_wrapped does not decrypt "
                        "with the repository's key"
                    ) from exc
            if len(key) != HASH_KEY_BYTES:
                raise RepositoryDamaged(
                    f"the repository config is damaged: its hash key is {len(key)} bytes, "
                    f"not {HASH_KEY_BYTES}"
                )
            self._hash_key = key
        return self._hash_key
