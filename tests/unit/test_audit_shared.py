"""A shared audit trail: several AuditLog objects and processes append to one file and the chain still holds.

The admission webhook's worker processes write one trail; each record is written under the file's flock and
continues from its last line. The non-shared control shows the tests would see a broken chain.
"""

from __future__ import annotations

import json
import multiprocessing
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest

from agentfactory.audit import REFUSAL_BURST, AuditError, AuditLog, verify_chain
from agentfactory.errors import InputError

WRITERS = 4
RECORDS = 300
HANG_S = 120.0  # a hang guard, not a speed check


def _alternate(path: Path, *, shared: bool) -> None:
    a, b = AuditLog(path, shared=shared), AuditLog(path, shared=shared)
    for i in range(50):
        a.record("execution", writer="a", n=i)
        b.record("execution", writer="b", n=i)
    a.close()
    b.close()


def test_two_shared_logs_in_one_process_keep_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _alternate(path, shared=True)
    assert verify_chain(path) == 100


def test_two_unshared_logs_break_the_chain_control(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _alternate(path, shared=False)
    with pytest.raises(InputError, match=r"audit.jsonl:2"):
        verify_chain(path)


def _append_records(path: str, writer: int, barrier: Barrier) -> None:
    """A worker process: wait for the others, then append RECORDS records to the shared trail."""
    log = AuditLog(Path(path), shared=True)
    barrier.wait(HANG_S)
    for i in range(RECORDS):
        log.record("execution", writer=writer, n=i)
    log.close()


def test_processes_appending_to_one_shared_trail_keep_the_chain_and_every_record(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(WRITERS)
    procs = [ctx.Process(target=_append_records, args=(str(path), k, barrier)) for k in range(WRITERS)]
    for proc in procs:
        proc.start()
    try:
        for proc in procs:
            proc.join(HANG_S)
            if proc.is_alive():
                pytest.fail(f"writer process {proc.pid} still running after {HANG_S:g} s", pytrace=False)
            assert proc.exitcode == 0, f"writer process {proc.pid} exited with {proc.exitcode}"
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join(10)
    assert verify_chain(path) == WRITERS * RECORDS
    records = [json.loads(line) for line in path.read_bytes().splitlines()]
    assert {(r["writer"], r["n"]) for r in records} == {(k, i) for k in range(WRITERS) for i in range(RECORDS)}


def test_shared_refusal_summaries_keep_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    a, b = (AuditLog(path, shared=True, clock=lambda: 0.0) for _ in range(2))  # one window each, until close
    for _ in range(3 * REFUSAL_BURST):
        a.record("decision", allowed=False, reason="x", agent="a")
        b.record("decision", allowed=False, reason="x", agent="a")
    a.close()
    b.close()
    records = [json.loads(line) for line in path.read_bytes().splitlines()]
    assert [r["suppressed"] for r in records if r["event"] == "decision-summary"] == [2 * REFUSAL_BURST] * 2
    assert verify_chain(path) == 2 * REFUSAL_BURST + 2


def test_a_shared_trail_on_standard_output_is_refused() -> None:
    with pytest.raises(AuditError, match="standard output"):
        AuditLog(Path("-"), shared=True)


def test_a_shared_log_continues_an_existing_trail(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    first = AuditLog(path)
    for i in range(5):
        first.record("execution", n=i)
    first.close()
    shared = AuditLog(path, shared=True)
    for i in range(5):
        shared.record("execution", n=5 + i)
    shared.close()
    assert verify_chain(path) == 10


def test_a_last_record_longer_than_the_first_tail_read_is_linked_to_whole(tmp_path: Path) -> None:
    """A shared writer reads a small tail first to find the last line; a longer last record (several long fields)
    must be read whole, or the next record would link to the hash of its end only."""
    path = tmp_path / "audit.jsonl"
    a, b = AuditLog(path, shared=True), AuditLog(path, shared=True)
    for size in (10, 3_000, 9_000, 30_000, 60_000):
        a.record("execution", writer="a", **{f"f{i}": "x" * 1_000 for i in range(size // 1_000)})
        b.record("execution", writer="b", n=size)
    a.close()
    b.close()
    lines = path.read_bytes().splitlines()
    assert max(len(line) for line in lines) > 50_000 and verify_chain(path) == 10
