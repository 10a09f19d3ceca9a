"""Attack: re-encoded envelopes raise false "stolen key" alarms. Anyone who can read one published attestation
re-serialises it (indentation, key order, another unsigned `keyid`, another spelling of the same base64) and
POSTs it to the log, which has no authentication (like the public Rekor): each copy is a new dsse entry whose
signature verifies. `audit keys` accounted for dsse entries by the hash of the envelope bytes and reported each
copy as UNACCOUNTED (a stolen key at work?), exit 1 — an alarm anyone can raise, which buries a real one.

Now the audit accounts by what was signed (the DSSE payload, the signatures verified over its PAE), so copies
are recognised as the pipeline's own attestation — and a signature over anything the pipeline did not sign is
still UNACCOUNTED. Everything goes through the real `tlog serve` over HTTP and the real `audit` CLI.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from tlog_attack_helpers import audit, keys_report, pin_log, publish_logged, tlog_server

from agentfactory.dsse import INTOTO_PAYLOAD_TYPE, sign_envelope
from agentfactory.evidence import collect
from agentfactory.intoto import make_statement

pytestmark = pytest.mark.toolchain

ENTRIES = "/api/v1/log/entries"


def dsse_proposal(envelope_text: str, pem: bytes) -> dict[str, Any]:
    return {"apiVersion": "0.0.1", "kind": "dsse", "spec": {"proposedContent": {
        "envelope": envelope_text, "verifiers": [base64.b64encode(pem).decode()]}}}


def reencodings(envelope: bytes) -> list[str]:
    """The same signed attestation spelled differently: none of these changes a signed byte."""
    doc = json.loads(envelope)
    sig = doc["signatures"][0]["sig"]
    raw = base64.b64decode(sig)
    # The last base64 digit carries bits the decoder ignores when the length is not a multiple of 3.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    unpadded = sig.rstrip("=")
    padding_bits = {1: 4, 2: 2}.get(len(raw) % 3, 0)
    variants = [
        json.dumps(doc, indent=2),
        json.dumps(doc, indent=4, sort_keys=True),
        json.dumps({k: doc[k] for k in reversed(list(doc))}),
        json.dumps({**doc, "signatures": [{"keyid": "not-our-key-id", "sig": sig}]}),
        json.dumps({**doc, "signatures": [{"sig": sig}]}),
        json.dumps({**doc, "signatures": [{"sig": sig, "keyid": ""}]}, separators=(",", ":")),
    ]
    if padding_bits:
        last = alphabet.index(unpadded[-1]) | 1  # flip an ignored bit: decodes to the same signature
        odd = unpadded[:-1] + alphabet[last] + sig[len(unpadded):]
        if odd != sig and base64.b64decode(odd) == raw:
            variants.append(json.dumps({**doc, "signatures": [{"keyid": doc["signatures"][0]["keyid"], "sig": odd}]}))
    return variants


def test_reencoded_copies_of_genuine_envelopes_are_accounted_for(af_home: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    s = publish_logged(af_home, tmp_path / "t", ["wordy"])
    policy = pin_log(af_home / "tlog", s.keyring.public_keys(), tmp_path / "trust.yaml")
    monkeypatch.setenv("AGENTFACTORY_TRUST_POLICY", str(policy))
    key = s.keyring.public_keys()[0]
    agent = s.store.resolve("wordy")
    envelopes = [e for _, e in collect(s.store, agent).attestations]
    assert len(envelopes) == 4  # SBOM, provenance, scan and the image signature (cosign's sign/v1)
    code, before = keys_report()
    assert code == 0, before

    with tlog_server(af_home / "tlog") as url, httpx.Client(base_url=url, timeout=10) as client:
        posted = 0
        for envelope in envelopes:
            for text in reencodings(envelope):
                r = client.post(ENTRIES, json=dsse_proposal(text, key.pem))
                assert r.status_code == 201, r.text  # a new entry: the log hashes the bytes as sent
                posted += 1
        assert posted >= 24

        for where in (["--tlog", "embedded"], ["--tlog", url]):
            code, report = keys_report(*where)
            assert code == 0, report
            assert not report["unaccounted"] and not report["failed"] and not report["problems"]
            dsse = [e for e in report["entries"] if e["kind"] == "dsse"]
            assert len(dsse) == 4 + posted
            assert all(e["verified"] and not e["reason"] for e in dsse)  # each copy's signature checked over PAE

        # The class is "what was signed", not "some envelope bytes": a new signature over a payload the
        # pipeline never signed (a stolen key), whatever its spelling, is still UNACCOUNTED.
        statement = make_statement("wordy", agent.digest, "https://example.com/forged/v1", {"evil": True})
        forged = sign_envelope(INTOTO_PAYLOAD_TYPE, statement, s.keyring)
        r = client.post(ENTRIES, json=dsse_proposal(json.dumps(json.loads(forged.to_json()), indent=2), key.pem))
        assert r.status_code == 201
        stolen_index = r.json()[next(iter(r.json()))]["logIndex"]
        code, report = keys_report("--tlog", url)
        assert code == 1
        assert len(report["unaccounted"]) == 1 and f"log entry {stolen_index} " in report["unaccounted"][0]
        assert "stolen key" in report["unaccounted"][0]

    text = audit("keys").output
    assert "UNACCOUNTED" in text and "accounted for and logged" not in text
