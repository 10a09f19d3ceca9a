"""TreeStorage: roots and proofs against the reference, persistence, tampering, crashes, and sigstore's verifier."""

from __future__ import annotations

import base64
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from agentfactory.errors import NotFoundError, StoreError
from agentfactory.tlog import merkle
from agentfactory.tlog.storage import DuplicateEntry, TreeStorage

ROOT = Path(__file__).resolve().parents[2]


def _fill(store: TreeStorage, n: int, start: int = 0) -> list[bytes]:
    return [h for _, h in store.append_many((b"entry-%d" % i, 1_700_000_000 + i, {"i": i})
                                            for i in range(start, start + n))]


def test_roots_and_proofs_match_reference(tmp_path: Path) -> None:
    store = TreeStorage(tmp_path / "log.db")
    assert store.size() == 0
    assert store.root() == merkle.EMPTY_ROOT
    hashes: list[bytes] = []
    for i in range(21):
        index, h = store.append(b"entry-%d" % i, 1_700_000_000 + i, {"i": i} if i % 2 else None)
        assert (index, h) == (i, merkle.leaf_hash(b"entry-%d" % i))
        hashes.append(h)
    hashes += _fill(store, 20, start=21)
    assert store.size() == 41
    for size in range(0, 42):
        assert store.root(size) == merkle.root_from_leaves(hashes[:size]), size
    for size in range(1, 42):
        root = store.root(size)
        for index in range(size):
            merkle.verify_inclusion(hashes[index], index, size, store.inclusion_proof(index, size), root)
        for old in range(1, size + 1):
            merkle.verify_consistency(old, size, store.root(old), root, store.consistency_proof(old, size))
    leaf = store.leaf(3)
    assert (leaf.index, leaf.body, leaf.integrated_time, leaf.extra) == (3, b"entry-3", 1_700_000_003, {"i": 3})
    assert store.leaf(4).extra is None
    assert store.leaf_by_hash(hashes[7]) == store.leaf(7)
    assert store.leaf_by_hash(b"\x00" * 32) is None
    assert store.check(full=True) == []
    assert store.check() == []


def test_sizes_beyond_the_log_are_refused(tmp_path: Path) -> None:
    store = TreeStorage(tmp_path / "log.db")
    _fill(store, 5)
    with pytest.raises(NotFoundError, match="holds 5 entries"):
        store.root(6)
    with pytest.raises(NotFoundError, match="holds 5 entries"):
        store.inclusion_proof(0, 6)
    with pytest.raises(NotFoundError, match="holds 5 entries"):
        store.consistency_proof(1, 6)
    with pytest.raises(NotFoundError, match="no entry at index 5"):
        store.leaf(5)
    with pytest.raises(merkle.ProofError, match="empty tree"):
        store.consistency_proof(0, 5)


def test_restart_keeps_size_and_root(tmp_path: Path) -> None:
    with TreeStorage(tmp_path / "log.db") as store:
        hashes = _fill(store, 13)
        root = store.root()
    with TreeStorage(tmp_path / "log.db") as store:
        assert (store.size(), store.root()) == (13, root)
        hashes += _fill(store, 6, start=13)  # the right edge is rebuilt from the stored nodes
        assert store.root() == merkle.root_from_leaves(hashes)
        assert store.check(full=True) == []


def test_two_handles_on_one_file_stay_consistent(tmp_path: Path) -> None:
    a, b = TreeStorage(tmp_path / "log.db"), TreeStorage(tmp_path / "log.db")
    hashes = _fill(a, 3)
    hashes += _fill(b, 4, start=3)
    hashes += _fill(a, 2, start=7)  # a's cached right edge is stale and must be reloaded
    assert a.root() == b.root() == merkle.root_from_leaves(hashes)
    assert a.check(full=True) == []


def test_duplicate_is_refused_and_batch_rolled_back(tmp_path: Path) -> None:
    store = TreeStorage(tmp_path / "log.db")
    _fill(store, 4)
    root = store.root()
    with pytest.raises(DuplicateEntry, match="at index 2") as caught:
        store.append(b"entry-2", 1, None)
    assert caught.value.index == 2
    with pytest.raises(DuplicateEntry):
        store.append_many([(b"new-1", 1, None), (b"new-2", 1, None), (b"new-1", 1, None)])
    assert (store.size(), store.root()) == (4, root)
    assert store.append(b"new-1", 1, None)[0] == 4  # the failed batch left nothing behind
    assert store.check(full=True) == []


@pytest.mark.parametrize("sql", [
    "UPDATE nodes SET hash = zeroblob(32) WHERE level = 2 AND idx = 1",
    "UPDATE leaves SET body = X'00' WHERE idx = 5",
    "UPDATE leaves SET leaf_hash = zeroblob(32) WHERE idx = 6",
    "DELETE FROM nodes WHERE level = 1 AND idx = 3",
])
def test_tampered_rows_are_detected(tmp_path: Path, sql: str) -> None:
    with TreeStorage(tmp_path / "log.db") as store:
        _fill(store, 16)
        assert store.check(full=True) == []
    with sqlite3.connect(tmp_path / "log.db") as db:
        db.execute(sql)
    with TreeStorage(tmp_path / "log.db") as store:
        full = store.check(full=True)
        assert full and all("damaged" in p or "modified" in p for p in full), full
        assert store.check() == full  # 16 leaves: the sample is the whole tree


def test_tampered_node_message_names_it(tmp_path: Path) -> None:
    with TreeStorage(tmp_path / "log.db") as store:
        _fill(store, 64)
    with sqlite3.connect(tmp_path / "log.db") as db:
        db.execute("UPDATE nodes SET hash = zeroblob(32) WHERE level = 3 AND idx = 2")
    with TreeStorage(tmp_path / "log.db") as store:
        problems = store.check(full=True)
    assert "nodes(level=3, idx=2) does not match its children: the database was modified" in problems
    assert any(p.startswith("nodes(level=4, idx=1)") for p in problems)  # its parent no longer matches either


def test_not_a_database_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not SQLite" * 100)
    with pytest.raises(StoreError, match=f"{junk}: not a transparency log database"):
        TreeStorage(junk)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE t (x)")
    with pytest.raises(StoreError, match=f"{other}: an SQLite database, but not a transparency log"):
        TreeStorage(other)


_CHILD = """
import sys
from pathlib import Path
from agentfactory.tlog.storage import TreeStorage
store = TreeStorage(Path(sys.argv[1]))
i = 0
while True:
    index, _ = store.append(b"crash-%d" % i, 1_700_000_000 + i, {"i": i})
    print(index, flush=True)
    i += 1
"""


def test_sigkill_loses_no_acknowledged_append(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(path)], stdout=subprocess.PIPE, text=True,
                             cwd=ROOT, env=env)
    assert child.stdout is not None
    acknowledged = []
    try:
        for line in child.stdout:
            acknowledged.append(int(line))
            if len(acknowledged) >= 200:
                break
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    assert acknowledged == list(range(len(acknowledged)))
    with TreeStorage(path) as store:
        size = store.size()
        assert size >= len(acknowledged)
        for index in acknowledged:
            assert store.leaf(index).body == b"crash-%d" % index
        assert store.check(full=True) == []
        leaves = [store.leaf(i).leaf_hash for i in range(size)]
        assert store.root() == merkle.root_from_leaves(leaves)
        store.append(b"after the crash", 1, None)  # and the log goes on
        assert store.check(full=True) == []


def test_sigstore_verifies_our_inclusion_proof(tmp_path: Path) -> None:
    """sigstore-python's own Merkle code (sigstore/_internal/merkle.py) accepts our proofs: nobody here wrote it."""
    pytest.importorskip("sigstore")
    from sigstore._internal.merkle import verify_merkle_inclusion
    from sigstore.errors import VerificationError
    from sigstore.models import TransparencyLogEntry
    from sigstore_models.rekor.v1 import TransparencyLogEntry as InnerEntry

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    store = TreeStorage(tmp_path / "log.db")
    _fill(store, 1000)
    body = b'{"apiVersion":"0.0.1","kind":"hashedrekord","spec":{}}'
    index, _ = store.append(body, 1_700_000_000, None)
    _fill(store, 37, start=1000)
    size = store.size()

    def entry(hashes: list[bytes], root: bytes) -> TransparencyLogEntry:
        # A bundle's tlogEntries[] item in protobuf JSON, as sigstore parses it from a Sigstore bundle.
        inner = InnerEntry.model_validate({
            "logIndex": str(index), "logId": {"keyId": b64(bytes(32))},
            "kindVersion": {"kind": "hashedrekord", "version": "0.0.1"}, "integratedTime": "1700000000",
            "inclusionProof": {"logIndex": str(index), "rootHash": b64(root), "treeSize": str(size),
                               "hashes": [b64(h) for h in hashes],
                               # verify_merkle_inclusion does not read it; TransparencyLogEntry insists on one
                               "checkpoint": {"envelope": "unused"}},
            "canonicalizedBody": b64(body)})
        return TransparencyLogEntry(inner)

    hashes = store.inclusion_proof(index, size)
    verify_merkle_inclusion(entry(hashes, store.root()))
    with pytest.raises(VerificationError):
        verify_merkle_inclusion(entry([*hashes[:-1], bytes(32)], store.root()))
    with pytest.raises(VerificationError):
        verify_merkle_inclusion(entry(hashes, store.root(size - 1)))
