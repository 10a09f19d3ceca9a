"""Key-based Sigstore bundles v0.3: what is written (protobuf fields only, the key id as hint, one log entry per
bundle, an empty DSSE keyid as cosign writes it), what is read back (exactly the evidence the old format held),
every way a bundle can lie failing closed with its reason, the old format still read, and the trusted root
and CLI that let cosign check them."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from helpers import hello_manifest, write_template

from agentfactory import evidence
from agentfactory.artifact import Blob, build_agent_artifact
from agentfactory.cli.cosign_cmd import cosign
from agentfactory.cosign_root import trusted_log, trusted_root
from agentfactory.digest import digest_of
from agentfactory.dsse import ENVELOPE_MEDIA_TYPE, INTOTO_PAYLOAD_TYPE, Envelope, parse_envelope, sign_envelope
from agentfactory.errors import InputError
from agentfactory.evidence import (
    ANN_PREDICATE_TYPE,
    SIGNATURE_ARTIFACT_TYPE,
    ArtifactSignature,
    Evidence,
    agent_statement,
    collect,
    from_bundles,
    has_signature,
    legacy_only,
    proposed_for_envelope,
    proposed_for_signature,
)
from agentfactory.intoto import CYCLONEDX_BOM, SCAN_V1, SLSA_PROVENANCE_V1, make_statement, parse_statement
from agentfactory.key_bundles import (
    BUNDLE_MEDIA_TYPE,
    COSIGN_SIGN_V1,
    load_bundle_json,
    parse_key_bundle,
)
from agentfactory.keys.local import LocalKeyring
from agentfactory.provenance import DEFAULT_BUILDER_ID, predicate
from agentfactory.runspec import from_template
from agentfactory.scan.base import OsvScanner
from agentfactory.scan.report import scan, subject_of
from agentfactory.sigstore_bundles import BUNDLE_ARTIFACT_TYPE
from agentfactory.store import OCILayoutStore, StoredAgent
from agentfactory.template import load_template
from agentfactory.tlog.bundle import TLOG_ENTRY_ARTIFACT_TYPE
from agentfactory.tlog.log import EmbeddedLog
from agentfactory.trust import TrustPolicy, from_public_keys
from agentfactory.verifier import Verdict, verify
from pipelines.sbom import build_sbom

WASM = b"\0asm\x01\0\0\0"
NAMES = {CYCLONEDX_BOM: "sbom", SLSA_PROVENANCE_V1: "provenance", SCAN_V1: "scan", COSIGN_SIGN_V1: "image"}

# Every JSON field name of protobuf-specs' Bundle (v0.3) that a key-based bundle uses: cosign parses bundles
# with protojson, which refuses any other.
PROTO_FIELDS = {"mediaType", "verificationMaterial", "publicKey", "hint", "tlogEntries", "logIndex", "logId",
                "keyId", "kindVersion", "kind", "version", "integratedTime", "inclusionPromise",
                "signedEntryTimestamp", "inclusionProof", "rootHash", "treeSize", "hashes", "checkpoint", "envelope",
                "canonicalizedBody", "messageSignature", "messageDigest", "algorithm", "digest", "signature",
                "dsseEnvelope", "payload", "payloadType", "signatures", "sig", "keyid"}


@dataclass
class World:
    store: OCILayoutStore
    keyring: LocalKeyring
    log: EmbeddedLog
    agent: StoredAgent
    bundles: dict[str, bytes]  # "signature", "sbom", "provenance", "scan", "image" -> bundle JSON
    envelopes: dict[str, Envelope]
    signature: ArtifactSignature
    root: Path

    def policy(self, *logs: bytes) -> TrustPolicy:
        return from_public_keys(self.keyring.public_keys(), log_keys=list(logs or [self.log.public_key_pem()]))

    def evidence(self, **bundles: bytes | None) -> Evidence:
        """The bundles as stored, some replaced (a None drops one), read as `collect` reads them."""
        chosen = {**self.bundles, **bundles}
        return from_bundles([(f"test:{name}", doc) for name, doc in chosen.items() if doc is not None])

    def verify(self, ev: Evidence | None = None, policy: TrustPolicy | None = None) -> Verdict:
        return verify(self.agent.digest, WASM, ev if ev is not None else collect(self.store, self.agent),
                      policy or self.policy(), name="alpha", version="1.0.0")


def _pem(keyring: LocalKeyring, key_id: str) -> bytes:
    return next(k.pem for k in keyring.public_keys() if k.key_id == key_id)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """One agent signed as the pipeline signs it: statements about its wasm and manifest digests, an image
    signature, each logged in a real embedded log and bundled with its entry, attached to an OCI layout."""
    tmp = tmp_path_factory.mktemp("key-bundles")
    keyring = LocalKeyring(tmp / "keys")
    keyring.create()
    log = EmbeddedLog(tmp / "tlog")
    store = OCILayoutStore(tmp / "store")
    folder = write_template(tmp / "t", "alpha", manifest=hello_manifest("alpha", language="wat", sources="[m.wat]"),
                            files={"m.wat": "(module)"})
    t = load_template(folder, "alpha/agent.yaml")
    digest = digest_of(WASM)
    agent = store.push_agent(build_agent_artifact(WASM, name="alpha", version=t.version, created_epoch=0),
                             name="alpha", version=t.version)
    toolchain = {"name": "wat2wasm", "version": "1", "package": "wasmtime==50.0.1", "target": "wasm32"}
    bom = json.loads(build_sbom(t, digest=digest, toolchain=toolchain, epoch=0, commit=None))
    build = {"toolchain": toolchain, "sourceDateEpoch": 0, "agent": from_template(t).to_json(), "name": "alpha",
             "version": t.version}
    predicates = [(CYCLONEDX_BOM, bom), (SLSA_PROVENANCE_V1, predicate(build, builder_id=DEFAULT_BUILDER_ID)),
                  (SCAN_V1, scan(bom, [OsvScanner()], subject=subject_of(bom, "alpha")).to_predicate()),
                  (COSIGN_SIGN_V1, {})]
    attestations = [(p, sign_envelope(INTOTO_PAYLOAD_TYPE,
                                      agent_statement("alpha", digest, p, pred, agent.manifest_digest), keyring))
                    for p, pred in predicates]
    signature = ArtifactSignature.from_signature(digest, keyring.sign_digest(bytes.fromhex(digest[7:])))
    pem = _pem(keyring, signature.keyid)
    records = [log.add(proposed_for_signature(signature, pem)).entry.to_json()]
    records += [log.add(proposed_for_envelope(env.to_json(), pem)).entry.to_json() for _, env in attestations]
    made = evidence.key_bundles(signature, attestations, list(reversed(records)))  # paired by content, not order
    evidence.attach_bundles(store, agent, made)
    bundles = {NAMES.get(p or "", "signature"): b for p, b in made}
    return World(store, keyring, log, agent, bundles, {NAMES[p]: e for p, e in attestations}, signature, tmp)


def check(verdict: Verdict, name: str) -> str:
    (c,) = [c for c in verdict.checks if c.name == name]
    assert not c.ok, f"{name} unexpectedly passed: {c.reason}"
    assert not verdict.allowed
    return c.reason


def edit(bundle: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
    doc = json.loads(bundle)
    change(doc)
    return json.dumps(doc).encode()


def entry(doc: dict[str, Any]) -> dict[str, Any]:
    entries: list[dict[str, Any]] = doc["verificationMaterial"]["tlogEntries"]
    return entries[0]


def flip(b64: str) -> str:
    raw = bytearray(base64.b64decode(b64))
    raw[len(raw) // 2] ^= 1
    return base64.b64encode(bytes(raw)).decode()


# --- what is written ------------------------------------------------------------------------------------------


def test_bundled_evidence_verifies_with_every_check(world: World) -> None:
    verdict = world.verify()
    assert verdict.allowed, verdict.reasons
    (tlog,) = [c for c in verdict.checks if c.name == "tlog"]
    assert tlog.ok and "4 signatures and attestations" in tlog.reason  # the image signature is cosign's only
    refs = world.store.referrers(world.agent)
    assert {r.artifact_type for r in refs} == {BUNDLE_ARTIFACT_TYPE} and len(refs) == 5


def test_bundles_use_only_protobuf_fields_and_the_key_id_as_hint(world: World) -> None:
    def names(value: Any) -> set[str]:
        if isinstance(value, dict):
            return set(value) | {n for v in value.values() for n in names(v)}
        if isinstance(value, list):
            return {n for v in value for n in names(v)}
        return set()

    for name, bundle in world.bundles.items():
        doc = json.loads(bundle)
        assert names(doc) <= PROTO_FIELDS, (name, names(doc) - PROTO_FIELDS)
        assert doc["mediaType"] == BUNDLE_MEDIA_TYPE
        assert doc["verificationMaterial"]["publicKey"] == {"hint": world.signature.keyid}
        (e,) = doc["verificationMaterial"]["tlogEntries"]
        assert e["logId"]["keyId"] == base64.b64encode(bytes.fromhex(world.log.log_id)).decode()
        assert e["kindVersion"] == {"kind": "hashedrekord" if name == "signature" else "dsse", "version": "0.0.1"}
        assert e["inclusionProof"]["checkpoint"]["envelope"].startswith("agentfactory.dev/tlog - ")
        assert isinstance(e["logIndex"], str) and isinstance(e["integratedTime"], str)  # protojson int64
        if name != "signature":  # cosign's verifier skips a key whose fingerprint differs from a non-empty keyid
            assert doc["dsseEnvelope"]["signatures"][0]["keyid"] == ""


def test_referrers_carry_cosign_annotations(world: World) -> None:
    by_type = {r.annotations.get("dev.sigstore.bundle.predicateType"): r.annotations
               for r in world.store.referrers(world.agent)}
    assert by_type[None] == {"dev.sigstore.bundle.content": "message-signature"}
    for p in (CYCLONEDX_BOM, SLSA_PROVENANCE_V1, SCAN_V1, COSIGN_SIGN_V1):
        assert by_type[p]["dev.sigstore.bundle.content"] == "dsse-envelope" and by_type[p][ANN_PREDICATE_TYPE] == p


def test_statements_name_the_manifest_then_the_wasm(world: World) -> None:
    statement = parse_statement(world.envelopes["sbom"].payload, "sbom")
    assert [d for _, d in statement.subjects] == [world.agent.manifest_digest, world.agent.digest]
    raw = json.loads(world.envelopes["sbom"].payload)
    assert raw["subject"][0]["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    image = parse_statement(world.envelopes["image"].payload, "image")
    assert image.predicate_type == COSIGN_SIGN_V1 and image.predicate == {}
    assert agent_statement("a", world.agent.digest, SCAN_V1, {}) == make_statement("a", world.agent.digest, SCAN_V1, {})
    with pytest.raises(InputError, match="is not a sha256 digest"):
        agent_statement("a", world.agent.digest, SCAN_V1, {}, "sha256:nope")


def test_reading_gives_back_exactly_what_was_signed_and_logged(world: World) -> None:
    ev = world.evidence()
    assert [parse_envelope(d, w).signatures[0].keyid for w, d in ev.attestations] == [world.signature.keyid] * 4
    assert sorted(d for _, d in ev.attestations) == sorted(e.to_json() for e in world.envelopes.values())
    assert [d for _, d in ev.signatures] == [ArtifactSignature(world.signature.digest, world.signature.keyid,
                                                               world.signature.sig).to_json()]
    assert len(ev.tlog) == 5 and not ev.bundles and not ev.problems


def test_records_are_paired_by_content_and_strays_refused(world: World) -> None:
    pem = _pem(world.keyring, world.signature.keyid)
    stray = world.log.add(proposed_for_envelope(world.envelopes["sbom"].to_json(), pem)).entry.to_json()
    with pytest.raises(InputError, match="log neither the signature nor an attestation"):
        evidence.key_bundles(world.signature, [], [stray])
    (unlogged,) = evidence.key_bundles(world.signature, [])
    assert json.loads(unlogged[1])["verificationMaterial"]["tlogEntries"] == []


# --- every way a bundle can lie -------------------------------------------------------------------------------


def test_a_tampered_signature_or_another_digest(world: World) -> None:
    bad = edit(world.bundles["signature"], lambda d: d["messageSignature"].update(
        signature=flip(d["messageSignature"]["signature"])))
    assert "does not verify" in check(world.verify(world.evidence(signature=bad)), "signature")
    other = base64.b64encode(bytes(32)).decode()
    moved = edit(world.bundles["signature"], lambda d: d["messageSignature"]["messageDigest"].update(digest=other))
    assert f"is for sha256:{'0' * 64}, not this artifact" in check(world.verify(world.evidence(signature=moved)),
                                                                    "signature")


def test_a_hint_naming_another_trusted_key(world: World, tmp_path: Path) -> None:
    other = LocalKeyring(tmp_path / "keys")
    key = other.create()
    policy = from_public_keys([*world.keyring.public_keys(), *other.public_keys()],
                              log_keys=[world.log.public_key_pem()])
    lying = edit(world.bundles["signature"], lambda d: d["verificationMaterial"]["publicKey"].update(hint=key.key_id))
    assert f"by key {key.key_id[:16]}… does not verify" in check(world.verify(world.evidence(signature=lying),
                                                                             policy), "signature")


def test_a_modified_statement(world: World) -> None:
    def swap(d: dict[str, Any]) -> None:
        statement = json.loads(base64.b64decode(d["dsseEnvelope"]["payload"]))
        statement["predicate"]["metadata"]["component"]["version"] = "9.9.9"
        d["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()

    reason = check(world.verify(world.evidence(sbom=edit(world.bundles["sbom"], swap))), "sbom")
    assert "does not verify (the document was modified)" in reason


def test_log_entries_that_do_not_log_it(world: World) -> None:
    # the sbom bundle carrying the provenance's entry: a genuine entry, of something else
    other_entry = entry(json.loads(world.bundles["provenance"]))
    swapped = edit(world.bundles["sbom"], lambda d: d["verificationMaterial"].update(tlogEntries=[other_entry]))
    reason = check(world.verify(world.evidence(sbom=swapped, provenance=None)), "tlog")
    assert "not in a trusted transparency log: the sbom attestation" in reason
    bare = edit(world.bundles["signature"], lambda d: d["verificationMaterial"].update(tlogEntries=[]))
    assert "the artifact signature by key" in check(world.verify(world.evidence(signature=bare)), "tlog")


def test_forged_entries_fail_the_tlog_check(world: World) -> None:
    def set_flip(d: dict[str, Any]) -> None:
        e = entry(d)
        e["inclusionPromise"]["signedEntryTimestamp"] = flip(e["inclusionPromise"]["signedEntryTimestamp"])

    def later(d: dict[str, Any]) -> None:
        entry(d)["integratedTime"] = str(int(entry(d)["integratedTime"]) + 1)

    def bent(d: dict[str, Any]) -> None:
        e = entry(d)
        e["inclusionProof"]["rootHash"] = base64.b64encode(bytes(32)).decode()

    def foreign(d: dict[str, Any]) -> None:  # another log's key id: a log the policy does not list
        entry(d)["logId"]["keyId"] = base64.b64encode(bytes(32)).decode()

    for change, why in ((set_flip, "signed entry timestamp does not verify"),
                        (later, "signed entry timestamp does not verify"),
                        (bent, "but the checkpoint commits to"),
                        (foreign, "which the trust policy does not list")):
        reason = check(world.verify(world.evidence(signature=edit(world.bundles["signature"], change))), "tlog")
        assert why in reason, (change.__name__, reason)
    other = EmbeddedLog(world.root / "other-log")
    assert "which the trust policy does not list" in check(world.verify(policy=world.policy(other.public_key_pem())),
                                                           "tlog")


@pytest.mark.parametrize(("change", "why"), [
    (lambda d: d.update(mediaType="application/vnd.dev.sigstore.bundle+json;version=0.2"),
     "a key-based bundle must be application/vnd.dev.sigstore.bundle.v0.3+json"),
    (lambda d: d["verificationMaterial"].update(certificate={"rawBytes": "AA=="}), "names a public key and a"),
    (lambda d: d["verificationMaterial"]["publicKey"].update(hint="not-a-key-id"), "publicKey.hint: must be"),
    (lambda d: d.update(dsseEnvelope={}), "exactly one of messageSignature and dsseEnvelope"),
    (lambda d: d["messageSignature"]["messageDigest"].update(algorithm="SHA2_512"), "must be SHA2_256"),
    (lambda d: d["messageSignature"]["messageDigest"].update(digest="AAAA"), "must be 32 bytes"),
    (lambda d: d["messageSignature"].update(signature="!!"), "is not valid base64"),
    (lambda d: entry(d)["kindVersion"].update(kind="dsse"), "the canonicalized body is another kind"),
    (lambda d: entry(d)["kindVersion"].update(kind="rekord"), "is not one of hashedrekord, dsse"),
    (lambda d: entry(d).update(logIndex="-1"), "logIndex: must be a non-negative integer"),
    (lambda d: entry(d).update(logIndex=True), "logIndex: must be a non-negative integer"),
    (lambda d: entry(d)["inclusionProof"].update(hashes=["AA=="] * 65), "must be a list of at most 64 hashes"),
    (lambda d: entry(d)["inclusionProof"].pop("checkpoint"), "checkpoint must be an object"),
    (lambda d: entry(d).pop("inclusionPromise"), "inclusionPromise must be an object"),
    (lambda d: d["verificationMaterial"].update(tlogEntries=[entry(d)] * 9), "must list at most 8 entries"),
])
def test_malformed_signature_bundles_are_refused_by_name(world: World, change: Callable[[dict[str, Any]], None],
                                                         why: str) -> None:
    ev = world.evidence(signature=edit(world.bundles["signature"], change))
    assert not ev.signatures and any(why in p for p in ev.problems), ev.problems
    reason = check(world.verify(ev), "signature")
    assert why in reason and "test:signature" in reason


def test_hostile_bundle_bytes(world: World) -> None:
    dup = world.bundles["signature"].replace(b'"mediaType":', b'"mediaType":"x","mediaType":', 1)
    for junk, why in ((dup, "appears twice"), (b"\xff\xfe", "not JSON"), (b"[]", "not a JSON object"),
                      (world.bundles["signature"] + b" " * 300_000, "the signature bundle is")):
        ev = world.evidence(signature=junk)
        assert not ev.signatures and any(why in p for p in ev.problems), (why, ev.problems)
        assert why in check(world.verify(ev), "signature")


def test_an_envelope_keyid_naming_another_key(world: World) -> None:
    def other(d: dict[str, Any]) -> None:
        d["dsseEnvelope"]["signatures"][0]["keyid"] = "f" * 64

    ev = world.evidence(sbom=edit(world.bundles["sbom"], other))
    assert any("a signature names key 'ffffffffffffffff'" in p for p in ev.problems)
    assert "dsseEnvelope" in check(world.verify(ev), "sbom")
    same = edit(world.bundles["sbom"], lambda d: d["dsseEnvelope"]["signatures"][0].update(keyid=world.signature.keyid))
    assert world.verify(world.evidence(sbom=same)).allowed  # the key id itself is accepted too


def test_keyless_bundles_are_left_to_the_keyless_verifier(world: World) -> None:
    keyless = edit(world.bundles["signature"], lambda d: d["verificationMaterial"].pop("publicKey"))
    ev = world.evidence(signature=keyless)
    assert ev.bundles == [("test:signature", keyless)] and not ev.signatures
    assert "no signature for" in check(world.verify(ev), "signature")


# --- the old format is still read -------------------------------------------------------------------------------


def test_old_format_stores_still_verify_and_are_reported(world: World, tmp_path: Path) -> None:
    store = OCILayoutStore(tmp_path / "old")
    agent = store.push_agent(build_agent_artifact(WASM, name="alpha", version="1.0.0", created_epoch=0),
                             name="alpha", version="1.0.0")
    assert not has_signature(store, agent) and not legacy_only(store, agent)
    # what stores written before bundles hold: separate referrers for the signature, envelopes and records
    store.attach(agent, artifact_type=SIGNATURE_ARTIFACT_TYPE, layer=Blob(SIGNATURE_ARTIFACT_TYPE,
                                                                          world.signature.to_json()))
    for name, env in world.envelopes.items():
        store.attach(agent, artifact_type=ENVELOPE_MEDIA_TYPE, layer=Blob(ENVELOPE_MEDIA_TYPE, env.to_json()),
                     annotations={ANN_PREDICATE_TYPE: name})
    for _, record in world.evidence().tlog:
        store.attach(agent, artifact_type=TLOG_ENTRY_ARTIFACT_TYPE, layer=Blob(TLOG_ENTRY_ARTIFACT_TYPE, record))
    assert has_signature(store, agent) and legacy_only(store, agent)
    verdict = verify(agent.digest, WASM, collect(store, agent), world.policy(), name="alpha", version="1.0.0")
    assert verdict.allowed, verdict.reasons
    evidence.attach_bundles(store, agent, [(None, world.bundles["signature"])])
    assert not legacy_only(store, agent)


def test_has_signature_reads_the_bundle_annotations(world: World, tmp_path: Path) -> None:
    store = OCILayoutStore(tmp_path / "s")
    agent = store.push_agent(build_agent_artifact(WASM, name="alpha", version="1.0.0", created_epoch=0),
                             name="alpha", version="1.0.0")
    evidence.attach_bundles(store, agent, [(CYCLONEDX_BOM, world.bundles["sbom"])])
    assert not has_signature(store, agent)  # attestations alone: the artifact signature is missing
    evidence.attach_bundles(store, agent, [(None, world.bundles["signature"])])
    assert has_signature(store, agent)


def test_parse_needs_a_key_bundle(world: World) -> None:
    doc = load_bundle_json(world.bundles["scan"], "b")
    parsed = parse_key_bundle(doc, len(world.bundles["scan"]), "b")
    assert parsed.envelope_json == world.envelopes["scan"].to_json() and parsed.key_id == world.signature.keyid
    broken = copy.deepcopy(doc)
    broken["dsseEnvelope"]["signatures"] = []
    with pytest.raises(InputError, match="signatures must list 1 to 16"):
        parse_key_bundle(broken, 10, "b")


# --- the trusted root cosign reads, and the CLI ------------------------------------------------------------------


def test_trusted_root_names_the_log(world: World) -> None:
    when = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    root = json.loads(trusted_root([trusted_log(world.log.public_key_pem(), "https://tlog.example", when, "k")]))
    assert root["mediaType"] == "application/vnd.dev.sigstore.trustedroot+json;version=0.1"
    (tlog,) = root["tlogs"]
    assert base64.b64decode(tlog["logId"]["keyId"]).hex() == world.log.log_id
    assert tlog["publicKey"]["keyDetails"] == "PKIX_ECDSA_P256_SHA_256"
    assert tlog["publicKey"]["validFor"] == {"start": "2024-01-02T03:04:05Z"}
    assert root["certificateAuthorities"] == root["ctlogs"] == root["timestampAuthorities"] == []
    rsa_pem = rsa.generate_private_key(65537, 2048).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(InputError, match="k: log public key must be ECDSA P-256"):
        trusted_log(rsa_pem, "x", when, "k")
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(InputError, match="ECDSA P-256"):
        trusted_log(p384, "x", when, "k")


def test_cli_trusted_root_and_legacy_evidence(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("AGENTFACTORY_HOME", str(home))
    runner = CliRunner()
    out = tmp_path / "root.json"
    result = runner.invoke(cosign, ["trusted-root", "-o", str(out)])
    assert result.exit_code == 0, result.output
    log = EmbeddedLog(home / "tlog")
    (tlog,) = json.loads(out.read_text())["tlogs"]
    assert base64.b64decode(tlog["logId"]["keyId"]).hex() == log.log_id
    assert tlog["publicKey"]["validFor"]["start"] <= datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    pinned = runner.invoke(cosign, ["trusted-root", "--valid-from", "2025-02-03T00:00:00Z"])
    assert pinned.exit_code == 0 and '"start": "2025-02-03T00:00:00Z"' in pinned.output
    bad = runner.invoke(cosign, ["trusted-root", "--valid-from", "yesterday"])
    assert bad.exit_code == 2 and "is not an RFC 3339 time" in bad.output
    none = runner.invoke(cosign, ["trusted-root", "--tlog", "none"])
    assert none.exit_code == 2 and "a trusted root names a transparency log" in none.output
    wrong = tmp_path / "other.pem"
    wrong.write_bytes(EmbeddedLog(tmp_path / "other").public_key_pem())
    mismatch = runner.invoke(cosign, ["trusted-root", "--tlog-key", str(wrong)])
    assert mismatch.exit_code == 2 and "signs with another key" in mismatch.output

    store_url = f"oci-layout:{world.root / 'store'}"
    clean = runner.invoke(cosign, ["legacy-evidence", "--store", store_url, "--json"])
    assert clean.exit_code == 0 and json.loads(clean.output)["legacyOnly"] == []
    old = OCILayoutStore(tmp_path / "old")
    agent = old.push_agent(build_agent_artifact(WASM, name="alpha", version="1.0.0", created_epoch=0),
                           name="alpha", version="1.0.0")
    old.attach(agent, artifact_type=SIGNATURE_ARTIFACT_TYPE, layer=Blob(SIGNATURE_ARTIFACT_TYPE,
                                                                        world.signature.to_json()))
    found = runner.invoke(cosign, ["legacy-evidence", "--store", f"oci-layout:{tmp_path / 'old'}"])
    assert found.exit_code == 1 and agent.ref in found.output and "--resign" in found.output
