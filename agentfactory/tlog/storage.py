"""An append-only RFC 6962 Merkle tree in one SQLite file, durable once `append` returns.

Why SQLite: one file, transactions, and WAL with `synchronous=FULL` so that an acknowledged append survives a
power cut or SIGKILL; a log that forgets an entry it already answered for is a forked log. Each append inserts
its leaf and every perfect subtree it completes in one transaction, so a leaf never exists without its nodes.

Layout: `leaves(idx, leaf_hash, body, integrated_time, extra)` holds the entries (level 0 of the tree);
`nodes(level, idx, hash)` holds every complete perfect subtree above the leaves (level k, index i covers
leaves [i*2^k, (i+1)*2^k)); `meta` holds the schema version. Any root or proof is then O(log n) primary-key
lookups, never a rehash of the log.

Durability costs one fsync per transaction, so a service appends concurrent submissions together
(`append_batch`: one transaction, one fsync, per-entry duplicate answers) rather than one transaction each.

Concurrency: a `TreeStorage` serialises its own calls on one lock (safe to share between threads); appends
also run in `BEGIN IMMEDIATE` transactions, so several processes may write to the same file. Readers that
must not queue behind a writer open their own `TreeStorage` on the same path: WAL lets them read while a
write is in progress, and rows below a published size never change.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import NotFoundError, StoreError
from . import merkle

SCHEMA = "agentfactory.tlog/1"
BUSY_TIMEOUT_S = 5.0
SAMPLE = 256  # rows per table that a quick `check` recomputes

_SCHEMA_SQL = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE leaves (
    idx INTEGER PRIMARY KEY,
    leaf_hash BLOB NOT NULL UNIQUE,
    body BLOB NOT NULL,
    integrated_time INTEGER NOT NULL,
    extra TEXT
);
CREATE TABLE nodes (level INTEGER NOT NULL, idx INTEGER NOT NULL, hash BLOB NOT NULL, PRIMARY KEY (level, idx))
    WITHOUT ROWID;
"""


class DuplicateEntry(StoreError):
    """The entry is already in the log; `index` says where, so a caller can return the existing entry."""

    def __init__(self, index: int, leaf_hash: bytes) -> None:
        self.index = index
        self.leaf_hash = leaf_hash
        super().__init__(f"entry {leaf_hash.hex()} is already in the log at index {index}")


@dataclass(frozen=True)
class Placed:
    """Where one entry of a batch landed: its index, and whether it was logged before (then nothing was added)."""

    index: int
    leaf_hash: bytes
    existed: bool


@dataclass(frozen=True)
class BatchResult:
    """A committed batch: where each entry landed, and the tree it left (size and root, from the right edge).

    `nodes` holds the perfect subtrees {(level, index): hash} the batch touched: the right edge it started
    from, its new leaves and every node they completed. That is every hash an inclusion proof of one of its
    entries in the tree it left needs (a left sibling wholly before the batch is a node of the old right
    edge), so proofs for the batch's callers cost no reads (`inclusion_proofs(..., known=nodes)`)."""

    placed: list[Placed]
    size: int
    root: bytes
    nodes: dict[tuple[int, int], bytes] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class StoredLeaf:
    """One log entry as stored: its canonical body and what the log recorded about it."""

    index: int
    leaf_hash: bytes
    body: bytes
    integrated_time: int
    extra: dict[str, Any] | None


class TreeStorage:
    """The Merkle tree of one log, kept in the SQLite file at `path` (created when missing)."""

    def __init__(self, path: Path, *, busy_timeout_s: float = BUSY_TIMEOUT_S) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        # The right edge of the tree: (level, hash) of the perfect subtrees that make up the current size,
        # largest first. Appends pair a new leaf with these, so they need no reads. Valid for `_frontier_size`.
        self._frontier: list[tuple[int, bytes]] = []
        self._frontier_size = -1
        try:
            self._db = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None,
                                       check_same_thread=False)
        except sqlite3.Error as e:
            raise _read_only_error(self.path, e) or StoreError(
                f"{self.path}: cannot open the transparency log database: {e}") from e
        try:
            self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            self._init_schema()
            mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"{self.path}: SQLite refused WAL mode (got {mode!r})")
            self._db.execute("PRAGMA synchronous = FULL")
        except sqlite3.DatabaseError as e:
            self._db.close()
            raise _read_only_error(self.path, e) or StoreError(
                f"{self.path}: not a transparency log database ({e})") from e
        except BaseException:
            self._db.close()
            raise

    def _init_schema(self) -> None:
        tables = {row[0] for row in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables:
            with self._transaction():
                if self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:  # lost no race
                    for statement in _SCHEMA_SQL.split(";"):
                        if statement.strip():
                            self._db.execute(statement)
                    self._db.execute("INSERT INTO meta (key, value) VALUES ('schema', ?)", (SCHEMA,))
            tables = {row[0] for row in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"meta", "leaves", "nodes"} <= tables:
            raise StoreError(f"{self.path}: an SQLite database, but not a transparency log (tables: {sorted(tables)})")
        row = self._db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if row is None or row[0] != SCHEMA:
            found = row[0] if row else "none"
            raise StoreError(f"{self.path}: transparency log schema {found!r}, this version reads {SCHEMA!r}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> TreeStorage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE: take the write lock up front so the size we read cannot change under us."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            # Also when COMMIT itself fails (a full disk, an I/O error): SQLite may or may not have rolled the
            # transaction back then, and one left open would refuse every later BEGIN. A ROLLBACK of a
            # transaction that is already gone fails harmlessly.
            with suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            self._frontier_size = -1  # what we cached may include rows that were rolled back
            raise

    # -- writing -------------------------------------------------------------------------------------------

    def append(self, body: bytes, integrated_time: int, extra: dict[str, Any] | None = None) -> tuple[int, bytes]:
        """Add one entry; returns (index, leaf hash) once it is durable. DuplicateEntry if already logged."""
        return self.append_many([(body, integrated_time, extra)])[0]

    def append_many(self, items: Iterable[tuple[bytes, int, dict[str, Any] | None]]) -> list[tuple[int, bytes]]:
        """Add several entries in one transaction (one fsync): all of them, or none if any is a duplicate."""
        with self._lock:
            try:
                frontier, size, done = self._append_many(items)
            except sqlite3.OperationalError as e:  # a database that turned read-only after it was opened
                raise _read_only_error(self.path, e) or StoreError(f"{self.path}: cannot append: {e}") from e
            self._frontier, self._frontier_size = frontier, size
        return done

    def append_batch(self, items: Sequence[tuple[bytes, int, dict[str, Any] | None]],
                     derived: Callable[[sqlite3.Connection, BatchResult], None] | None = None) -> BatchResult:
        """Add every entry not already logged, in one transaction (one fsync); durable once it returns.

        This is group commit's storage half: a duplicate (of a logged entry, or of an earlier one in the same
        batch) is answered with where it already is instead of failing the whole batch, since the batch
        carries other callers' entries. Any other failure adds none of them. `derived`, when given, runs
        inside the transaction once the leaves are in, with the connection and the batch's result, to write
        rows of the caller's own tables (never leaves or nodes) that must commit with them and cost no fsync
        of their own; if it raises, nothing is added."""
        with self._lock:
            try:
                with self._transaction():
                    nodes: dict[tuple[int, int], bytes] = {}
                    frontier, size, placed = self._append(items, skip_duplicates=True, nodes=nodes)
                    result = BatchResult(placed, size, merkle.root_from_right_edge([h for _, h in frontier]), nodes)
                    if derived is not None:
                        derived(self._db, result)
            except sqlite3.OperationalError as e:  # a database that turned read-only after it was opened
                raise _read_only_error(self.path, e) or StoreError(f"{self.path}: cannot append: {e}") from e
            self._frontier, self._frontier_size = frontier, size
        return result

    def _append_many(
        self, items: Iterable[tuple[bytes, int, dict[str, Any] | None]]
    ) -> tuple[list[tuple[int, bytes]], int, list[tuple[int, bytes]]]:
        with self._transaction():
            frontier, size, placed = self._append(items, skip_duplicates=False)
        return frontier, size, [(p.index, p.leaf_hash) for p in placed]

    def _append(
        self, items: Iterable[tuple[bytes, int, dict[str, Any] | None]], *, skip_duplicates: bool,
        nodes: dict[tuple[int, int], bytes] | None = None,
    ) -> tuple[list[tuple[int, bytes]], int, list[Placed]]:
        """Insert `items` inside the caller's transaction; (new right edge, new size, where each landed).
        `nodes`, when given, collects the perfect subtrees touched (see `BatchResult.nodes`)."""
        size = self._size()
        if size != self._frontier_size:
            self._load_frontier(size)
        frontier = list(self._frontier)
        known: dict[tuple[int, int], bytes] = {} if nodes is None else nodes
        for (start, level), (_, h) in zip(_decompose(size), frontier, strict=True):
            known[(level, start >> level)] = h
        placed: list[Placed] = []
        completed: list[tuple[int, int, bytes]] = []  # the perfect subtrees the new leaves complete, inserted at once
        for body, integrated_time, extra in items:
            h = merkle.leaf_hash(body)
            extra_text = None if extra is None else json.dumps(extra, sort_keys=True, separators=(",", ":"))
            try:
                self._db.execute("INSERT INTO leaves (idx, leaf_hash, body, integrated_time, extra) "
                                 "VALUES (?, ?, ?, ?, ?)", (size, h, body, int(integrated_time), extra_text))
            except sqlite3.IntegrityError:  # SQLite undoes the statement only; the transaction goes on
                row = self._db.execute("SELECT idx FROM leaves WHERE leaf_hash = ?", (h,)).fetchone()
                if row is None:
                    raise
                if not skip_duplicates:
                    raise DuplicateEntry(row[0], h) from None
                placed.append(Placed(int(row[0]), h, existed=True))
                continue
            placed.append(Placed(size, h, existed=False))
            known[(0, size)] = h
            # Pair the new leaf with the right edge: each merge completes one perfect subtree.
            level, node, idx = 0, h, size
            while idx & 1:
                left_level, left = frontier.pop()
                assert left_level == level, "right edge out of step with the tree size"
                node = merkle.node_hash(left, node)
                level, idx = level + 1, idx >> 1
                completed.append((level, idx, node))
                known[(level, idx)] = node
            frontier.append((level, node))
            size += 1
        self._db.executemany("INSERT INTO nodes (level, idx, hash) VALUES (?, ?, ?)", completed)
        return frontier, size, placed

    def _load_frontier(self, size: int) -> None:
        self._frontier = [(level, self._perfect(level, start >> level)) for start, level in _decompose(size)]
        self._frontier_size = size

    # -- reading -------------------------------------------------------------------------------------------

    def _size(self) -> int:
        row = self._db.execute("SELECT max(idx) FROM leaves").fetchone()
        return 0 if row[0] is None else int(row[0]) + 1

    def size(self) -> int:
        """How many entries the log holds."""
        with self._lock:
            return self._size()

    def _perfect(self, level: int, idx: int) -> bytes:
        if level == 0:
            row = self._db.execute("SELECT leaf_hash FROM leaves WHERE idx = ?", (idx,)).fetchone()
        else:
            row = self._db.execute("SELECT hash FROM nodes WHERE level = ? AND idx = ?", (level, idx)).fetchone()
        if row is None:
            raise StoreError(f"{self.path}: nodes(level={level}, idx={idx}) is missing: the database is damaged")
        return bytes(row[0])

    def _oracle(self, known: dict[tuple[int, int], bytes] | None = None) -> merkle.Subtree:
        """subtree(start, end) from perfect nodes (`known` ones first, then stored ones); memoised, since proofs
        ask for overlapping ranges."""
        memo: dict[tuple[int, int], bytes] = {}
        given = known or {}

        def subtree(start: int, end: int) -> bytes:
            key = (start, end)
            if key not in memo:
                n = end - start
                if n & (n - 1) == 0 and start % n == 0:
                    level = n.bit_length() - 1
                    node = given.get((level, start >> level))
                    memo[key] = node if node is not None else self._perfect(level, start >> level)
                else:
                    mid = start + merkle.split_point(n)
                    memo[key] = merkle.node_hash(subtree(start, mid), subtree(mid, end))
            return memo[key]

        return subtree

    def _check_size(self, size: int) -> None:
        current = self._size()
        if not 0 <= size <= current:
            raise NotFoundError(f"{self.path}: no tree of size {size}: the log holds {current} entries")

    def root(self, size: int | None = None) -> bytes:
        """The root hash of the first `size` entries (default: all), from O(log n) stored nodes."""
        with self._lock:
            if size is None:
                size = self._size()
            self._check_size(size)
            return merkle.EMPTY_ROOT if size == 0 else self._oracle()(0, size)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """RFC 9162 inclusion proof of entry `index` in the tree of `size` entries."""
        with self._lock:
            self._check_size(size)
            return merkle.inclusion_path(index, size, self._oracle())

    def inclusion_proofs(self, indices: Sequence[int], size: int,
                         known: dict[tuple[int, int], bytes] | None = None) -> list[list[bytes]]:
        """Inclusion proofs of several entries in the tree of `size`, sharing look-ups: a group commit's entries
        sit side by side, so their paths share most subtrees. `known`: a committed batch's `BatchResult.nodes`
        for the tree of `size` it left; proofs of its entries then read nothing (any node it lacks is read)."""
        if known is not None:
            subtree = self._oracle(known)
            with self._lock:  # held only when a node is missing from `known` and must be read
                return [merkle.inclusion_path(index, size, subtree) for index in indices]
        with self._lock:
            self._check_size(size)
            subtree = self._oracle()
            return [merkle.inclusion_path(index, size, subtree) for index in indices]

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """RFC 9162 consistency proof that the tree of `new_size` extends the tree of `old_size`."""
        with self._lock:
            self._check_size(new_size)
            return merkle.consistency_path(old_size, new_size, self._oracle())

    def leaf(self, index: int) -> StoredLeaf:
        """The entry at `index`; NotFoundError past the end (or outside SQLite's int64)."""
        if not 0 <= index < 2**63:
            raise NotFoundError(f"{self.path}: no entry at index {index}")
        with self._lock:
            row = self._db.execute("SELECT idx, leaf_hash, body, integrated_time, extra FROM leaves WHERE idx = ?",
                                   (index,)).fetchone()
        if row is None:
            raise NotFoundError(f"{self.path}: no entry at index {index}")
        return _leaf(row)

    def iter_leaves(self, first: int = 0, batch: int = 2000) -> Iterator[StoredLeaf]:
        """Every entry from `first` on, in index order, read in batches (the lock is not held in between)."""
        nxt = max(first, 0)
        while True:
            with self._lock:
                rows = self._db.execute("SELECT idx, leaf_hash, body, integrated_time, extra FROM leaves "
                                        "WHERE idx >= ? ORDER BY idx LIMIT ?", (nxt, batch)).fetchall()
            if not rows:
                return
            for row in rows:
                yield _leaf(row)
            nxt = int(rows[-1][0]) + 1

    def leaf_by_hash(self, leaf_hash: bytes) -> StoredLeaf | None:
        """The entry whose leaf hash is `leaf_hash` (Rekor's entry UUID), or None."""
        with self._lock:
            row = self._db.execute("SELECT idx, leaf_hash, body, integrated_time, extra FROM leaves "
                                   "WHERE leaf_hash = ?", (leaf_hash,)).fetchone()
        return None if row is None else _leaf(row)

    # -- audit ---------------------------------------------------------------------------------------------

    def check(self, full: bool = False) -> list[str]:
        """Recompute stored hashes (all of them when `full`, else a sample and the right edge); list mismatches.

        SQLite cannot stop someone with write access from editing a row; this is how such an edit is found.
        An empty list means every recomputed hash matched.
        """
        with self._lock, self._read_snapshot():
            return self._check(full)

    @contextmanager
    def _read_snapshot(self) -> Iterator[None]:
        self._db.execute("BEGIN")
        try:
            yield
        finally:
            self._db.execute("ROLLBACK")

    def _check(self, full: bool) -> list[str]:
        problems: list[str] = []
        size = self._size()
        count, low = self._db.execute("SELECT count(*), min(idx) FROM leaves").fetchone()
        if count != size or (size and low != 0):
            problems.append(f"leaves: {count} rows for indices {low}..{size - 1}: entries are missing")
        sample = None if full else _sample(size)
        for idx, h, body in self._rows("SELECT idx, leaf_hash, body FROM leaves", sample):
            if merkle.leaf_hash(bytes(body)) != bytes(h):
                problems.append(f"leaves(idx={idx}) leaf_hash does not match its body: the database was modified")
        level = 1
        while size >> level:
            want = size >> level
            got = self._db.execute("SELECT count(*) FROM nodes WHERE level = ?", (level,)).fetchone()[0]
            if got != want:
                problems.append(f"nodes(level={level}): {got} rows, expected {want}: the database is damaged")
            sample = None if full else _sample(want) | {want - 1}
            rows = self._rows(f"SELECT idx, hash FROM nodes WHERE level = {int(level)}", sample)
            for idx, h in rows:
                try:
                    left, right = self._perfect(level - 1, 2 * idx), self._perfect(level - 1, 2 * idx + 1)
                except StoreError as e:
                    problems.append(str(e))
                    continue
                if merkle.node_hash(left, right) != bytes(h):
                    problems.append(f"nodes(level={level}, idx={idx}) does not match its children: "
                                    "the database was modified")
            level += 1
        extra = self._db.execute("SELECT count(*) FROM nodes WHERE level < 1 OR level >= ?", (level,)).fetchone()[0]
        if extra:
            problems.append(f"nodes: {extra} rows at levels this tree of size {size} cannot have")
        return problems

    def _rows(self, sql: str, sample: set[int] | None) -> Iterable[tuple[Any, ...]]:
        if sample is None:
            return self._db.execute(sql)
        joiner = " AND " if " WHERE " in sql else " WHERE "
        marks = ",".join("?" * len(sample))
        return self._db.execute(f"{sql}{joiner}idx IN ({marks})", sorted(sample))


def _read_only_error(path: Path, error: sqlite3.Error) -> StoreError | None:
    """A StoreError naming `path` as read-only when that is why SQLite failed, else None.

    SQLite says "unable to open database file" or "attempt to write a readonly database" when the database
    or its folder cannot be written (WAL needs its -wal and -shm files beside the database), which a user
    would otherwise read as a corrupt log."""
    folder = path.parent
    writable_folder = os.access(folder, os.W_OK) if folder.exists() else True
    writable_file = os.access(path, os.W_OK) if path.exists() else True
    if writable_folder and writable_file and "readonly" not in str(error).lower():
        return None
    where = path if not writable_file else folder
    return StoreError(f"{path}: the transparency log is read-only ({where} cannot be written; SQLite said: "
                      f"{error}): give a writable AGENTFACTORY_HOME (or `pipeline run --tlog none`)")


def _decompose(size: int) -> list[tuple[int, int]]:
    """The perfect subtrees (start, level) that make up a tree of `size` leaves, largest first."""
    out, start = [], 0
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1:
            out.append((start, level))
            start += 1 << level
    return out


def _sample(n: int) -> set[int]:
    return set(range(n)) if n <= SAMPLE else set(random.sample(range(n), SAMPLE))


def _leaf(row: tuple[Any, ...]) -> StoredLeaf:
    idx, h, body, integrated_time, extra = row
    decoded = None if extra is None else json.loads(extra)
    return StoredLeaf(int(idx), bytes(h), bytes(body), int(integrated_time), decoded)
