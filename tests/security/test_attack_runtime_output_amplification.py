"""Output amplification: a small agent (or any client of a stock agent) makes the host hold many times its output.

Before: JSON wrote each control byte as \\u0001 (6x) and the body was copied again before sending, after
the worker was released; the schema's 64 MiB output cap per stream reached the host unchecked. Now an
output is JSON text only when that is no longer than base64, the body is streamed in chunks under a
response deadline (a client that does not read is dropped, its memory returned), and an agent whose
output cap is over the node's ceiling is refused before it runs.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest
from runtime_attack_fixtures import SPEW_WAT, agents, get, metric, post
from runtime_helpers import Signed, connect_from, serve_process, wat_manifest

from agentfactory.audit import verify_chain

pytestmark = pytest.mark.toolchain

JSON = {"Accept": "application/json"}
LIMITS = {"AGENTFACTORY_RUNTIME_MAX_OUTPUT_KIB": "16384", "AGENTFACTORY_RUNTIME_RESPONSE_TIMEOUT": "2",
          "AGENTFACTORY_RUNTIME_MEMORY_BUDGET_MIB": "512"}


@pytest.fixture
def signed(tmp_path: Path) -> Signed:
    return agents(tmp_path / "home", tmp_path / "t", **{
        "spew": (wat_manifest("spew", output_kib=4096), {"src/main.wat": SPEW_WAT}),
        "wide": (wat_manifest("wide", output_kib=65536), {"src/main.wat": SPEW_WAT}),
    })


def test_json_output_costs_at_most_base64_and_round_trips(signed: Signed, tmp_path: Path) -> None:
    with serve_process(signed, tmp_path, env=LIMITS, audit=tmp_path / "audit.jsonl") as node:
        # A 422 full of control bytes: base64, 4/3 of the output, not 6x.
        status, _, body = post(node.port, "/v1/agents/spew/invoke")
        doc = json.loads(body)
        assert status == 422 and doc["outcome"] == "trap" and "output" in doc["limitsHit"]
        out = base64.b64decode(doc["stdoutBase64"])
        assert out == b"\x01" * (4096 * 1024)
        assert len(body) < len(out) * 4 / 3 + 2048
        # The stock case: 16 MiB of control bytes through a cat, Accept: application/json.
        data = b"\x01\x02" * (8 * 1024 * 1024)
        status, _, body = post(node.port, "/v1/agents/cat/invoke", data, headers=JSON)
        assert status == 200 and base64.b64decode(json.loads(body)["stdoutBase64"]) == data
        assert len(body) < len(data) * 4 / 3 + 2048
        # Text stays text, exactly, across the encoder's chunk boundaries (multi-byte characters split).
        text = ("\"quoted\" \\ é ✓ 𝄞 line\n\ttab " * 20_000).encode()
        status, _, body = post(node.port, "/v1/agents/cat/invoke", text, headers=JSON)
        assert status == 200 and json.loads(body)["stdout"].encode() == text and json.loads(body)["stderr"] == ""
        # Bytes that are not UTF-8: base64, exactly.
        noise = os.urandom(300_001)
        status, _, body = post(node.port, "/v1/agents/cat/invoke", noise, headers=JSON)
        assert status == 200 and base64.b64decode(json.loads(body)["stdoutBase64"]) == noise
        # An output cap over the node's ceiling: refused before it runs, said why, audited. The artifact
        # policy (A5, the node's limits) refuses it first; the service's own check stays behind it.
        status, _, body = post(node.port, "/v1/agents/wide/invoke")
        refusal = json.loads(body)
        assert status == 403 and refusal["reason"] in ("unverified", "node-ceiling"), refusal
        assert "65536" in refusal["error"] and "16384" in refusal["error"], refusal["error"]
    records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [r["reason"] for r in records if r.get("allowed") is False] == [refusal["reason"]]
    assert not any(r.get("event") == "execution" and r["agent"] == "wide" for r in records)
    assert verify_chain(tmp_path / "audit.jsonl") == len(records)


def test_clients_that_do_not_read_are_dropped_and_their_memory_returned(signed: Signed, tmp_path: Path) -> None:
    with serve_process(signed, tmp_path, env=LIMITS) as node:
        post(node.port, "/v1/agents/cat/invoke", b"warm")
        baseline = node.rss_bytes()
        data = b"\x01" * (16 * 1024 * 1024 - 1)
        request = (b"POST /v1/agents/cat/invoke HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\n"
                   b"Content-Length: %d\r\n\r\n" % len(data)) + data
        socks = []
        peak = [baseline]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], node.rss_bytes())
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.monotonic()
        try:
            for _ in range(6):  # six clients send 16 MiB each and never read the 21 MiB answer
                sock = connect_from("127.0.0.2", node.port, timeout=10)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.sendall(request)
                socks.append(sock)
            # The service answers others meanwhile.
            assert get(node.port, "/healthz")[0] == 200
            status, _, body = post(node.port, "/v1/agents/ok/invoke")
            assert (status, body) == (200, b"ok\n")
            # Within the response deadline (2 s) after each answer started, every non-reader is dropped and
            # the budget is back to nothing held.
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                if metric(node.port, 'agent_factory_runtime_memory_budget_bytes{state="used"}') == 0:
                    break
                time.sleep(0.2)
            assert metric(node.port, 'agent_factory_runtime_memory_budget_bytes{state="used"}') == 0
            assert time.monotonic() - started < 15
        finally:
            done.set()
            sampler.join()
            for sock in socks:
                sock.close()
        # Before: ~6 x 75 MB held. Now the host holds the outputs (16 MiB each) and chunks, within the budget.
        assert peak[0] - baseline < 512 * 1024 * 1024, (baseline, peak[0])
