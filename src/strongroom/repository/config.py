"""The repository's ``config`` object: format version, chunker, hash key, encryption."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import re
from dataclasses import dataclass
from typing import Any

import pyrage

from strongroom.errors import RepositoryDamaged, UnsupportedFormat
from strongroom.pipeline.chunking import ChunkerParams, ChunkerParamsInvalid

FORMAT_NAME = "strongroom-repository"
FORMAT_VERSION = 2  # version 2: chunks in packs (docs/design.md "Packs")
PACKED_VERSION = 2  # the first version with packs; a version 1 config is bumped to it
READABLE_VERSIONS = (1, 2)  # version 1 (loose chunks only) stays readable

ENCRYPTION_AGE = "age-x25519"
ENCRYPTION_NONE = "none"
IDENTITY_IN_KEY_FILE = "key-file"
IDENTITY_WRAPPED_BY_PASSPHRASE = "passphrase"


@dataclass(frozen=True)
class RepositoryConfig:
    """Everything a fresh machine needs, besides the key, to read the repository."""

    repository_id: str
    created: str
    chunker: ChunkerParams
    compression_level: int
    encryption: str  # ENCRYPTION_AGE or ENCRYPTION_NONE
    recipients: tuple[str, ...]
    identity_storage: str | None  # IDENTITY_IN_KEY_FILE / IDENTITY_WRAPPED_BY_PASSPHRASE
    hash_key_wrapped: str | None  # base64 age file holding the 32-byte hash key (encrypted)
    hash_key_plain: str | None  # hex hash key (only when encryption is "none")
    compression_fast_level: int = 1  # used while the pipeline is backed up (adaptive)
    version: int = FORMAT_VERSION  # 1: written before packs; 2: may hold packs

    @property
    def encrypted(self) -> bool:
        return self.encryption == ENCRYPTION_AGE

    def to_json(self) -> bytes:
        document: dict[str, Any] = {
            "format": FORMAT_NAME,
            "version": self.version,
            "repository_id": self.repository_id,
            "created": self.created,
            "chunker": self.chunker.to_dict(),
            "hash": {"algorithm": "blake3-keyed"},
            "compression": {
                "algorithm": "zstd",
                "level": self.compression_level,
                "fast_level": self.compression_fast_level,
            },
            "encryption": {"mode": self.encryption},
        }
        if self.encrypted:
            document["encryption"]["recipients"] = list(self.recipients)
            document["encryption"]["identity_storage"] = self.identity_storage
            document["hash"]["key_wrapped"] = self.hash_key_wrapped
        else:
            document["hash"]["key"] = self.hash_key_plain
        return json.dumps(document, indent=2, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_json(cls, raw: bytes, where: str = "the repository config") -> RepositoryConfig:
        """Parse and check the config (``where`` names it in messages). Raises
        ``RepositoryDamaged`` (exit 3) naming the field that is missing or wrong, and
        ``UnsupportedFormat`` for a version this strongroom does not read."""

        def damaged(reason: str) -> RepositoryDamaged:
            return RepositoryDamaged(f"{where} is damaged: {reason}")

        try:
            document = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise damaged(f"it is not valid JSON ({str(exc)[:60]})") from exc
        if not isinstance(document, dict) or document.get("format") != FORMAT_NAME:
            raise RepositoryDamaged(
                f"{where} is not the config of a strongroom repository (no format {FORMAT_NAME!r})"
            )
        version = document.get("version")
        if isinstance(version, bool) or version not in READABLE_VERSIONS:
            raise UnsupportedFormat(
                f"repository format version {str(version)[:20]} is not supported by this "
                f"strongroom (it reads versions 1 to {FORMAT_VERSION}); upgrade strongroom"
            )
        try:
            return dataclasses.replace(cls._from_document(document), version=version)
        except ChunkerParamsInvalid as exc:
            raise damaged(str(exc)) from exc
        except _ConfigProblem as exc:
            raise damaged(str(exc)) from exc

    @classmethod
    def _from_document(cls, document: dict[str, Any]) -> RepositoryConfig:
        encryption = _section(document, "encryption")
        compression = _section(document, "compression")
        hash_section = _section(document, "hash")
        mode = encryption.get("mode")
        if mode not in (ENCRYPTION_AGE, ENCRYPTION_NONE):
            raise _ConfigProblem("encryption.mode is neither age-x25519 nor none")
        level = _level(compression, "level", None)
        recipients: tuple[str, ...] = ()
        wrapped = plain = storage = None
        if mode == ENCRYPTION_AGE:
            found = encryption.get("recipients")
            if not isinstance(found, list) or not found:
                raise _ConfigProblem("encryption.recipients is missing or empty")
            if not all(isinstance(r, str) and is_recipient(r) for r in found):
                raise _ConfigProblem("encryption.recipients holds something not an age key")
            recipients = tuple(found)
            storage = encryption.get("identity_storage")
            if storage not in (IDENTITY_IN_KEY_FILE, IDENTITY_WRAPPED_BY_PASSPHRASE):
                raise _ConfigProblem("encryption.identity_storage is missing or unknown")
            wrapped = hash_section.get("key_wrapped")
            if not isinstance(wrapped, str):
                raise _ConfigProblem("hash.key_wrapped is missing")
            try:
                base64.b64decode(wrapped.encode("ascii"), validate=True)
            except (UnicodeError, binascii.Error) as exc:
                raise _ConfigProblem("hash.key_wrapped is not valid base64") from exc
        else:
            plain = hash_section.get("key")
            if not isinstance(plain, str) or _HASH_KEY_HEX.fullmatch(plain) is None:
                raise _ConfigProblem("hash.key is missing or not 64 hex characters")
        repository_id = document.get("repository_id")
        if not isinstance(repository_id, str) or not _SAFE_ID.fullmatch(repository_id):
            raise _ConfigProblem("repository_id is missing or not a plain id")
        created = document.get("created")
        if not isinstance(created, str):
            raise _ConfigProblem("created is missing")
        return cls(
            repository_id=repository_id,
            created=created,
            chunker=ChunkerParams.from_dict(document.get("chunker")),
            compression_level=level,
            compression_fast_level=_level(compression, "fast_level", level),
            encryption=mode,
            recipients=recipients,
            identity_storage=storage,
            hash_key_wrapped=wrapped,
            hash_key_plain=plain,
        )


class _ConfigProblem(ValueError):
    """Which field of the config is missing or wrong (one short clause)."""


_HASH_KEY_HEX = re.compile(r"[0-9a-f]{64}")
_SAFE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
COMPRESSION_LEVELS = (-(1 << 17), 22)  # what zstd accepts


def is_recipient(text: str) -> bool:
    """An age X25519 recipient (``age1…``)."""
    try:
        pyrage.x25519.Recipient.from_str(text)
    except pyrage.RecipientError:
        return False
    return True


def _section(document: dict[str, Any], name: str) -> dict[str, Any]:
    value = document.get(name)
    if not isinstance(value, dict):
        raise _ConfigProblem(f"{name} is missing or not an object")
    return value


def _level(compression: dict[str, Any], name: str, default: int | None) -> int:
    value = compression.get(name, default)
    low, high = COMPRESSION_LEVELS
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _ConfigProblem(
            f"compression.{name} is missing or outside the allowed range {low} to {high}"
        )
    return value
