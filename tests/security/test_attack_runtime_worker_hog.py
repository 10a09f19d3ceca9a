"""Attack: one signed agent takes every invocation worker of the node.

A template author's agent that waits (in a host call, until its deadline) holds a worker for the whole
deadline; as many requests for it as there are workers used to leave every other agent waiting for a
worker or refused (normal traffic kept 1 % of its throughput). Now one agent, by name (every version and
digest of it together), holds at most its share of the workers (half by default); its further requests
wait briefly without a worker in a bounded per-agent queue, then get 503 with Retry-After and the
reason, are counted and audited (bounded), while other agents keep getting workers.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from runtime_attack_fixtures import agents, get, metric, post
from runtime_helpers import serve_process, sleeper, wat_manifest

from agentfactory.errors import ConfigError
from sandbox_runtime.server_limits import ServerLimits
from sandbox_runtime.worker_shares import share_of

pytestmark = pytest.mark.toolchain

DEADLINE_S = 2.5  # the sleeper's timeoutMs: it holds its worker this long, longer than the agent queue wait (1 s)


def _sleepers(port: int, paths: list[str]) -> tuple[list[threading.Thread], list[tuple[int, dict[str, str], bytes,
                                                                                         float]]]:
    answers: list[tuple[int, dict[str, str], bytes, float]] = []

    def one(path: str) -> None:
        started = time.monotonic()
        status, headers, body = post(port, path, timeout=30)
        answers.append((status, headers, body, time.monotonic() - started))

    threads = [threading.Thread(target=one, args=(p,), daemon=True) for p in paths]
    for t in threads:
        t.start()
    return threads, answers


def _normal_traffic(port: int, seconds: float) -> list[tuple[int, float]]:
    """`ok` invoked back to back for `seconds`: (status, seconds) of each."""
    out: list[tuple[int, float]] = []
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        started = time.monotonic()
        status, _, body = post(port, "/v1/agents/ok/invoke", timeout=30)
        out.append((status if body == b"ok\n" or status != 200 else -1, time.monotonic() - started))
    return out


def test_one_agent_holds_at_most_its_share_and_others_keep_answering(tmp_path: Path) -> None:
    signed = agents(tmp_path / "home", tmp_path / "t", sleeper=(wat_manifest("sleeper", timeout_ms=2500),
                                                                {"src/main.wat": sleeper()}))
    audit = tmp_path / "audit.jsonl"
    with serve_process(signed, tmp_path, workers=4, audit=audit) as node:
        assert post(node.port, "/v1/agents/ok/invoke")[2] == b"ok\n"
        # workers + 2 sleepers at once, by name and pinned by version: one agent either way
        paths = ["/v1/agents/sleeper/invoke"] * 3 + ["/v1/agents/sleeper/invoke?version=1.0.0"] * 3
        threads, answers = _sleepers(node.port, paths)
        time.sleep(0.3)
        normal = _normal_traffic(node.port, 1.5)
        health = [get(node.port, p)[0] for p in ("/healthz", "/readyz", "/metrics")]
        for t in threads:
            t.join(timeout=30)
        refused = metric(node.port, 'agent_factory_runtime_worker_refusals_total{reason="share"}')
        busy = metric(node.port, 'agent_factory_runtime_workers_busy{state="busy"}')
    assert health == [200, 200, 200]
    assert normal and all(status == 200 for status, _ in normal), normal
    assert max(seconds for _, seconds in normal) < 1.0, normal  # never queued behind the sleepers (2.5 s)
    assert len(answers) == 6
    ran = [a for a in answers if a[0] == 422]
    turned = [a for a in answers if a[0] == 503]
    assert len(ran) == share_of(4, 0.5) == 2 and len(turned) == 4, [(a[0], a[2][:120]) for a in answers]
    for _, headers, _body, _ in ran:
        assert headers["X-Agent-Outcome"] == "timeout"
    for _, headers, body, took in turned:
        assert headers["Retry-After"] == "1"
        assert "agent 'sleeper' already holds 2 of 4 workers" in json.loads(body)["error"], body
        assert 0.9 <= took < DEADLINE_S, took  # waited its second in the queue, without a worker, then refused
    assert refused == 4 and busy == 0
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    share = [r for r in records if r.get("event") == "decision" and r.get("reason") == "worker-share"]
    assert len(share) == 4 and all(r["allowed"] is False and r["agent"] == "sleeper" for r in share), share


def test_the_agent_queue_is_bounded_and_the_share_is_configurable(tmp_path: Path) -> None:
    signed = agents(tmp_path / "home", tmp_path / "t", sleeper=(wat_manifest("sleeper", timeout_ms=2500),
                                                                {"src/main.wat": sleeper()}))
    env = {"AGENTFACTORY_RUNTIME_AGENT_WORKER_SHARE": "0.25", "AGENTFACTORY_RUNTIME_AGENT_QUEUE_LENGTH": "2"}
    with serve_process(signed, tmp_path, workers=4, env=env) as node:
        threads, answers = _sleepers(node.port, ["/v1/agents/sleeper/invoke"])
        time.sleep(0.3)  # the first holds the agent's only worker
        more, answers_more = _sleepers(node.port, ["/v1/agents/sleeper/invoke"] * 5)
        normal = _normal_traffic(node.port, 1.0)
        for t in threads + more:
            t.join(timeout=30)
        queue_full = metric(node.port, 'agent_factory_runtime_worker_refusals_total{reason="agent-queue"}')
    assert normal and all(status == 200 for status, _ in normal), normal
    assert [a[0] for a in answers] == [422]
    assert sorted(a[0] for a in answers_more) == [503] * 5
    at_once = [a for a in answers_more if b"more requests for it are waiting" in a[2]]
    waited = [a for a in answers_more if b"already holds 1 of 4 workers, its share" in a[2]]
    assert len(at_once) == 3 and len(waited) == 2, [a[2][:160] for a in answers_more]
    assert all(a[3] < 0.5 for a in at_once) and all(a[3] >= 0.9 for a in waited)
    assert all(a[1]["Retry-After"] == "1" for a in answers_more)
    assert queue_full == 3


@pytest.mark.parametrize("raw", ["0", "1.5", "half", "-1"])
def test_a_share_outside_0_to_1_is_refused_at_start(raw: str) -> None:
    with pytest.raises(ConfigError, match="AGENTFACTORY_RUNTIME_AGENT_WORKER_SHARE.*fraction of the workers"):
        ServerLimits.from_env({"AGENTFACTORY_RUNTIME_AGENT_WORKER_SHARE": raw})
    assert ServerLimits.from_env({"AGENTFACTORY_RUNTIME_AGENT_WORKER_SHARE": "1"}).agent_worker_share == 1.0
    assert [share_of(w, 0.5) for w in (1, 2, 3, 4, 8)] == [1, 1, 1, 2, 4]
