"""The signing-key port: one interface, a local keyring and Vault/OpenBao Transit behind it.

Every signature in this project is RSA-2048, PKCS#1 v1.5 over SHA-256 (what cosign uses with
Vault Transit). Providers sign a SHA-256 digest that the caller computed ("prehashed"), so the
same primitive signs an artifact (its digest is the hash of its bytes) and a DSSE envelope (the
hash of its PAE encoding). A key is named by its key id: the hex SHA-256 of the public key's DER
SubjectPublicKeyInfo, whoever holds the private half.
"""

from __future__ import annotations

import abc
import hashlib
from dataclasses import dataclass
from typing import Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

KeyStatus = Literal["active", "enabled", "revoked"]
"""active: signs new artifacts; enabled: verifies old ones; revoked: verifies nothing."""


def key_id(public_key: rsa.RSAPublicKey) -> str:
    """Hex SHA-256 of the DER SubjectPublicKeyInfo."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


@dataclass(frozen=True)
class PublicKey:
    """A verification key as providers publish it and trust policies list it."""

    key_id: str
    pem: bytes  # SubjectPublicKeyInfo PEM
    status: KeyStatus
    provider: str  # "local" or "vault"
    name: str  # keyring key name, or the Transit key name
    version: int | None = None  # Transit key version
    created: str | None = None  # RFC 3339


@dataclass(frozen=True)
class Signature:
    key_id: str
    signature: bytes  # raw RSA signature bytes
    provider: str
    version: int | None = None


class KeyProvider(abc.ABC):
    """Holds private keys and signs with the active one; publishes every public key."""

    name: str

    @abc.abstractmethod
    def sign_digest(self, sha256_digest: bytes) -> Signature:
        """RSA PKCS#1 v1.5 signature over a 32-byte SHA-256 digest, by the active key.

        Creates the first key when there is none (embedded default: created on first use).
        """

    @abc.abstractmethod
    def public_keys(self) -> list[PublicKey]:
        """Every key this provider knows, revoked ones included, with its status."""

    @abc.abstractmethod
    def create(self) -> PublicKey:
        """A new key (first use, or a named new key in the keyring); becomes active if none is."""

    @abc.abstractmethod
    def rotate(self) -> PublicKey:
        """A new active key (version); the previous one stays enabled for verification."""

    @abc.abstractmethod
    def revoke(self, key_id: str) -> PublicKey:
        """Mark a key revoked: what it signed no longer verifies. The active key cannot be revoked."""

    def sign(self, data: bytes) -> Signature:
        """Sign `data` (hashed here with SHA-256)."""
        return self.sign_digest(hashlib.sha256(data).digest())
