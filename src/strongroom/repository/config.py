"""The repository's ``config`` object: format version, chunker, hash key, encryption."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from strongroom.errors import RepositoryError, UnsupportedFormat
from strongroom.pipeline.chunking import ChunkerParams

FORMAT_NAME = "strongroom-repository"
FORMAT_VERSION = 1

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

    @property
    def encrypted(self) -> bool:
        return self.encryption == ENCRYPTION_AGE

    def to_json(self) -> bytes:
        document: dict[str, Any] = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
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
    def from_json(cls, raw: bytes) -> RepositoryConfig:
        try:
            document = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RepositoryError(f"the repository config is not valid JSON ({exc})") from exc
        if not isinstance(document, dict) or document.get("format") != FORMAT_NAME:
            raise RepositoryError(
                "this location holds a config that is not a strongroom repository"
            )
        version = document.get("version")
        if version != FORMAT_VERSION:
            raise UnsupportedFormat(
                f"repository format version {version} is not supported by this strongroom "
                f"(it reads version {FORMAT_VERSION}); upgrade strongroom"
            )
        try:
            encryption = document["encryption"]
            mode = encryption["mode"]
            return cls(
                repository_id=document["repository_id"],
                created=document["created"],
                chunker=ChunkerParams.from_dict(document["chunker"]),
                compression_level=int(document["compression"]["level"]),
                compression_fast_level=int(
                    document["compression"].get("fast_level", document["compression"]["level"])
                ),
                encryption=mode,
                recipients=tuple(encryption.get("recipients", ())),
                identity_storage=encryption.get("identity_storage"),
                hash_key_wrapped=document["hash"].get("key_wrapped"),
                hash_key_plain=document["hash"].get("key"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RepositoryError(f"the repository config is incomplete (missing {exc})") from exc
