"""Audit flooding: any client writes to the node's audit trail at its own request rate, until the disk is full.

Before: every 404 wrote a 4.28 KB record naming the requested agent and version (20,481 requests in 10 s:
85.6 MiB), and once the disk is full every invoke is refused (the trail fails closed). Now a name that is
not an agent name, a version that is not semver or a digest that is not sha256 is a 400 before any
lookup, with no record; and refusals are written in full only up to a burst per reason per second, the
rest counted in one summary record per second, so the trail grows by a bounded amount per second.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from pathlib import Path

import pytest
from runtime_attack_fixtures import agents, post
from runtime_helpers import serve_process

from agentfactory.audit import REFUSAL_BURST, REFUSAL_RECORD_BYTES, AuditLog, verify_chain

pytestmark = pytest.mark.toolchain

FLOOD = 3000


def _records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_malformed_references_are_400_and_leave_no_record(tmp_path: Path) -> None:
    signed = agents(tmp_path / "home", tmp_path / "t")
    audit = tmp_path / "audit.jsonl"
    with serve_process(signed, tmp_path, audit=audit) as node:
        for path, words in [
            ("/v1/agents/Not_A_Name/invoke", "is not an agent name"),
            ("/v1/agents/" + "a" * 64 + "/invoke", "is not an agent name"),
            ("/v1/agents/ok/invoke?version=" + "1" * 3000, "is not a semantic version"),
            ("/v1/agents/ok/invoke?version=1.0", "is not a semantic version"),
            ("/v1/agents/ok/invoke?version=%D9%A1.0.0", "is not a semantic version"),  # Arabic-Indic digit one
            ("/v1/agents/ok/invoke?version=1.0.0%0A", "is not a semantic version"),
            ("/v1/agents/ok/invoke?digest=sha256:abc", "sha256:<64 lower-case hex digits>"),
            ("/v1/agents/ok/invoke?version=1.0.0&version=1.0.1", "give it once"),
        ]:
            status, _, body = post(node.port, path)
            assert status == 400 and words in json.loads(body)["error"], (path, body)
    # The warm pool's one record per compiled digest (written at start, before any request) aside: none.
    assert [r for r in _records(audit) if r["event"] != "compile"] == []


def test_a_flood_of_unknown_agents_writes_a_bounded_trail(tmp_path: Path) -> None:
    signed = agents(tmp_path / "home", tmp_path / "t")
    audit = tmp_path / "audit.jsonl"
    counts: list[int] = []
    # Refusals are also paced per client address (the last test); not here, so that the trail's bound is tested.
    unpaced = {"AGENTFACTORY_RUNTIME_REFUSALS_PER_CLIENT": "1000000"}
    with serve_process(signed, tmp_path, audit=audit, env=unpaced) as node:
        started = time.monotonic()

        def flood(offset: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=10)
            seen = 0
            for i in range(offset, FLOOD, 2):
                conn.request("POST", f"/v1/agents/nosuch-{i}/invoke?version=1.0.{i}", body=b"")
                resp = conn.getresponse()
                resp.read()
                seen += resp.status == 404
            conn.close()
            counts.append(seen)

        threads = [threading.Thread(target=flood, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - started
        assert sum(counts) == FLOOD
        # A real invocation after the flood is recorded in full: decision and execution.
        status, _, body = post(node.port, "/v1/agents/ok/invoke")
        assert (status, body) == (200, b"ok\n")
    # Stopped (SIGTERM): the last summaries are written.
    records = _records(audit)
    assert verify_chain(audit) == len(records)
    full = [r for r in records if r["event"] == "decision" and r.get("reason") == "not-found"]
    summaries = [r for r in records if r["event"] == "decision-summary"]
    windows = int(elapsed) + 2
    assert len(full) <= REFUSAL_BURST * windows and len(summaries) <= windows, (len(full), len(summaries), elapsed)
    assert len(full) + sum(int(str(s["suppressed"])) for s in summaries) == FLOOD  # every refusal counted
    assert all(s["reason"] == "not-found" and len(s["agents"]) <= 10 for s in summaries)  # type: ignore[arg-type]
    size = audit.stat().st_size
    assert size <= windows * (REFUSAL_BURST + 1) * REFUSAL_RECORD_BYTES + 4096, size
    assert size < 200 * 1024, size  # before: 3000 x 4.28 KB = 12.8 MB
    assert [r["event"] for r in records if r.get("agent") == "ok"] == ["compile", "decision", "execution"]


def test_the_refusal_burst_is_per_reason_and_allowed_decisions_are_never_summarized(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    now = [100.0]
    log = AuditLog(path, clock=lambda: now[0])  # a clock of our own: the windows are exactly where we say
    for i in range(REFUSAL_BURST + 25):
        log.record("decision", agent=f"x{i}", allowed=False, reason="not-found", message="m" * 10_000)
    log.record("decision", agent="y", allowed=False, reason="unverified")  # another reason: its own burst
    for _ in range(30):
        log.record("decision", agent="z", allowed=True)
    assert not any(r["event"] == "decision-summary" for r in _records(path))  # the window is still open
    now[0] += 1.0
    log.record("decision", agent="z", allowed=True)  # the next record closes the window: its summary first
    log.close()
    records = _records(path)
    assert verify_chain(path) == len(records)
    assert sum(r.get("reason") == "not-found" and r["event"] == "decision" for r in records) == REFUSAL_BURST
    assert [r["agent"] for r in records if r.get("reason") == "unverified"] == ["y"]
    assert sum(r.get("agent") == "z" for r in records) == 31
    summary = [r for r in records if r["event"] == "decision-summary"]
    assert len(summary) == 1 and summary[0]["suppressed"] == 25 and summary[0]["written"] == REFUSAL_BURST
    assert records[-2]["event"] == "decision-summary" and records[-1]["agent"] == "z"
    assert summary[0]["agents"] == {f"x{i}": 1 for i in range(REFUSAL_BURST, REFUSAL_BURST + 10)}
    assert all(len(line) <= 4096 for line in path.read_bytes().splitlines())
    assert all(len(str(r.get("message", ""))) <= 257 for r in records)  # refusal fields are cut short


def test_a_client_flooding_refusals_is_paced_and_others_are_not(tmp_path: Path) -> None:
    signed = agents(tmp_path / "home", tmp_path / "t")
    rate = 20
    with serve_process(signed, tmp_path, env={"AGENTFACTORY_RUNTIME_REFUSALS_PER_CLIENT": str(rate)}) as node:
        answered: list[int] = []
        stop_at = time.monotonic() + 2.0

        def flood(k: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=10, source_address=("127.0.0.2", 0))
            n = 0
            while time.monotonic() < stop_at:
                conn.request("POST", f"/v1/agents/nosuch-{k}-{n}/invoke", body=b"")
                resp = conn.getresponse()
                resp.read()
                assert resp.status == 404
                n += 1
            conn.close()
            answered.append(n)

        threads = [threading.Thread(target=flood, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        # Meanwhile another client address is answered at once, refusals included.
        started = time.monotonic()
        for i in range(10):
            assert post(node.port, f"/v1/agents/other-{i}/invoke")[0] == 404
        assert time.monotonic() - started < 2.0  # a shared bucket would make each of these wait up to 1 s
        for t in threads:
            t.join()
    # The burst (2 s worth), then `rate` per second, plus one paced answer per second per connection.
    assert sum(answered) <= 2 * rate + 2 * rate + 2 * 3 + 2, answered
