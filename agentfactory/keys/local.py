"""The embedded key provider: RSA-2048 keys in a folder, created on first use.

Layout of the folder (default `$AGENTFACTORY_HOME/keys`, mode 0700)::

    keyring.json      {"active": key_id, "keys": [{"keyId", "name", "status", "created"}]}
    <key_id>.pem      PKCS#8 private key, mode 0600, named by the key id of its public half
    .lock             advisory lock serialising writers across processes

The folder is the trust anchor of a laptop chain, so every read fails closed: a keyring.json that
does not parse or breaks an invariant, a PEM that is missing, unreadable, world-readable, not
RSA-2048, or whose key id is not its name (a swapped file) stops signing with a message naming
the file and the fix. Writers take the lock and replace files atomically; readers need no lock
because they always see a whole old or a whole new keyring.json, and a PEM is written before
keyring.json names it.

Listing public keys (every `verify` does, for the trust policy) runs all those checks but skips
OpenSSL's RSA consistency check of the private half (p·q = n and the CRT values, ~35 ms a key):
only n and e are used, they are read from the same content-addressed file and their key id must
be its name, so nothing can be trusted that signing would not also check. Signing loads the key
with the full check.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

from .. import config
from ..errors import KeyProviderError
from ..fsutil import atomic_write, file_lock
from .base import KeyProvider, KeyStatus, PublicKey, Signature
from .base import key_id as compute_key_id

KEYRING_FILE = "keyring.json"
MAX_KEYRING_BYTES = 1 << 20  # a keyring with thousands of keys is still far below this
MAX_KEYS = 10_000
MAX_PEM_BYTES = 16 << 10  # an RSA-2048 PKCS#8 PEM is about 1.7 KiB
RSA_BITS = 2048
_KEY_ID = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_STATUSES: tuple[KeyStatus, ...] = ("active", "enabled", "revoked")


def default_folder() -> Path:
    """`$AGENTFACTORY_HOME/keys`: beside the rest of the embedded state, deleted with it."""
    return config.home() / "keys"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def public_pem(public_key: rsa.RSAPublicKey) -> bytes:
    """SubjectPublicKeyInfo PEM: the form trust policies and `keys export` publish."""
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass
class _Entry:
    key_id: str
    name: str
    status: KeyStatus
    created: str

    def to_json(self) -> dict[str, str]:
        return {"keyId": self.key_id, "name": self.name, "status": self.status, "created": self.created}


@dataclass
class _State:
    active: str | None
    keys: list[_Entry]

    def find(self, kid: str) -> _Entry | None:
        return next((e for e in self.keys if e.key_id == kid), None)

    def to_bytes(self) -> bytes:
        doc = {"active": self.active, "keys": [e.to_json() for e in self.keys]}
        return (json.dumps(doc, indent=2) + "\n").encode()


class LocalKeyring(KeyProvider):
    """RSA-2048 keys in a local folder: several keys, exactly one active, created on first use."""

    name = "local"

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = Path(folder) if folder is not None else default_folder()
        # Parsed private keys, keyed by key id and by the file's identity (device, inode, mtime,
        # size) and whether OpenSSL validated the RSA key (tens of milliseconds, needed only to
        # sign): parsing is done once per file version, the permission and name checks on every use.
        self._loaded: dict[str, tuple[tuple[int, int, int, int], bool, rsa.RSAPrivateKey]] = {}
        self._mutex = threading.Lock()

    # ------------------------------------------------------------------ paths and state

    @property
    def keyring_path(self) -> Path:
        return self.folder / KEYRING_FILE

    def pem_path(self, kid: str) -> Path:
        return self.folder / f"{kid}.pem"

    def _ensure_folder(self) -> None:
        """Create the folder 0700 on first use; refuse one that other users may write into."""
        if not self.folder.exists():
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.folder, 0o700)  # mkdir's mode is masked by the umask: set it exactly
        self._check_folder()

    def _check_folder(self) -> None:
        try:
            st = os.stat(self.folder)
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(st.st_mode):
            raise KeyProviderError(f"keyring folder {self.folder} is not a folder: move it away or point "
                                   f"AGENTFACTORY_HOME elsewhere")
        if st.st_mode & 0o022:
            raise KeyProviderError(
                f"keyring folder {self.folder} is writable by group or others "
                f"(mode {stat.S_IMODE(st.st_mode):04o}), so anyone could replace a key: "
                f"run `chmod 700 {self.folder}`")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self._ensure_folder()
        with file_lock(self.folder / ".lock"):
            yield

    def _corrupt(self, problem: str) -> KeyProviderError:
        return KeyProviderError(
            f"corrupt keyring {self.keyring_path}: {problem}. Refusing to sign with a keyring that may "
            f"have been tampered with: restore keyring.json from a backup (the <key id>.pem files beside "
            f"it are the keys it must list)")

    def _read_state(self) -> _State:
        """Parse and check keyring.json; an absent file is an empty keyring unless keys exist."""
        self._check_folder()
        path = self.keyring_path
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            pems = sorted(self.folder.glob("*.pem")) if self.folder.is_dir() else []
            if pems:
                raise KeyProviderError(
                    f"keyring {path} is missing but {len(pems)} private key(s) lie beside it "
                    f"({pems[0].name}, …): refusing to start a new keyring over existing keys. Restore "
                    f"keyring.json from a backup, or move the .pem files away to start afresh") from None
            return _State(active=None, keys=[])
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise self._corrupt("it is a symbolic link") from None
            raise KeyProviderError(f"cannot read keyring {path}: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as f:
            raw = f.read(MAX_KEYRING_BYTES + 1)
        if len(raw) > MAX_KEYRING_BYTES:
            raise self._corrupt(f"larger than the {MAX_KEYRING_BYTES:,}-byte limit")
        try:
            doc = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise self._corrupt(f"not valid JSON ({exc})") from None
        return self._parse_state(doc)

    def _parse_state(self, doc: Any) -> _State:
        if not isinstance(doc, dict) or set(doc) != {"active", "keys"}:
            raise self._corrupt('expected an object with exactly the fields "active" and "keys"')
        active, items = doc["active"], doc["keys"]
        if not isinstance(items, list) or len(items) > MAX_KEYS:
            raise self._corrupt(f'"keys" must be a list of at most {MAX_KEYS} entries')
        entries: list[_Entry] = []
        for i, item in enumerate(items):
            where = f"keys[{i}]"
            if not isinstance(item, dict) or set(item) != {"keyId", "name", "status", "created"}:
                raise self._corrupt(f'{where}: expected exactly the fields "keyId", "name", "status", "created"')
            kid, name, status, created = item["keyId"], item["name"], item["status"], item["created"]
            if not isinstance(kid, str) or not _KEY_ID.match(kid):
                raise self._corrupt(f"{where}.keyId: not a key id (64 lowercase hex digits)")
            if not isinstance(name, str) or not _NAME.match(name):
                raise self._corrupt(f"{where}.name: not a key name")
            if status not in _STATUSES:
                raise self._corrupt(f"{where}.status: {status!r} is not one of {', '.join(_STATUSES)}")
            if not isinstance(created, str) or len(created) > 64:
                raise self._corrupt(f"{where}.created: not a timestamp")
            if any(e.key_id == kid for e in entries):
                raise self._corrupt(f"{where}: key {kid} is listed twice")
            entries.append(_Entry(kid, name, status, created))
        actives = [e.key_id for e in entries if e.status == "active"]
        if entries and active is None:
            raise self._corrupt('"active" is null but the keyring holds keys')
        if active is not None:
            if not isinstance(active, str) or not _KEY_ID.match(active):
                raise self._corrupt('"active": not a key id')
            if actives != [active]:
                raise self._corrupt(f'"active" names {active}, but the keys with status "active" are '
                                    f"{actives or 'none'}: exactly that one key must be active")
        elif actives:
            raise self._corrupt(f'"active" is null but {actives[0]} has status "active"')
        return _State(active=active, keys=entries)

    def _write_state(self, state: _State) -> None:
        atomic_write(self.keyring_path, state.to_bytes(), mode=0o600)

    # ------------------------------------------------------------------ private keys

    def _load_private(self, kid: str, *, validate: bool = True) -> rsa.RSAPrivateKey:
        """Open `<kid>.pem` and check permissions, size, type and that it holds key `kid`.

        `validate=False` skips OpenSSL's RSA consistency check of the private values: the key's
        public half (n, e) is then as trustworthy as with it, but it must not sign.
        """
        path = self.pem_path(kid)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise KeyProviderError(
                f"private key {path} is missing, but {self.keyring_path} lists key {kid}: restore the file "
                f"from a backup; if it is lost, run `agentfactory keys rotate` and then "
                f"`agentfactory keys revoke {kid}`") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise KeyProviderError(f"private key {path} is a symbolic link: refusing it (a link can point "
                                       f"at any key); put the key file itself there") from None
            raise KeyProviderError(f"cannot read private key {path}: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise KeyProviderError(f"private key {path} is not a regular file")
            if st.st_mode & 0o077:
                raise KeyProviderError(
                    f"private key {path} is accessible by group or others (mode {stat.S_IMODE(st.st_mode):04o}): "
                    f"run `chmod 600 {path}`, and treat the key as exposed if others could read it "
                    f"(rotate, then revoke it)")
            identity = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
            with self._mutex:
                cached = self._loaded.get(kid)
            if cached is not None and cached[0] == identity and (cached[1] or not validate):
                return cached[2]
            raw = f.read(MAX_PEM_BYTES + 1)
        if len(raw) > MAX_PEM_BYTES:
            raise KeyProviderError(f"private key {path} is larger than {MAX_PEM_BYTES:,} bytes: not an RSA-2048 key")
        try:
            private = serialization.load_pem_private_key(raw, password=None,
                                                         unsafe_skip_rsa_key_validation=not validate)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise KeyProviderError(f"private key {path} is not an unencrypted PKCS#8 PEM private key ({exc}): "
                                   f"restore it from a backup") from None
        if not isinstance(private, rsa.RSAPrivateKey):
            raise KeyProviderError(f"private key {path} is a {type(private).__name__.lstrip('_')} key, not RSA: "
                                   f"Agent Factory signs with RSA-2048 only; restore the original file")
        if private.key_size != RSA_BITS:
            raise KeyProviderError(f"private key {path} is RSA-{private.key_size}, not RSA-{RSA_BITS}: "
                                   f"Agent Factory signs with RSA-2048 only; restore the original file")
        actual = compute_key_id(private.public_key())
        if actual != kid:
            raise KeyProviderError(
                f"private key {path} holds key {actual}, but its name and {self.keyring_path} say {kid}: "
                f"the file was replaced or swapped (tampering?). Restore the original from a backup; do not "
                f"rename files to make them match")
        with self._mutex:
            cached = self._loaded.get(kid)
            if cached is None or cached[0] != identity or not cached[1]:  # never replace a validated parse
                self._loaded[kid] = (identity, validate, private)
        return private

    def _public(self, entry: _Entry) -> PublicKey:
        pem = public_pem(self._load_private(entry.key_id, validate=False).public_key())
        return PublicKey(key_id=entry.key_id, pem=pem, status=entry.status, provider=self.name,
                         name=entry.name, created=entry.created)

    def _new_key(self, state: _State, name: str | None, status: KeyStatus) -> _Entry:
        """Generate a key and write its PEM (0600) before any keyring.json names it."""
        if name is None:
            taken = {e.name for e in state.keys}
            n = len(state.keys) + 1
            while f"key-{n}" in taken:
                n += 1
            name = f"key-{n}"
        elif not _NAME.match(name):
            raise KeyProviderError(f"key name {name!r}: use 1-64 letters, digits, '.', '_' or '-'")
        elif any(e.name == name for e in state.keys):
            raise KeyProviderError(f"key name {name!r} is already used in {self.keyring_path}: pick another")
        if len(state.keys) >= MAX_KEYS:
            raise KeyProviderError(f"keyring {self.keyring_path} already holds {MAX_KEYS} keys")
        private = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
        kid = compute_key_id(private.public_key())
        pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        atomic_write(self.pem_path(kid), pem, mode=0o600)
        entry = _Entry(kid, name, status, _now())
        state.keys.append(entry)
        if status == "active":
            state.active = kid
        return entry

    # ------------------------------------------------------------------ KeyProvider

    def sign_digest(self, sha256_digest: bytes) -> Signature:
        """Sign with the active key, creating the first key (under the lock) on first use."""
        if not isinstance(sha256_digest, bytes) or len(sha256_digest) != 32:
            raise KeyProviderError("sign_digest needs the 32-byte SHA-256 digest of what is signed, "
                                   f"got {len(sha256_digest) if isinstance(sha256_digest, bytes) else 'no'} bytes")
        state = self._read_state()
        if state.active is None:
            with self._locked():
                state = self._read_state()  # another process may have created it meanwhile
                if state.active is None:
                    self._new_key(state, None, "active")
                    self._write_state(state)
        assert state.active is not None
        private = self._load_private(state.active)
        raw = private.sign(sha256_digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
        return Signature(key_id=state.active, signature=raw, provider=self.name)

    def public_keys(self) -> list[PublicKey]:
        """Every key in keyring order (oldest first), revoked ones included."""
        return [self._public(e) for e in self._read_state().keys]

    def create(self, name: str | None = None) -> PublicKey:
        """A new key named `name` (default `key-N`): active if the keyring had none, else enabled.

        An enabled key does not sign; it is staged for a planned rotation or a second trust root.
        """
        with self._locked():
            state = self._read_state()
            entry = self._new_key(state, name, "enabled" if state.active else "active")
            self._write_state(state)
        return self._public(entry)

    def ensure_first(self, name: str) -> None:
        """Make the first key, named `name`, unless the keyring has one: checked and made under the keyring's
        lock, so processes starting together (`admission serve --workers`) make one key, not one each (or fail
        on the name the other just took)."""
        if self._read_state().keys:
            return
        with self._locked():
            state = self._read_state()
            if not state.keys:
                self._new_key(state, name, "active")
                self._write_state(state)

    def rotate(self) -> PublicKey:
        """A new active key; the previous active key becomes enabled so its signatures still verify."""
        with self._locked():
            state = self._read_state()
            previous = state.find(state.active) if state.active else None
            if previous is not None:
                previous.status = "enabled"
            entry = self._new_key(state, None, "active")
            self._write_state(state)
        return self._public(entry)

    def revoke(self, key_id: str) -> PublicKey:
        """Mark `key_id` revoked (idempotent). The active key is refused: rotate first.

        The private key file stays (for the audit and to publish the public half) but never signs
        again: only the active key signs, and a revoked key can never become active.
        """
        with self._locked():
            state = self._read_state()
            entry = state.find(key_id)
            if entry is None:
                raise KeyProviderError(f"unknown key id {key_id} in {self.keyring_path}: "
                                       f"`agentfactory keys list` shows the known ids")
            if entry.status == "active":
                raise KeyProviderError(
                    f"key {key_id} is the active key of {self.keyring_path}: run `agentfactory keys rotate` "
                    f"first so that another key signs, then revoke it")
            if entry.status != "revoked":
                entry.status = "revoked"
                self._write_state(state)
        return self._public(entry)
