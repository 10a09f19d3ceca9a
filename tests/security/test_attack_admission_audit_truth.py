"""Attack: an audit trail that says something else than what the API server was answered.

A review that did not finish within `deadlineMs` was answered 504 (denied), while its worker thread went on
judging and wrote the record of what it reached afterwards: `allowed: true, decision: allowed`, under the same
uid, and the 504 itself was never recorded. The judgement now records nothing; the HTTP layer records the answer
it sends (denied, code 504), once; the late judgement only fills the verdict cache.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from admission_attack_fixtures import admission_world, ask, audit_records
from admission_helpers import review, wasm_pod, webhook

from admission.config import AdmissionConfig
from admission.decide import Admitter
from agentfactory.audit import AuditLog

pytestmark = pytest.mark.toolchain


class SlowStore:
    """The store as a remote registry under load answers: every look-up takes 1.5 s."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def resolve(self, *args: Any, **kwargs: Any) -> Any:
        time.sleep(1.5)
        return self.inner.resolve(*args, **kwargs)


def test_a_review_answered_504_is_recorded_as_denied_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTFACTORY_HOME", str(tmp_path / "home"))
    signed, refs = admission_world(tmp_path / "home")
    audit = tmp_path / "audit.jsonl"
    admitter = Admitter(AdmissionConfig(audit_log=audit, deadline_ms=500), SlowStore(signed.store), signed.trust,
                        signed.engine, AuditLog(audit))
    doc = review(wasm_pod(refs["helper"]))
    uid = doc["request"]["uid"]
    with webhook(admitter, tmp_path / "tls") as (_, client):
        answer = ask(client, doc)
        assert answer["allowed"] is False and answer["status"]["code"] == 504, answer
        time.sleep(2.5)  # the judgement finishes in its thread meanwhile, and fills the cache
        again = review(wasm_pod(refs["helper"]))
        assert ask(client, again)["allowed"] is True  # the late verdict was cached: the retry is admitted
    mine = [r for r in audit_records(audit) if r.get("uid") == uid]
    assert len(mine) == 1, mine
    assert mine[0]["allowed"] is False and mine[0]["decision"] == "denied" and mine[0]["code"] == 504, mine
    assert mine[0]["peer"] == "127.0.0.1"  # who sent it: anyone who reaches the port can send a review
    assert [r["allowed"] for r in audit_records(audit) if r.get("uid") == again["request"]["uid"]] == [True]
    assert json.dumps(mine[0]).count("deadline") >= 1


def test_a_record_says_which_object_and_which_subresource(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Pod named by generateName (every Pod a controller makes) has no request.name: it was recorded as ''. A
    `kubectl debug` (UPDATE of pods/ephemeralcontainers) was recorded as a plain Pod UPDATE."""
    from admission.review import parse_review

    monkeypatch.setenv("AGENTFACTORY_HOME", str(tmp_path / "home"))
    signed, refs = admission_world(tmp_path / "home")
    audit = tmp_path / "audit.jsonl"
    admitter = Admitter(AdmissionConfig(audit_log=audit, deadline_ms=5000), signed.store, signed.trust,
                        signed.engine, AuditLog(audit))
    pod = wasm_pod(refs["helper"])
    pod["metadata"].pop("name", None)
    pod["metadata"]["generateName"] = "web-7d9f5-"
    doc = review(pod)
    doc["request"]["name"] = ""
    admitter.review(parse_review(json.dumps(doc).encode()), "enforce")
    debug = review(wasm_pod(refs["helper"]), operation="UPDATE", sub_resource="ephemeralcontainers",
                   old=wasm_pod(refs["helper"]))
    admitter.review(parse_review(json.dumps(debug).encode()), "enforce")
    first, second = audit_records(audit)
    assert first["name"] == "web-7d9f5-" and first["subResource"] == "", first
    assert second["subResource"] == "ephemeralcontainers" and second["operation"] == "UPDATE", second
