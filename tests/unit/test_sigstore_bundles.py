"""Keyless (Sigstore) signatures: real bundles from the public production instance verified offline for
the identities a trust policy names, refused for anything else with a reason naming the identity
expected and the one found; the trust policy's `keyless` section; the verifier counting a bundle as
the signature (and as the logged record) only when the policy names its identity; and the keyless
signer and the pipeline up to the network boundary (signing itself needs GitHub Actions' OIDC,
Fulcio and Rekor, none of which is reachable here)."""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlparse

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from helpers import hello_manifest, write_template

from agentfactory.errors import ConfigError, ValidationFailed
from agentfactory.evidence import ANN_PREDICATE_TYPE, Evidence, attach_bundles, collect, has_signature
from agentfactory.intoto import CYCLONEDX_BOM, SLSA_PROVENANCE_V1, make_statement
from agentfactory.keys import open_provider
from agentfactory.keys.local import LocalKeyring
from agentfactory.keys.sigstore_keyless import NO_AMBIENT_IDENTITY, KeylessSigner
from agentfactory.sigstore_bundles import (
    BUNDLE_ARTIFACT_TYPE,
    MAX_SIGNATURE_BUNDLE_BYTES,
    KeylessAttestation,
    KeylessIdentity,
    KeylessPolicy,
    KeylessSignature,
    embedded_trusted_root,
    verify_artifact_bundle,
    verify_dsse_bundle,
)
from agentfactory.store import OCILayoutStore
from agentfactory.trust import TrustPolicy, from_public_keys, load_trust_policy, to_yaml
from agentfactory.verifier import Verdict, verify
from pipelines.run import Signing, run_pipeline

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sigstore"  # see tests/fixtures/SOURCES.md
BUNDLE = (FIXTURES / "new_bundle.txt.sigstore.json").read_bytes()
SIGNED = (FIXTURES / "new_bundle.txt").read_bytes()
DIGEST = "sha256:" + hashlib.sha256(SIGNED).hexdigest()
ME = KeylessIdentity("https://github.com/login/oauth", "aryadeeptade@gmail.com")
GH_BUNDLE = (FIXTURES / "bundle_v3_github.whl.sigstore").read_bytes()
GH_DIGEST = "sha256:c4e92e9ecc828bef2aa7dba1de8ac983511f7532a0df11c770d39099a25cf201"
GH_ISSUER = "https://token.actions.githubusercontent.com"
GH_WORKFLOW = KeylessIdentity(GH_ISSUER, "https://github.com/trailofbits/rfc8785.py/.github/workflows/release.yml"
                                        "@refs/tags/v0.1.2")
WAT = '(module (memory (export "memory") 1) (func (export "_start")) (global i32 (i32.const 5)))'
CI_VARS = ("GITHUB_ACTIONS", "ACTIONS_ID_TOKEN_REQUEST_URL", "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
           "GOOGLE_SERVICE_ACCOUNT_NAME", "BUILDKITE", "GITLAB_CI", "SIGSTORE_ID_TOKEN", "CIRCLECI",
           "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy")


class NetworkGuard:
    """Refuses every connection and name lookup that leaves the machine, and remembers each attempt.

    A guard, not a stand-in: nothing answers in the network's place; code that needs the network fails
    the way it fails on an offline machine (unreachable), and the test says whether it was tried.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.attempts: list[str] = []
        connect, getaddrinfo = socket.socket.connect, socket.getaddrinfo
        guard = self

        def guarded_connect(sock: socket.socket, address: Any) -> Any:
            if not _local(address):
                guard.attempts.append(f"connect {address}")
                raise OSError(errno.ENETUNREACH, f"network unreachable (test guard): {address}")
            return connect(sock, address)

        def guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
            if host not in (None, "localhost", "127.0.0.1", "::1"):
                guard.attempts.append(f"resolve {host}")
                raise socket.gaierror(socket.EAI_NONAME, f"name resolution refused (test guard): {host}")
            return getaddrinfo(host, *args, **kwargs)

        monkeypatch.setattr(socket.socket, "connect", guarded_connect)
        monkeypatch.setattr(socket.socket, "connect_ex", lambda sock, address: guarded_connect(sock, address) or 0)
        monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)


def _local(address: Any) -> bool:
    host = address[0] if isinstance(address, tuple) else address
    return isinstance(host, str) and (host in ("127.0.0.1", "::1", "localhost") or host.startswith("/"))


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[NetworkGuard]:
    """Every test here runs with no network, no CI identity, no proxy, and an empty home folder."""
    for name in CI_VARS:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    for var in ("HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME"):
        monkeypatch.setenv(var, str(home if var == "HOME" else home / var.lower()))
    guard = NetworkGuard(monkeypatch)
    yield guard


def _edit(mutate: Any, bundle: bytes = BUNDLE) -> bytes:
    doc = json.loads(bundle)
    mutate(doc)
    return json.dumps(doc).encode()


def _flip_b64(value: str, at: int = 10) -> str:
    raw = bytearray(base64.b64decode(value))
    raw[at] ^= 1
    return base64.b64encode(bytes(raw)).decode()


# -- the bundles, verified offline --------------------------------------------------------------------


def test_the_fixture_verifies_offline_for_its_identity(offline: NetworkGuard, tmp_path: Path) -> None:
    result = verify_artifact_bundle(BUNDLE, DIGEST, [ME], instance="production", where="fixture")
    assert isinstance(result, KeylessSignature), result
    assert (result.identity, result.digest, result.log_index) == (ME, DIGEST, 2574120827)
    assert (result.not_after - result.not_before).total_seconds() == 600  # a Fulcio certificate: ten minutes
    assert offline.attempts == []  # verified with no network at all
    assert list((tmp_path / "home").rglob("*")) == []  # and nothing written (no ~/.cache/sigstore-python)


def test_a_github_actions_workflow_identity_verifies(offline: NetworkGuard) -> None:
    result = verify_artifact_bundle(GH_BUNDLE, GH_DIGEST, [ME, GH_WORKFLOW], where="gh")
    assert isinstance(result, KeylessSignature), result
    assert result.identity == GH_WORKFLOW and result.log_index == 79605083
    # The same workflow at another ref is another identity: subjects are matched exactly.
    other_ref = KeylessIdentity(GH_ISSUER, GH_WORKFLOW.subject.replace("refs/tags/v0.1.2", "refs/heads/main"))
    reason = verify_artifact_bundle(GH_BUNDLE, GH_DIGEST, [other_ref], where="gh")
    assert isinstance(reason, str) and "refs/heads/main" in reason and "refs/tags/v0.1.2" in reason
    assert offline.attempts == []


def test_another_identity_is_refused_naming_both() -> None:
    other = KeylessIdentity(ME.issuer, "someone-else@example.com")
    reason = verify_artifact_bundle(BUNDLE, DIGEST, [other], where="fixture")
    assert isinstance(reason, str)
    assert reason.startswith("fixture: keyless signature by an identity the trust policy does not allow")
    assert "expected someone-else@example.com (issuer https://github.com/login/oauth)" in reason
    assert "the certificate names aryadeeptade@gmail.com (issuer https://github.com/login/oauth)" in reason


def test_the_right_subject_from_another_issuer_is_refused() -> None:
    reason = verify_artifact_bundle(BUNDLE, DIGEST, [KeylessIdentity("https://accounts.google.com", ME.subject)],
                                    where="fixture")
    assert isinstance(reason, str)
    assert "expected aryadeeptade@gmail.com (issuer https://accounts.google.com)" in reason
    assert "(issuer https://github.com/login/oauth)" in reason


def test_changed_bytes_are_refused() -> None:
    changed = "sha256:" + hashlib.sha256(SIGNED + b"!").hexdigest()
    reason = verify_artifact_bundle(BUNDLE, changed, [ME], where="fixture")
    assert reason == f"fixture: the Sigstore bundle signs {DIGEST}, not {changed} (another artifact, or modified bytes)"
    # Without the digest the bundle declares, the signature itself is what refuses another digest.
    bare = _edit(lambda d: d["messageSignature"].pop("messageDigest"))
    reason = verify_artifact_bundle(bare, changed, [ME], where="fixture")
    assert isinstance(reason, str) and "does not verify" in reason and "Signature is invalid for input" in reason
    assert isinstance(verify_artifact_bundle(bare, DIGEST, [ME], where="fixture"), KeylessSignature)


def test_a_flipped_signature_byte_is_refused() -> None:
    tampered = _edit(lambda d: d["messageSignature"].update(signature=_flip_b64(d["messageSignature"]["signature"])))
    reason = verify_artifact_bundle(tampered, DIGEST, [ME], where="fixture")
    assert isinstance(reason, str)
    assert reason.startswith("fixture: the keyless signature by aryadeeptade@gmail.com (issuer "
                             "https://github.com/login/oauth) does not verify against the Sigstore production "
                             "trusted root")


@pytest.mark.parametrize(("part", "expected"), [
    ("hashes", "does not verify against the Sigstore production trusted root shipped with sigstore-python: "
               "invalid log entry: inclusion proof contains invalid root hash"),
    ("rootHash", "does not verify against the Sigstore production trusted root shipped with sigstore-python: "
                 "invalid log entry"),
    # sigstore-python 4.5 lets this one through (for these sizes the proof computes the same root):
    # sigstore_bundles checks the proof's tree size against its signed checkpoint itself.
    ("treeSize", "the bundle's inclusion proof is for a tree of 2452216575 entries, but its signed checkpoint is "
                 "for 2452216574"),
    ("checkpoint", "does not verify against the Sigstore production trusted root shipped with sigstore-python: "
                   "invalid log entry"),
])
def test_a_modified_inclusion_proof_is_refused(part: str, expected: str) -> None:
    def bend(doc: dict[str, Any]) -> None:
        proof = doc["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]
        if part == "hashes":
            proof["hashes"][0] = _flip_b64(proof["hashes"][0], 0)
        elif part == "rootHash":
            proof["rootHash"] = _flip_b64(proof["rootHash"], 0)
        elif part == "treeSize":
            proof["treeSize"] = str(int(proof["treeSize"]) + 1)
        else:  # the signed note names another log: its signature no longer verifies
            proof["checkpoint"]["envelope"] = proof["checkpoint"]["envelope"].replace("rekor.sigstore.dev - ",
                                                                                    "rekor.example.dev - ", 1)

    reason = verify_artifact_bundle(_edit(bend), DIGEST, [ME], where="fixture")
    assert isinstance(reason, str) and reason.startswith("fixture: ") and expected in reason, reason


def test_a_replaced_certificate_is_refused() -> None:
    """The GitHub bundle's certificate pasted into the e-mail bundle: the identity matches the policy,
    but neither the signature nor the log entry is the certificate's."""
    gh_cert = json.loads(GH_BUNDLE)["verificationMaterial"]["x509CertificateChain"]["certificates"][0]["rawBytes"]
    swapped = _edit(lambda d: d["verificationMaterial"]["certificate"].update(rawBytes=gh_cert))
    reason = verify_artifact_bundle(swapped, DIGEST, [GH_WORKFLOW], where="fixture")
    assert isinstance(reason, str) and "does not verify" in reason and GH_WORKFLOW.subject in reason


@pytest.mark.parametrize(("data", "expected"), [
    (b"not json", "fixture: the Sigstore bundle is not JSON"),
    (b"[1, 2]", "fixture: the Sigstore bundle is not a JSON object"),
    (b"{}", "fixture: not a valid Sigstore bundle"),
    (b'{"mediaType": "application/vnd.dev.sigstore.bundle.v9+json"}', "fixture: not a valid Sigstore bundle"),
    (BUNDLE[:2000], "fixture: the Sigstore bundle is not JSON"),
    (BUNDLE.replace(b'{"mediaType":', b'{"mediaType":"x","mediaType":', 1),
     "fixture: the Sigstore bundle is not JSON (the key 'mediaType' appears twice in one object)"),
    (b" " * (MAX_SIGNATURE_BUNDLE_BYTES + 1), f"fixture: the Sigstore bundle is {MAX_SIGNATURE_BUNDLE_BYTES + 1} "
                                               f"bytes; the limit is {MAX_SIGNATURE_BUNDLE_BYTES}"),
])
def test_what_is_not_a_bundle_is_refused(data: bytes, expected: str) -> None:
    reason = verify_artifact_bundle(data, DIGEST, [ME], where="fixture")
    assert isinstance(reason, str) and reason.startswith(expected), reason


def test_a_production_bundle_does_not_verify_against_the_staging_root() -> None:
    reason = verify_artifact_bundle(BUNDLE, DIGEST, [ME], instance="staging", where="fixture")
    assert isinstance(reason, str)
    assert "does not verify against the Sigstore staging trusted root" in reason
    assert "certificate chain" in reason


def test_a_pinned_trusted_root_is_used_instead_of_the_shipped_one() -> None:
    pinned = KeylessPolicy((ME,), "production", embedded_trusted_root("staging"), "the trusted root pinned.json")
    reason = verify_artifact_bundle(BUNDLE, DIGEST, pinned, where="fixture")
    assert isinstance(reason, str) and "does not verify against the trusted root pinned.json" in reason
    same = KeylessPolicy((ME,), "production", embedded_trusted_root("production"), "the trusted root pinned.json")
    assert isinstance(verify_artifact_bundle(BUNDLE, DIGEST, same, where="fixture"), KeylessSignature)


def test_no_identity_allows_nothing() -> None:
    reason = verify_artifact_bundle(BUNDLE, DIGEST, [], where="fixture")
    assert isinstance(reason, str) and "the trust policy allows no keyless identity" in reason


def _dsse_from(bundle: bytes, statement: bytes) -> bytes:
    """The fixture's certificate and log entry around a DSSE envelope they never signed."""
    def to_dsse(doc: dict[str, Any]) -> None:
        signature = doc.pop("messageSignature")["signature"]
        doc["dsseEnvelope"] = {"payload": base64.b64encode(statement).decode(),
                               "payloadType": "application/vnd.in-toto+json", "signatures": [{"sig": signature}]}
    return _edit(to_dsse, bundle)


def test_dsse_and_signature_bundles_are_not_interchangeable() -> None:
    reason = verify_dsse_bundle(BUNDLE, [ME], where="fixture")
    assert reason == "fixture: the Sigstore bundle holds a signature over an artifact digest, not a DSSE attestation"
    forged = _dsse_from(BUNDLE, make_statement("x", DIGEST, CYCLONEDX_BOM, {"bomFormat": "CycloneDX"}))
    assert verify_artifact_bundle(forged, DIGEST, [ME], where="f") == (
        "f: the Sigstore bundle holds a DSSE attestation, not a signature over an artifact digest")


def test_a_forged_dsse_bundle_is_refused() -> None:
    forged = _dsse_from(BUNDLE, make_statement("x", DIGEST, CYCLONEDX_BOM, {"bomFormat": "CycloneDX"}))
    reason = verify_dsse_bundle(forged, [ME], where="forged")
    assert not isinstance(reason, KeylessAttestation)
    assert reason.startswith("forged: the keyless attestation by aryadeeptade@gmail.com (issuer "
                             "https://github.com/login/oauth) does not verify"), reason
    other = verify_dsse_bundle(forged, [GH_WORKFLOW], where="forged")
    assert isinstance(other, str) and "expected " + str(GH_WORKFLOW) in other and ME.subject in other


# -- the trust policy --------------------------------------------------------------------------------

POLICY = """apiVersion: agentfactory.dev/v1alpha1
kind: TrustPolicy
metadata: {{name: keyless}}
spec:
  keys: []
{keyless}"""


def _policy(tmp_path: Path, keyless: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY.format(keyless=keyless))
    return path


def test_a_policy_without_keyless_trusts_no_identity(tmp_path: Path) -> None:
    policy = load_trust_policy(_policy(tmp_path, ""))
    assert policy.keyless == KeylessPolicy() and policy.keyless.identities == ()


def test_the_keyless_section_is_read(tmp_path: Path) -> None:
    policy = load_trust_policy(_policy(tmp_path, f"""  keyless:
    instance: staging
    identities:
      - issuer: {GH_ISSUER}
        subject: https://github.com/o/r/.github/workflows/release.yml@refs/heads/main
      - {{issuer: "{ME.issuer}", subject: "{ME.subject}"}}
      - {{issuer: "{ME.issuer}", subject: "{ME.subject}"}}
"""))
    assert policy.keyless.instance == "staging" and policy.keyless.trusted_root is None
    assert policy.keyless.identities == (
        KeylessIdentity(GH_ISSUER, "https://github.com/o/r/.github/workflows/release.yml@refs/heads/main"), ME)
    again = tmp_path / "again.yaml"
    again.write_text(to_yaml([], keyless=policy.keyless))
    assert load_trust_policy(again).keyless == policy.keyless


def test_a_pinned_trusted_root_file_is_read_relative_to_the_policy(tmp_path: Path) -> None:
    (tmp_path / "sigstore").mkdir()
    (tmp_path / "sigstore" / "root.json").write_bytes(embedded_trusted_root("production"))
    policy = load_trust_policy(_policy(tmp_path, f"""  keyless:
    trustedRootFile: sigstore/root.json
    identities: [{{issuer: "{ME.issuer}", subject: "{ME.subject}"}}]
"""))
    assert policy.keyless.trusted_root == embedded_trusted_root("production")
    assert str(tmp_path / "sigstore" / "root.json") in policy.keyless.root_name
    assert isinstance(verify_artifact_bundle(BUNDLE, DIGEST, policy.keyless, where="f"), KeylessSignature)


@pytest.mark.parametrize(("keyless", "expected"), [
    ("  keyless: {instance: production}\n", "spec.keyless: 'identities' is a required property"),
    ("  keyless: {identities: []}\n", "spec.keyless.identities: [] should be non-empty"),
    ("  keyless: {instance: prod, identities: [{issuer: https://a.example, subject: s}]}\n",
     "spec.keyless.instance: 'prod' is not one of ['production', 'staging']"),
    ("  keyless: {identities: [{issuer: 'http://a.example', subject: s}]}\n",
     "spec.keyless.identities.0.issuer: 'http://a.example' does not match"),
    ("  keyless: {identities: [{issuer: https://a.example}]}\n",
     "spec.keyless.identities.0: 'subject' is a required property"),
    ("  keyless: {identities: [{issuer: https://a.example, subject: s, regexp: '.*'}]}\n",
     "spec.keyless.identities.0: Additional properties are not allowed ('regexp' was unexpected)"),
    ("  keyless:\n    identities:\n      - issuer: https://a.example\n        subject: https://github.com/o/r/*\n",
     "spec.keyless.identities.0.subject: 'https://github.com/o/r/*': subjects are matched exactly"),
    ("  keyless: {trustedRootFile: missing.json, identities: [{issuer: https://a.example, subject: s}]}\n",
     "spec.keyless.trustedRootFile: "),
    ("  keyless: {trustedRootFile: policy.yaml, identities: [{issuer: https://a.example, subject: s}]}\n",
     "not a usable Sigstore trusted root"),
])
def test_a_bad_keyless_section_names_the_file_and_field(tmp_path: Path, keyless: str, expected: str) -> None:
    path = _policy(tmp_path, keyless)
    with pytest.raises(ValidationFailed) as caught:
        load_trust_policy(path)
    text = str(caught.value)
    assert str(path) in text and expected in text, text


# -- the verifier ------------------------------------------------------------------------------------


def _check(verdict: Verdict, name: str) -> tuple[bool, str]:
    (c,) = [c for c in verdict.checks if c.name == name]
    return c.ok, c.reason


def _keyless_policy(*identities: KeylessIdentity, log_keys: list[bytes] | None = None) -> TrustPolicy:
    return from_public_keys([], log_keys=log_keys, keyless=KeylessPolicy(identities))


def test_a_bundle_is_the_signature_when_the_policy_names_its_identity(offline: NetworkGuard) -> None:
    found = Evidence(bundles=[("registry@sha256:b", BUNDLE)])
    verdict = verify(DIGEST, SIGNED, found, _keyless_policy(ME))
    assert _check(verdict, "digest")[0]
    assert _check(verdict, "signature") == (True, "signed keylessly by aryadeeptade@gmail.com (issuer "
                                                  "https://github.com/login/oauth) (Sigstore production, Rekor log "
                                                  "index 2574120827)")
    assert _check(verdict, "key-status") == (True, "keyless: a short-lived certificate (valid 2026-08-23 17:01:59 "
                                                   "to 17:11:59 UTC), no key to revoke")
    assert not _check(verdict, "sbom")[0] and not verdict.allowed  # a signature is not an SBOM
    assert verdict.score == 5.0  # digest, signature, key-status
    assert offline.attempts == []


def test_without_keyless_identities_a_bundle_signs_nothing() -> None:
    found = Evidence(bundles=[("registry@sha256:b", BUNDLE)])
    for policy in (from_public_keys([]), _keyless_policy()):
        verdict = verify(DIGEST, SIGNED, found, policy)
        assert _check(verdict, "signature") == (
            False, f"no signature for {DIGEST} (unsigned, or a modified copy); a keyless signature (Sigstore "
                   "bundle) is attached, but the trust policy lists no keyless identities (spec.keyless)")
        assert _check(verdict, "key-status") == (False, "no signing key to check")


def test_a_bundle_for_another_identity_or_artifact_signs_nothing() -> None:
    found = Evidence(bundles=[("registry@sha256:b", BUNDLE)])
    ok, reason = _check(verify(DIGEST, SIGNED, found, _keyless_policy(GH_WORKFLOW)), "signature")
    assert not ok and f"expected {GH_WORKFLOW}" in reason and "aryadeeptade@gmail.com" in reason
    other = "sha256:" + "ab" * 32
    ok, reason = _check(verify(other, None, found, _keyless_policy(ME)), "signature")
    assert not ok and f"signs {DIGEST}, not {other}" in reason


def test_keyless_bundles_carry_their_own_log_proof() -> None:
    """A policy that lists transparency logs requires every signature to be logged: a verified keyless
    bundle is, in the Sigstore instance's Rekor, whose inclusion proof sigstore-python checked."""
    log_key = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    found = Evidence(bundles=[("registry@sha256:b", BUNDLE)])
    assert _check(verify(DIGEST, SIGNED, found, _keyless_policy(ME, log_keys=[log_key])), "tlog") == (
        True, "keyless bundles carry their own Rekor inclusion proof, verified against the Sigstore trusted root: "
              "the keyless artifact signature (Rekor log index 2574120827)")
    # Unverified, it proves nothing: the tlog check fails as it did.
    ok, reason = _check(verify(DIGEST, SIGNED, found, _keyless_policy(GH_WORKFLOW, log_keys=[log_key])), "tlog")
    assert not ok and reason == "no verified signature or attestation to look for in a transparency log"


def test_a_keyless_attestation_is_selected_by_its_statement_and_must_verify() -> None:
    sbom = make_statement("x", DIGEST, CYCLONEDX_BOM, {"bomFormat": "CycloneDX"})
    found = Evidence(bundles=[("registry@sha256:b", BUNDLE), ("registry@sha256:c", _dsse_from(BUNDLE, sbom))])
    verdict = verify(DIGEST, SIGNED, found, _keyless_policy(ME))
    assert _check(verdict, "signature")[0]  # the DSSE bundle is not taken for a signature, nor spoils it
    ok, reason = _check(verdict, "sbom")
    assert not ok and reason.startswith("registry@sha256:c: the keyless attestation by aryadeeptade@gmail.com")
    assert "does not verify" in reason
    ok, reason = _check(verdict, "provenance")
    assert not ok and reason == f"no {SLSA_PROVENANCE_V1} attestation (found: {CYCLONEDX_BOM})"
    ok, reason = _check(verify(DIGEST, SIGNED, found, from_public_keys([])), "sbom")
    assert not ok and reason.endswith("a keyless attestation (Sigstore bundle) is attached, but the trust policy "
                                      "lists no keyless identities (spec.keyless)")


def test_bundles_are_stored_and_collected_as_referrers(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    write_template(templates, "alpha", manifest=hello_manifest("alpha", language="wat", sources="[m.wat]"),
                   files={"m.wat": WAT})
    store = OCILayoutStore(tmp_path / "store")
    assert run_pipeline(templates, store, jobs=1).ok  # published unsigned
    (agent,) = store.list_agents()
    assert not has_signature(store, agent)
    statement = make_statement("alpha", agent.digest, CYCLONEDX_BOM, {"bomFormat": "CycloneDX"})
    attach_bundles(store, agent, [(None, BUNDLE), (CYCLONEDX_BOM, _dsse_from(BUNDLE, statement))])
    assert has_signature(store, agent)
    refs = store.referrers(agent, BUNDLE_ARTIFACT_TYPE)
    assert sorted(r.annotations.get(ANN_PREDICATE_TYPE, "") for r in refs) == ["", CYCLONEDX_BOM]
    found = collect(store, agent)
    assert sorted(doc for _, doc in found.bundles) == sorted([BUNDLE, _dsse_from(BUNDLE, statement)])
    ok, reason = _check(verify(agent.digest, None, found, _keyless_policy(ME)), "signature")
    assert not ok and f"the Sigstore bundle signs {DIGEST}, not {agent.digest}" in reason


# -- signing: the ambient identity and the pipeline, up to the network ---------------------------------


def test_keyless_is_not_a_key_provider() -> None:
    with pytest.raises(ConfigError, match="keyless Sigstore signing holds no keys"):
        open_provider("sigstore")


def test_without_an_ambient_identity_signing_refuses_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        KeylessSigner()
    assert str(caught.value) == NO_AMBIENT_IDENTITY
    assert "GitHub Actions with `permissions: id-token: write`" in NO_AMBIENT_IDENTITY


def test_github_actions_without_id_token_permission_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    with pytest.raises(ConfigError) as caught:
        KeylessSigner()
    assert str(caught.value).startswith(NO_AMBIENT_IDENTITY + "; the CI refused the token:")
    assert "ACTIONS_ID_TOKEN_REQUEST_TOKEN" in str(caught.value)


class _TokenEndpoint(BaseHTTPRequestHandler):
    """GitHub Actions' OIDC token endpoint as the runner exposes it (ACTIONS_ID_TOKEN_REQUEST_URL)."""

    token: ClassVar[str] = ""
    seen: ClassVar[list[tuple[str, str]]] = []

    def do_GET(self) -> None:
        audience = parse_qs(urlparse(self.path).query).get("audience", [""])[0]
        type(self).seen.append((audience, self.headers.get("Authorization", "")))
        body = json.dumps({"value": self.token}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _unsigned_jwt(claims: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()
    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.{base64.urlsafe_b64encode(b'sig').decode()}"


@pytest.fixture
def github_actions(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str]]]:
    """A runner's environment: GITHUB_ACTIONS and the token request URL and bearer, served on loopback."""
    now = int(time.time())
    _TokenEndpoint.token = _unsigned_jwt({
        "iss": GH_ISSUER, "aud": "sigstore", "sub": "repo:o/r:ref:refs/heads/main", "iat": now, "nbf": now,
        "exp": now + 300, "job_workflow_ref": "o/r/.github/workflows/release.yml@refs/heads/main"})
    _TokenEndpoint.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _TokenEndpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_URL", f"http://127.0.0.1:{server.server_address[1]}/token?x=1")
    monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "runner-bearer")
    try:
        yield _TokenEndpoint.seen
    finally:
        server.shutdown()
        server.server_close()


def test_in_github_actions_the_workflow_token_is_requested_for_sigstore(
        github_actions: list[tuple[str, str]], offline: NetworkGuard) -> None:
    signer = KeylessSigner()
    assert github_actions == [("sigstore", "bearer runner-bearer")]
    assert (signer.token_issuer, signer.token_identity) == (GH_ISSUER, "repo:o/r:ref:refs/heads/main")
    assert offline.attempts == []  # only the runner's loopback endpoint so far


def test_the_pipeline_signs_keylessly_or_publishes_nothing(github_actions: list[tuple[str, str]],
                                                           offline: NetworkGuard, tmp_path: Path) -> None:
    """`--key-provider sigstore` wiring: the pipeline takes the workflow's token, builds, and goes to the
    Sigstore instance to sign; offline that fails, and the artifact is not published unsigned."""
    templates = tmp_path / "templates"
    write_template(templates, "alpha", manifest=hello_manifest("alpha", language="wat", sources="[m.wat]"),
                   files={"m.wat": WAT})
    store = OCILayoutStore(tmp_path / "store")
    keys = LocalKeyring(tmp_path / "keys")
    report = run_pipeline(templates, store, signing=Signing(keys, tlog=None, keyless=KeylessSigner()), jobs=1)
    (result,) = report.templates
    assert result.status == "failed"
    (error,) = result.errors
    assert "keyless signing with the Sigstore production instance failed" in error, error
    assert offline.attempts and all("sigstore" in a or "connect" in a for a in offline.attempts), offline.attempts
    assert store.list_agents() == []  # refused before publication
    assert not (tmp_path / "keys").exists()  # keyless signing creates no local key


def test_the_cli_refuses_keyless_signing_without_an_identity(tmp_path: Path) -> None:
    from pipelines.cli import pipeline

    result = CliRunner().invoke(pipeline, ["run", "--templates", str(tmp_path), "--key-provider", "sigstore",
                                           "--store", f"oci-layout:{tmp_path / 'store'}"])
    assert result.exit_code == 2, result.output
    assert NO_AMBIENT_IDENTITY in " ".join(result.output.split())
    result = CliRunner().invoke(pipeline, ["run", "--templates", str(tmp_path), "--key-provider", "sigstore",
                                           "--tlog", "none", "--store", f"oci-layout:{tmp_path / 'store'}"])
    assert result.exit_code == 2 and NO_AMBIENT_IDENTITY in " ".join(result.output.split())
    result = CliRunner().invoke(pipeline, ["run", "--templates", str(tmp_path), "--key-provider", "sigstore",
                                           "--tlog", "embedded", "--store", f"oci-layout:{tmp_path / 'store'}"])
    assert result.exit_code == 2
    assert "with --key-provider sigstore, pass --tlog none or leave it out" in " ".join(result.output.split())


def test_trust_init_writes_keyless_identities(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agentfactory.cli.verify_cmd import trust

    monkeypatch.setenv("AGENTFACTORY_HOME", str(tmp_path / "home"))
    LocalKeyring(tmp_path / "home" / "keys").create()
    subject = "https://github.com/o/r/.github/workflows/release.yml@refs/heads/main"
    out = tmp_path / "trust.yaml"
    done = CliRunner().invoke(trust, ["init", "-o", str(out), "--keyless-identity",
                                      f"https://token.actions.githubusercontent.com={subject}"])
    assert done.exit_code == 0, done.output
    policy = load_trust_policy(out)
    assert [(i.issuer, i.subject) for i in policy.keyless.identities] == [
        ("https://token.actions.githubusercontent.com", subject)]
    bad = CliRunner().invoke(trust, ["init", "--keyless-identity", "just-a-subject"])
    assert bad.exit_code == 2 and "write ISSUER=SUBJECT" in bad.output
