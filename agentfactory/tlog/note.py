"""Log keys and signed checkpoints, in the formats Rekor v1 and sigstore clients already verify.

A checkpoint (c2sp.org/tlog-checkpoint) commits to the whole log in three lines: origin, size and
base64 root hash, plus optional extension lines. It travels as a signed note (c2sp.org/signed-note):
the body, a blank line, then one line per signature, ``— <name> <base64(key hint || signature)>``.

We follow Rekor (pkg/util/signed_note.go, checkpoint.go) rather than the letter of the C2SP note
spec where they differ, because sigstore clients check Rekor's way:

* the signature is ECDSA P-256 over SHA-256 of the body, DER encoded (C2SP defines Ed25519 only);
* the key hint is the first 4 bytes of SHA-256 of the DER SubjectPublicKeyInfo, which are also the
  first 4 bytes of the log id (C2SP hashes ``name || 0x0A || type || key`` instead);
* the origin is ``<name> - <tree id>`` (``rekor.sigstore.dev - 1193050959916656506``), ours too: the
  decimal tree id is the first 60 bits of the log id (cosign's sigstore-go reads a checkpoint as
  Rekor v1's only when its origin ends in `` - <decimal>``); logs before 0.3 wrote
  ``<name> - <first 16 hex digits of the log id>`` (`legacy_origin`), still accepted for the same
  key; the signature line carries ``<name>``.

Parsing is strict and bounded: a note is untrusted input until its signature verifies.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ..errors import InputError, KeyProviderError
from ..fsutil import atomic_write, file_lock

DEFAULT_LOG_NAME = "agentfactory.dev/tlog"
MAX_NOTE_BYTES = 64 * 1024  # a checkpoint with a few signatures is well under 1 KiB
MAX_SIGNATURES = 16
MAX_EXTENSION_LINES = 16
MAX_ORIGIN_CHARS = 256
MAX_KEY_PEM_BYTES = 16 * 1024
ROOT_HASH_BYTES = 32
MAX_TREE_SIZE = 2**63 - 1  # Rekor and Trillian keep sizes and indices in int64
EM_DASH = "\u2014"
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())  # stateless: one for every signature
_SIZE = re.compile(r"0|[1-9][0-9]{0,18}")
_NAME = re.compile(r"[^\s+]{1,256}")  # C2SP: a key name has no whitespace and no '+'
_B64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_SIG_LINE = re.compile(EM_DASH + r" (\S+) (\S+)")


def spki_der(public_key: ec.EllipticCurvePublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def tree_id_of(log_id: str) -> str:
    """The decimal tree id Rekor's API and checkpoints spell: the first 60 bits of the log id."""
    return str(int(log_id[:15], 16))


def is_origin_upgrade(old: str, new: str, log_id: str) -> bool:
    """Whether `old` is the pre-0.3 hex origin of the same log whose origin is now `new` (not a new log)."""
    name, sep, suffix = old.rpartition(" - ")
    return bool(sep) and suffix == log_id[:16] and new == f"{name} - {tree_id_of(log_id)}"


def log_id_of(public_key: ec.EllipticCurvePublicKey) -> str:
    """Rekor's logID: hex SHA-256 of the DER SubjectPublicKeyInfo (RFC 6962 key id)."""
    return hashlib.sha256(spki_der(public_key)).hexdigest()


def key_hint_of(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """Rekor's note key hint: the first 4 bytes of SHA-256 of the DER SubjectPublicKeyInfo."""
    return hashlib.sha256(spki_der(public_key)).digest()[:4]


def load_log_public_key(pem: bytes, where: str) -> ec.EllipticCurvePublicKey:
    """A log's public key from SubjectPublicKeyInfo PEM; anything but ECDSA P-256 is refused."""
    if len(pem) > MAX_KEY_PEM_BYTES:
        raise InputError(where, f"log public key is {len(pem)} bytes; the limit is {MAX_KEY_PEM_BYTES}")
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm):
        raise InputError(where, "log public key is not a PEM public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise InputError(where, "log public key must be ECDSA P-256")
    return key


class LogKey:
    """The log's signing key: signs checkpoints and signed entry timestamps (SETs)."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey, name: str = DEFAULT_LOG_NAME) -> None:
        if not isinstance(private_key.curve, ec.SECP256R1):
            raise KeyProviderError("a log key must be ECDSA P-256")
        if not _NAME.fullmatch(name):
            raise KeyProviderError(f"log name {name!r} must be 1-256 characters without whitespace or '+'")
        self._private = private_key
        self.name = name
        self.public_key = private_key.public_key()
        self.log_id = log_id_of(self.public_key)
        self.key_hint = key_hint_of(self.public_key)

    @classmethod
    def generate(cls, name: str = DEFAULT_LOG_NAME) -> LogKey:
        return cls(ec.generate_private_key(ec.SECP256R1()), name)

    @classmethod
    def load_or_create(cls, path: Path, name: str = DEFAULT_LOG_NAME) -> LogKey:
        """Load the PKCS#8 PEM at `path`, creating it (0600) on first use.

        The lock makes two processes starting at once agree on one key instead of each
        writing its own and the loser's checkpoints becoming unverifiable.
        """
        if not path.exists():
            with file_lock(path.with_name(f".{path.name}.lock")):
                if not path.exists():
                    key = ec.generate_private_key(ec.SECP256R1())
                    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption())
                    atomic_write(path, pem, mode=0o600)
                    return cls(key, name)
        return cls(_read_private_key(path), name)

    @property
    def origin(self) -> str:
        """``<name> - <decimal tree id>``, as Rekor's ``rekor.sigstore.dev - <tree id>``."""
        return f"{self.name} - {tree_id_of(self.log_id)}"

    @property
    def legacy_origin(self) -> str:
        """The origin checkpoints had before 0.3 (``<name> - <16 hex digits of the log id>``)."""
        return f"{self.name} - {self.log_id[:16]}"

    def public_pem(self) -> bytes:
        return self.public_key.public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)

    def sign(self, data: bytes) -> bytes:
        """ECDSA P-256 over SHA-256(data), DER encoded: what Rekor's signer produces."""
        return self._private.sign(data, _ECDSA_SHA256)


def _read_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise KeyProviderError(f"log key {path} cannot be opened ({exc.strerror}); a symlink is refused") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise KeyProviderError(f"log key {path} is not a regular file")
        if st.st_mode & 0o077:
            raise KeyProviderError(
                f"log key {path} is accessible by group or others (mode {stat.S_IMODE(st.st_mode):04o}): "
                f"run `chmod 600 {path}`, and treat the key as exposed if others could read it")
        data = f.read(MAX_KEY_PEM_BYTES + 1)
    if len(data) > MAX_KEY_PEM_BYTES:
        raise KeyProviderError(f"log key {path} is larger than {MAX_KEY_PEM_BYTES} bytes: not a key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise KeyProviderError(f"log key {path} is not an unencrypted PKCS#8 PEM private key: restore it "
                               f"from a backup, or move it away to start a new log") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise KeyProviderError(f"log key {path} is not an ECDSA P-256 key")
    return key


@dataclass(frozen=True)
class Checkpoint:
    """The unsigned body of a signed tree head."""

    origin: str
    size: int
    root_hash: bytes
    other_content: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or len(self.origin) > MAX_ORIGIN_CHARS or not self.origin.isprintable():
            raise ValueError("checkpoint origin must be 1-256 printable characters")
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise ValueError("checkpoint size out of range")
        if len(self.root_hash) != ROOT_HASH_BYTES:
            raise ValueError("checkpoint root hash must be 32 bytes")
        if len(self.other_content) > MAX_EXTENSION_LINES or any(
                not line or not line.isprintable() for line in self.other_content):
            raise ValueError("checkpoint extension lines must be non-empty printable lines")

    def body(self) -> bytes:
        lines = [self.origin, str(self.size), base64.b64encode(self.root_hash).decode(), *self.other_content]
        return "".join(line + "\n" for line in lines).encode()

    def sign(self, key: LogKey) -> str:
        """The signed note: body, blank line, one signature line by `key`."""
        body = self.body()
        blob = base64.b64encode(key.key_hint + key.sign(body)).decode()
        return f"{body.decode()}\n{EM_DASH} {key.name} {blob}\n"


@dataclass(frozen=True)
class NoteSignature:
    name: str
    hint: bytes
    signature: bytes


def _b64(value: str, where: str, what: str) -> bytes:
    if not _B64.fullmatch(value) or len(value) % 4:
        raise InputError(where, f"{what} is not valid base64")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(where, f"{what} is not valid base64") from None


def _parse_body(body: str, where: str) -> Checkpoint:
    lines = body.split("\n")[:-1]  # the body ends with a newline
    if len(lines) < 3:
        raise InputError(where, "malformed checkpoint: needs origin, size and root hash lines")
    if len(lines) > 3 + MAX_EXTENSION_LINES:
        raise InputError(where, f"malformed checkpoint: more than {MAX_EXTENSION_LINES} extension lines")
    origin, size, root = lines[0], lines[1], lines[2]
    if not origin or len(origin) > MAX_ORIGIN_CHARS:
        raise InputError(where, "malformed checkpoint: origin must be 1-256 characters")
    if not _SIZE.fullmatch(size) or int(size) > MAX_TREE_SIZE:
        raise InputError(where, "malformed checkpoint: size must be a decimal number without sign or leading zeros")
    root_hash = _b64(root, where, "checkpoint root hash")
    if base64.b64encode(root_hash).decode() != root:
        raise InputError(where, "malformed checkpoint: root hash is not canonical base64")
    if len(root_hash) != ROOT_HASH_BYTES:
        raise InputError(where, f"malformed checkpoint: root hash is {len(root_hash)} bytes, not {ROOT_HASH_BYTES}")
    return Checkpoint(origin, int(size), root_hash, tuple(lines[3:]))


def parse_signed_note(text: str | bytes, where: str = "checkpoint") -> tuple[Checkpoint, list[NoteSignature]]:
    """Split and parse a signed checkpoint without verifying it."""
    raw = text.encode() if isinstance(text, str) else text
    if len(raw) > MAX_NOTE_BYTES:
        raise InputError(where, f"signed note is {len(raw)} bytes; the limit is {MAX_NOTE_BYTES}")
    try:
        note = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(where, "signed note is not UTF-8") from None
    if any(c != "\n" and not c.isprintable() for c in note):
        raise InputError(where, "signed note contains control characters")
    # One blank line, as sigstore-python requires: a checkpoint body has no empty lines.
    if note.count("\n\n") != 1:
        raise InputError(where, "malformed note: needs exactly one blank line between text and signatures")
    body, sig_block = note.split("\n\n")
    body += "\n"
    if not sig_block.endswith("\n") or sig_block == "\n":
        raise InputError(where, "malformed note: signature block must be non-empty and end with a newline")
    sig_lines = sig_block[:-1].split("\n")
    if len(sig_lines) > MAX_SIGNATURES:
        raise InputError(where, f"note has {len(sig_lines)} signatures; the limit is {MAX_SIGNATURES}")
    signatures = []
    for i, line in enumerate(sig_lines):
        m = _SIG_LINE.fullmatch(line)
        if m is None or not _NAME.fullmatch(m.group(1)):
            raise InputError(where, f"malformed note: signature line {i + 1} is not '{EM_DASH} <name> <base64>'")
        blob = _b64(m.group(2), where, f"signature line {i + 1}")
        if len(blob) < 5:
            raise InputError(where, f"malformed note: signature line {i + 1} is too short")
        signatures.append(NoteSignature(m.group(1), blob[:4], blob[4:]))
    return _parse_body(body, where), signatures


def verify(note_text: str | bytes, public_key: ec.EllipticCurvePublicKey, origin: str | None = None,
           where: str = "checkpoint") -> Checkpoint:
    """The checkpoint, when a signature by `public_key` verifies (and the origin is `origin`)."""
    checkpoint, signatures = parse_signed_note(note_text, where)
    hint = key_hint_of(public_key)
    candidates = [s for s in signatures if s.hint == hint]
    if not candidates:
        raise InputError(where, f"no signature by this log key (key hint {hint.hex()})")
    body = checkpoint.body()
    for s in candidates:
        try:
            public_key.verify(s.signature, body, ec.ECDSA(hashes.SHA256()))
            break
        except InvalidSignature:
            continue
    else:
        raise InputError(where, "bad signature: the checkpoint was altered or signed by another key")
    if origin is not None and checkpoint.origin != origin:
        raise InputError(where, f"wrong origin {checkpoint.origin!r}; expected {origin!r}")
    return checkpoint
