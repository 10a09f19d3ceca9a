"""The verifier against real evidence made by the pipeline, and against every attack on it."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import hello_manifest, write_template

from agentfactory.artifact import Blob
from agentfactory.dsse import ENVELOPE_MEDIA_TYPE, INTOTO_PAYLOAD_TYPE, MAX_ENVELOPE_BYTES, sign_envelope
from agentfactory.evidence import ANN_PREDICATE_TYPE, SIGNATURE_ARTIFACT_TYPE, Evidence, collect
from agentfactory.intoto import CYCLONEDX_BOM, make_statement
from agentfactory.keys.local import LocalKeyring
from agentfactory.store import OCILayoutStore, StoredAgent
from agentfactory.trust import TrustPolicy, from_public_keys
from agentfactory.verifier import Verdict, verify
from pipelines.run import Signing, run_pipeline

WAT = '(module (memory (export "memory") 1) (func (export "_start")) (global i32 (i32.const {n})))'


@dataclass
class World:
    store: OCILayoutStore
    keyring: LocalKeyring
    agents: dict[str, StoredAgent]

    def policy(self) -> TrustPolicy:
        return from_public_keys(self.keyring.public_keys())

    def verify(self, name: str, evidence: Evidence | None = None, artifact: bytes | None = None,
               policy: TrustPolicy | None = None) -> Verdict:
        agent = self.agents[name]
        data = artifact if artifact is not None else self.store.fetch_wasm(agent.digest)[1]
        return verify(agent.digest, data, evidence if evidence is not None else collect(self.store, agent),
                      policy or self.policy())


def check(verdict: Verdict, name: str) -> str:
    (c,) = [c for c in verdict.checks if c.name == name]
    assert not c.ok, f"{name} unexpectedly passed: {c.reason}"
    assert not verdict.allowed
    return c.reason


@pytest.fixture
def world(tmp_path: Path) -> World:
    templates = tmp_path / "templates"
    for i, name in enumerate(("alpha", "beta")):
        write_template(templates, name, manifest=hello_manifest(name, language="wat", sources="[m.wat]"),
                       files={"m.wat": WAT.format(n=i)})
    store = OCILayoutStore(tmp_path / "store")
    keyring = LocalKeyring(tmp_path / "keys")
    report = run_pipeline(templates, store, signing=Signing(keyring), jobs=1)
    assert report.ok, [t.errors for t in report.templates]
    return World(store, keyring, {a.name: a for a in store.list_agents()})


def test_pipeline_evidence_verifies(world: World) -> None:
    verdict = world.verify("alpha")
    assert verdict.allowed and verdict.score == 10.0, verdict.reasons
    assert [c.name for c in verdict.checks] == ["digest", "signature", "key-status", "sbom", "provenance",
                                                "scan", "builder", "source"]


def test_flipped_byte_in_the_wasm(world: World) -> None:
    data = bytearray(world.store.fetch_wasm("alpha")[1])
    data[-1] ^= 1
    assert "the artifact was modified" in check(world.verify("alpha", artifact=bytes(data)), "digest")


def _replace_attestation(world: World, name: str, mutate) -> Evidence:  # type: ignore[no-untyped-def]
    ev = collect(world.store, world.agents[name])
    ev.attestations = [(w, mutate(doc)) for w, doc in ev.attestations]
    return ev


def test_flipped_byte_in_the_sbom(world: World) -> None:
    def flip(doc: bytes) -> bytes:
        env = json.loads(doc)
        payload = bytearray(base64.b64decode(env["payload"]))
        if b"CycloneDX" not in payload:
            return doc  # the provenance envelope stays as it was
        payload[payload.index(b"CycloneDX")] ^= 0x20  # "cycloneDX": still JSON, no longer what was signed
        env["payload"] = base64.b64encode(bytes(payload)).decode()
        return json.dumps(env).encode()

    reason = check(world.verify("alpha", _replace_attestation(world, "alpha", flip)), "sbom")
    assert "does not verify (the document was modified)" in reason


def test_flipped_byte_in_an_envelope_signature(world: World) -> None:
    def flip(doc: bytes) -> bytes:
        env = json.loads(doc)
        sig = bytearray(base64.b64decode(env["signatures"][0]["sig"]))
        sig[10] ^= 1
        env["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
        return json.dumps(env).encode()

    verdict = world.verify("alpha", _replace_attestation(world, "alpha", flip))
    assert "does not verify" in check(verdict, "sbom") and "does not verify" in check(verdict, "provenance")


def test_flipped_byte_in_the_artifact_signature(world: World) -> None:
    ev = collect(world.store, world.agents["alpha"])
    where, doc = ev.signatures[0]
    parsed = json.loads(doc)
    sig = bytearray(base64.b64decode(parsed["sig"]))
    sig[0] ^= 1
    parsed["sig"] = base64.b64encode(bytes(sig)).decode()
    ev.signatures = [(where, json.dumps(parsed).encode())]
    assert "does not verify" in check(world.verify("alpha", ev), "signature")


@pytest.mark.parametrize(("garbage", "message"), [
    (b'{"payloadType": "application/vnd.in-toto+json", "payload": "eyJ', "not JSON"),
    (b'{"payloadType": "x", "payload": "!!!not base64", "signatures": [{"keyid": "", "sig": "AA=="}]}',
     "not valid base64"),
    (b'{"payloadType": "x", "payload": "e30=", "signatures": []}', "no signatures"),
    (b"[1, 2, 3]", "not a JSON object"),
])
def test_malformed_envelopes(world: World, garbage: bytes, message: str) -> None:
    ev = collect(world.store, world.agents["alpha"])
    ev.attestations = [("evil", garbage)]
    assert message in check(world.verify("alpha", ev), "sbom")


def test_oversized_envelope(world: World) -> None:
    ev = collect(world.store, world.agents["alpha"])
    ev.attestations = [("huge", b" " * (MAX_ENVELOPE_BYTES + 1))]
    assert "the limit is" in check(world.verify("alpha", ev), "provenance")


def test_signature_by_an_unknown_key(world: World, tmp_path: Path) -> None:
    stranger = LocalKeyring(tmp_path / "stranger")
    stranger.create()
    verdict = world.verify("alpha", policy=from_public_keys(stranger.public_keys()))
    assert "which the trust policy does not list" in check(verdict, "signature")
    assert "which the trust policy does not list" in check(verdict, "sbom")


def test_revoked_key(world: World) -> None:
    (old,) = world.keyring.public_keys()
    world.keyring.rotate()
    assert world.verify("alpha").allowed  # rotation alone keeps old signatures valid
    world.keyring.revoke(old.key_id)
    verdict = world.verify("alpha")
    assert "every key that signed it is revoked" in check(verdict, "key-status")
    assert "revoked key" in check(verdict, "sbom")


def test_evidence_of_a_for_b(world: World) -> None:
    evidence_of_alpha = collect(world.store, world.agents["alpha"])
    verdict = world.verify("beta", evidence=evidence_of_alpha)
    assert f"is for {world.agents['alpha'].digest}, not this artifact" in check(verdict, "signature")
    # about alpha's manifest and wasm digests (the statement names both, for cosign), not beta's
    assert f"{world.agents['alpha'].digest}, not {world.agents['beta'].digest}" in check(verdict, "sbom")


def test_attestation_with_the_wrong_subject(world: World) -> None:
    alpha, beta = world.agents["alpha"], world.agents["beta"]
    bom = {"bomFormat": "CycloneDX", "metadata": {"component": {"name": "beta", "version": "1.0.0", "hashes": [
        {"alg": "SHA-256", "content": beta.digest[7:]}]}}}
    statement = make_statement("beta", alpha.digest, CYCLONEDX_BOM, bom)  # subject: alpha
    env = sign_envelope(INTOTO_PAYLOAD_TYPE, statement, world.keyring)
    ev = collect(world.store, beta)
    ev.attestations = [("forged", env.to_json())] + [a for a in ev.attestations if b"slsa" in base64.b64decode(
        json.loads(a[1])["payload"])]
    assert f"is about {alpha.digest}, not {beta.digest}" in check(world.verify("beta", ev), "sbom")


def test_attestation_with_the_wrong_predicate_type(world: World) -> None:
    agent = world.agents["alpha"]
    statement = make_statement("alpha", agent.digest, "https://example.com/not-an-sbom/v1", {})
    env = sign_envelope(INTOTO_PAYLOAD_TYPE, statement, world.keyring)
    ev = collect(world.store, agent)
    ev.attestations = [("other", env.to_json())]
    reason = check(world.verify("alpha", ev), "sbom")
    assert "no https://cyclonedx.org/bom attestation (found: https://example.com/not-an-sbom/v1)" in reason


def test_sbom_about_another_component(world: World) -> None:
    agent = world.agents["alpha"]
    bom = {"bomFormat": "CycloneDX", "metadata": {"component": {"name": "alpha", "version": "1.0.0",
                                                                "hashes": [{"alg": "SHA-256", "content": "0" * 64}]}}}
    env = sign_envelope(INTOTO_PAYLOAD_TYPE, make_statement("alpha", agent.digest, CYCLONEDX_BOM, bom), world.keyring)
    ev = collect(world.store, agent)
    ev.attestations = [("odd", env.to_json())]
    assert f"the SBOM describes sha256:{'0' * 64}, not this artifact" in check(world.verify("alpha", ev), "sbom")


def test_missing_evidence(world: World, tmp_path: Path) -> None:
    templates = tmp_path / "unsigned"
    write_template(templates, "gamma", manifest=hello_manifest("gamma", language="wat", sources="[m.wat]"),
                   files={"m.wat": WAT.format(n=7)})
    assert run_pipeline(templates, world.store, jobs=1).ok  # no signing
    world.agents["gamma"] = world.store.resolve("gamma")
    verdict = world.verify("gamma")
    assert "no signature for" in check(verdict, "signature")
    assert "no https://cyclonedx.org/bom attestation" in check(verdict, "sbom")
    assert verdict.score < 5


def test_referrer_pointing_at_another_subject(world: World) -> None:
    alpha, beta = world.agents["alpha"], world.agents["beta"]
    # A signature artifact made for beta, listed among alpha's referrers: the store lies.
    lie = world.store.attach(beta, artifact_type=SIGNATURE_ARTIFACT_TYPE,
                             layer=Blob(SIGNATURE_ARTIFACT_TYPE, b"{}"))
    index_digest = world.store.resolve_tag(alpha.manifest_digest.replace(":", "-"))
    assert index_digest
    index = json.loads(world.store.get_blob(index_digest, 1 << 20))
    index["manifests"].append({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": lie,
                               "size": 1, "artifactType": SIGNATURE_ARTIFACT_TYPE})
    data = json.dumps(index).encode()
    from agentfactory.digest import digest_of

    world.store.put_manifest(data, digest_of(data), name="alpha", media_type="application/vnd.oci.image.index.v1+json",
                             tag=alpha.manifest_digest.replace(":", "-"), annotations={})
    ev = collect(world.store, alpha)
    assert any(f"listed as a referrer of {alpha.manifest_digest} but its subject is" in p for p in ev.problems)
    assert world.verify("alpha", ev).allowed  # its own, untouched evidence still holds; the lie is not used


def test_untrusted_builder_and_repository(world: World) -> None:
    base = world.policy()
    strict = TrustPolicy(base.keys, builders=("https://ci.example.com/builder",),
                         repositories=("https://github.com/example/*",))
    verdict = world.verify("alpha", policy=strict)
    assert "which the trust policy does not list (https://ci.example.com/builder)" in check(verdict, "builder")
    assert "matches none of the trusted repositories" in check(verdict, "source")


def test_envelope_media_type_annotations_do_not_decide(world: World) -> None:
    # The annotation on a referrer is a hint for humans; the verifier reads the signed statement.
    agent = world.agents["alpha"]
    statement = make_statement("alpha", agent.digest, "https://example.com/x", {})
    world.store.attach(agent, artifact_type=ENVELOPE_MEDIA_TYPE,
                       layer=Blob(ENVELOPE_MEDIA_TYPE, sign_envelope(INTOTO_PAYLOAD_TYPE, statement,
                                                                     world.keyring).to_json()),
                       annotations={ANN_PREDICATE_TYPE: CYCLONEDX_BOM})
    assert world.verify("alpha").allowed


def test_the_policy_input_carries_time_provenance_trust_and_promotion(world: World) -> None:
    from datetime import UTC, datetime

    from agentfactory.policy import Decision
    from agentfactory.verifier import Check, artifact_input

    seen: list[dict[str, object]] = []

    class Recorder:
        def decide(self, policy: str, data: dict[str, object]) -> Decision:
            seen.append(data)
            return Decision(policy=policy, allow=True, deny=[])

    agent = world.agents["alpha"]
    data = world.store.fetch_wasm("alpha")[1]
    policy = from_public_keys(world.keyring.public_keys(), repositories=("https://example.com/*",))
    verify(agent.digest, data, collect(world.store, agent), policy, engine=Recorder(),  # type: ignore[arg-type]
           name="alpha", version="1.0.0", now=datetime(2026, 12, 6, 8, 0, tzinfo=UTC))
    (doc,) = seen
    assert doc["now"] == "2026-12-06T08:00:00Z"
    assert doc["provenance"] == {"dirty": True, "repository": None,
                                 "builder": "https://agentfactory.dev/builders/pipeline/local"}
    assert doc["trust"] == {"repositories": ["https://example.com/*"]}
    assert doc["promotion"] == {"stage": "dev", "promoted": True, "reason": "dev is the entry stage: it needs no "
                                                                            "promotion"}
    bare = artifact_input("a", "1.0.0", agent.digest, "prod", [Check("digest", True, "ok")], 2.0, None)
    assert bare["provenance"] is None and bare["promotion"] is None and bare["trust"] == {"repositories": ["*"]}


def test_beyond_the_entry_stage_promotion_is_required_and_not_scored(world: World) -> None:
    agent = world.agents["alpha"]
    data = world.store.fetch_wasm("alpha")[1]
    dev = verify(agent.digest, data, collect(world.store, agent), world.policy(), name="alpha", version="1.0.0")
    prod = verify(agent.digest, data, collect(world.store, agent), world.policy(), stage="prod", name="alpha",
                  version="1.0.0")
    assert dev.allowed and "promotion" not in [c.name for c in dev.checks]
    assert not prod.allowed and prod.score == dev.score == 10.0
    assert "lists no promoters (spec.promoters)" in check(prod, "promotion")
    staging = verify(agent.digest, data, collect(world.store, agent), world.policy(), stage="staging",
                     entry_stage="staging", name="alpha", version="1.0.0")
    assert staging.allowed  # another stage graph's entry stage


def test_the_newest_promotion_by_the_log_decides() -> None:
    from agentfactory.promotion import Claim
    from agentfactory.verifier import PromotionRecord, promotion_state

    def record(action: str, time: int, index: int, stage: str = "prod") -> PromotionRecord:
        claim = Claim(stage, action, "a", "1.0.0", None, None, None, "why" if action == "withdraw" else None, {})
        return PromotionRecord(claim, "0" * 64, "log", index, time, "k" * 64)

    digest = "sha256:" + "1" * 64
    promote, withdraw = record("promote", 100, 5), record("withdraw", 100, 6)
    assert not promotion_state(digest, "prod", [withdraw, promote], []).promoted  # same second: the index decides
    assert promotion_state(digest, "prod", [withdraw, record("promote", 101, 7)], []).promoted
    none = promotion_state(digest, "prod", [record("promote", 1, 1, "dev"), record("promote", 2, 2, "canary"),
                                            record("withdraw", 3, 3, "canary")], [], name="a", version="1.0.0")
    assert not none.promoted and none.promoted_stages == ["dev"]
    assert none.reason == f"a 1.0.0 ({digest}) is promoted to dev only (withdrawn from canary), not to prod"
