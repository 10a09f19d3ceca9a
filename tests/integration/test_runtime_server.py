"""The node service over real HTTP on loopback: the example agents, refusals, limits, health and metrics."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers import TEMPLATES
from runtime_helpers import OK_WAT, Signed, publish, serving, signed_store, wat_manifest

from pipelines.run import Signing, run_pipeline
from sandbox_runtime.runtime import MAX_STDIN
from sandbox_runtime.server_limits import ServerLimits

pytestmark = pytest.mark.toolchain


@pytest.fixture
def signed(af_home: Path, tmp_path: Path) -> Signed:
    s = signed_store(af_home)
    report = run_pipeline(TEMPLATES, s.store, signing=Signing(s.keyring), engine=s.engine)
    assert report.ok, [t.errors for t in report.templates]
    publish(s, tmp_path / "extra", {
        "ok": (wat_manifest("ok"), {"src/main.wat": OK_WAT}),
        "spin": (wat_manifest("spin", timeout_ms=100),
                 {"src/main.wat": '(module (memory (export "memory") 1) (func (export "_start") (loop $l (br $l))))'}),
    })
    publish(s, tmp_path / "unsigned", {"plain": (wat_manifest("plain"), {"src/main.wat": OK_WAT})}, sign=False)
    return s


@pytest.fixture
def server(signed: Signed, tmp_path: Path) -> Iterator[str]:
    with serving(signed, tmp_path / "audit.jsonl") as url:
        yield url


def test_example_agents_run_through_the_service(server: str) -> None:
    with httpx.Client(base_url=server) as client:
        r = client.post("/v1/agents/wordstats/invoke", content=b"hello world\nzwei Zeilen\n")
        assert r.status_code == 200
        assert json.loads(r.content) == {"lines": 2, "words": 4, "bytes": 24, "chars": 24, "longest_line": 11}
        assert r.headers["X-Agent-Exit-Code"] == "0" and r.headers["X-Agent-Outcome"] == "ok"
        assert r.headers["X-Agent-Digest"].startswith("sha256:")
        r = client.post("/v1/agents/base64/invoke", content=b"hello")
        assert r.content == b"aGVsbG8=\n"
        r = client.post("/v1/agents/base64/invoke", params={"arg": "-d"}, content=b"aGVsbG8=")
        assert r.content == b"hello"
        r = client.post("/v1/agents/sha256sum/invoke", content=b"abc")
        assert r.content.startswith(b"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        r = client.post("/v1/agents/jsonfmt/invoke", content=b'{"b":1,"a":[true,null]}',
                        headers={"Accept": "application/json"})
        doc = r.json()
        assert r.status_code == 200 and doc["outcome"] == "ok" and doc["exitCode"] == 0
        assert '"a"' in doc["stdout"] and doc["stderr"] == ""
        r = client.post("/v1/agents/jsonfmt/invoke", content=b"{broken", headers={"Accept": "application/json"})
        assert r.status_code == 200 and r.json()["exitCode"] == 1 and "error at line 1" in r.json()["stderr"]
        pinned = client.post("/v1/agents/ok/invoke", params={"version": "1.0.0"})
        assert pinned.content == b"ok\n"
        by_digest = client.post("/v1/agents/ok/invoke", params={"digest": pinned.headers["X-Agent-Digest"]})
        assert by_digest.content == b"ok\n"


def test_refusals_and_bad_requests(server: str) -> None:
    with httpx.Client(base_url=server) as client:
        r = client.post("/v1/agents/plain/invoke")
        assert r.status_code == 403
        assert r.json()["reason"] == "unverified" and r.json()["verdict"]["allowed"] is False
        assert "no signature" in r.json()["error"]
        assert client.post("/v1/agents/nosuch/invoke").status_code == 404
        r = client.post("/v1/agents/ok/invoke", params={"env": "SECRET=1"})
        assert r.status_code == 400 and "not in the agent's environment allowlist" in r.json()["error"]
        assert client.post("/v1/agents/ok/invoke", params={"bogus": "1"}).status_code == 400
        assert client.post("/v1/agents/ok/invoke", params={"env": "novalue"}).status_code == 400
        assert client.post("/v1/agents/../etc/invoke").status_code == 404
        assert client.get("/v1/agents/ok/invoke").status_code == 404
    # A declared body over the limit is refused before a byte of it is read.
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        head = f"POST /v1/agents/ok/invoke HTTP/1.1\r\nHost: x\r\nContent-Length: {MAX_STDIN + 1}\r\n\r\n"
        sock.sendall(head.encode())
        reply = b""
        while chunk := sock.recv(4096):  # the server answers and closes
            reply += chunk
        reply = reply.decode()
    assert reply.startswith("HTTP/1.1 413") and "stdin limit" in reply, reply
    with httpx.Client(base_url=server) as client:  # the service is still fine afterwards
        assert client.post("/v1/agents/ok/invoke").content == b"ok\n"


def test_a_stopped_guest_is_422_and_the_service_stays_healthy(server: str, tmp_path: Path) -> None:
    with httpx.Client(base_url=server) as client:
        r = client.post("/v1/agents/spin/invoke")
        assert r.status_code == 422
        assert r.json()["outcome"] == "timeout" and r.headers["X-Agent-Limits-Hit"] == "timeout"
        assert client.get("/healthz").text == "ok\n"
        assert client.get("/readyz").status_code == 200
        assert client.post("/v1/agents/ok/invoke").content == b"ok\n"
        metrics = client.get("/metrics").text
    assert 'agent_factory_wasi_executions_total{result="timeout"}' in metrics
    assert 'agent_factory_wasi_security_violations_total{reason="timeout"}' in metrics
    assert "agent_factory_wasi_sandbox_overhead_bucket" in metrics
    assert 'agent_factory_runtime_requests_total{code="422",endpoint="invoke"}' in metrics
    events = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [e["outcome"] for e in events if e["event"] == "execution"] == ["timeout", "ok"]


def test_concurrent_invocations_are_isolated(signed: Signed, tmp_path: Path) -> None:
    """Six clients of one agent on four workers: the agent may use every worker (share lifted to 1), so four
    instances run at once and none sees another's input; the requests beyond the workers wait for one."""
    errors: list[str] = []
    with serving(signed, tmp_path / "audit.jsonl", limits=ServerLimits(agent_worker_share=1.0)) as url:
        _six_clients(url, errors)
    assert errors == []


def test_concurrent_invocations_within_the_default_share_all_answer(server: str) -> None:
    """With the default share (2 of 4 workers for one agent) the same six clients still all get 200: a request
    beyond the share waits in the agent's queue (1 s) for one of its own requests to finish, and these take ms."""
    errors: list[str] = []
    _six_clients(server, errors)
    assert errors == []


def _six_clients(server: str, errors: list[str]) -> None:
    def worker(i: int) -> None:
        with httpx.Client(base_url=server) as client:
            for j in range(15):
                text = f"{i}-{j} " * (i + 1)
                r = client.post("/v1/agents/wordstats/invoke", content=text.encode())
                if r.status_code != 200 or json.loads(r.content)["words"] != i + 1:
                    errors.append(f"{i}/{j}: {r.status_code} {r.content[:80]!r}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
