"""The webhook against a real registry: the configured store only, and the internal deadline (fail closed)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from admission_helpers import review, wasm_agent, wasm_pod, webhook
from lying_registry import lying_proxy
from registry_server import Registry, running_registry
from runtime_helpers import OK_WAT, publish, signed_store, wat_manifest

from admission.config import AdmissionConfig
from admission.decide import Admitter
from agentfactory.store import open_store
from agentfactory.store.copy import copy_agent

pytestmark = pytest.mark.toolchain


@pytest.fixture(autouse=True)
def no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    with running_registry(tmp_path / "registry") as r:
        yield r


def test_deadline_and_foreign_registries(registry: Registry, af_home: Path, tmp_path: Path) -> None:
    s = signed_store(af_home)
    publish(s, tmp_path / "t", {"ok": (wat_manifest("ok"), {"src/main.wat": OK_WAT})})
    remote = open_store(f"oci://{registry.host}/agents?plain-http=true")
    agent = s.store.resolve("ok")
    copy_agent(s.store, remote, agent)
    ref = f"ok@{agent.digest}"
    with lying_proxy(f"http://{registry.host}") as proxy:
        slow = open_store(f"oci://{proxy.host}/agents?plain-http=true")
        config = AdmissionConfig(deadline_ms=300, negative_cache_ttl=0)
        admitter = Admitter(config, slow, s.trust, s.engine)
        with webhook(admitter, tmp_path / "tls") as (_, client):
            crd = {"group": "agentfactory.dev", "version": "v1alpha1", "kind": "WasmAgent"}
            proxy.delay_s = 1.0  # every registry round trip now takes a second
            r = client.post("/validate", content=json.dumps(review(wasm_agent(ref), **crd)).encode())
            assert r.status_code == 200
            resp = r.json()["response"]
            assert resp["allowed"] is False and resp["status"]["code"] == 504
            assert "internal deadline of 300 ms" in resp["status"]["message"]
            proxy.delay_s = 0.0
            for _ in range(100):  # the slow verification finishes in the background and is cached
                r = client.post("/validate", content=json.dumps(review(wasm_agent(ref), **crd)).encode())
                if r.json()["response"]["allowed"]:
                    break
            assert r.json()["response"]["allowed"] is True, r.json()
            # a reference into another registry is refused: the webhook reads only its own store
            other = f"registry.example.com/agents/{ref}"
            resp = client.post("/validate", content=json.dumps(review(wasm_pod(other))).encode()).json()["response"]
            assert not resp["allowed"] and "agents are admitted from" in resp["status"]["message"]
            same = f"{proxy.host}/agents/{ref}"
            resp = client.post("/validate", content=json.dumps(review(wasm_pod(same))).encode()).json()["response"]
            assert resp["allowed"] is True
