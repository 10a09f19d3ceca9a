"""Attack: a component whose imports were changed after it was signed.

Rewriting the import of the world's interface in the stored bytes (here to another interface of the same
length, which a host might provide with more power) changes the digest: the verifier refuses it at the node
and for `agentfactory verify` (the check the pipeline's gate, promotion and admission share), naming the
digest. An insider who then signs the changed bytes too gets no further: the node holds the imports to
the world and the signed contract and refuses, naming the import, before compiling.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from component_helpers import ECHO, component, manifest
from runtime_helpers import Signed, sign_raw, signed_store

from agentfactory.fetchverify import verify_stored
from sandbox_runtime.runtime import Refused, Runtime, RuntimeConfig
from sandbox_runtime.sandbox import Invocation

ORIGINAL = b"agentfactory:agent/tools@0.1.0"
CHANGED = b"agentfactory:admin/shell@0.1.0"


@pytest.fixture
def signed(af_home: Path) -> Signed:
    return signed_store(af_home)


def test_changed_imports_are_refused_as_tampered(signed: Signed, tmp_path: Path) -> None:
    good = component(ECHO)
    assert good.count(ORIGINAL) == 1 and len(ORIGINAL) == len(CHANGED)
    digest = sign_raw(signed, tmp_path / "t", "agent", good, manifest("agent"))
    rt = Runtime(signed.store, signed.trust, signed.engine, RuntimeConfig(audit_log=tmp_path / "audit.jsonl"))
    try:
        assert rt.invoke("agent", Invocation(stdin=b"fine")).execution.stdout == b"fine"
    finally:
        rt.close()

    blob = Path(signed.store.url.removeprefix("oci-layout:")) / "blobs" / "sha256" / digest.split(":")[1]
    blob.chmod(0o644)
    blob.write_bytes(blob.read_bytes().replace(ORIGINAL, CHANGED))

    verdict, _ = verify_stored(signed.store, signed.store.resolve("agent"), signed.trust, engine=signed.engine)
    assert not verdict.allowed and any(c.name == "digest" and not c.ok for c in verdict.checks)

    rt = Runtime(signed.store, signed.trust, signed.engine, RuntimeConfig(audit_log=tmp_path / "audit.jsonl"))
    try:
        with pytest.raises(Refused) as refused:
            rt.invoke("agent", Invocation(stdin=b"x"))
        assert refused.value.reason == "tampered" and "digest:" in str(refused.value)
        assert rt.modules.pool.compiles == 0
    finally:
        rt.close()
    denied = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [r["reason"] for r in denied if r["event"] == "decision" and not r["allowed"]] == ["tampered"]


def test_changed_imports_signed_again_are_refused_by_the_world(signed: Signed, tmp_path: Path) -> None:
    changed = component(ECHO).replace(ORIGINAL, CHANGED)
    sign_raw(signed, tmp_path / "t", "agent", changed, manifest("agent"))
    rt = Runtime(signed.store, signed.trust, signed.engine, RuntimeConfig())
    try:
        with pytest.raises(Refused) as refused:
            rt.invoke("agent", Invocation(stdin=b"x"))
        assert refused.value.reason == "undeclared-tool"
        assert "import 'agentfactory:admin/shell@0.1.0'" in str(refused.value)
        assert rt.modules.pool.compiles == 0
    finally:
        rt.close()
