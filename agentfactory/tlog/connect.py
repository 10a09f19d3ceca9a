"""Open the transparency log a command names: `embedded`, `none`, or a Rekor v1 URL with its pinned key."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .base import Added, LogInfo, TransparencyLog, default_tlog_dir

if TYPE_CHECKING:
    from .entries import LogEntry


def open_tlog(url: str, key: Path | None, *, defer: bool = False) -> tuple[TransparencyLog | None, bytes | None]:
    """The log named by --tlog, and its public key as the pipeline pins it (None: ask the log itself, which
    for the embedded log is the key it signs with).

    `defer`: the embedded log without a pinned key is opened at its first use (`DeferredLog`), so a run
    that logs nothing (every template unchanged) neither imports nor opens it; its public key is then the
    log's own, read when asked. A pinned key is still checked against the log at once, and so is a log
    whose folder cannot be written (a read-only home is a usage error before anything is built, as it
    always was)."""
    if url == "none":
        return None, None
    if url == "embedded" and key is None and defer and _writable(default_tlog_dir()):
        return DeferredLog(_open_embedded), None
    if url == "embedded":
        from agentfactory.tlog.log import EmbeddedLog

        log = EmbeddedLog()
        if key is not None and not _same_log_key(key.read_bytes()[:16384], log.public_key_pem()):
            log.close()
            raise ConfigError(f"--tlog-key {key}: the embedded log ({log.folder}) signs with another key (the log "
                              "key was replaced, or the pinned key is another log's)")
        return log, log.public_key_pem() if key is None else key.read_bytes()[:16384]
    if key is None:
        raise ConfigError(f"--tlog {url}: give the log's public key with --tlog-key (pinned, never fetched from the "
                          "log itself)")
    from agentfactory.tlog.client import RekorClient

    return RekorClient(url), key.read_bytes()[:16384]


def _same_log_key(pinned: bytes, actual: bytes) -> bool:
    from .note import load_log_public_key, log_id_of

    return log_id_of(load_log_public_key(pinned, "--tlog-key")) == log_id_of(load_log_public_key(actual, "log key"))


def _writable(folder: Path) -> bool:
    """Whether `folder` (or, before it exists, the nearest folder above it) can be written now."""
    target = folder
    while not target.exists() and target.parent != target:
        target = target.parent
    return os.access(target, os.W_OK)


def _open_embedded() -> TransparencyLog:
    from agentfactory.tlog.log import EmbeddedLog

    return EmbeddedLog()


class DeferredLog(TransparencyLog):
    """A log opened on first use, once, by `opener` (a failure to open is raised to that use, and again to
    the next one: nothing is cached but an opened log)."""

    def __init__(self, opener: Callable[[], TransparencyLog]) -> None:
        self._opener = opener
        self._opened: TransparencyLog | None = None
        self._lock = threading.Lock()

    def _log(self) -> TransparencyLog:
        with self._lock:
            if self._opened is None:
                self._opened = self._opener()
            return self._opened

    @property
    def url(self) -> str:  # type: ignore[override]  # read-only: the opened log's own
        return str(self._log().url)

    @property
    def opened(self) -> bool:
        return self._opened is not None

    def add(self, proposed: dict[str, Any]) -> Added:
        return self._log().add(proposed)

    def entry(self, uuid: str) -> LogEntry:
        return self._log().entry(uuid)

    def entry_at(self, index: int) -> LogEntry:
        return self._log().entry_at(index)

    def search(self, *, sha256: str | None = None, public_key_pem: bytes | None = None) -> list[str]:
        return self._log().search(sha256=sha256, public_key_pem=public_key_pem)

    def info(self) -> LogInfo:
        return self._log().info()

    def consistency(self, first_size: int, last_size: int) -> list[str]:
        return self._log().consistency(first_size, last_size)

    def public_key_pem(self) -> bytes:
        return self._log().public_key_pem()

    def close(self) -> None:
        with self._lock:
            opened, self._opened = self._opened, None
        closer = getattr(opened, "close", None)
        if closer is not None:
            closer()
