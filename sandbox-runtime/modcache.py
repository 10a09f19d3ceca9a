"""Compiled modules: in memory by (digest, engine settings), and on disk authenticated by HMAC.

A serialized module is native code: deserializing one an attacker wrote is running the attacker's
code. So only modules compiled here from verified bytes are written, each entry is bound by an
HMAC-SHA256 under a node-local key to its digest and engine settings, and the HMAC is checked
before `Module.deserialize` ever sees the bytes. An entry that fails the check is a security
violation: it is deleted, counted and the module is compiled again from the verified bytes.
An entry made under another node key (the key is regenerated with the pod) is simply stale.
An entry is opened without following links and without blocking (a FIFO planted at its path
would otherwise hang the load) and must be a regular file. Compiling is the pool's job
(compilepool.py): bounded, and a refusal is remembered per digest. Components (Python agents) are
cached the same way, under the settings key of the component engines (`component=True`): the bytes
say which kind a digest is, and the key keeps the two kinds of compiled code apart.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import os
import secrets
import stat
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import wasmtime

from agentfactory.errors import ConfigError
from agentfactory.fsutil import atomic_write
from agentfactory.metrics import MODULE_CACHE, WASI_VIOLATIONS

from .compilepool import CompilePool
from .engine import Engines, kind_settings_key
from .sandbox import SandboxRefusal

MAGIC = b"AFCWASM1"
KEY_BYTES = 32
MAX_ENTRY_BYTES = 512 * 1024 * 1024
HEADER = len(MAGIC) + 32 + 32  # magic, key id, mac


@dataclass(frozen=True)
class CacheEvent:
    """Something the caller should audit: a rejected entry."""

    path: Path
    reason: str


def load_node_key(path: Path) -> bytes:
    """The node's cache key: read it, or create it (0600, atomically) on first start."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_bytes(KEY_BYTES)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first
            return load_node_key(path)
        with os.fdopen(fd, "wb") as f:
            f.write(key)
        return key
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the node key: {exc.strerror}") from None
    if len(data) != KEY_BYTES:
        raise ConfigError(f"{path}: the node key must be exactly {KEY_BYTES} bytes, not {len(data)}")
    if path.stat().st_mode & 0o077:
        raise ConfigError(f"{path}: the node key is readable by other users; chmod 600 it")
    return data


class ModuleCache:
    """Compiled modules for verified bytes; `disk` None keeps them only in memory."""

    def __init__(self, engines: Engines, disk: Path | None = None, key: bytes | None = None,
                 max_in_memory: int = 256, on_event: Callable[[CacheEvent], None] | None = None,
                 pool: CompilePool | None = None) -> None:
        if disk is not None and key is None:
            raise ConfigError("an on-disk module cache needs a node key")
        self.engines = engines
        self.disk = disk
        self._key = key or b""
        self._key_id = hashlib.sha256(b"agentfactory-node-key:" + self._key).digest()
        self._memory: OrderedDict[tuple[str, str], Any] = OrderedDict()  # wasmtime.Module or Component
        self._max = max_in_memory
        self._lock = threading.Lock()
        self._on_event = on_event or (lambda _e: None)
        self.pool = pool or CompilePool(engines)
        if disk is not None:
            disk.mkdir(parents=True, exist_ok=True)

    def module(self, digest: str, verified_wasm: bytes, fuel: bool, component: bool = False) -> tuple[Any, str]:
        """The compiled module (or component) of `digest` and where it came from: memory, disk or compiled.

        The caller passes bytes the verifier accepted for `digest`; nothing else is compiled. This
        compiles on the caller's thread: the node's service asks `cached` and compiles in the
        background instead (warmpool.py); `agentfactory run` compiles here.
        """
        found = self.cached(digest, fuel, component)
        if found is not None:
            return found
        module = self.pool.compile(digest, kind_settings_key(fuel, component), verified_wasm, fuel, component)
        self.keep(digest, fuel, module, component)
        return module, "compiled"

    def cached(self, digest: str, fuel: bool, component: bool = False) -> tuple[Any, str] | None:
        """The module of `digest` from memory or the authenticated disk cache, or None: never compiles."""
        settings = kind_settings_key(fuel, component)
        key = (digest, settings)
        with self._lock:
            cached = self._memory.get(key)
            if cached is not None:
                self._memory.move_to_end(key)
                MODULE_CACHE.labels(source="memory").inc()
                return cached, "memory"
        if self.disk is None:
            return None
        module = self._load(digest, settings, fuel, component)
        if module is None:
            return None
        MODULE_CACHE.labels(source="disk").inc()
        self._remember(key, module)
        return module, "disk"

    def has(self, digest: str, fuel: bool, component: bool = False) -> bool:
        """Whether the module of `digest` is in memory now (no disk read, no count)."""
        with self._lock:
            return (digest, kind_settings_key(fuel, component)) in self._memory

    def keep(self, digest: str, fuel: bool, module: Any, component: bool = False) -> None:
        """Keep a module this node compiled from verified bytes: in memory, and on disk when there is one."""
        settings = kind_settings_key(fuel, component)
        if self.disk is not None:
            self._store(digest, settings, module)
        MODULE_CACHE.labels(source="compiled").inc()
        self._remember((digest, settings), module)

    def failure(self, digest: str, fuel: bool, component: bool = False) -> SandboxRefusal | None:
        """The remembered compile refusal of `digest` (the negative cache), if any."""
        return self.pool.failure(digest, kind_settings_key(fuel, component))

    def _remember(self, key: tuple[str, str], module: Any) -> None:
        with self._lock:
            self._memory[key] = module
            self._memory.move_to_end(key)
            while len(self._memory) > self._max:
                self._memory.popitem(last=False)

    def forget(self, digest: str) -> None:
        self.pool.forget(digest)
        with self._lock:
            for k in [k for k in self._memory if k[0] == digest]:
                del self._memory[k]

    # -- disk ------------------------------------------------------------------------------------
    def path(self, digest: str, settings: str) -> Path:
        assert self.disk is not None
        return self.disk / f"{digest.split(':', 1)[1]}-{settings}.cwasm"

    def _mac(self, digest: str, settings: str, payload: bytes) -> bytes:
        return hmac.new(self._key, MAGIC + digest.encode() + b"\0" + settings.encode() + b"\0" + payload,
                        hashlib.sha256).digest()

    def _load(self, digest: str, settings: str, fuel: bool, component: bool = False) -> Any:
        path = self.path(digest, settings)
        try:
            data = _read_regular(path)
        except FileNotFoundError:
            return None
        except _NotRegular as exc:
            return self._reject(path, str(exc))
        except OSError as exc:
            return self._reject(path, f"unreadable: {exc.strerror}")
        if len(data) < HEADER or not data.startswith(MAGIC):
            return self._reject(path, "not a cache entry (bad header)")
        key_id, mac, payload = data[len(MAGIC):len(MAGIC) + 32], data[len(MAGIC) + 32:HEADER], data[HEADER:]
        if not hmac.compare_digest(key_id, self._key_id):
            return None  # made under another node key: stale, recompile and overwrite
        if not hmac.compare_digest(mac, self._mac(digest, settings, payload)):
            return self._reject(path, "the HMAC does not match: the entry was modified or swapped in")
        try:
            if component:
                from wasmtime.component import Component

                return Component.deserialize(self.engines.get(fuel, component=True), payload)
            return wasmtime.Module.deserialize(self.engines.get(fuel), payload)
        except wasmtime.WasmtimeError:
            return None  # authentic but from another wasmtime build: recompile

    def _reject(self, path: Path, why: str) -> None:
        """Count, delete and report a bad entry; None, so the caller compiles again."""
        WASI_VIOLATIONS.labels(reason="cache-tampered").inc()
        with contextlib.suppress(OSError):
            path.unlink()
        self._on_event(CacheEvent(path, f"compiled-module cache entry {path.name} rejected: {why}; "
                                        "it was deleted and the module compiled again from verified bytes"))
        return None

    def _store(self, digest: str, settings: str, module: Any) -> None:
        payload = bytes(module.serialize())
        with contextlib.suppress(OSError):  # a full or read-only disk costs a recompile next start, nothing else
            atomic_write(self.path(digest, settings),
                         MAGIC + self._key_id + self._mac(digest, settings, payload) + payload, mode=0o600)


class _NotRegular(OSError):
    """A cache path that is a link, a FIFO, a device or too large: never read."""


def _read_regular(path: Path) -> bytes:
    """The bytes of a regular file at `path`, opened without following links and without blocking."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _NotRegular("a symbolic link, not a regular file") from None
        raise
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _NotRegular("not a regular file (a FIFO, device or folder)")
        if st.st_size > MAX_ENTRY_BYTES:
            raise _NotRegular(f"{st.st_size} bytes, larger than {MAX_ENTRY_BYTES}")
        data = f.read(MAX_ENTRY_BYTES + 1)
    if len(data) > MAX_ENTRY_BYTES:
        raise _NotRegular(f"larger than {MAX_ENTRY_BYTES} bytes")
    return data
