"""A signed store and the real webhook over TLS for the attacks on admission (tests/security/test_attack_*.py).

Two agents published by the real pipeline: `helper`, signed, and `debugger`, built the same way but never
signed (what an attacker would slip in). The webhook is the real app on uvicorn over real TLS on loopback.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from admission_helpers import webhook
from runtime_helpers import OK_WAT, Signed, publish, signed_store, wat_manifest

from admission.config import AdmissionConfig
from admission.decide import Admitter
from agentfactory.audit import AuditLog
from agentfactory.policy import PolicyEngine


def admission_world(home: Path) -> tuple[Signed, dict[str, str]]:
    """The store and {name: name@digest} of `helper` (signed) and `debugger` (unsigned)."""
    signed = signed_store(home)
    publish(signed, home / "signed", {"helper": (wat_manifest("helper"), {"src/main.wat": OK_WAT})})
    publish(signed, home / "unsigned", {"debugger": (wat_manifest("debugger"),
                                                     {"src/main.wat": OK_WAT.replace("ok", "no")})}, sign=False)
    refs = {}
    for name in ("helper", "debugger"):
        agent = signed.store.resolve(name)
        refs[name] = f"{name}@{agent.digest}"
    return signed, refs


@contextlib.contextmanager
def served(signed: Signed, tmp: Path, engine: PolicyEngine | None = None,
           **config: Any) -> Iterator[tuple[httpx.Client, Path]]:
    """The webhook over TLS for `signed`'s store, as `admission serve` runs by default (admission.rego evaluated on
    the event loop when the verdict is cached); yields a client and the audit trail's path."""
    audit = tmp / "audit.jsonl"
    admitter = Admitter(AdmissionConfig(audit_log=audit, deadline_ms=5000, **config), signed.store, signed.trust,
                        engine or signed.engine, AuditLog(audit))
    with webhook(admitter, tmp / "tls", inline_decisions=True) as (_, client):
        yield client, audit


def ask(client: httpx.Client, body: dict[str, Any] | bytes, path: str = "/validate") -> dict[str, Any]:
    """POST a review; the answer is always HTTP 200 and an AdmissionReview (never a 500), for the same uid."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = client.post(path, content=content, headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["apiVersion"] == "admission.k8s.io/v1" and doc["kind"] == "AdmissionReview", doc
    if isinstance(body, dict) and isinstance(body.get("request"), dict):
        assert doc["response"]["uid"] == body["request"]["uid"]
    response: dict[str, Any] = doc["response"]
    if not response["allowed"]:
        assert response["status"]["message"], "a refusal always says why"
        assert response["status"]["code"] != 500, response
    return response


def audit_records(path: Path) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if r.get("event") == "admission"]
