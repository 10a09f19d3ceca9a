"""Attack: bury a stolen-key signature under 10,000 entries. The search index answered `ORDER BY idx LIMIT
10000` with no sign of truncation, so after 10,000 entries by our key (re-encoded copies of one published
attestation: anyone can make them, no key needed — or simply a busy key) a real stolen-key signature at index
10,004 appeared in neither `audit keys` nor `audit search --key`.

Now the index answers in full, a server that would have to cut its answer says so (422, never a shorter list),
and `audit keys` reads the log's entries themselves besides the index. The 10,015 entries are written through
the storage layer in batches (the index is then built by the log's own catch-up at open); the audit reads them
through the real CLI and the real server.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from pathlib import Path

import httpx
import pytest
from tlog_attack_helpers import audit, keys_report, pin_log, publish_logged, serving_in_process, tlog_server

from agentfactory.evidence import collect
from agentfactory.tlog import server as tlog_server_module
from agentfactory.tlog.entries import canonical, hashedrekord_body, parse_proposed_entry
from agentfactory.tlog.log import EmbeddedLog
from agentfactory.tlog.storage import TreeStorage

pytestmark = pytest.mark.toolchain

FLOOD = 10_000
GENUINE = 5  # the genuine agent's entries: signature, SBOM, provenance, scan, image signature (for cosign)
THIEF_INDEX = FLOOD + GENUINE  # the genuine agent's entries, then the flood


def dsse_body(envelope_text: str, pem: bytes) -> bytes:
    proposal = {"apiVersion": "0.0.1", "kind": "dsse", "spec": {"proposedContent": {
        "envelope": envelope_text, "verifiers": [base64.b64encode(pem).decode()]}}}
    return canonical(parse_proposed_entry(proposal, "flood").body())


def test_a_stolen_key_signature_after_10000_entries_is_found(af_home: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    s = publish_logged(af_home, tmp_path / "t", ["busy"])
    policy = pin_log(af_home / "tlog", s.keyring.public_keys(), tmp_path / "trust.yaml")
    monkeypatch.setenv("AGENTFACTORY_TRUST_POLICY", str(policy))
    key = s.keyring.public_keys()[0]
    agent = s.store.resolve("busy")
    envelope = json.loads(collect(s.store, agent).attestations[0][1])
    subjects = {"subjects": [agent.digest]}

    def copies(start: int, n: int) -> list[tuple[bytes, int, dict[str, list[str]]]]:
        now = int(time.time())
        return [(dsse_body(json.dumps({**envelope, "signatures": [{**envelope["signatures"][0], "keyid": f"c{i}"}]}),
                           key.pem), now, subjects) for i in range(start, start + n)]

    evil = hashlib.sha256(b"the thief's agent").digest()
    thief = canonical(hashedrekord_body(evil.hex(), s.keyring.sign_digest(evil).signature, key.pem))
    with TreeStorage(af_home / "tlog" / "tree.db") as storage:
        assert storage.size() == GENUINE
        for start in range(0, FLOOD, 2500):
            storage.append_many(copies(start, 2500))
        ((index, _),) = storage.append_many([(thief, int(time.time()), None)])
        storage.append_many(copies(FLOOD, 10))
    assert index == THIEF_INDEX
    thief_uuid = hashlib.sha256(b"\x00" + thief).hexdigest()
    EmbeddedLog(af_home / "tlog").close()  # the log's own catch-up indexes the new leaves

    code, report = keys_report()
    assert code == 1
    assert len(report["entries"]) == GENUINE + FLOOD + 11
    assert [u for u in report["unaccounted"] if f"log entry {THIEF_INDEX} " in u and evil.hex() in u]
    assert len(report["unaccounted"]) == 1 and not report["failed"] and not report["problems"], report["problems"]

    found = json.loads(audit("search", "--key", key.key_id[:12], "--from", str(THIEF_INDEX - 1), "--json").output)
    assert [e["logIndex"] for e in found["entries"]][:3] == [THIEF_INDEX - 1, THIEF_INDEX, THIEF_INDEX + 1]
    assert len(found["entries"]) == 12 and found["failed"] == 0

    # Over HTTP, the index answers in full (the old server stopped at 10,000 without saying so).
    with tlog_server(af_home / "tlog") as url:
        r = httpx.post(url + "/api/v1/index/retrieve", timeout=60,
                       json={"publicKey": {"format": "x509", "content": base64.b64encode(key.pem).decode()}})
        assert r.status_code == 200
        assert len(r.json()) == GENUINE + FLOOD + 11 and thief_uuid in {u[-64:] for u in r.json()}


def test_a_server_that_must_cut_its_answer_refuses_instead(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the server's bound, the search is a 422 naming the count, never a silently shorter list."""
    from agentfactory.keys.local import LocalKeyring
    from agentfactory.tlog.base import LogError
    from agentfactory.tlog.client import RekorClient

    ring = LocalKeyring(tmp_path / "keys")
    ring.create()
    pem = ring.public_keys()[0].pem
    with EmbeddedLog(tmp_path / "tlog") as log:
        for i in range(6):
            digest = hashlib.sha256(b"%d" % i).digest()
            log.add(json.loads(json.dumps(hashedrekord_body(digest.hex(), ring.sign_digest(digest).signature, pem))))
        monkeypatch.setattr(tlog_server_module, "MAX_SEARCH_RESULTS", 5)
        with serving_in_process(log) as client:
            r = client.post("/api/v1/index/retrieve",
                            json={"publicKey": {"format": "x509", "content": base64.b64encode(pem).decode()}})
            assert r.status_code == 422 and "matches 6 entries" in r.json()["message"]
            with RekorClient(str(client.base_url)) as rekor, pytest.raises(LogError, match="matches 6 entries"):
                rekor.search(public_key_pem=pem)  # the client passes the refusal on: an audit fails, loudly
        assert len(log.search(public_key_pem=pem)) == 6  # the log itself answers in full
