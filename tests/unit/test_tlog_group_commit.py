"""Group commit in the embedded log: concurrent adds share one transaction and one fsync, nobody is answered
before the commit that holds their entry, a failed commit answers every caller in it, and a SIGKILL while 16
writers are being batched loses no acknowledged entry and leaves a consistent tree.

To make a batch form deterministically, a test holds SQLite's write lock from a connection of its own (a real
second writer, as another process would): the first add leads a commit that waits for the lock, and the
others queue behind it until the lock is released."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from sqlite_faults import CommitFails

from agentfactory.errors import StoreError
from agentfactory.tlog import merkle, note
from agentfactory.tlog.base import Added, LogError
from agentfactory.tlog.entries import LogEntry, canonical, parse_proposed_entry
from agentfactory.tlog.log import TREE_FILE, EmbeddedLog
from agentfactory.tlog.storage import BatchResult, TreeStorage

ROOT = Path(__file__).resolve().parents[2]
SIGNER = ec.generate_private_key(ec.SECP256R1())
SIGNER_PEM = SIGNER.public_key().public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)


def proposal(name: str) -> dict[str, Any]:
    digest = hashlib.sha256(name.encode()).digest()
    sig = SIGNER.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256())))
    return {"apiVersion": "0.0.1", "kind": "hashedrekord", "spec": {
        "data": {"hash": {"algorithm": "sha256", "value": digest.hex()}},
        "signature": {"content": base64.b64encode(sig).decode(),
                      "publicKey": {"content": base64.b64encode(SIGNER_PEM).decode()}}}}


def check_answer(entry: LogEntry, log: EmbeddedLog) -> note.Checkpoint:
    """What a client checks: the checkpoint is signed by the log and the inclusion proof leads to its root."""
    proof = entry.inclusion_proof
    assert proof is not None
    checkpoint = note.verify(proof.checkpoint, log.key.public_key)
    assert (checkpoint.size, checkpoint.root_hash.hex()) == (proof.tree_size, proof.root_hash)
    merkle.verify_inclusion(merkle.leaf_hash(entry.body), entry.log_index, proof.tree_size,
                            [bytes.fromhex(h) for h in proof.hashes], checkpoint.root_hash)
    return checkpoint


def committed(path: Path, entry: LogEntry) -> bool:
    """Whether another connection (as after a crash, another process) sees the entry: it was committed."""
    with sqlite3.connect(path) as db:
        row = db.execute("SELECT idx FROM leaves WHERE leaf_hash = ?", (merkle.leaf_hash(entry.body),)).fetchone()
    db.close()
    return row is not None and row[0] == entry.log_index


@contextmanager
def write_lock_held(path: Path) -> Iterator[Callable[[], None]]:
    """Hold SQLite's write lock on `path` until the yielded release() (or the end of the block)."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    held = [True]

    def release() -> None:
        if held[0]:
            db.execute("ROLLBACK")
            held[0] = False

    try:
        yield release
    finally:
        release()
        db.close()


def add_all_while_locked(log: EmbeddedLog, docs: list[dict[str, Any]]) -> list[Added | BaseException]:
    """Add `docs` from one thread each while the write lock is held: the first leads a commit of itself alone,
    the rest queue and form the next batch. Each answer is checked against the database at the moment it
    arrives: an add that returned is committed."""
    path = log.folder / TREE_FILE
    answers: list[Added | BaseException | None] = [None] * len(docs)
    seen_committed: list[bool] = [False] * len(docs)

    def add(i: int) -> None:
        try:
            added = log.add(docs[i])
        except LogError as e:
            answers[i] = e
            return
        seen_committed[i] = committed(path, added.entry)
        answers[i] = added

    with write_lock_held(path) as release:
        first = threading.Thread(target=add, args=(0,))
        first.start()
        while first.is_alive() and not (log.committing and log.waiting == 0):  # the leader took its batch
            time.sleep(0.001)
        rest = [threading.Thread(target=add, args=(i,)) for i in range(1, len(docs))]
        for t in rest:
            t.start()
        while first.is_alive() and log.waiting < len(docs) - 1:  # the leader waits for the lock meanwhile
            time.sleep(0.001)
        assert answers == [None] * len(docs), "an add was answered while its commit could not have happened"
        release()
        for t in [first, *rest]:
            t.join()
    out: list[Added | BaseException] = []
    for i, answer in enumerate(answers):
        assert answer is not None
        if isinstance(answer, Added):
            assert seen_committed[i], f"add {i} was answered before its entry was committed"
        out.append(answer)
    return out


@pytest.fixture()
def log(tmp_path: Path) -> Iterator[EmbeddedLog]:
    with EmbeddedLog(tmp_path / "tlog") as embedded:
        embedded.add(proposal("before"))  # index 0: the tree exists and has a history
        yield embedded


def test_concurrent_adds_share_one_commit_answered_after_it(log: EmbeddedLog) -> None:
    commits, entries = log.commits, log.committed
    answers = add_all_while_locked(log, [proposal(f"writer {i}") for i in range(16)])
    assert all(isinstance(a, Added) and not a.existed for a in answers)
    added = [a for a in answers if isinstance(a, Added)]
    assert (log.commits - commits, log.committed - entries) == (2, 16)  # the leader alone, then 15 together
    assert sorted(a.entry.log_index for a in added) == list(range(1, 17))
    checkpoints = [check_answer(a.entry, log) for a in added]
    assert checkpoints[0].size == 2 and {c.size for c in checkpoints[1:]} == {17}  # one checkpoint per commit
    assert len({c.root_hash for c in checkpoints[1:]}) == 1
    assert log.info().tree_size == 17 and log.check(full=True) == []
    assert set(log.search(public_key_pem=SIGNER_PEM)) == {a.entry.uuid for a in added} | {log.entry_at(0).uuid}


def test_a_duplicate_in_the_same_batch_is_answered_as_the_existing_entry(log: EmbeddedLog) -> None:
    twice = proposal("submitted twice at once")
    answers = add_all_while_locked(log, [proposal("leader"), twice, twice, proposal("other")])
    added = [a for a in answers if isinstance(a, Added)]
    assert len(added) == 4
    first, second = added[1], added[2]
    assert sorted([first.existed, second.existed]) == [False, True]
    assert first.entry.uuid == second.entry.uuid and first.entry.log_index == second.entry.log_index
    for a in added:
        check_answer(a.entry, log)
    assert log.info().tree_size == 4  # before, leader, the twice-submitted entry once, other
    assert log.check(full=True) == []


def test_a_failed_commit_answers_every_caller_in_it_and_logs_none(log: EmbeddedLog) -> None:
    """A commit that fails (here: SQLite refuses one row, as a full disk would refuse them all) fails every
    entry of its batch, says why, acknowledges none of them, and the log goes on afterwards."""
    poison = proposal("refused by the database")
    poison_hash = merkle.leaf_hash(canonical(parse_proposed_entry(poison, "poison").body()))
    db = sqlite3.connect(log.folder / TREE_FILE, isolation_level=None)
    db.execute(f"CREATE TRIGGER refuse BEFORE INSERT ON leaves WHEN NEW.leaf_hash = X'{poison_hash.hex()}' "
               "BEGIN SELECT RAISE(ABORT, 'refused by the test trigger'); END")
    docs = [proposal("leader"), poison, proposal("innocent 1"), proposal("innocent 2")]
    answers = add_all_while_locked(log, docs)
    assert isinstance(answers[0], Added) and answers[0].entry.log_index == 1
    for answer in answers[1:]:
        assert isinstance(answer, LogError)
        assert "was not logged" in str(answer) and "refused by the test trigger" in str(answer)
        assert str(log.folder) in str(answer)
    assert log.info().tree_size == 2  # nothing of the failed batch
    db.execute("DROP TRIGGER refuse")
    db.close()
    again = log.add(docs[2])  # the log goes on: a failed entry can be submitted again
    assert not again.existed and again.entry.log_index == 2
    check_answer(again.entry, log)
    assert log.check(full=True) == []


def test_append_batch_places_duplicates_and_rolls_back_with_its_derived_rows(tmp_path: Path) -> None:
    with TreeStorage(tmp_path / "log.db") as store:
        store.append(b"zero", 1)
        result = store.append_batch([(b"one", 1, None), (b"zero", 1, None), (b"two", 1, None), (b"one", 1, None)])
        assert [(p.index, p.existed) for p in result.placed] == [(1, False), (0, True), (2, False), (1, True)]
        assert (result.size, result.root) == (3, store.root())
        other = sqlite3.connect(tmp_path / "log.db", isolation_level=None)
        other.execute("CREATE TABLE derived (size INTEGER)")  # a caller's own table

        def derived(db: sqlite3.Connection, batch: BatchResult) -> None:
            db.execute("INSERT INTO derived VALUES (?)", (batch.size,))
            if batch.size > 4:
                raise RuntimeError("the caller's rows could not be written")

        store.append_batch([(b"three", 1, None)], derived)
        with pytest.raises(RuntimeError, match="could not be written"):
            store.append_batch([(b"four", 1, None), (b"five", 1, None)], derived)
        assert store.size() == 4  # none of the failed batch
        assert [r[0] for r in other.execute("SELECT size FROM derived")] == [4]
        other.close()
        assert store.append_batch([(b"four", 1, None)]).placed[0].index == 4  # the right edge was not left behind
        assert store.check(full=True) == []
        leaves = [store.leaf(i).leaf_hash for i in range(5)]
        assert store.root() == merkle.root_from_leaves(leaves)
        assert store.inclusion_proofs([1, 3, 4], 5) == [store.inclusion_proof(i, 5) for i in (1, 3, 4)]


def test_root_from_right_edge_is_the_tree_root() -> None:
    leaves = [merkle.leaf_hash(b"%d" % i) for i in range(70)]
    for size in range(71):
        edge, start = [], 0
        for level in range(size.bit_length() - 1, -1, -1):  # the perfect subtrees of `size`, largest first
            if size >> level & 1:
                edge.append(merkle.root_from_leaves(leaves[start:start + (1 << level)]))
                start += 1 << level
        assert merkle.root_from_right_edge(edge) == merkle.root_from_leaves(leaves[:size])


_CHILD = """
import json, sys, threading
from pathlib import Path
from agentfactory.tlog.log import EmbeddedLog
docs = json.loads(Path(sys.argv[2]).read_text())
log = EmbeddedLog(Path(sys.argv[1]))
out = threading.Lock()
def run(share):
    for doc in share:
        e = log.add(doc).entry
        p = e.inclusion_proof
        line = json.dumps([e.uuid, e.log_index, p.tree_size, p.root_hash, log.commits])
        with out:
            sys.stdout.write(line + "\\n")
            sys.stdout.flush()
threads = [threading.Thread(target=run, args=(docs[k::16],)) for k in range(16)]
for t in threads:
    t.start()
for t in threads:
    t.join()
"""


def test_sigkill_during_group_commits_loses_no_acknowledged_entry(tmp_path: Path) -> None:
    """16 writers, SIGKILL mid-stream: every entry answered before the kill is there after reopening, at the
    index it was given, the whole tree re-hashes, and the largest tree an answer was proved against is a
    prefix of the reopened one. The writers were being batched (fewer commits than answers)."""
    folder = tmp_path / "tlog"
    docs = tmp_path / "docs.json"
    docs.write_text(json.dumps([proposal(f"crash {i}") for i in range(4000)]))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(folder), str(docs)], stdout=subprocess.PIPE,
                             text=True, cwd=ROOT, env=env)
    assert child.stdout is not None
    acked: list[list[Any]] = []
    try:
        for line in child.stdout:
            acked.append(json.loads(line))
            if len(acked) >= 800:
                break
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
    assert len(acked) >= 800
    assert max(a[4] for a in acked) < len(acked), "no two writers ever shared a commit"
    largest = max(acked, key=lambda a: a[2])
    with EmbeddedLog(folder) as log:
        size = log.info().tree_size
        assert size >= len(acked)
        for uuid, index, *_ in acked:
            assert log.entry(uuid).log_index == index
        assert log.root_at(largest[2]).hex() == largest[3]
        assert log.check(full=True) == []
        assert {a[0] for a in acked} <= set(log.search(public_key_pem=SIGNER_PEM))
        after = log.add(proposal("after the crash"))  # and the log goes on
        assert after.entry.log_index == size
        check_answer(after.entry, log)


def test_answers_made_during_the_fsync_are_handed_out_only_once_the_commit_is_durable(log: EmbeddedLog) -> None:
    """`commit(..., early)` lets the caller make the answers while the fsync runs (the server does, on its event
    loop). At that moment nothing is durable; `answer` hands out exactly those answers once the commit is, and
    they verify like any other."""
    path = log.folder / TREE_FILE
    pendings = [log.prepare(proposal(f"early {i}")) for i in range(3)]
    made: list[list[Added | None]] = []

    def early(batch: list[Any]) -> None:
        log.answer_early(batch)
        made.append([p.early for p in batch])
        for answer in made[-1]:
            assert answer is not None
            assert not committed(path, answer.entry), "the early answer was made after the commit"

    log.commit(pendings, early)
    assert len(made) == 1
    answers = [log.answer(p) for p in pendings]
    assert all(a is e for a, e in zip(answers, made[0], strict=True))  # the very answers made early
    for a in answers:
        assert committed(path, a.entry)
        assert check_answer(a.entry, log).size == 4
    assert [a.entry.log_index for a in answers] == [1, 2, 3]


def test_an_answer_made_early_is_never_handed_out_for_a_commit_that_failed(log: EmbeddedLog) -> None:
    """The class: an answer (SET, proof, checkpoint) made before the fsync must not reach a client unless the
    commit made its entry durable where the answer says. Here COMMIT fails after the answers were made: every
    caller hears that its entry was not logged, nothing was, and the log goes on (the failed transaction is
    rolled back, not left open to refuse every later one)."""
    pendings = [log.prepare(proposal(f"lost {i}")) for i in range(3)]
    real = log._writer._db
    log._writer._db = CommitFails(real)  # type: ignore[assignment]
    try:
        log.commit(pendings, log.answer_early)
    finally:
        log._writer._db = real
    assert all(p.early is not None for p in pendings)  # the answers were made, for indices 1-3 ...
    for p in pendings:
        with pytest.raises(StoreError, match="cannot append: disk I/O error"):
            log.answer(p)  # ... and none is handed out
    assert log.info().tree_size == 1 and log.check(full=True) == []
    again = [log.add(proposal(f"lost {i}")) for i in range(3)]  # the same entries, submitted again
    assert [a.entry.log_index for a in again] == [1, 2, 3] and not any(a.existed for a in again)
    for a in again:
        check_answer(a.entry, log)


def test_an_answer_made_early_for_another_place_is_not_handed_out(log: EmbeddedLog) -> None:
    """`answer` compares the place and the tree the early answer was made for with the ones the commit made
    durable; when they differ (here: edited after the fact), it makes the answer again from the durable ones."""
    pendings = [log.prepare(proposal(f"moved {i}")) for i in range(2)]

    def early(batch: list[Any]) -> None:
        log.answer_early(batch)
        first, second = batch
        first.early, second.early = second.early, first.early  # each holds the other's answer

    log.commit(pendings, early)
    answers = [log.answer(p) for p in pendings]
    assert [a.entry.log_index for a in answers] == [1, 2]
    assert all(a is not p.early for a, p in zip(answers, pendings, strict=True))
    for a in answers:
        check_answer(a.entry, log)
