"""The embedded log: a Rekor v1 transparency log in one folder, with no network service.

The folder holds `tree.db` (the SQLite Merkle tree, `storage.TreeStorage`) and `log-key.pem` (the log's
ECDSA P-256 key, `note.LogKey`). Entries are checked (shape and signature) before they are logged, so the
log never vouches for a signature that does not verify.

The search index (artifact sha256 and public-key fingerprint -> entry) is a `search_index` table in the same
`tree.db`, written on a connection of our own right after the leaf commits. It is derived data, never the
source of truth: what it needs beyond the canonical body (the in-toto subject digests of a dsse payload,
which the body does not keep) is stored with the leaf in its `extra` column, in the leaf's own transaction.
At open, and whenever a write fell behind, the rows of any leaf past the indexed size are rebuilt from the
leaves, so a crash between the two commits loses nothing. Index commits skip the fsync for that reason.

Thread safety: one lock serialises writers; reads go through a second `TreeStorage` handle on the same file
so that a GET never queues behind an append's fsync (WAL readers see every committed row, and rows below a
published size never change).
"""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ..config import home
from ..errors import InputError, NotFoundError, StoreError
from ..fsutil import atomic_write
from ..intoto import parse_statement
from . import merkle
from .base import Added, EntryRejected, LogError, LogInfo, TransparencyLog
from .entries import (
    InclusionProof,
    LogEntry,
    ProposedEntry,
    canonical,
    load_public_key,
    parse_proposed_entry,
    sign_set,
    verify_entry_signature,
)
from .note import DEFAULT_LOG_NAME, Checkpoint, LogKey
from .storage import BUSY_TIMEOUT_S, DuplicateEntry, StoredLeaf, TreeStorage

TREE_FILE = "tree.db"
KEY_FILE = "log-key.pem"
PUBLIC_KEY_FILE = "log-public-key.pem"
MAX_SEARCH_RESULTS = 10_000  # a bound on one index answer; Rekor sets none, but a server must

_INDEX_SQL = (
    "CREATE TABLE IF NOT EXISTS search_index (key TEXT NOT NULL, idx INTEGER NOT NULL, PRIMARY KEY (key, idx)) "
    "WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS search_index_size (one INTEGER PRIMARY KEY CHECK (one = 1), size INTEGER NOT NULL)",
)


def default_tlog_dir() -> Path:
    """`$AGENTFACTORY_HOME/tlog`: where the embedded log lives unless told otherwise."""
    return home() / "tlog"


def key_fingerprint(public_key_pem: bytes, where: str = "publicKey") -> str:
    """Hex SHA-256 of the DER SubjectPublicKeyInfo: one index key per signer, whatever the PEM spelling."""
    key = load_public_key(public_key_pem, where)
    return hashlib.sha256(key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)).hexdigest()


def normalise_sha256(value: str) -> str:
    """`sha256:<hex>` or bare hex (as rekor-cli sends it) to `sha256:<hex>`; InputError otherwise."""
    algo, _, hexdigest = value.strip().lower().rpartition(":")
    if algo not in ("", "sha256") or len(hexdigest) != 64 or any(c not in "0123456789abcdef" for c in hexdigest):
        raise InputError("hash", f"{value!r} is not a sha256 digest (sha256:<64 hex digits>)")
    return f"sha256:{hexdigest}"


def _subjects(entry: ProposedEntry) -> list[str]:
    """The in-toto subject digests of a dsse payload; nothing when it is not a statement (fail soft)."""
    if entry.kind != "dsse" or entry.envelope is None:
        return []
    try:
        return sorted({digest for _, digest in parse_statement(entry.envelope.payload, "dsse payload").subjects})
    except InputError:
        return []


def index_keys(body: bytes, extra: dict[str, Any] | None) -> set[str]:
    """What a stored leaf is found by: artifact hashes as `sha256:<hex>`, signers as `pk:<fingerprint>`.

    Bodies this log wrote always parse; anything else indexes as nothing rather than blocking the open.
    """
    keys: set[str] = set()
    try:
        doc = json.loads(body)
        spec = doc["spec"]
        if doc.get("kind") == "hashedrekord":
            keys.add("sha256:" + spec["data"]["hash"]["value"])
            pems = [spec["signature"]["publicKey"]["content"]]
        else:
            keys.add("sha256:" + spec["payloadHash"]["value"])
            pems = [s["verifier"] for s in spec["signatures"]]
        for pem in pems:
            keys.add("pk:" + key_fingerprint(base64.b64decode(pem)))
    except (ValueError, KeyError, TypeError, InputError):
        pass
    for subject in (extra or {}).get("subjects", []):
        if isinstance(subject, str):
            keys.add(subject)
    return keys


class _Index:
    """The search_index table on its own connection (see the module docstring for why it may lag)."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        self._db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        self._db.execute("PRAGMA synchronous = NORMAL")  # rebuildable: no fsync of its own
        for statement in _INDEX_SQL:
            self._db.execute(statement)
        row = self._db.execute("SELECT size FROM search_index_size").fetchone()
        self.size = 0 if row is None else int(row[0])  # leaves [0, size) are indexed

    def add(self, rows: Iterable[tuple[int, Iterable[str]]]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                top = self.size - 1
                for idx, keys in rows:
                    self._db.executemany("INSERT OR IGNORE INTO search_index (key, idx) VALUES (?, ?)",
                                         [(k, idx) for k in keys])
                    top = max(top, idx)
                self._db.execute("INSERT OR REPLACE INTO search_index_size (one, size) VALUES (1, ?)", (top + 1,))
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            self.size = top + 1

    def find(self, key: str) -> set[int]:
        with self._lock:
            rows = self._db.execute("SELECT idx FROM search_index WHERE key = ? ORDER BY idx LIMIT ?",
                                    (key, MAX_SEARCH_RESULTS)).fetchall()
        return {int(r[0]) for r in rows}

    def close(self) -> None:
        with self._lock:
            self._db.close()


class EmbeddedLog(TransparencyLog):
    """A Rekor v1 log kept in `folder` (default `$AGENTFACTORY_HOME/tlog`), created on first use."""

    def __init__(self, folder: Path | None = None, *, name: str = DEFAULT_LOG_NAME) -> None:
        self.folder = Path(folder) if folder is not None else default_tlog_dir()
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as e:
            raise StoreError(f"{self.folder}: cannot create the transparency log folder ({e.strerror})") from e
        self.url = f"file://{self.folder}"
        self.key = LogKey.load_or_create(self.folder / KEY_FILE, name)
        public = self.folder / PUBLIC_KEY_FILE  # what verifiers pin; KEY_FILE is the private key
        if not public.is_file() or public.read_bytes() != self.key.public_pem():
            atomic_write(public, self.key.public_pem(), mode=0o644)
        self._writer = TreeStorage(self.folder / TREE_FILE)
        self._reader = TreeStorage(self.folder / TREE_FILE)
        self._index = _Index(self.folder / TREE_FILE)
        self._write_lock = threading.Lock()
        self._sth_lock = threading.Lock()
        self._sth: tuple[int, bytes, str] | None = None  # (size, root, signed note): signing once per size
        with self._write_lock:
            self._catch_up_index()

    @property
    def log_id(self) -> str:
        return self.key.log_id

    @property
    def tree_id(self) -> str:
        """A decimal tree id, as Rekor's API spells it: the first 60 bits of the log id."""
        return str(int(self.log_id[:15], 16))

    def close(self) -> None:
        self._index.close()
        self._reader.close()
        self._writer.close()

    def __enter__(self) -> EmbeddedLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing -------------------------------------------------------------------------------------------

    def _catch_up_index(self) -> None:
        """Index every leaf the index has not seen (after a crash between the leaf and index commits)."""
        size = self._reader.size()
        while self._index.size < size:
            batch = []
            for idx in range(self._index.size, min(size, self._index.size + 1000)):
                leaf = self._reader.leaf(idx)
                batch.append((idx, index_keys(leaf.body, leaf.extra)))
            self._index.add(batch)

    def add(self, proposed: dict[str, Any]) -> Added:
        try:
            entry = parse_proposed_entry(proposed, "proposed entry")
            verify_entry_signature(entry, "proposed entry")
            body = canonical(entry.body())
        except InputError as e:
            raise EntryRejected(str(e)) from None
        except ValueError as e:  # canonical() refuses what JSON cannot carry exactly
            raise EntryRejected(f"proposed entry: {e}") from None
        existing = self._reader.leaf_by_hash(merkle.leaf_hash(body))
        if existing is not None:
            return Added(self._entry(existing), existed=True)
        subjects = _subjects(entry)
        extra = {"subjects": subjects} if subjects else None
        with self._write_lock:
            try:
                index, _ = self._writer.append(body, int(time.time()), extra)
            except DuplicateEntry as dup:  # another writer got there between our look-up and the append
                return Added(self._entry(self._reader.leaf(dup.index)), existed=True)
            try:
                if self._index.size == index:
                    self._index.add([(index, index_keys(body, extra))])
                else:
                    self._catch_up_index()
            except (sqlite3.Error, StoreError):
                pass  # the leaf is durable; the next add or the next open rebuilds the missing rows
        return Added(self._entry(self._reader.leaf(index)))

    # -- reading -------------------------------------------------------------------------------------------

    def _signed_tree_head(self, size: int) -> tuple[bytes, str]:
        """The root and a freshly signed checkpoint for `size` (signed once per size, then reused)."""
        with self._sth_lock:
            if self._sth is not None and self._sth[0] == size:
                return self._sth[1], self._sth[2]
        root = self._reader.root(size)
        note = Checkpoint(origin=self.key.origin, size=size, root_hash=root).sign(self.key)
        with self._sth_lock:
            if self._sth is None or self._sth[0] <= size:
                self._sth = (size, root, note)
        return root, note

    def _entry(self, leaf: StoredLeaf) -> LogEntry:
        size = self._reader.size()
        root, note = self._signed_tree_head(size)
        path = self._reader.inclusion_proof(leaf.index, size)
        proof = InclusionProof(leaf.index, root.hex(), size, tuple(h.hex() for h in path), note)
        body_b64 = base64.b64encode(leaf.body).decode()
        sig = sign_set(self.key, body_b64, leaf.integrated_time, self.log_id, leaf.index)
        return LogEntry(leaf.body, leaf.integrated_time, self.log_id, leaf.index, sig, proof)

    def entry(self, uuid: str) -> LogEntry:
        try:
            leaf_hash = bytes.fromhex(uuid[-64:]) if len(uuid) in (64, 80) else b""
        except ValueError:
            leaf_hash = b""
        leaf = self._reader.leaf_by_hash(leaf_hash) if len(leaf_hash) == 32 else None
        if leaf is None:
            raise NotFoundError(f"no entry with UUID {uuid} in the transparency log")
        return self._entry(leaf)

    def entry_at(self, index: int) -> LogEntry:
        if index < 0:
            raise NotFoundError(f"no entry at index {index}: indices start at 0")
        return self._entry(self._reader.leaf(index))

    def search(self, *, sha256: str | None = None, public_key_pem: bytes | None = None) -> list[str]:
        """UUIDs of entries about `sha256` and (when both are given) by `public_key_pem`, in log order."""
        if sha256 is None and public_key_pem is None:
            raise LogError("search needs a hash, a public key or both")
        found: set[int] | None = None
        try:
            if sha256 is not None:
                found = self._index.find(normalise_sha256(sha256))
            if public_key_pem is not None:
                by_key = self._index.find("pk:" + key_fingerprint(public_key_pem))
                found = by_key if found is None else found & by_key
        except InputError as e:
            raise EntryRejected(str(e)) from None
        return [self._reader.leaf(i).leaf_hash.hex() for i in sorted(found or ())]

    def root_at(self, size: int) -> bytes:
        return self._signed_tree_head(size)[0] if size == self._reader.size() else self._reader.root(size)

    def info(self) -> LogInfo:
        size = self._reader.size()
        root, note = self._signed_tree_head(size)
        return LogInfo(tree_size=size, root_hash=root.hex(), signed_tree_head=note, tree_id=self.tree_id)

    def consistency(self, first_size: int, last_size: int) -> list[str]:
        if not 0 <= first_size <= last_size:
            raise LogError(f"no consistency proof from size {first_size} to {last_size}: need 0 <= first <= last")
        return [h.hex() for h in self._reader.consistency_proof(first_size, last_size)]

    def public_key_pem(self) -> bytes:
        return self.key.public_pem()

    def check(self, full: bool = False) -> list[str]:
        """The storage audit (`TreeStorage.check`), for `agentfactory tlog info` and tests."""
        return self._reader.check(full)


__all__ = ["EmbeddedLog", "default_tlog_dir", "index_keys", "key_fingerprint", "normalise_sha256"]
