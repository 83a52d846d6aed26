"""age encryption of chunks and manifest sections (X25519 recipients, scrypt passphrases)."""

from __future__ import annotations

from typing import Protocol

import pyrage


class DecryptionFailed(Exception):
    """The data could not be decrypted with the identities at hand (wrong key or damage)."""


class Sealer(Protocol):
    """Encrypts for the repository's recipients; decrypts when an identity is known."""

    encrypted: bool

    def seal(self, data: bytes) -> bytes: ...

    def open(self, data: bytes) -> bytes: ...


class PlainSealer:
    """No encryption (``init --no-encryption``)."""

    encrypted = False

    def seal(self, data: bytes) -> bytes:
        return data

    def open(self, data: bytes) -> bytes:
        return data


class AgeSealer:
    """Standard age files: ``age -d -i KEYFILE`` decrypts any object this writes."""

    encrypted = True

    def __init__(self, recipients: list[str], identity: str | None) -> None:
        self._recipients = [pyrage.x25519.Recipient.from_str(r) for r in recipients]
        self._identity = pyrage.x25519.Identity.from_str(identity) if identity else None

    @property
    def can_open(self) -> bool:
        return self._identity is not None

    def seal(self, data: bytes) -> bytes:
        return bytes(pyrage.encrypt(data, self._recipients))

    def open(self, data: bytes) -> bytes:
        if self._identity is None:
            raise DecryptionFailed("no identity loaded")
        try:
            return bytes(pyrage.decrypt(data, [self._identity]))
        except pyrage.DecryptError as exc:
            raise DecryptionFailed(str(exc)) from exc


def new_identity() -> tuple[str, str]:
    """Generate an X25519 identity; return ``(secret identity string, public recipient)``."""
    identity = pyrage.x25519.Identity.generate()
    return str(identity), str(identity.to_public())


def public_of(identity: str) -> str:
    """The recipient (public key) of an identity string; raises ValueError if malformed."""
    try:
        return str(pyrage.x25519.Identity.from_str(identity).to_public())
    except pyrage.IdentityError as exc:
        raise ValueError("not an age X25519 identity") from exc


def passphrase_seal(data: bytes, passphrase: str) -> bytes:
    return bytes(pyrage.passphrase.encrypt(data, passphrase))


def passphrase_open(data: bytes, passphrase: str) -> bytes:
    try:
        return bytes(pyrage.passphrase.decrypt(data, passphrase))
    except pyrage.DecryptError as exc:
        raise DecryptionFailed(str(exc)) from exc
