"""The embedded log: a Rekor v1 transparency log in one folder, with no network service.

The folder holds `tree.db` (the SQLite Merkle tree, `storage.TreeStorage`) and `log-key.pem` (the log's
ECDSA P-256 key, `note.LogKey`). Entries are checked (shape and signature) before they are logged, so the
log never vouches for a signature that does not verify.

The search index (artifact sha256 and public-key fingerprint -> entry) is a `search_index` table in the same
`tree.db`. It is derived data, never the source of truth: what it needs beyond the canonical body (the
in-toto subject digests of a dsse payload, which the body does not keep) is stored with the leaf in its
`extra` column. Its rows are written in the leaves' own transaction (a savepoint: a failing index write never
costs the leaves); when that could not happen, they are rebuilt from the leaves after the commit, and at
every open for any leaf past the indexed size, so nothing is lost to a crash or a failed write.

Group commit: durability costs one fsync per transaction, so concurrent adds share one. An add checks its
entry (shape, signature) and queues it; a caller that finds no commit running leads one: it takes everything
queued (up to MAX_BATCH) into one transaction (`TreeStorage.append_batch`) with the batch's index rows and one
checkpoint signed for the tree the batch leaves, hands the lead to whoever queued meanwhile, then computes its
batch's inclusion proofs (together: their paths overlap) and wakes its callers, who sign their own SETs.
No add returns before the COMMIT (WAL, synchronous=FULL: the fsync) that holds its entry, so an acknowledged
entry survives SIGKILL or power loss; a failed commit fails every add in it, none of which was acknowledged.
A caller may make the answers while the fsync runs (`commit(..., early)`, `answer_early`: the server's event
loop does, so the CPU works while the disk syncs); `answer` hands such an answer out only when it says what
the commit made durable (the entry, its index and time, the tree and checkpoint), and never for a failed one.

Thread safety: the queue is the only shared write state (one small lock); reads go through a second
`TreeStorage` handle on the same file so that a GET never queues behind an append's fsync (WAL readers see
every committed row, and rows below a published size never change).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import json
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ..errors import InputError, NotFoundError, StoreError
from ..fsutil import atomic_write
from ..intoto import parse_statement
from . import merkle, note
from .base import Added, EntryRejected, LogError, LogInfo, TransparencyLog, default_tlog_dir
from .entries import (
    InclusionProof,
    LogEntry,
    ProposedEntry,
    load_public_key,
    parse_proposed_entry,
    sign_set,
    verify_entry_signature,
)
from .note import DEFAULT_LOG_NAME, MAX_TREE_SIZE, Checkpoint, LogKey
from .storage import BUSY_TIMEOUT_S, BatchResult, Placed, StoredLeaf, TreeStorage

TREE_FILE = "tree.db"
KEY_FILE = "log-key.pem"
PUBLIC_KEY_FILE = "log-public-key.pem"
MAX_SEARCH_RESULTS = 100_000  # the most UUIDs one HTTP index answer carries; more is a 422, never a cut
SAMPLE = 256  # leaves whose index rows a quick `check` compares
MAX_BATCH = 256  # entries one group commit carries at most: bounds a transaction's size, not its callers

_INDEX_SQL = (
    "CREATE TABLE IF NOT EXISTS search_index (key TEXT NOT NULL, idx INTEGER NOT NULL, PRIMARY KEY (key, idx)) "
    "WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS search_index_size (one INTEGER PRIMARY KEY CHECK (one = 1), size INTEGER NOT NULL)",
    # The largest checkpoint this log has signed: a tree found smaller, or with another root at that size,
    # was truncated or rewritten under the log (`EmbeddedLog.check`). Written with the index, in the leaves'
    # transaction (or just after it, catching up): it can lag the durable tree, never run ahead of it.
    "CREATE TABLE IF NOT EXISTS latest_checkpoint (one INTEGER PRIMARY KEY CHECK (one = 1), size INTEGER NOT NULL, "
    "note TEXT NOT NULL)",
)


@functools.lru_cache(maxsize=1024)  # a log has few signers; parsing a PEM costs more than the rest of indexing
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


def _entry_keys(entry: ProposedEntry, subjects: list[str]) -> set[str]:
    """`index_keys` of the entry's canonical body and extra, from the parsed entry (no second parse)."""
    if entry.kind == "hashedrekord":
        artifact = entry.digest_hex
    else:
        assert entry.envelope is not None, "a parsed dsse entry has its envelope"
        artifact = hashlib.sha256(entry.envelope.payload).hexdigest()
    return {"sha256:" + artifact, "pk:" + key_fingerprint(entry.public_key_pem), *subjects}


def _held_lock() -> threading.Lock:
    lock = threading.Lock()
    lock.acquire()
    return lock


@dataclass(eq=False)
class PreparedEntry:
    """A checked entry (`EmbeddedLog.prepare`) on its way through a group commit (`EmbeddedLog.commit`); the
    commit's leader fills in where it landed, or why it did not, for `EmbeddedLog.answer`."""

    body: bytes
    extra: dict[str, Any] | None
    keys: set[str] | None = None  # its search index keys (`index_keys` of body and extra), when known already
    wake: threading.Lock = field(default_factory=_held_lock)  # released once: answered, or handed the lead
    done: bool = False
    placed: Placed | None = None
    integrated_time: int = 0
    head: tuple[int, bytes, str] | None = None  # (size, root, signed checkpoint) of the tree it was committed in
    path: list[bytes] | None = None  # its inclusion proof in that tree
    error: BaseException | None = None
    # Where the commit's open transaction placed it, before the fsync (`EmbeddedLog.commit`'s `early`), and the
    # answer made from that meanwhile (`answer_early`): `answer` returns it only once the commit that holds
    # the entry has made it durable at exactly that place.
    tentative: _Tentative | None = None
    early: Added | None = None


def _answers(early: Added, pending: PreparedEntry, index: int, head: tuple[int, bytes, str]) -> bool:
    """Whether `early` says what the commit made durable: `pending`'s body, at `index`, at its integrated time,
    proved in the tree of `head` under its checkpoint. Checked on the answer itself, not on what it was made from."""
    entry, proof = early.entry, early.entry.inclusion_proof
    return (not early.existed and proof is not None and entry.body == pending.body and entry.log_index == index
            and proof.log_index == index and entry.integrated_time == pending.integrated_time
            and (proof.tree_size, proof.root_hash, proof.checkpoint) == (head[0], head[1].hex(), head[2]))


@dataclass(frozen=True)
class _Tentative:
    """An entry's place in a batch whose transaction has not committed yet: nothing here is durable."""

    placed: Placed
    integrated_time: int
    head: tuple[int, bytes, str]
    nodes: dict[tuple[int, int], bytes]


def _write_index(db: sqlite3.Connection, size: int, rows: Iterable[tuple[int, Iterable[str]]],
                 checkpoint: tuple[int, str] | None) -> int:
    """Insert index rows past `size` (and the checkpoint, if larger than the one kept); the new indexed size."""
    top = size - 1
    pairs: list[tuple[str, int]] = []
    for idx, keys in rows:
        pairs.extend((k, idx) for k in keys)
        top = max(top, idx)
    db.executemany("INSERT OR IGNORE INTO search_index (key, idx) VALUES (?, ?)", pairs)  # one call per batch
    db.execute("INSERT OR REPLACE INTO search_index_size (one, size) VALUES (1, ?)", (top + 1,))
    if checkpoint is not None:
        db.execute("INSERT INTO latest_checkpoint (one, size, note) VALUES (1, ?, ?) ON CONFLICT (one) DO UPDATE "
                   "SET size = excluded.size, note = excluded.note WHERE excluded.size > latest_checkpoint.size",
                   checkpoint)
    return top + 1


class _Index:
    """The search_index table (see the module docstring for when it may lag the leaves, and why that is safe)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        self._db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        self._db.execute("PRAGMA synchronous = NORMAL")  # rebuildable: no fsync of its own
        for statement in _INDEX_SQL:
            self._db.execute(statement)
        row = self._db.execute("SELECT size FROM search_index_size").fetchone()
        self.size = 0 if row is None else int(row[0])  # leaves [0, size) are indexed

    def add(self, rows: Iterable[tuple[int, Iterable[str]]], checkpoint: tuple[int, str] | None = None) -> None:
        """Index `rows` (and remember `checkpoint`) in a transaction of our own: catching up with the leaves."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                size = _write_index(self._db, self.size, rows, checkpoint)
                self._db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):  # as TreeStorage._transaction: a failed COMMIT too
                    self._db.execute("ROLLBACK")
                raise
            self.size = size

    def stage(self, db: sqlite3.Connection, rows: list[tuple[int, set[str]]],
              checkpoint: tuple[int, str]) -> int | None:
        """Write `rows` and `checkpoint` inside the leaves' own transaction on `db` (a savepoint, so a failing
        index write never costs the leaves); the indexed size to publish once it commits, or None when the
        index is behind (or the write failed) and must catch up from the leaves after the commit."""
        if not rows or rows[0][0] != self.size:
            return None
        db.execute("SAVEPOINT search_index")
        try:
            size = _write_index(db, self.size, rows, checkpoint)
        except sqlite3.Error:
            db.execute("ROLLBACK TO search_index")
            db.execute("RELEASE search_index")
            return None
        db.execute("RELEASE search_index")
        return size

    def find(self, key: str) -> set[int]:
        """Every indexed entry found by `key`: the whole answer (a cap would hide entries from an audit)."""
        with self._lock:
            rows = self._db.execute("SELECT idx FROM search_index WHERE key = ?", (key,)).fetchall()
        return {int(r[0]) for r in rows}

    def rows_by_entry(self) -> Generator[tuple[int, set[str]], None, None]:
        """Every stored row grouped by entry, in index order (streamed: a full `check` of a big log must not
        hold the whole index in memory). Reads on a connection of its own, so writers are not held up."""
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, check_same_thread=False)
        try:
            current, keys = -1, set[str]()
            for key, idx in db.execute("SELECT key, idx FROM search_index ORDER BY idx"):
                if idx != current:
                    if current >= 0:
                        yield current, keys
                    current, keys = int(idx), set()
                keys.add(str(key))
            if current >= 0:
                yield current, keys
        finally:
            db.close()

    def has(self, key: str, idx: int) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM search_index WHERE key = ? AND idx = ?", (key, idx)).fetchone() \
                is not None

    def latest_checkpoint(self) -> tuple[int, str] | None:
        with self._lock:
            row = self._db.execute("SELECT size, note FROM latest_checkpoint").fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _export_public_key(path: Path, pem: bytes) -> None:
    """Write the log's public key once, for `trust init --tlog-key` to copy into a trust policy.

    It is an export, never a trust anchor: audits and verifiers pin the key their trust policy lists. It is
    not rewritten: a private key that no longer matches it was replaced, and the log refuses to open.
    """
    if not path.is_file():
        atomic_write(path, pem, mode=0o644)
        return
    if path.read_bytes() != pem:
        raise StoreError(f"{path.parent}: {KEY_FILE} does not match {PUBLIC_KEY_FILE}, the public key this log "
                         "first published: the log key was replaced; restore it (or move the folder aside to start "
                         "a new log, and update every trust policy)")


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
        _export_public_key(self.folder / PUBLIC_KEY_FILE, self.key.public_pem())
        self._writer = TreeStorage(self.folder / TREE_FILE)
        self._reader = TreeStorage(self.folder / TREE_FILE)
        self._index = _Index(self.folder / TREE_FILE)
        self._sth_lock = threading.Lock()
        self._sth: tuple[int, bytes, str] | None = None  # (size, root, signed note): signing once per size
        self._queue_lock = threading.Lock()  # guards the two below
        self._queue: list[PreparedEntry] = []
        self._committing = False  # a leader is committing; what queues meanwhile waits for it to hand over
        self.commits = 0  # group commits (transactions, fsyncs) that appended entries; for benchmarks
        self.committed = 0  # entries those commits appended
        self._catch_up_index()

    @property
    def log_id(self) -> str:
        return self.key.log_id

    @property
    def waiting(self) -> int:
        """Adds queued for the next group commit (not yet durable, so not yet answered)."""
        with self._queue_lock:
            return len(self._queue)

    @property
    def committing(self) -> bool:
        """Whether a group commit is under way: adds arriving now queue for the next one."""
        with self._queue_lock:
            return self._committing

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
        pending = self.prepare(proposed)
        existing = self._reader.leaf_by_hash(merkle.leaf_hash(pending.body))
        if existing is not None:
            return Added(self._entry(existing), existed=True)
        self.commit([pending])
        return self.answer(pending)

    def prepare(self, proposed: dict[str, Any]) -> PreparedEntry:
        """The CPU half of an add, with no I/O and no lock: check the entry (shape, signature), make its
        canonical body and index keys. EntryRejected when the log refuses it."""
        try:
            entry = parse_proposed_entry(proposed, "proposed entry")
            verify_entry_signature(entry, "proposed entry")
            body = entry.canonical_body()
        except InputError as e:
            raise EntryRejected(str(e)) from None
        except ValueError as e:  # canonical() refuses what JSON cannot carry exactly
            raise EntryRejected(f"proposed entry: {e}") from None
        subjects = _subjects(entry)
        return PreparedEntry(body, {"subjects": subjects} if subjects else None, _entry_keys(entry, subjects))

    def answer(self, pending: PreparedEntry) -> Added:
        """The answer to a committed add: the entry with its proof, checkpoint and a fresh SET; the commit's
        error (StoreError or LogError) when it failed. Reads only for an entry that was already logged."""
        if pending.error is not None:
            err = pending.error
            if isinstance(err, StoreError):
                raise StoreError(str(err)) from err  # a fresh exception per caller: they share the commit's
            raise LogError(f"{self.folder}: the entry was not logged: {type(err).__name__}: {err}") from err
        placed, head = pending.placed, pending.head
        if placed is None or head is None:
            raise LogError(f"{self.folder}: answer() asked about an entry no commit has finished")
        if placed.existed:  # earlier in the same batch, or logged between our look-up and the commit
            return Added(self._entry(self._reader.leaf(placed.index)), existed=True)
        if pending.early is not None and _answers(pending.early, pending, placed.index, head):
            return pending.early  # made during the fsync, for exactly the place and tree the commit made durable
        leaf = StoredLeaf(placed.index, placed.leaf_hash, pending.body, pending.integrated_time, pending.extra)
        return Added(self._entry(leaf, head, pending.path))

    def commit(self, pendings: list[PreparedEntry], early: Callable[[list[PreparedEntry]], None] | None = None
               ) -> None:
        """Return once group commits made every one of `pendings` durable or failed it (see the module
        docstring); `answer` then says which. Several at once cost one call (a server's event loop hands over
        what arrived during the last commit): they queue together and go into the same transaction.

        A caller that finds no commit running leads one at once; others wait on their own lock (one wake-up
        each, no herd). A leader commits its batch, hands the lead to the first entry queued meanwhile (whose
        commit carries everything queued by then), and only then prepares its batch's proofs, so the next
        fsync overlaps that work. Nobody is answered before the fsync that holds their entry. The queue is
        first in, first out, so a caller's entries are taken in order, and only the first of them not yet
        committed can be handed the lead.

        `early`, when given, is called by the leader with its batch once the transaction holds it and before
        the commit's fsync, each entry's `tentative` place set: the caller may make the answers meanwhile
        (`answer_early`, in another thread: the fsync releases the GIL), so the CPU does that work while the
        disk syncs. Nothing is durable yet; `answer` hands out an early answer only once the commit made the
        entry durable at that place. It must return at once and never raise (an error is ignored). A
        leader given `early` leaves the inclusion proofs to `answer_early` (or to `answer`, reading them)."""
        if not pendings:
            return
        with self._queue_lock:
            self._queue.extend(pendings)
            lead = not self._committing  # nothing committing: the queue was empty, so ours is first in it
            self._committing = True
        for pending in pendings:
            if not lead:
                pending.wake.acquire()
                if pending.done:
                    continue
            lead = False
            self._lead(pending, early)

    def _lead(self, pending: PreparedEntry, early: Callable[[list[PreparedEntry]], None] | None = None) -> None:
        """Commit everything queued from `pending` (first in the queue) on, up to MAX_BATCH, and answer it."""
        with self._queue_lock:  # a leader's own entry is first in the queue: handed the lead, or found none
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
        assert batch[0] is pending, "a group commit leader is not first in its own batch"
        try:
            try:
                result, head = self._commit(batch, early)
            finally:
                self._hand_over()
            self._prepare_answers(batch, result, head, proofs=early is None)
        except Exception as e:  # every caller in the batch hears of it (the leader is just one of them)
            self._fail(batch, e)
        except BaseException as e:
            self._fail(batch, e)
            raise
        finally:
            for p in batch:
                p.done = True
                if p is not pending:
                    p.wake.release()

    def _hand_over(self) -> None:
        """Let the first caller queued behind this commit lead the next one (or note that nobody waits)."""
        with self._queue_lock:
            successor = self._queue[0] if self._queue else None
            self._committing = successor is not None
        if successor is not None:
            successor.wake.release()

    @staticmethod
    def _fail(batch: list[PreparedEntry], error: BaseException) -> None:
        for p in batch:
            if p.head is None:
                p.error = error

    def _commit(self, batch: list[PreparedEntry], early: Callable[[list[PreparedEntry]], None] | None = None
                ) -> tuple[BatchResult, tuple[int, bytes, str]]:
        """One transaction and one fsync for `batch`: its leaves and nodes, their index rows, and the checkpoint
        signed for the tree it leaves (remembered as the latest, so a later truncation is seen)."""
        now = int(time.time())
        staged: list[tuple[tuple[int, bytes, str], int | None]] = []

        def derived(db: sqlite3.Connection, result: BatchResult) -> None:
            note = Checkpoint(origin=self.key.origin, size=result.size, root_hash=result.root).sign(self.key)
            rows = [(placed.index, index_keys(p.body, p.extra) if p.keys is None else p.keys)
                    for p, placed in zip(batch, result.placed, strict=True) if not placed.existed]
            staged.append(((result.size, result.root, note), self._index.stage(db, rows, (result.size, note))))
            if early is not None:
                head = (result.size, result.root, note)
                for p, placed in zip(batch, result.placed, strict=True):
                    p.tentative = _Tentative(placed, now, head, result.nodes)
                with contextlib.suppress(Exception):  # an optimisation only: the answers are then made after it
                    early(batch)

        result = self._writer.append_batch([(p.body, now, p.extra) for p in batch], derived)
        head, indexed = staged[-1]
        new = sum(not placed.existed for placed in result.placed)
        if indexed is not None:
            self._index.size = indexed
        elif new:
            try:  # the index was behind (an earlier write failed, or another process appended): rebuild it
                self._catch_up_index()
                self._index.add([], (head[0], head[2]))
            except (sqlite3.Error, StoreError):
                pass  # the leaves are durable; the next commit or the next open rebuilds the missing rows
        with self._sth_lock:
            if self._sth is None or self._sth[0] <= head[0]:
                self._sth = head
        self.commits += 1 if new else 0
        self.committed += new
        for p, placed in zip(batch, result.placed, strict=True):
            p.placed, p.integrated_time = placed, now
        return result, head

    def _prepare_answers(self, batch: list[PreparedEntry], result: BatchResult, head: tuple[int, bytes, str],
                         proofs: bool = True) -> None:
        """Every new entry's inclusion proof in the batch's tree, computed together (their paths overlap) from the
        nodes the commit already holds in memory (`BatchResult.nodes`): no reads."""
        if not proofs:
            for p in batch:
                p.head = head
            return
        fresh = [(p, placed.index) for p, placed in zip(batch, result.placed, strict=True) if not placed.existed]
        paths = self._reader.inclusion_proofs([index for _, index in fresh], head[0], known=result.nodes)
        for (p, _), path in zip(fresh, paths, strict=True):
            p.path = path
        for p in batch:
            p.head = head

    def answer_early(self, batch: list[PreparedEntry]) -> None:
        """Make the answers of `batch`'s new entries from their `tentative` places (see `commit`'s `early`): the
        inclusion proofs together, from the nodes the transaction holds in memory, and each SET. Safe to call while
        the commit runs or after it: nothing is handed out until `answer` finds the commit made the entry durable
        at the same place. An entry it cannot answer early (a duplicate, a node not in memory) is left to `answer`."""
        fresh = [(p, p.tentative) for p in batch
                 if p.tentative is not None and not p.tentative.placed.existed and p.early is None]
        if not fresh:
            return
        head, nodes = fresh[0][1].head, fresh[0][1].nodes
        if any(t.head != head for _, t in fresh):
            return  # not one transaction's batch: left to `answer`
        try:
            paths = self._reader.inclusion_proofs([t.placed.index for _, t in fresh], head[0], known=nodes)
        except (StoreError, sqlite3.Error):  # a node the batch did not touch and the commit has not made visible
            return
        for (p, t), path in zip(fresh, paths, strict=True):
            leaf = StoredLeaf(t.placed.index, t.placed.leaf_hash, p.body, t.integrated_time, p.extra)
            p.early = Added(self._entry(leaf, t.head, path))

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

    def _entry(self, leaf: StoredLeaf, head: tuple[int, bytes, str] | None = None,
               path: list[bytes] | None = None) -> LogEntry:
        """The entry with a proof against `head` (size, root, checkpoint; `path` when already computed), or
        against the current tree."""
        if head is None:
            size = self._reader.size()
            root, note = self._signed_tree_head(size)
        else:
            size, root, note = head
        if path is None:
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
        if not 0 <= index <= MAX_TREE_SIZE:
            raise NotFoundError(f"no entry at index {index}: indices run from 0 to {MAX_TREE_SIZE}")
        return self._entry(self._reader.leaf(index))

    def indices_signed_by(self, fingerprints: set[str], first: int = 0) -> dict[int, str]:
        """Every entry from `first` on signed by a key whose fingerprint is in `fingerprints` (index -> UUID),
        read from the leaves themselves (not the search index, derived data an attacker may have edited)."""
        found: dict[int, str] = {}
        seen: dict[str, str] = {}  # base64 PEM -> fingerprint: a log has few signers
        for leaf in self._reader.iter_leaves(first):
            for pem_b64 in _signer_b64(leaf.body):
                if pem_b64 not in seen:
                    try:
                        seen[pem_b64] = key_fingerprint(base64.b64decode(pem_b64))
                    except (ValueError, InputError):
                        seen[pem_b64] = ""
                if seen[pem_b64] in fingerprints:
                    found[leaf.index] = leaf.leaf_hash.hex()
        return found

    def search(self, *, sha256: str | None = None, public_key_pem: bytes | None = None) -> list[str]:
        """UUIDs of every entry about `sha256` and (when both are given) by `public_key_pem`, in log order.

        Answered from the search index, which `check` compares with the leaves; audits that must not miss an
        entry read the leaves too (`indices_signed_by`)."""
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
        """The storage audit: every stored hash (`TreeStorage.check`), the search index against the leaves,
        and the tree against the largest checkpoint this log signed. For `tlog info --check`, `audit verify`."""
        problems = self._reader.check(full)
        problems += self.check_index(full)
        problems += self.check_against(self.latest_checkpoint(), "the latest checkpoint this log signed")
        return problems

    def latest_checkpoint(self) -> Checkpoint | None:
        """The largest checkpoint this log remembers signing (signature checked with its own key), or None."""
        stored = self._index.latest_checkpoint()
        if stored is None:
            return None
        try:
            found = note.verify(stored[1], self.key.public_key, None, "latest_checkpoint")
            if found.origin not in (self.key.origin, self.key.legacy_origin):
                raise InputError("latest_checkpoint", f"wrong origin {found.origin!r}; expected {self.key.origin!r}")
            return found
        except InputError:
            return Checkpoint(origin="?", size=-1, root_hash=b"")  # check_against names it

    def check_against(self, checkpoint: Checkpoint | None, what: str) -> list[str]:
        """Problems when the stored tree is smaller than `checkpoint` or has another root at its size: the
        tail was truncated or the history rewritten under the log (its own hashes may still be consistent)."""
        if checkpoint is None:
            return []
        if checkpoint.size < 0:
            return [f"{what}: the stored checkpoint does not verify with this log's key: the database was modified"]
        size = self._reader.size()
        if size < checkpoint.size:
            return [f"the tree holds {size} entries but {what} covers {checkpoint.size}: entries "
                    f"{size}..{checkpoint.size - 1} were removed (the log was truncated)"]
        if self._reader.root(checkpoint.size) != checkpoint.root_hash:
            return [f"the tree's first {checkpoint.size} entries do not have the root {what} signed: the history "
                    "was rewritten"]
        return []

    def check_index_range(self, first: int, last: int) -> list[str]:
        """Problems with the search index rows of entries first..last-1 (the monitor checks what it sees added)."""
        problems: list[str] = []
        for leaf in self._reader.iter_leaves(first):
            if leaf.index >= last:
                break
            missing = {k for k in index_keys(leaf.body, leaf.extra) if not self._index.has(k, leaf.index)}
            problems += _index_mismatch(leaf.index, missing, set())
        return problems

    def check_index(self, full: bool = False) -> list[str]:
        """Problems when the search index does not find an entry by what it should be found by (rebuilt from
        the leaves and compared: all of them when `full`, else a sample and the newest)."""
        size = self._reader.size()
        problems: list[str] = []
        if self._index.size != size:
            problems.append(f"search_index: covers {self._index.size} entries, the tree holds {size}")
        if full:
            rows = self._index.rows_by_entry()
            pending = next(rows, None)
            for leaf in self._reader.iter_leaves(0):
                while pending is not None and pending[0] < leaf.index:  # rows for an index with no leaf
                    problems.append(f"search_index: rows for entry {pending[0]}, which the tree does not hold")
                    pending = next(rows, None)
                got: set[str] = set()
                if pending is not None and pending[0] == leaf.index:
                    got, pending = pending[1], next(rows, None)
                problems += _index_mismatch(leaf.index, index_keys(leaf.body, leaf.extra), got)
                if len(problems) > 1000:
                    break
            while pending is not None and len(problems) <= 1000:
                problems.append(f"search_index: rows for entry {pending[0]}, which the tree does not hold")
                pending = next(rows, None)
            rows.close()
        else:
            picks = set(random.sample(range(size), SAMPLE)) if size > SAMPLE else set(range(size))
            picks |= set(range(max(0, size - SAMPLE), size))
            for i in sorted(picks):
                leaf = self._reader.leaf(i)
                missing = {k for k in index_keys(leaf.body, leaf.extra) if not self._index.has(k, i)}
                problems += _index_mismatch(i, missing, set())
        return problems[:1000]


def _signer_b64(body: bytes) -> list[str]:
    """The base64 PEM keys an entry body names as signers (none when it does not parse)."""
    try:
        doc = json.loads(body)
        spec = doc["spec"]
        if doc.get("kind") == "hashedrekord":
            return [str(spec["signature"]["publicKey"]["content"])]
        return [str(s["verifier"]) for s in spec["signatures"]]
    except (ValueError, KeyError, TypeError):
        return []


def _index_mismatch(idx: int, want: set[str], got: set[str]) -> list[str]:
    problems = [f"search_index: entry {idx} cannot be found by {k}: its row was removed (the index was modified)"
                for k in sorted(want - got)]
    problems += [f"search_index: entry {idx} is found by {k}, which it is not about (the index was modified)"
                 for k in sorted(got - want)]
    return problems


__all__ = ["EmbeddedLog", "PreparedEntry", "default_tlog_dir", "index_keys", "key_fingerprint", "normalise_sha256"]
