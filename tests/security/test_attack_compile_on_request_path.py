"""Attack: make every request wait for a compile.

A signed module can take seconds to compile while staying within the node's compile budget (many
locals live across many nested loops). Compiled on the request path, each request for it held a
worker for the whole compile, and the node's workers, hence every other agent, went with them.
Now the node's service never compiles on a request: the warm pool compiles the agents the node may
run at start (and at each re-scan), `/readyz` is 503 until they are compiled, and a request for a
module not compiled yet queues its compile in the background and is answered 503 with Retry-After
and the reason, while other agents keep answering. A compile failure is remembered: 403 at once.

Against the real `agentfactory runtime serve` on loopback; the slow module compiles in a few
seconds under a compile budget raised to 60 s (AGENTFACTORY_COMPILE_SECONDS).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import wasmtime
from runtime_attack_fixtures import SPIN_WAT, get, post
from runtime_helpers import (
    OK_WAT,
    Signed,
    publish,
    readyz,
    serve_process,
    sign_raw,
    signed_store,
    slow_to_compile,
    wat_manifest,
)

pytestmark = pytest.mark.toolchain

BUDGET = {"AGENTFACTORY_COMPILE_SECONDS": "60", "AGENTFACTORY_COMPILE_MIB": "1024"}
QUICK = 1.0  # seconds: an answer that did not wait for a compile, on a busy 2-core machine


ILL_TYPED = """(module (memory (export "memory") 1)
  (func $bad (result i32) (i64.const 1))
  (func (export "_start") (drop (call $bad))))"""


@pytest.fixture
def signed(tmp_path: Path) -> Signed:
    s = signed_store(tmp_path / "home")
    publish(s, tmp_path / "t", {"ok": (wat_manifest("ok"), {"src/main.wat": OK_WAT})})
    return s


def _records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_request_never_waits_for_a_compile_and_other_agents_keep_answering(signed: Signed, tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    with serve_process(signed, tmp_path, audit=audit, env=BUDGET) as node:  # warm: `ok` is compiled
        digest = sign_raw(signed, tmp_path / "forged", "heavy", slow_to_compile(), wat_manifest("heavy"))
        warm: list[tuple[int, float]] = []
        stop = threading.Event()

        def traffic() -> None:  # the warm agent, as fast as one client goes, all along
            while not stop.is_set():
                started = time.monotonic()
                status, _, body = post(node.port, "/v1/agents/ok/invoke")
                warm.append((status if body == b"ok\n" else -status, time.monotonic() - started))

        client = threading.Thread(target=traffic)
        client.start()
        try:
            asked = time.monotonic()
            status, headers, body = post(node.port, "/v1/agents/heavy/invoke")
            took = time.monotonic() - asked
            assert status == 503 and took < QUICK, (status, took, body)
            doc = json.loads(body)
            assert doc["reason"] == "compiling" and digest in doc["error"] and "queued" in doc["error"], doc
            assert doc["error"].endswith("retry") and int(headers["Retry-After"]) > 0
            refusals, first = 1, time.monotonic()
            while True:  # the client retries; every answer is quick until the module is compiled
                asked = time.monotonic()
                status, headers, body = post(node.port, "/v1/agents/heavy/invoke")
                took = time.monotonic() - asked
                if status == 200:
                    break
                assert status == 503 and json.loads(body)["reason"] == "compiling" and took < QUICK, (status, took)
                assert "Retry-After" in headers
                refusals += 1
                assert time.monotonic() - first < 120, "the compile never finished"
                time.sleep(0.1)
        finally:
            stop.set()
            client.join()
        during = list(warm)
        assert refusals >= 5, refusals  # the compile took seconds: the client was told to retry, many times
        assert during and all(s == 200 for s, _ in during), {s for s, _ in during}
        slowest = max(t for _, t in during)
        assert slowest < QUICK, slowest  # never behind the compile (which took seconds)
        assert post(node.port, "/v1/agents/heavy/invoke")[0] == 200  # compiled once, kept
    compiles = [r for r in _records(audit) if r["event"] == "compile" and r["agent"] == "heavy"]
    assert len(compiles) == 1 and compiles[0]["outcome"] == "compiled", compiles  # one compile, however many asked
    assert float(str(compiles[0]["seconds"])) > 1.0, compiles  # it was slow, and nobody waited for it
    decisions = [r for r in _records(audit) if r.get("agent") == "heavy" and r["event"] == "decision"]
    assert decisions and all(r["allowed"] is True for r in decisions)  # a 503 `compiling` is not a refusal


def test_readyz_waits_for_the_warm_set_and_a_failed_compile_is_403_at_once(signed: Signed, tmp_path: Path) -> None:
    digest = sign_raw(signed, tmp_path / "forged", "heavy", slow_to_compile(), wat_manifest("heavy"))
    sign_raw(signed, tmp_path / "forged", "bad", wasmtime.wat2wasm(ILL_TYPED), wat_manifest("bad"))
    with serve_process(signed, tmp_path, env=BUDGET, wait_ready=False) as node:
        assert get(node.port, "/healthz")[0] == 200  # live at once
        code, status = readyz(node.url)
        assert code == 503 and status["ready"] is False, status
        status_code, headers, body = post(node.port, "/v1/agents/heavy/invoke")
        assert status_code == 503 and json.loads(body)["reason"] == "compiling", body
        assert digest in json.loads(body)["error"] and "Retry-After" in headers
        seen_not_ready = 0
        deadline = time.monotonic() + 120
        while (code := readyz(node.url)[0]) != 200:
            seen_not_ready += 1
            assert time.monotonic() < deadline, "never ready"
            time.sleep(0.05)
        assert seen_not_ready > 5  # not ready for as long as the slow module compiled
        code, status = readyz(node.url)
        warm = status["warm"]
        assert code == 200 and status["ready"] is True, status
        assert warm == {"agents": 3, "compiled": 2, "compiling": 0, "failed": 1, "refused": 0, "errors": 0}, status
        assert post(node.port, "/v1/agents/heavy/invoke")[0] == 200
        assert post(node.port, "/v1/agents/ok/invoke")[0] == 200
        for _ in range(3):  # remembered: refused at once, never compiled again
            asked = time.monotonic()
            status_code, _, body = post(node.port, "/v1/agents/bad/invoke")
            assert status_code == 403 and time.monotonic() - asked < QUICK
            doc = json.loads(body)
            assert doc["reason"] == "bad-module" and "type mismatch" in doc["error"], doc
            assert "not compiled again" in doc["error"]


def test_a_rescan_compiles_a_newly_published_agent_before_its_first_request(signed: Signed, tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    with serve_process(signed, tmp_path, audit=audit, env={"AGENTFACTORY_RUNTIME_WARM_INTERVAL": "1"}) as node:
        late = OK_WAT.replace('"ok', '"la')  # other bytes: a module not compiled yet
        publish(signed, tmp_path / "late", {"late": (wat_manifest("late"), {"src/main.wat": late})})
        deadline = time.monotonic() + 60
        while (warm := readyz(node.url)[1]["warm"]) != {"agents": 2, "compiled": 2, "compiling": 0, "failed": 0,
                                                          "refused": 0, "errors": 0}:
            assert time.monotonic() < deadline, warm
            time.sleep(0.1)
        assert [r["event"] for r in _records(audit) if r.get("agent") == "late"] == ["compile"]  # before any request
        status, _, body = post(node.port, "/v1/agents/late/invoke")
        assert (status, body) == (200, b"la\n")  # the first request meets a compiled module


def test_compiling_is_answered_without_a_worker(tmp_path: Path) -> None:
    s = signed_store(tmp_path / "home")
    publish(s, tmp_path / "t", {"spin": (wat_manifest("spin", timeout_ms=3000), {"src/main.wat": SPIN_WAT})})
    with serve_process(s, tmp_path, workers=1, env=BUDGET) as node:
        sign_raw(s, tmp_path / "forged", "heavy", slow_to_compile(), wat_manifest("heavy"))
        assert json.loads(post(node.port, "/v1/agents/heavy/invoke")[2])["reason"] == "compiling"  # queued
        busy = threading.Thread(target=post, args=(node.port, "/v1/agents/spin/invoke"))  # the only worker, 3 s
        busy.start()
        time.sleep(0.3)
        asked = time.monotonic()
        status, headers, body = post(node.port, "/v1/agents/heavy/invoke")
        took = time.monotonic() - asked
        busy.join()
    assert status == 503 and json.loads(body)["reason"] == "compiling" and "Retry-After" in headers, body
    assert took < QUICK, took  # not queued behind the busy worker (3 s)
