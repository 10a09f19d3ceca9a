"""Evidence of an agent: its artifact signatures, attestations and their transparency-log entries, and
keyless Sigstore bundles, stored as OCI referrers.

Reading never raises on bad evidence: what cannot be read is recorded as a problem, and the
verifier turns problems into failed checks, so a broken store denies with a reason.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from .artifact import Blob
from .dsse import ENVELOPE_MEDIA_TYPE, Envelope, b64decode_strict
from .errors import AgentFactoryError, InputError
from .jsonsafe import load_json_object
from .keys.base import Signature
from .sigstore_bundles import BUNDLE_ARTIFACT_TYPE, BUNDLE_ARTIFACT_TYPES
from .store import ArtifactStore, StoredAgent
from .tlog.bundle import TLOG_ENTRY_ARTIFACT_TYPE
from .tlog.entries import API_VERSION, hashedrekord_body, parse_proposed_entry

SIGNATURE_ARTIFACT_TYPE = "application/vnd.dev.agentfactory.signature.v1+json"
SIGNATURE_ALGORITHM = "rsassa-pkcs1v15-sha256"
ANN_PREDICATE_TYPE = "dev.agentfactory.predicate-type"
MAX_SIGNATURE_DOC_BYTES = 64 * 1024


@dataclass(frozen=True)
class ArtifactSignature:
    """A signature over the artifact's SHA-256 digest (what hashedrekord and cosign sign-blob make)."""

    digest: str
    keyid: str
    sig: bytes
    provider: str = ""
    version: int | None = None

    def to_json(self) -> bytes:
        return json.dumps({"algorithm": SIGNATURE_ALGORITHM, "digest": self.digest, "keyid": self.keyid,
                           "sig": base64.b64encode(self.sig).decode(), "provider": self.provider,
                           "version": self.version}, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_signature(cls, digest: str, s: Signature) -> ArtifactSignature:
        return cls(digest=digest, keyid=s.key_id, sig=s.signature, provider=s.provider, version=s.version)


def parse_artifact_signature(data: bytes, where: str) -> ArtifactSignature:
    doc = load_json_object(data, where, max_bytes=MAX_SIGNATURE_DOC_BYTES, what="signature document")
    if doc.get("algorithm") != SIGNATURE_ALGORITHM:
        raise InputError(where, f"signature algorithm must be {SIGNATURE_ALGORITHM}")
    digest, keyid = doc.get("digest"), doc.get("keyid")
    if not isinstance(digest, str) or not isinstance(keyid, str):
        raise InputError(where, "signature document needs digest and keyid strings")
    version = doc.get("version")
    return ArtifactSignature(digest=digest, keyid=keyid, sig=b64decode_strict(doc.get("sig"), f"{where}: sig"),
                             provider=str(doc.get("provider", "")),
                             version=version if isinstance(version, int) else None)


@dataclass
class Evidence:
    """Raw evidence as found; the verifier parses and judges it."""

    signatures: list[tuple[str, bytes]] = field(default_factory=list)  # (where, document)
    attestations: list[tuple[str, bytes]] = field(default_factory=list)  # (where, DSSE envelope JSON)
    tlog: list[tuple[str, bytes]] = field(default_factory=list)  # (where, TlogRecord JSON)
    # (where, Sigstore bundle JSON): keyless signatures over the digest and keyless DSSE attestations alike;
    # the verifier tells them apart by content and trusts them only for the policy's keyless identities.
    bundles: list[tuple[str, bytes]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def attach(store: ArtifactStore, agent: StoredAgent, signature: ArtifactSignature,
           attestations: list[tuple[str, Envelope]], tlog_records: list[bytes] | None = None) -> None:
    """Store a signature, DSSE attestations and their log entries (TlogRecord JSON) as referrers of the
    agent's manifest."""
    store.attach(agent, artifact_type=SIGNATURE_ARTIFACT_TYPE,
                 layer=Blob(SIGNATURE_ARTIFACT_TYPE, signature.to_json()))
    attach_attestations(store, agent, attestations, tlog_records)


def attach_attestations(store: ArtifactStore, agent: StoredAgent, attestations: list[tuple[str, Envelope]],
                        tlog_records: list[bytes] | None = None) -> None:
    """Add attestations (and their log entries) to an agent already signed: a re-scan, for instance."""
    for predicate_type, envelope in attestations:
        store.attach(agent, artifact_type=ENVELOPE_MEDIA_TYPE,
                     layer=Blob(ENVELOPE_MEDIA_TYPE, envelope.to_json()),
                     annotations={ANN_PREDICATE_TYPE: predicate_type})
    for record in tlog_records or []:
        store.attach(agent, artifact_type=TLOG_ENTRY_ARTIFACT_TYPE, layer=Blob(TLOG_ENTRY_ARTIFACT_TYPE, record))


def attach_bundles(store: ArtifactStore, agent: StoredAgent, bundles: list[tuple[str | None, bytes]]) -> None:
    """Store keyless Sigstore bundles: (None, the signature over the digest) or (predicate type, a DSSE
    attestation), annotated with the predicate type like envelopes (a hint; the verifier reads the statement)."""
    for predicate_type, bundle in bundles:
        store.attach(agent, artifact_type=BUNDLE_ARTIFACT_TYPE, layer=Blob(BUNDLE_ARTIFACT_TYPE, bundle),
                     annotations={ANN_PREDICATE_TYPE: predicate_type} if predicate_type else None)


def collect(store: ArtifactStore, agent: StoredAgent) -> Evidence:
    """Every signature, attestation and transparency-log record attached to `agent` in `store`."""
    evidence = Evidence()
    try:
        referrers = store.referrers(agent)
    except AgentFactoryError as exc:
        evidence.problems.append(str(exc))
        return evidence
    for ref in referrers:
        where = f"{store.url}@{ref.digest}"
        try:
            payload = store.referrer_payload(agent, ref)
        except AgentFactoryError as exc:
            evidence.problems.append(str(exc))
            continue
        if ref.artifact_type == SIGNATURE_ARTIFACT_TYPE:
            evidence.signatures.append((where, payload))
        elif ref.artifact_type == ENVELOPE_MEDIA_TYPE:
            evidence.attestations.append((where, payload))
        elif ref.artifact_type == TLOG_ENTRY_ARTIFACT_TYPE:
            evidence.tlog.append((where, payload))
        elif ref.artifact_type in BUNDLE_ARTIFACT_TYPES:
            evidence.bundles.append((where, payload))
    return evidence


def has_signature(store: ArtifactStore, agent: StoredAgent) -> bool:
    """Whether the agent was signed: an artifact signature, or keyless Sigstore bundles."""
    try:
        return any(r.artifact_type == SIGNATURE_ARTIFACT_TYPE or r.artifact_type in BUNDLE_ARTIFACT_TYPES
                   for r in store.referrers(agent))
    except AgentFactoryError:
        return False


def proposed_for_signature(signature: ArtifactSignature, public_key_pem: bytes) -> dict[str, Any]:
    """The hashedrekord entry to log for an artifact signature (its digest, signature and signer's key).

    The canonical body has the proposal's shape, so the builder serves both; parsing it back checks it.
    """
    algorithm, _, hex_digest = signature.digest.partition(":")
    if algorithm != "sha256":
        raise InputError("artifact signature", f"only sha256 digests can be logged, not {signature.digest}")
    proposed = hashedrekord_body(hex_digest, signature.sig, public_key_pem)
    parse_proposed_entry(proposed, "hashedrekord proposal")
    return proposed


def proposed_for_envelope(envelope_json: bytes, public_key_pem: bytes) -> dict[str, Any]:
    """The dsse entry to log for an attestation: `envelope_json` must be the exact bytes stored as
    evidence, because the log records their hash and the verifier matches it."""
    try:
        text = envelope_json.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError("dsse proposal", "the envelope is not UTF-8 JSON") from None
    proposed = {"apiVersion": API_VERSION, "kind": "dsse", "spec": {"proposedContent": {
        "envelope": text, "verifiers": [base64.b64encode(public_key_pem).decode()]}}}
    parse_proposed_entry(proposed, "dsse proposal")
    return proposed
