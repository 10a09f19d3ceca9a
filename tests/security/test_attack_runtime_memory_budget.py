"""Host memory past the node's budget: many requests whose bodies, agents and outputs together exceed it.

Before: nothing summed what requests in flight made the host hold (bodies, linear memories, output
buffers, responses), so enough clients took the node's memory. Now every request is admitted against one
node-wide budget: a body is charged as it arrives, an invocation reserves its agent's memory limit, its
output caps and the sandbox's copies of stdin before it runs; past the budget the answer is 503 with
Retry-After and the numbers, and an agent that could never fit is refused (403) and audited.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from pathlib import Path

import pytest
from runtime_attack_fixtures import SPIN_WAT, agents, metric, post
from runtime_helpers import serve_process, wat_manifest

pytestmark = pytest.mark.toolchain

BUDGET_MIB = 128
LIMITS = {"AGENTFACTORY_RUNTIME_MEMORY_BUDGET_MIB": str(BUDGET_MIB)}


def test_invocations_and_bodies_past_the_budget_get_503_and_rss_stays_within_it(tmp_path: Path) -> None:
    signed = agents(tmp_path / "home", tmp_path / "t", **{
        # 1 MiB memory, 16 MiB output cap per stream: about 66 MiB reserved while it runs; two do not fit.
        "hold": (wat_manifest("hold", output_kib=16384, timeout_ms=1500), {"src/main.wat": SPIN_WAT}),
        "huge": (wat_manifest("huge", memory_mib=256), {"src/main.wat": SPIN_WAT}),
    })
    with serve_process(signed, tmp_path, env=LIMITS, audit=tmp_path / "audit.jsonl") as node:
        assert metric(node.port, 'agent_factory_runtime_memory_budget_bytes{state="total"}') == BUDGET_MIB * 2**20
        post(node.port, "/v1/agents/ok/invoke")
        baseline = node.rss_bytes()
        # An agent whose memory limit alone is over the whole budget can never run here: 403, said why. The
        # artifact policy (A5, given this node's limits) refuses it first; the service's own check stays behind.
        status, _, body = post(node.port, "/v1/agents/huge/invoke")
        refusal = json.loads(body)
        assert status == 403 and refusal["reason"] in ("unverified", "node-ceiling"), refusal
        assert f"{BUDGET_MIB}" in refusal["error"] and "256" in refusal["error"], refusal["error"]

        answers: list[tuple[int, dict[str, str], bytes]] = []
        first = threading.Thread(target=lambda: answers.append(post(node.port, "/v1/agents/hold/invoke")))
        first.start()
        deadline = time.monotonic() + 5
        while metric(node.port, 'agent_factory_runtime_memory_budget_bytes{state="used"}') < 60 * 2**20:
            assert time.monotonic() < deadline, "the first invocation never reserved its memory"
            time.sleep(0.02)
        # A second one does not fit beside it: 503 now, with Retry-After and the numbers; the worker was free.
        status, headers, body = post(node.port, "/v1/agents/hold/invoke")
        assert status == 503 and headers["Retry-After"] == "1"
        assert "the node's memory budget is in use" in json.loads(body)["error"] and "of 128 MiB" in body.decode()
        # Bodies are charged as they arrive: 16 MiB bodies, several at once, do not fit beside it either.
        big = b"x" * (16 * 2**20)
        results: list[int] = []
        senders = [threading.Thread(target=lambda: results.append(post(node.port, "/v1/agents/cat/invoke", big)[0]))
                   for _ in range(4)]
        for t in senders:
            t.start()
        for t in senders:
            t.join()
        assert 503 in results, results
        first.join()
        assert answers[0][0] == 422 and answers[0][1]["X-Agent-Outcome"] == "timeout"
        # Everything returned: the budget is free again, and the same request now runs.
        assert metric(node.port, 'agent_factory_runtime_memory_budget_bytes{state="used"}') == 0
        status, _, body = post(node.port, "/v1/agents/cat/invoke", big[: 4 * 2**20])
        assert status == 200 and len(body) == 4 * 2**20
        # The host held no more than the budget beyond what it held idle (allocator slack included).
        assert node.rss_bytes() - baseline < BUDGET_MIB * 2**20 + 32 * 2**20
    refusals = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [r["agent"] for r in refusals if r.get("reason") == refusal["reason"]] == ["huge"]


def test_one_client_address_cannot_hold_the_whole_budget(tmp_path: Path) -> None:
    """64 connections from one address, each sending 2 MiB of a 16 MiB body and then nothing, held the whole budget
    for the request timeout: every other client got 503, and again after reconnecting. Together, one address's
    requests hold at most its share (AGENTFACTORY_RUNTIME_CLIENT_MEMORY_SHARE, half by default); one request alone
    may still use the whole budget."""
    import socket

    from runtime_helpers import connect_from

    signed = agents(tmp_path / "home", tmp_path / "t")
    with serve_process(signed, tmp_path, env=LIMITS) as node:
        assert post(node.port, "/v1/agents/ok/invoke", source="127.0.0.2")[0] == 200
        held: list[socket.socket] = []
        refused = b""
        for _ in range(64):
            sock = connect_from("127.0.0.3", node.port)
            sock.sendall(b"POST /v1/agents/cat/invoke HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (16 << 20))
            with contextlib.suppress(OSError):  # refused and closed while sending: its share is full
                sock.sendall(b"x" * (2 << 20))
            held.append(sock)
        time.sleep(1)
        used = metric(node.port, 'agent_factory_runtime_memory_budget_bytes{state="used"}')
        assert used <= BUDGET_MIB * 2**20 // 2 + 2**20, used  # its share, and one chunk in flight
        for _ in range(3):
            assert post(node.port, "/v1/agents/ok/invoke", source="127.0.0.2")[0] == 200  # another client runs
        last = held.pop()  # past the share: its body is read and dropped, and the 503 follows it
        last.settimeout(30)
        last.sendall(b"x" * ((16 << 20) - (2 << 20)))
        while b"\r\n\r\n" not in refused or not refused.rstrip().endswith(b"}"):
            chunk = last.recv(65536)
            if not chunk:
                break
            refused += chunk
        for sock in [*held, last]:
            sock.close()
        assert refused.startswith(b"HTTP/1.1 503"), refused[:300]
        assert b"this client's share of the node's memory budget is in use" in refused, refused[:400]
