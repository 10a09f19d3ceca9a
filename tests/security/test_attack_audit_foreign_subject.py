"""Attack: make a stolen key's signatures look "accounted for". `gather_store` collected every signature and
envelope attached to any agent, and `audit keys` matched log entries against that pile. A thief with a stolen
key and push access to the store logged a signature over their own artifact (and an attestation about it), then
attached both as extra referrers to an existing benign agent: `audit keys` said "every signature by our keys is
accounted for". Pushing the thief's artifact as a new agent, correctly attached, did the same.

Now a store signature counts only when it is about the agent it is attached to (its digest, or the statement's
subject), anything else is MISATTACHED, and the pipeline's own signing record — what it signed, when, for which
store — must hold every logged signature. The thief's entries are logged through the real `tlog serve` over
HTTP; the audit is the real CLI.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx
import pytest
from runtime_helpers import Signed
from tlog_attack_helpers import audit, keys_report, pin_log, publish_logged, tlog_server

from agentfactory.artifact import build_agent_artifact
from agentfactory.dsse import INTOTO_PAYLOAD_TYPE, Envelope, sign_envelope
from agentfactory.evidence import ArtifactSignature, attach, proposed_for_envelope, proposed_for_signature
from agentfactory.intoto import SLSA_PROVENANCE_V1, make_statement
from agentfactory.tlog.signing_record import default_record_path

pytestmark = pytest.mark.toolchain

ENTRIES = "/api/v1/log/entries"


@pytest.fixture
def world(af_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Signed:
    s = publish_logged(af_home, tmp_path / "t", ["benign"])
    policy = pin_log(af_home / "tlog", s.keyring.public_keys(), tmp_path / "trust.yaml")
    monkeypatch.setenv("AGENTFACTORY_TRUST_POLICY", str(policy))
    code, report = keys_report()
    assert code == 0, report
    return s


def thief_signs(s: Signed, url: str, digest: str) -> tuple[ArtifactSignature, list[tuple[str, Envelope]], list[bytes]]:
    """With the stolen key: a signature over `digest` and a provenance attestation about it, each logged over
    HTTP (as a thief would, in the public log) — what the pipeline would have made, without the pipeline."""
    key = s.keyring.public_keys()[0]
    art = ArtifactSignature.from_signature(digest, s.keyring.sign_digest(bytes.fromhex(digest.split(":")[1])))
    env = sign_envelope(INTOTO_PAYLOAD_TYPE, make_statement("evil", digest, SLSA_PROVENANCE_V1, {"evil": True}),
                        s.keyring)
    records = []
    with httpx.Client(base_url=url, timeout=10) as client:
        for proposal in (proposed_for_signature(art, key.pem), proposed_for_envelope(env.to_json(), key.pem)):
            r = client.post(ENTRIES, json=proposal)
            assert r.status_code == 201, r.text
            records.append(r.content)
    return art, [(SLSA_PROVENANCE_V1, env)], records


def evil_wasm(s: Signed) -> bytes:
    _, wasm = s.store.fetch_wasm("benign")
    return wasm + b"\x00\x05\x04evil"  # a custom section: another module, another digest


def test_stolen_signatures_attached_to_a_benign_agent_are_misattached(af_home: Path, world: Signed) -> None:
    s = world
    wasm = evil_wasm(s)
    digest = "sha256:" + hashlib.sha256(wasm).hexdigest()  # never pushed: only attached to `benign`
    with tlog_server(af_home / "tlog") as url:
        art, attestations, records = thief_signs(s, url, digest)
        attach(s.store, s.store.resolve("benign"), art, attestations, tlog_records=records)
        for where in ([], ["--tlog", url]):
            code, report = keys_report(*where)
            assert code == 1
            assert len(report["misattached"]) == 2, report["misattached"]
            assert all("MISATTACHED" in m and "benign" in m for m in report["misattached"])
            assert len(report["unaccounted"]) == 2, report["unaccounted"]
            assert any("hashedrekord" in u and digest in u for u in report["unaccounted"])
            assert any("dsse" in u for u in report["unaccounted"])
    assert "accounted for and logged" not in audit("keys").output


def test_a_thief_published_agent_is_unaccounted_without_the_pipelines_record(af_home: Path, world: Signed) -> None:
    """Correctly attached to its own agent, the store binding holds: only the signing record can tell."""
    s = world
    wasm = evil_wasm(s)
    evil = s.store.push_agent(build_agent_artifact(wasm, name="evil", version="1.0.0", created_epoch=0),
                              name="evil", version="1.0.0")
    with tlog_server(af_home / "tlog") as url:
        art, attestations, records = thief_signs(s, url, evil.digest)
    attach(s.store, evil, art, attestations, tlog_records=records)
    code, report = keys_report()
    assert code == 1 and not report["misattached"]
    assert len(report["unaccounted"]) == 2
    assert all("no record of" in u and "stolen key" in u for u in report["unaccounted"])

    # The record is evidence only while it is whole: a removed line breaks its hash chain, and a missing
    # record is a problem, never a pass.
    record = default_record_path()
    lines = record.read_bytes().splitlines(keepends=True)
    record.write_bytes(lines[0] + b"".join(lines[2:]))
    code, report = keys_report()
    assert code == 1 and any("hash chain breaks" in p for p in report["problems"])
    record.unlink()
    code, report = keys_report()
    assert code == 1 and any("no signing record" in p for p in report["problems"])


def test_the_record_says_what_was_signed(af_home: Path, world: Signed) -> None:
    """One line per signature: the artifact digest for the signature, the PAE digest for each attestation."""
    s = world
    agent = s.store.resolve("benign")
    lines = [json.loads(line) for line in default_record_path().read_text().splitlines()]
    # the signature, the SBOM, provenance and scan attestations, and the image signature (cosign's sign/v1)
    assert [x["kind"] for x in lines] == ["hashedrekord", "dsse", "dsse", "dsse", "dsse"]
    assert all(x["digest"] == agent.digest and x["store"] == s.store.url and x["agent"] == "benign" for x in lines)
    assert lines[0]["signed"] == agent.digest
    assert all(x["signed"].startswith("sha256:") and len(x["payloadHash"]) == 64 for x in lines[1:])
