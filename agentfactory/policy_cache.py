"""The compiled-policy cache: rego-cpp bundles saved on disk so a command does not recompile the policies.

Compiling the Rego policies costs ~250 ms a process (parsing every module, then planning a policy), loading
a saved bundle ~6 ms. A bundle is saved in rego-cpp's binary format under
`$AGENTFACTORY_HOME/cache/policy/<key>/` (or `$AGENTFACTORY_POLICY_CACHE/<key>/` when that names a
folder), where the key is the SHA-256 of everything a bundle is made from: the regopy version, each policy
file's name and digest, the data with the config overrides applied, and the plan format. A change to any
of them is a new key, so a stale bundle is never found.

Every file is authenticated before it reaches rego-cpp's loader: it opens with the HMAC-SHA256 of the bundle
(one hex line), under a random key kept in the cache folder (mode 0600), so tag and bundle are written in one
atomic rename. A file whose tag does not match (flipped, truncated,
swapped, copied from another home) is refused: deleted and rebuilt from the sources, never loaded. The tag
protects against corruption and against someone who can write the cache but not read the key; the cache is
otherwise as trusted as $AGENTFACTORY_HOME. The verified bytes are loaded from a private copy, so the file
cannot change between the check and the load. Any cache failure (read-only disk, a refused file) only costs
a compile: decisions never depend on the cache being usable.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any

from .config import cache_dir
from .fsutil import atomic_write

# "0"/"off": compile every time (the cache is never read or written); a folder: keep the cache there instead of
# under $AGENTFACTORY_HOME (shared by several state folders, as the toolchain cache can be: CI, the test suite)
CACHE_ENV = "AGENTFACTORY_POLICY_CACHE"
_OFF = ("0", "off", "false", "no")
_ON = ("", "1", "on", "true", "yes")
# Bump when what a bundle is built from changes (2: its modules; 3: config keys reordered per bundle).
PLAN_FORMAT = "agentfactory-policy-plan/3"
_KEY_FILE = "hmac.key"
_KEY_BYTES = 32
_STAMP = "compiled"  # written once the sources compiled: a later process need not compile to know it


def enabled() -> bool:
    return os.environ.get(CACHE_ENV, "1").strip().lower() not in _OFF


def cache_root() -> Path:
    """The folder named by $AGENTFACTORY_POLICY_CACHE, else `$AGENTFACTORY_HOME/cache/policy`."""
    raw = os.environ.get(CACHE_ENV, "").strip()
    if raw.lower() in _ON or raw.lower() in _OFF:
        return cache_dir("policy")
    return Path(raw).expanduser().resolve()


def cache_key(sources: dict[str, str], data: Any, regopy_version: str) -> str:
    """The SHA-256 naming what a bundle is compiled from (file names and contents, data, regopy, plan format)."""
    h = hashlib.sha256()
    parts = {"format": PLAN_FORMAT, "regopy": regopy_version,
             "sources": sorted((Path(name).name, hashlib.sha256(text.encode("utf-8")).hexdigest())
                               for name, text in sources.items()),
             "data": hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":"),
                                               ensure_ascii=False).encode("utf-8")).hexdigest()}
    h.update(json.dumps(parts, sort_keys=True).encode("utf-8"))
    return h.hexdigest()


class PolicyCache:
    """The bundles of one key. `load` returns a verified bundle or None; `save` never raises on disk errors."""

    def __init__(self, key: str, root: Path | None = None) -> None:
        self.root = root or cache_root()
        self.key = key
        self.folder = self.root / key
        self.refused: list[str] = []  # why files were refused (for tests and diagnostics)
        self._secret: bytes | None = None

    def _mac_key(self) -> bytes:
        """The HMAC key, created on first use (0600); a key file of the wrong size is replaced, which only
        invalidates the entries tagged with it."""
        if self._secret is None:
            path = self.root / _KEY_FILE
            try:
                secret = path.read_bytes()
            except FileNotFoundError:
                secret = b""
            if not secret:
                secret = self._create_key(path)
            if len(secret) != _KEY_BYTES:  # never a short or empty (guessable) key
                secret = secrets.token_bytes(_KEY_BYTES)
                atomic_write(path, secret, mode=0o600)
            self._secret = secret
        return self._secret

    @staticmethod
    def _create_key(path: Path) -> bytes:
        """A new key, linked into place only if none exists: two processes starting together agree on one."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".hmac.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(_KEY_BYTES))
                f.flush()
                os.fsync(f.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            os.unlink(tmp)
        return path.read_bytes()

    def _tag(self, name: str, payload: bytes) -> str:
        """The tag binds the bytes to this key and file name: a valid file cannot be moved to another entry."""
        return hmac.new(self._mac_key(), f"{self.key}/{name}\n".encode() + payload, hashlib.sha256).hexdigest()

    def _split(self, name: str, raw: bytes) -> bytes | None:
        """The bundle inside a cache file whose first line is its valid tag; None when it is not."""
        tag, newline, payload = raw.partition(b"\n")
        if not newline or len(tag) != 64:
            return None
        return payload if hmac.compare_digest(tag, self._tag(name, payload).encode("ascii")) else None

    def _refuse(self, name: str, why: str) -> None:
        self.refused.append(f"{self.folder / name}: {why}")
        with contextlib.suppress(OSError):
            (self.folder / name).unlink()

    def compiled(self) -> bool:
        """Whether a process already compiled these sources (an authenticated stamp, not just a file)."""
        try:
            return self._split(_STAMP, (self.folder / _STAMP).read_bytes()) == b""
        except OSError:
            return False

    def mark_compiled(self) -> None:
        with contextlib.suppress(OSError):
            atomic_write(self.folder / _STAMP, self._tag(_STAMP, b"").encode("ascii") + b"\n", mode=0o600)

    def read(self, name: str) -> bytes | None:
        """The verified bytes of bundle `name`, or None (absent, refused, unreadable): what every worker of a
        RegoEngine loads its own copy from (load_bytes), so the file is read and checked once."""
        path = self.folder / name
        try:
            raw = path.read_bytes()
            payload = self._split(name, raw)
        except FileNotFoundError:
            return None
        except OSError as exc:
            self.refused.append(f"{path}: unreadable ({exc})")
            return None
        if payload is None:
            self._refuse(name, "its HMAC does not match (tampered, truncated or from another cache): refused, "
                               "rebuilt from the policies")
        return payload

    def load(self, name: str, interpreter: Any) -> Any | None:
        """The bundle `name` loaded into `interpreter`, or None (absent, refused, unreadable)."""
        payload = self.read(name)
        if payload is None:
            return None
        try:
            return load_bytes(interpreter, payload)
        except PolicyCacheError as exc:
            self._refuse(name, f"authentic but not loadable ({exc}): rebuilt from the policies")
            return None

    def save(self, name: str, interpreter: Any, bundle: Any) -> None:
        """Write the tag and `bundle` in one file, atomically: a reader sees the whole entry or none."""
        try:
            self.write(name, bundle_bytes(interpreter, bundle))
        except Exception:  # the cache is an optimisation: the next process compiles again
            return

    def write(self, name: str, payload: bytes) -> None:
        """Write the tag and `payload` (a bundle's bytes) in one file, atomically; never raises on disk errors."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write(self.folder / name, self._tag(name, payload).encode("ascii") + b"\n" + payload, mode=0o600)
        except OSError:  # the cache is an optimisation: the next process compiles again
            return


class PolicyCacheError(Exception):
    """A bundle's bytes that rego-cpp cannot load (or save)."""


def bundle_bytes(interpreter: Any, bundle: Any) -> bytes:
    """`bundle` in rego-cpp's binary format (rego-cpp writes bundles only to files: a private temporary one)."""
    import regopy

    fd, tmp = tempfile.mkstemp(prefix="agentfactory-policy-", suffix=".rbb")
    os.close(fd)
    try:
        interpreter.save_bundle(tmp, bundle, regopy.BundleFormat.Binary)
        return Path(tmp).read_bytes()
    except (regopy.RegoError, RuntimeError) as exc:
        raise PolicyCacheError(f"the bundle could not be saved ({exc})") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def load_bytes(interpreter: Any, payload: bytes) -> Any:
    """A bundle loaded into `interpreter` from `payload`, through a private (0600, O_EXCL) copy in the temporary
    folder (rego-cpp loads only from a path; the cache itself may be read-only): the bytes checked are the bytes
    loaded. Raises PolicyCacheError when rego-cpp refuses them."""
    import regopy

    try:
        fd, private = tempfile.mkstemp(prefix="agentfactory-policy-", suffix=".rbb")
    except OSError as exc:
        raise PolicyCacheError(f"no private copy to load it from ({exc})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        bundle = interpreter.load_bundle(private, regopy.BundleFormat.Binary)
        if not bundle.ok():
            raise PolicyCacheError("the bundle did not load")
        return bundle
    except (regopy.RegoError, RuntimeError, OSError) as exc:
        raise PolicyCacheError(str(exc)) from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(private)
