"""http.fetch through the whole node path: a template with spec.http built and signed by the real pipeline,
its grant carried in the signed run contract, verified, linked (the node judges the grant again) and run by
the Runtime, with every request in the node's audit trail."""

from __future__ import annotations

import json
from pathlib import Path

from http_fetch_helpers import audit_records, fetch_guest_wat, make_ca, serving
from runtime_helpers import publish, signed_store

from agentfactory.audit import verify_chain
from sandbox_runtime.http_fetch import HttpNode, HttpSettings
from sandbox_runtime.runtime import Refused, Runtime, RuntimeConfig
from sandbox_runtime.sandbox import Invocation


def manifest(port: int) -> str:
    return f"""apiVersion: agentfactory.dev/v1alpha1
kind: AgentTemplate
metadata:
  name: caller
  version: 1.0.0
  description: Calls an API.
  owners: ["@example/team"]
spec:
  language: wat
  sources: [src/main.wat]
  tools: [http.fetch]
  limits: {{memoryMiB: 1, timeoutMs: 5000}}
  tests: {{none: "the runtime test runs it against its own server"}}
  http:
    allow:
      - url: https://localhost:{port}/v1/*
"""


def test_an_agent_calls_an_allowed_api_through_the_node(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "ca")
    signed = signed_store(tmp_path / "home")
    with serving(ca) as server:
        request = json.dumps({"method": "GET", "url": server.url("localhost", "/v1/json")}).encode()
        publish(signed, tmp_path / "templates", {"caller": (manifest(server.port),
                                                            {"src/main.wat": fetch_guest_wat(request)})})
        audit = tmp_path / "audit.jsonl"
        refusing = Runtime(signed.store, signed.trust, signed.engine, RuntimeConfig(audit_log=tmp_path / "a0.jsonl"))
        try:  # the default node refuses loopback: the request is refused inside, the agent sees why
            out = json.loads(refusing.invoke("caller", Invocation()).execution.stdout)
            assert out["error"]["reason"] == "address" and "--http-allow-loopback" in out["error"]["message"]
        finally:
            refusing.close()
        strict = Runtime(signed.store, signed.trust, signed.engine,
                         RuntimeConfig(http=HttpNode(HttpSettings(allow_loopback=True, max_requests=4))))
        try:  # a node whose ceiling is under the contract's limit refuses the agent before it runs
            strict.invoke("caller", Invocation())
            raise AssertionError("the grant is over this node's ceiling")
        except Refused as exc:
            assert exc.reason == "http-grant" and "maxRequests is 8, above this node's ceiling of 4" in str(exc)
        finally:
            strict.close()
        node = HttpNode(HttpSettings(allow_loopback=True, ca_file=ca.ca_file))
        rt = Runtime(signed.store, signed.trust, signed.engine, RuntimeConfig(audit_log=audit, http=node))
        try:
            result = rt.invoke("caller", Invocation())
        finally:
            rt.close()
    answer = json.loads(result.execution.stdout)
    assert result.execution.outcome == "ok" and answer["status"] == 200, result.execution
    assert [r["event"] for r in audit_records(audit)] == ["decision", "http", "execution"]
    assert audit_records(audit)[1]["host"] == f"localhost:{server.port}"


def test_runtimes_sharing_one_node_each_record_into_their_own_trail(tmp_path: Path) -> None:
    """A node given without an audit sink is never bound to the first runtime that uses it: before, a second
    runtime over the same node (a module-scoped fixture, a library user) recorded its requests through the
    first one's trail, closed by then, so its agent's response was withheld (or its records landed in
    whatever file reused the closed descriptor)."""
    ca = make_ca(tmp_path / "ca")
    signed = signed_store(tmp_path / "home")
    node = HttpNode(HttpSettings(allow_loopback=True, ca_file=ca.ca_file))
    with serving(ca) as server:
        request = json.dumps({"method": "GET", "url": server.url("localhost", "/v1/json")}).encode()
        publish(signed, tmp_path / "templates", {"caller": (manifest(server.port),
                                                            {"src/main.wat": fetch_guest_wat(request)})})
        answers = []
        for name in ("first", "second"):
            rt = Runtime(signed.store, signed.trust, signed.engine,
                         RuntimeConfig(audit_log=tmp_path / f"{name}.jsonl", http=node))
            try:
                answers.append(json.loads(rt.invoke("caller", Invocation()).execution.stdout))
            finally:
                rt.close()
    assert [a.get("status") for a in answers] == [200, 200], answers
    assert node.audit is None  # the shared node itself was never changed
    for name in ("first", "second"):
        trail = tmp_path / f"{name}.jsonl"
        assert [r["event"] for r in audit_records(trail)] == ["decision", "http", "execution"]
        assert verify_chain(trail) == 3  # each record linked to the one before it in its own trail
