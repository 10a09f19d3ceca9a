"""Content digests: `sha256:<hex>` names for bytes, files and vendored source trees."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from .errors import InputError

DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of `data`."""
    return hashlib.sha256(data).hexdigest()


def digest_of(data: bytes) -> str:
    """The OCI digest (`sha256:<hex>`) of `data`."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, streamed."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def parse_digest(value: str, where: str = "digest") -> str:
    """Return `value` if it is a well-formed sha256 digest, else raise naming `where`."""
    if not DIGEST_RE.match(value):
        raise InputError(where, f"{value!r} is not a digest of the form sha256:<64 lower-case hex>")
    return value


def tree_sha256(path: Path) -> str:
    """Source hash of a vendored dependency (a file or a folder).

    A file hashes to the SHA-256 of its bytes. A folder hashes to the SHA-256 of a
    `sha256sum`-style manifest: one line `<hex>  <posix relative path>\\n` per regular file,
    sorted by path. Symbolic links are refused, so a hash cannot cover bytes from elsewhere.
    """
    if path.is_symlink():
        raise InputError(str(path), "is a symbolic link; vendored sources must be regular files")
    if path.is_file():
        return sha256_file(path)
    if not path.is_dir():
        raise InputError(str(path), "does not exist")
    lines = []
    for f in sorted(path.rglob("*"), key=lambda p: p.relative_to(path).as_posix()):
        if f.is_symlink():
            raise InputError(str(f), "is a symbolic link; vendored sources must be regular files")
        if f.is_file():
            lines.append(f"{sha256_file(f)}  {f.relative_to(path).as_posix()}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()
