"""Attack: a reference whose look-up in the store fails otherwise than "not found" answered 500.

The workload author chooses the reference; the store writer can publish a second version of the same bytes.
`Admitter._verdict` caught only NotFoundError around `store.resolve`, so an AmbiguousReference (a signed agent
re-released as another version with identical bytes: docs/threat-model.md, "two versions with identical bytes")
or a StoreError (a name the registry store's grammar refuses; a registry that is down) escaped as a 500 with no
audit record, uncached, redone on every retry. Every error while resolving or verifying is now a refusal with its
reason, audited and cached like any verdict.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from admission_attack_fixtures import admission_world, ask, audit_records, served
from admission_helpers import review, wasm_pod
from runtime_helpers import OK_WAT, publish, wat_manifest

pytestmark = pytest.mark.toolchain


def test_two_versions_of_identical_bytes_are_refused_with_the_reason_never_a_500(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTFACTORY_HOME", str(tmp_path / "home"))
    signed, refs = admission_world(tmp_path / "home")
    manifest = wat_manifest("helper").replace("version: 1.0.0", "version: 1.1.0")
    publish(signed, tmp_path / "again", {"helper": (manifest, {"src/main.wat": OK_WAT})})
    digest = refs["helper"].split("@", 1)[1]
    with served(signed, tmp_path / "webhook") as (client, audit):
        for ref in (refs["helper"], f"helper:1.1.0@{digest}"):
            response = ask(client, review(wasm_pod(ref)))  # HTTP 200, an AdmissionReview, never code 500
            assert response["allowed"] is False and response["status"]["code"] == 403, response
            assert "identical bytes" in response["status"]["message"], response
        records = audit_records(audit)
        assert len(records) == 2 and all(r["allowed"] is False for r in records), records
        assert "identical bytes" in json.dumps(records)
