"""The transparency-log port: what the pipeline, the verifier and the audit need from a Rekor v1 log.

Two backends speak it: the embedded log (`log.py`: SQLite tree, local log key; also served over
HTTP by `agentfactory tlog serve`) and the Rekor client (`client.py`: httpx against any Rekor v1 API,
the public instance included). Everything that comes back is checked by the caller against the log's
public key (inclusion proof, checkpoint, signed entry timestamp), never trusted because of where it
came from.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import home
from ..errors import AgentFactoryError
from .entries import LogEntry


class LogError(AgentFactoryError):
    """The log refused or could not answer (the message says which, and why)."""


class EntryRejected(LogError):
    """The log refused a proposed entry (malformed, unknown kind, a signature that does not verify): 400."""


@dataclass(frozen=True)
class Added:
    """The result of an add: the entry as logged, and whether it was already there (Rekor's 409)."""

    entry: LogEntry
    existed: bool = False


@dataclass(frozen=True)
class LogInfo:
    """GET /api/v1/log: the tree's current size and root, and its signed checkpoint."""

    tree_size: int
    root_hash: str  # hex
    signed_tree_head: str  # the checkpoint as a signed note
    tree_id: str = ""


class TransparencyLog(abc.ABC):
    """A Rekor v1 transparency log."""

    url: str

    @abc.abstractmethod
    def add(self, proposed: dict[str, Any]) -> Added:
        """Submit a proposed entry (hashedrekord or dsse v0.0.1, as Rekor's POST /api/v1/log/entries takes).

        Idempotent: a duplicate returns the existing entry with `existed=True`.
        EntryRejected when the log refuses it.
        """

    @abc.abstractmethod
    def entry(self, uuid: str) -> LogEntry:
        """GET /api/v1/log/entries/{uuid}, with a fresh inclusion proof; NotFoundError when absent."""

    @abc.abstractmethod
    def entry_at(self, index: int) -> LogEntry:
        """GET /api/v1/log/entries?logIndex=N; NotFoundError when out of range."""

    @abc.abstractmethod
    def search(self, *, sha256: str | None = None, public_key_pem: bytes | None = None) -> list[str]:
        """POST /api/v1/index/retrieve: the UUIDs of entries about an artifact hash or by a public key."""

    @abc.abstractmethod
    def info(self) -> LogInfo:
        """GET /api/v1/log."""

    @abc.abstractmethod
    def consistency(self, first_size: int, last_size: int) -> list[str]:
        """GET /api/v1/log/proof: the consistency proof (hex hashes) from first_size to last_size."""

    @abc.abstractmethod
    def public_key_pem(self) -> bytes:
        """GET /api/v1/log/publicKey: the log's public key (the caller pins it; it is not trusted from here)."""


def default_tlog_dir() -> Path:
    """`$AGENTFACTORY_HOME/tlog`: where the embedded log lives unless told otherwise."""
    return home() / "tlog"
