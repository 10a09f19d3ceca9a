"""Evidence of an agent: its artifact signatures, attestations and their transparency-log entries, and
keyless Sigstore bundles, stored as OCI referrers.

Written as Sigstore bundles v0.3 (`key_bundles`), one referrer each with the artifact type cosign uses, so
that cosign, Kyverno, policy-controller and Ratify find and read them. Read in both formats: bundles, and
the format stores written before 0.x kept (a signature document, DSSE envelopes and log records as separate
referrers; docs/evidence.md says for how long). A key-based bundle is read back into exactly what the old
format held (the signature, the envelope as logged, one record per log entry), so the verifier judges both
with the same checks and the same reasons.

Reading never raises on bad evidence: what cannot be read is recorded as a problem, and the
verifier turns problems into failed checks, so a broken store denies with a reason.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .artifact import MANIFEST_MEDIA_TYPE, Blob
from .digest import DIGEST_RE
from .dsse import ENVELOPE_MEDIA_TYPE, Envelope, b64decode_strict
from .errors import AgentFactoryError, InputError
from .intoto import STATEMENT_TYPE, make_statement
from .jsonsafe import load_json_object
from .key_bundles import (
    ANN_BUNDLE_CONTENT,
    ANN_BUNDLE_PREDICATE_TYPE,
    CONTENT_DSSE,
    CONTENT_MESSAGE_SIGNATURE,
    dsse_bundle,
    is_key_bundle,
    load_bundle_json,
    logs_envelope,
    logs_signature,
    parse_key_bundle,
    signature_bundle,
)
from .keys.base import Signature
from .sigstore_bundles import BUNDLE_ARTIFACT_TYPE, BUNDLE_ARTIFACT_TYPES
from .store import ArtifactStore, StoredAgent
from .tlog.bundle import TLOG_ENTRY_ARTIFACT_TYPE, parse_record
from .tlog.entries import API_VERSION, LogEntry, hashedrekord_body, parse_proposed_entry

# The format before Sigstore bundles: read (stores written before), never written. docs/evidence.md.
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


def agent_statement(name: str, digest: str, predicate_type: str, predicate: Any,
                    manifest_digest: str | None = None) -> bytes:
    """The in-toto statement of an attestation about agent `name`: its wasm `digest` (the artifact the
    verifier judges) and, when given, its OCI manifest digest (what `cosign verify-attestation` and admission
    controllers look an image's attestations up by). Without a manifest digest: `make_statement`'s bytes."""
    if manifest_digest is None:
        return make_statement(name, digest, predicate_type, predicate)
    for d in (digest, manifest_digest):
        if not DIGEST_RE.match(d):
            raise InputError("statement subject", f"{d!r} is not a sha256 digest")
    return json.dumps({
        "_type": STATEMENT_TYPE,
        # The manifest first: cosign reports the first subject as the image's "docker-manifest-digest".
        "subject": [{"name": name, "digest": {"sha256": manifest_digest.split(":", 1)[1]},
                     "mediaType": MANIFEST_MEDIA_TYPE},
                    {"name": name, "digest": {"sha256": digest.split(":", 1)[1]}}],
        "predicateType": predicate_type,
        "predicate": predicate,
    }, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def key_bundles(signature: ArtifactSignature | None, attestations: Sequence[tuple[str, Envelope]],
                tlog_records: Sequence[bytes] | None = None) -> list[tuple[str | None, bytes]]:
    """Sigstore bundles of a key-based signature and attestations, each with its own log entry:
    (None, the signature's bundle) and (predicate type, an attestation's bundle), in that order.

    `tlog_records` are the entries the log returned (TlogRecord JSON), in any order; each is put in the
    bundle of the signature or envelope it logs. A record that logs none of them is refused (a caller bug:
    it would be evidence of nothing)."""
    entries = [parse_record(r, f"log record {i}").entry for i, r in enumerate(tlog_records or [])]
    used: set[int] = set()

    def take(matches: Any) -> list[LogEntry]:
        found = [i for i, e in enumerate(entries) if i not in used and matches(e)]
        used.update(found)
        return [entries[i] for i in found]

    out: list[tuple[str | None, bytes]] = []
    if signature is not None:
        logged = take(lambda e: logs_signature(e, signature.digest, signature.sig))
        out.append((None, signature_bundle(signature.digest, signature.sig, signature.keyid, logged)))
    for predicate_type, envelope in attestations:
        data = envelope.to_json()
        out.append((predicate_type, dsse_bundle(envelope, take(lambda e, d=data: logs_envelope(e, d)))))
    stray = [entries[i].log_index for i in range(len(entries)) if i not in used]
    if stray:
        raise InputError("evidence", f"log entries {', '.join(map(str, stray))} log neither the signature nor an "
                                     "attestation being attached")
    return out


def attach(store: ArtifactStore, agent: StoredAgent, signature: ArtifactSignature,
           attestations: list[tuple[str, Envelope]], tlog_records: list[bytes] | None = None) -> None:
    """Store a signature and DSSE attestations, with their log entries (TlogRecord JSON), as Sigstore
    bundles referring to the agent's manifest."""
    attach_bundles(store, agent, key_bundles(signature, attestations, tlog_records))


def attach_attestations(store: ArtifactStore, agent: StoredAgent, attestations: list[tuple[str, Envelope]],
                        tlog_records: list[bytes] | None = None) -> None:
    """Add attestations (and their log entries) to an agent already signed: a re-scan, for instance."""
    attach_bundles(store, agent, key_bundles(None, attestations, tlog_records))


def attach_bundles(store: ArtifactStore, agent: StoredAgent, bundles: list[tuple[str | None, bytes]]) -> None:
    """Store Sigstore bundles, key-based or keyless: (None, a signature over the digest) or (predicate type,
    a DSSE attestation), with the annotations cosign writes (`dev.sigstore.bundle.content`,
    `dev.sigstore.bundle.predicateType`) and ours (a hint; the verifier reads the statement)."""
    for predicate_type, bundle in bundles:
        annotations = ({ANN_BUNDLE_CONTENT: CONTENT_DSSE, ANN_BUNDLE_PREDICATE_TYPE: predicate_type,
                        ANN_PREDICATE_TYPE: predicate_type} if predicate_type
                       else {ANN_BUNDLE_CONTENT: CONTENT_MESSAGE_SIGNATURE})
        store.attach(agent, artifact_type=BUNDLE_ARTIFACT_TYPE, layer=Blob(BUNDLE_ARTIFACT_TYPE, bundle),
                     annotations=annotations)


def add_bundle(evidence: Evidence, where: str, data: bytes) -> None:
    """Sort one Sigstore bundle into `evidence`: a key-based one as its signature or envelope plus one log
    record per entry (what the verifier already judges); a keyless one as it is. Never raises."""
    try:
        doc = load_bundle_json(data, where)
    except InputError as exc:
        evidence.problems.append(str(exc))
        evidence.bundles.append((where, data))  # and let the keyless verification say what it finds
        return
    if not is_key_bundle(doc):
        evidence.bundles.append((where, data))
        return
    try:
        parsed = parse_key_bundle(doc, len(data), where)
    except InputError as exc:
        evidence.problems.append(str(exc))
        return
    if parsed.envelope is not None:
        evidence.attestations.append((where, parsed.envelope_json))
    elif parsed.digest is not None and parsed.signature is not None:
        evidence.signatures.append((where, ArtifactSignature(parsed.digest, parsed.key_id,
                                                             parsed.signature).to_json()))
    evidence.tlog.extend((f"{where} (tlogEntries[{i}])", e.to_json()) for i, e in enumerate(parsed.entries))


def from_bundles(bundles: Sequence[tuple[str, bytes]]) -> Evidence:
    """Evidence read from (where, bundle) pairs, as `collect` reads them from a store."""
    evidence = Evidence()
    for where, data in bundles:
        add_bundle(evidence, where, data)
    return evidence


def collect(store: ArtifactStore, agent: StoredAgent) -> Evidence:
    """Every signature, attestation and transparency-log record attached to `agent` in `store`: Sigstore
    bundles, and the separate referrers of the format before them."""
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
        if ref.artifact_type in BUNDLE_ARTIFACT_TYPES:
            add_bundle(evidence, where, payload)
        elif ref.artifact_type == SIGNATURE_ARTIFACT_TYPE:
            evidence.signatures.append((where, payload))
        elif ref.artifact_type == ENVELOPE_MEDIA_TYPE:
            evidence.attestations.append((where, payload))
        elif ref.artifact_type == TLOG_ENTRY_ARTIFACT_TYPE:
            evidence.tlog.append((where, payload))
    return evidence


def has_signature(store: ArtifactStore, agent: StoredAgent) -> bool:
    """Whether the agent was signed: a signature over its digest in either format (a bundle not annotated as
    an attestation), key-based or keyless. Annotations are hints: the verifier still judges what is there."""
    try:
        return any(r.artifact_type == SIGNATURE_ARTIFACT_TYPE
                   or (r.artifact_type in BUNDLE_ARTIFACT_TYPES and _signature_hint(r.annotations))
                   for r in store.referrers(agent))
    except AgentFactoryError:
        return False


def _signature_hint(annotations: dict[str, str]) -> bool:
    return (annotations.get(ANN_BUNDLE_CONTENT, CONTENT_MESSAGE_SIGNATURE) == CONTENT_MESSAGE_SIGNATURE
            and ANN_PREDICATE_TYPE not in annotations)


def legacy_only(store: ArtifactStore, agent: StoredAgent) -> bool:
    """Whether the agent's evidence is in the format before bundles only (no bundle at all): what cosign and
    admission controllers cannot read, and what the verifier stops reading after the deprecation window."""
    refs = store.referrers(agent)
    old = {SIGNATURE_ARTIFACT_TYPE, ENVELOPE_MEDIA_TYPE, TLOG_ENTRY_ARTIFACT_TYPE}
    return any(r.artifact_type in old for r in refs) and not any(r.artifact_type in BUNDLE_ARTIFACT_TYPES
                                                                 for r in refs)


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
