"""Open the transparency log a command names: `embedded`, `none`, or a Rekor v1 URL with its pinned key."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from .base import TransparencyLog


def open_tlog(url: str, key: Path | None) -> tuple[TransparencyLog | None, bytes | None]:
    """The log named by --tlog, and its public key as the pipeline pins it."""
    if url == "none":
        return None, None
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
