"""Transparency-log records as evidence: pipeline-signed evidence logged in a real embedded log verifies
offline, and every way a record can lie (untrusted log, forged SET, bent proof, foreign checkpoint, another
artifact) fails the `tlog` check with its reason; a trust policy without logs judges as before."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import hello_manifest, write_template

from agentfactory.dsse import parse_envelope
from agentfactory.errors import InputError, ValidationFailed
from agentfactory.evidence import (
    ArtifactSignature,
    Evidence,
    collect,
    parse_artifact_signature,
    proposed_for_envelope,
    proposed_for_signature,
)
from agentfactory.intoto import parse_statement
from agentfactory.keys.local import LocalKeyring
from agentfactory.store import OCILayoutStore, StoredAgent
from agentfactory.tlog.bundle import dsse_check, hashedrekord_check, verify_record
from agentfactory.tlog.entries import canonical, hashedrekord_body
from agentfactory.tlog.log import EmbeddedLog
from agentfactory.tlog.note import Checkpoint, LogKey, parse_signed_note
from agentfactory.trust import TrustPolicy, from_public_keys, load_trust_policy, to_yaml
from agentfactory.verifier import Verdict, verify
from pipelines.run import Signing, run_pipeline

WAT = '(module (memory (export "memory") 1) (func (export "_start")) (global i32 (i32.const 7)))'
CHECKS = ["digest", "signature", "key-status", "sbom", "provenance", "scan", "builder", "source"]


@dataclass
class World:
    store: OCILayoutStore
    keyring: LocalKeyring
    agent: StoredAgent
    log: EmbeddedLog
    records: dict[str, bytes]  # "signature", "sbom", "provenance" -> TlogRecord JSON
    root: Path

    def pem(self, key_id: str) -> bytes:
        (key,) = [k for k in self.keyring.public_keys() if k.key_id == key_id]
        return key.pem

    def policy(self, *logs: bytes) -> TrustPolicy:
        return from_public_keys(self.keyring.public_keys(), log_keys=list(logs or [self.log.public_key_pem()]))

    def evidence(self, **records: bytes | None) -> Evidence:
        """The stored evidence, with its tlog records replaced (a None drops one)."""
        ev = collect(self.store, self.agent)
        chosen = {**self.records, **records}
        ev.tlog = [(f"test:{name}", doc) for name, doc in chosen.items() if doc is not None]
        return ev

    def verify(self, ev: Evidence | None = None, policy: TrustPolicy | None = None) -> Verdict:
        wasm = self.store.fetch_wasm(self.agent.digest)[1]
        return verify(self.agent.digest, wasm, ev if ev is not None else collect(self.store, self.agent),
                      policy or self.policy())


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    tmp = tmp_path_factory.mktemp("tlog-evidence")
    write_template(tmp / "templates", "alpha", manifest=hello_manifest("alpha", language="wat", sources="[m.wat]"),
                   files={"m.wat": WAT})
    store = OCILayoutStore(tmp / "store")
    keyring = LocalKeyring(tmp / "keys")
    log = EmbeddedLog(tmp / "tlog")
    # The sign stage logs the signature and each attestation and bundles each with its entry.
    report = run_pipeline(tmp / "templates", store, signing=Signing(keyring, tlog=log,
                                                                    tlog_key_pem=log.public_key_pem()), jobs=1)
    assert report.ok, [t.errors for t in report.templates]
    (agent,) = store.list_agents()
    world = World(store, keyring, agent, log, {}, tmp)
    ev = collect(store, agent)
    names = {"https://cyclonedx.org/bom": "sbom", "https://agentfactory.dev/attestation/scan/v1": "scan",
             "https://slsa.dev/provenance/v1": "provenance",
             "https://sigstore.dev/cosign/sign/v1": "image"}  # the image signature, for cosign
    by_envelope = {hashlib.sha256(doc).hexdigest(): names[parse_statement(parse_envelope(doc, w).payload, w)
                                                          .predicate_type] for w, doc in ev.attestations}
    for _, record in ev.tlog:  # name each record by what it logs
        body = json.loads(base64.b64decode(next(iter(json.loads(record).values()))["body"]))
        name = "signature" if body["kind"] == "hashedrekord" else by_envelope[body["spec"]["envelopeHash"]["value"]]
        world.records[name] = record
    assert sorted(world.records) == ["image", "provenance", "sbom", "scan", "signature"]
    # Fresh proofs against the final tree (the bundles hold each entry's proof at its own tree size).
    world.records = {k: log.entry(json.loads(v).popitem()[0]).to_json() for k, v in world.records.items()}
    return world


def failed(verdict: Verdict) -> str:
    (c,) = [c for c in verdict.checks if c.name == "tlog"]
    assert not c.ok, f"tlog unexpectedly passed: {c.reason}"
    assert not verdict.allowed
    return c.reason


def edit(record: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
    doc = json.loads(record)
    change(next(iter(doc.values())))
    return json.dumps(doc).encode()


# --- the contract -------------------------------------------------------------------------------------------


def test_logged_evidence_verifies_offline(world: World) -> None:
    stored = collect(world.store, world.agent)
    assert sorted(next(iter(json.loads(doc))) for _, doc in stored.tlog) == sorted(
        next(iter(json.loads(doc))) for doc in world.records.values())  # the same entries (uuids)
    verdict = world.verify()
    assert verdict.allowed, verdict.reasons
    assert [c.name for c in verdict.checks if c.name in CHECKS or c.name == "tlog"] == [*CHECKS, "tlog"]
    assert verdict.score == 10.0  # the tlog check does not score: policies' min_score stay meaningful
    (tlog,) = [c for c in verdict.checks if c.name == "tlog"]
    assert "4 signatures and attestations" in tlog.reason and "0, 1, 2, 3" in tlog.reason


def test_a_policy_without_logs_has_no_tlog_check(world: World) -> None:
    for ev in (world.evidence(), world.evidence(signature=None, sbom=None, provenance=None, scan=None, image=None)):
        verdict = world.verify(ev, from_public_keys(world.keyring.public_keys()))
        assert verdict.allowed and [c.name for c in verdict.checks] == CHECKS


def test_a_missing_record_names_what_is_not_logged(world: World) -> None:
    reason = failed(world.verify(world.evidence(signature=None)))
    assert "not in a trusted transparency log: the artifact signature by key" in reason
    reason = failed(world.verify(world.evidence(provenance=None)))
    assert reason.startswith("not in a trusted transparency log: the provenance attestation")
    reason = failed(world.verify(world.evidence(signature=None, sbom=None, provenance=None, scan=None, image=None)))
    assert "the artifact signature" in reason and "the sbom attestation" in reason
    assert "the evidence holds no transparency-log records" in reason


def test_a_record_from_an_untrusted_log(world: World, tmp_path: Path) -> None:
    with EmbeddedLog(tmp_path / "other") as other:
        sig = parse_artifact_signature(world.evidence().signatures[0][1], "sig")
        record = other.add(proposed_for_signature(sig, world.pem(sig.keyid))).entry.to_json()
        reason = failed(world.verify(world.evidence(signature=record)))
        assert "which the trust policy does not list" in reason
        # ... which is fine once the policy trusts that log too
        both = world.policy(world.log.public_key_pem(), other.public_key_pem())
        assert world.verify(world.evidence(signature=record), both).allowed


def test_a_forged_signed_entry_timestamp(world: World) -> None:
    other_set = next(iter(json.loads(world.records["sbom"]).values()))["verification"]["signedEntryTimestamp"]
    forged = edit(world.records["signature"],
                  lambda e: e["verification"].update(signedEntryTimestamp=other_set))
    assert "signed entry timestamp does not verify" in failed(world.verify(world.evidence(signature=forged)))
    later = edit(world.records["signature"], lambda e: e.update(integratedTime=e["integratedTime"] + 1))
    assert "signed entry timestamp does not verify" in failed(world.verify(world.evidence(signature=later)))


def test_a_bent_inclusion_proof(world: World) -> None:
    def bend(e: dict[str, Any]) -> None:
        hashes = e["verification"]["inclusionProof"]["hashes"]
        hashes[0] = hashlib.sha256(b"not a sibling").hexdigest()

    reason = failed(world.verify(world.evidence(sbom=edit(world.records["sbom"], bend))))
    assert "inclusion proof" in reason and "does not lead to the expected root" in reason

    def move(e: dict[str, Any]) -> None:
        e["verification"]["inclusionProof"]["logIndex"] = (e["verification"]["inclusionProof"]["logIndex"] + 1) % 3

    assert "inclusion proof" in failed(world.verify(world.evidence(sbom=edit(world.records["sbom"], move))))

    def reroot(e: dict[str, Any]) -> None:
        e["verification"]["inclusionProof"]["rootHash"] = "00" * 32

    assert "but the checkpoint commits to" in failed(world.verify(world.evidence(sbom=edit(world.records["sbom"],
                                                                                           reroot))))


def test_a_checkpoint_signed_by_another_key(world: World) -> None:
    def resign(e: dict[str, Any]) -> None:
        proof = e["verification"]["inclusionProof"]
        checkpoint, _ = parse_signed_note(proof["checkpoint"])
        proof["checkpoint"] = checkpoint.sign(LogKey.generate(world.log.key.name))

    reason = failed(world.verify(world.evidence(provenance=edit(world.records["provenance"], resign))))
    assert "checkpoint" in reason and "no signature by this log key" in reason

    def forge(e: dict[str, Any]) -> None:  # a bigger tree the log never signed, with the log's signature line
        proof = e["verification"]["inclusionProof"]
        checkpoint, _ = parse_signed_note(proof["checkpoint"])
        body = Checkpoint(checkpoint.origin, checkpoint.size + 1, checkpoint.root_hash).body().decode()
        proof["checkpoint"] = body + "\n" + proof["checkpoint"].split("\n\n", 1)[1]

    reason = failed(world.verify(world.evidence(provenance=edit(world.records["provenance"], forge))))
    assert "bad signature" in reason


def test_a_genuine_record_of_another_artifact(world: World) -> None:
    digest = hashlib.sha256(b"another agent").digest()
    signed = world.keyring.sign_digest(digest)
    other = ArtifactSignature.from_signature("sha256:" + digest.hex(), signed)
    record = world.log.add(proposed_for_signature(other, world.pem(signed.key_id))).entry.to_json()
    reason = failed(world.verify(world.evidence(signature=record)))
    assert "not in a trusted transparency log: the artifact signature" in reason
    assert f"it logs a hashedrekord for sha256:{digest.hex()[:16]}…, which is none of them" in reason


def test_records_cannot_stand_in_for_each_other(world: World) -> None:
    reason = failed(world.verify(world.evidence(signature=world.records["sbom"])))
    assert "the artifact signature" in reason
    reason = failed(world.verify(world.evidence(sbom=world.records["provenance"])))
    assert "the sbom attestation" in reason


def test_garbage_records_are_reasons_not_crashes(world: World) -> None:
    for junk in (b"", b"[]", b"{" * 100_000, b'{"x": 1}', b"\xff" * 10, b"x" * 10_000_000):
        reason = failed(world.verify(world.evidence(signature=junk)))
        assert reason.startswith("not in a trusted transparency log: the artifact signature")
        assert "test:signature" in reason


def test_unverified_evidence_cannot_pass_the_tlog_check(world: World) -> None:
    ev = world.evidence()
    ev.signatures, ev.attestations = [], []
    assert "no verified signature or attestation" in failed(world.verify(ev))


# --- verify_record on its own ---------------------------------------------------------------------------------


def test_verify_record_with_an_exact_body_or_a_check(world: World) -> None:
    logs = world.policy().logs
    sig = parse_artifact_signature(world.evidence().signatures[0][1], "sig")
    pem = world.pem(sig.keyid)
    hexd = sig.digest.split(":", 1)[1]
    record = world.records["signature"]
    assert verify_record(record, trusted_logs=logs, expected_body=None, where="r") is None
    assert verify_record(record, trusted_logs=logs, expected_body=canonical(hashedrekord_body(hexd, sig.sig, pem)),
                         where="r") is None
    assert verify_record(record, trusted_logs=logs, expected_body=hashedrekord_check(hexd, sig.sig, pem),
                         where="r") is None
    wrong = verify_record(record, trusted_logs=logs, expected_body=hashedrekord_check("0" * 64, sig.sig, pem),
                          where="r")
    assert wrong == f"r: the entry is for sha256:{hexd}, not sha256:{'0' * 64}"
    assert "not a dsse" in str(verify_record(record, trusted_logs=logs, expected_body=dsse_check(b"{}", pem),
                                             where="r"))
    assert "does not list" in str(verify_record(record, trusted_logs={}, expected_body=None, where="r"))
    no_proof = edit(record, lambda e: e["verification"].pop("inclusionProof"))
    assert "no inclusion proof" in str(verify_record(no_proof, trusted_logs=logs, expected_body=None, where="r"))


def test_proposals_are_what_the_log_accepts(world: World) -> None:
    sig = parse_artifact_signature(world.evidence().signatures[0][1], "sig")
    with pytest.raises(InputError, match="only sha256"):
        proposed_for_signature(ArtifactSignature("sha512:" + "0" * 128, sig.keyid, sig.sig), world.pem(sig.keyid))
    with pytest.raises(InputError):
        proposed_for_envelope(b"not an envelope", world.pem(sig.keyid))
    again = world.log.add(proposed_for_signature(sig, world.pem(sig.keyid)))
    assert again.existed and again.entry.to_json() != b""


# --- trust policies ---------------------------------------------------------------------------------------------


def test_trust_policy_lists_logs_and_old_files_still_load(world: World, tmp_path: Path) -> None:
    keys = world.keyring.public_keys()
    old = tmp_path / "old.yaml"
    old.write_text(to_yaml(keys))
    assert "transparencyLogs" not in old.read_text() and load_trust_policy(old).logs == {}
    new = tmp_path / "new.yaml"
    new.write_text(to_yaml(keys, log_keys=[world.log.public_key_pem()]))
    assert load_trust_policy(new).logs.keys() == {world.log.log_id}
    assert world.verify(policy=load_trust_policy(new)).allowed
    (tmp_path / "log.pem").write_bytes(world.log.public_key_pem())
    by_file = tmp_path / "file.yaml"
    by_file.write_text(old.read_text().replace("spec:\n", "spec:\n  transparencyLogs:\n"
                                               "  - {name: ours, publicKeyFile: log.pem}\n", 1))
    assert load_trust_policy(by_file).logs.keys() == {world.log.log_id}


@pytest.mark.parametrize(("entry", "problem"), [
    ("{publicKeyFile: missing.pem}", "publicKeyFile"),
    ("{publicKey: 'not a key'}", "not a PEM public key"),
    ("{logId: '" + "0" * 64 + "', publicKeyFile: log.pem}", "does not match the public key"),
    ("{publicKeyFile: rsa.pem}", "must be ECDSA P-256"),
    ("{publicKey: x, publicKeyFile: log.pem}", "is valid under each of"),
])
def test_trust_policy_log_errors(world: World, tmp_path: Path, entry: str, problem: str) -> None:
    (tmp_path / "log.pem").write_bytes(world.log.public_key_pem())
    (tmp_path / "rsa.pem").write_bytes(world.keyring.public_keys()[0].pem)
    path = tmp_path / "p.yaml"
    path.write_text(to_yaml(world.keyring.public_keys()).replace("spec:\n", f"spec:\n  transparencyLogs:\n"
                                                                 f"  - {entry}\n", 1))
    with pytest.raises(ValidationFailed) as err:
        load_trust_policy(path)
    assert problem in str(err.value) and f"{path}:" in str(err.value)
