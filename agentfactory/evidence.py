"""Evidence of an agent: its artifact signatures and attestations, stored as OCI referrers.

Reading never raises on bad evidence: what cannot be read is recorded as a problem, and the
verifier turns problems into failed checks, so a broken store denies with a reason.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field

from .artifact import Blob
from .dsse import ENVELOPE_MEDIA_TYPE, Envelope, b64decode_strict
from .errors import AgentFactoryError, InputError
from .jsonsafe import load_json_object
from .keys.base import Signature
from .store import ArtifactStore, StoredAgent

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
    problems: list[str] = field(default_factory=list)


def attach(store: ArtifactStore, agent: StoredAgent, signature: ArtifactSignature,
           attestations: list[tuple[str, Envelope]]) -> None:
    """Store a signature and DSSE attestations as referrers of the agent's manifest."""
    store.attach(agent, artifact_type=SIGNATURE_ARTIFACT_TYPE,
                 layer=Blob(SIGNATURE_ARTIFACT_TYPE, signature.to_json()))
    for predicate_type, envelope in attestations:
        store.attach(agent, artifact_type=ENVELOPE_MEDIA_TYPE,
                     layer=Blob(ENVELOPE_MEDIA_TYPE, envelope.to_json()),
                     annotations={ANN_PREDICATE_TYPE: predicate_type})


def collect(store: ArtifactStore, agent: StoredAgent) -> Evidence:
    """Every signature and attestation attached to `agent` in `store`."""
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
    return evidence


def has_signature(store: ArtifactStore, agent: StoredAgent) -> bool:
    try:
        return bool(store.referrers(agent, SIGNATURE_ARTIFACT_TYPE))
    except AgentFactoryError:
        return False
