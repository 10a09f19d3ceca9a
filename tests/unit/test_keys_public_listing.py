"""Listing a keyring's public keys without OpenSSL's RSA consistency check (issue 23, start-up).

`public_keys()` (every `verify` reads it) parses each `<key id>.pem` without the ~35 ms check of the
private values; signing parses it with the check. What listing trusts is the key's public half
(n, e), which must still hash to the file's name: a swapped, replaced or foreign file is refused as
before, and a file whose private values are inconsistent is listed (its public half is what the
keyring names) but never signs, even after listing cached it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

from agentfactory.errors import KeyProviderError
from agentfactory.keys import LocalKeyring, key_id

DIGEST = hashlib.sha256(b"an agent's wasm bytes").digest()


def spki_pem(public: rsa.RSAPublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def inconsistent_private_pem(private: rsa.RSAPrivateKey) -> bytes:
    """The same n and e with a wrong private exponent: OpenSSL's full load refuses it."""
    n = private.private_numbers()
    broken = rsa.RSAPrivateNumbers(n.p, n.q, n.d + 2, n.dmp1, n.dmq1, n.iqmp, n.public_numbers)
    key = broken.private_key(unsafe_skip_rsa_key_validation=True)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    with pytest.raises(ValueError):
        serialization.load_pem_private_key(pem, password=None)
    return pem


def test_an_existing_key_home_lists_the_same_public_keys(af_home: Path) -> None:
    """Key folders written before this change list the exact public halves of their PEM files."""
    first = LocalKeyring()
    first.sign_digest(DIGEST)
    first.rotate()
    listed = LocalKeyring().public_keys()  # a new process's view: nothing cached
    assert len(listed) == 2
    for key in listed:
        private = serialization.load_pem_private_key(LocalKeyring().pem_path(key.key_id).read_bytes(), None)
        assert isinstance(private, rsa.RSAPrivateKey)
        assert key.pem == spki_pem(private.public_key())
        assert key.key_id == key_id(private.public_key())


def test_signing_still_validates_a_key_that_listing_parsed(af_home: Path) -> None:
    ring = LocalKeyring()
    sig = ring.sign_digest(DIGEST)
    path = ring.pem_path(sig.key_id)
    private = serialization.load_pem_private_key(path.read_bytes(), None)
    assert isinstance(private, rsa.RSAPrivateKey)
    path.write_bytes(inconsistent_private_pem(private))
    os.chmod(path, 0o600)

    fresh = LocalKeyring()
    [listed] = fresh.public_keys()  # parsed unchecked and cached
    assert listed.key_id == sig.key_id and listed.pem == spki_pem(private.public_key())
    with pytest.raises(KeyProviderError, match=rf"private key {path} is not an unencrypted PKCS#8 PEM private key"):
        fresh.sign_digest(DIGEST)
    with pytest.raises(KeyProviderError, match="is not an unencrypted PKCS#8 PEM private key"):
        LocalKeyring().sign_digest(DIGEST)


def test_a_key_validated_for_signing_is_reused_for_listing(af_home: Path) -> None:
    ring = LocalKeyring()
    sig = ring.sign_digest(DIGEST)
    [listed] = ring.public_keys()
    public = serialization.load_pem_public_key(listed.pem)
    assert isinstance(public, rsa.RSAPublicKey)
    public.verify(sig.signature, DIGEST, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
    again = ring.sign_digest(DIGEST)  # the cached, validated key: signs as before
    public.verify(again.signature, DIGEST, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))


def test_listing_refuses_a_file_replaced_after_it_was_cached(af_home: Path) -> None:
    """The public half comes from the content-addressed file: another key under the name is refused
    by listing too, also when an earlier listing cached the original."""
    ring = LocalKeyring()
    sig = ring.sign_digest(DIGEST)
    ring.public_keys()
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = ring.pem_path(sig.key_id)
    path.write_bytes(other.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()) + b"\n")
    with pytest.raises(KeyProviderError, match=rf"holds key {key_id(other.public_key())}.*replaced or swapped"):
        ring.public_keys()


def test_listing_refuses_an_inconsistent_key_of_another_id(af_home: Path) -> None:
    """Skipping the check does not let a broken file of another key pass under this key's name."""
    ring = LocalKeyring()
    sig = ring.sign_digest(DIGEST)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = ring.pem_path(sig.key_id)
    path.write_bytes(inconsistent_private_pem(other))
    with pytest.raises(KeyProviderError, match=rf"holds key {key_id(other.public_key())}"):
        LocalKeyring().public_keys()
