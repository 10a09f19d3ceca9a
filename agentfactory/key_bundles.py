"""Sigstore bundles v0.3 for key-based signatures: what cosign, Kyverno, policy-controller and Ratify read.

A key-based signature (RSA-2048, PKCS#1 v1.5 over SHA-256, from the local keyring or Vault/OpenBao Transit)
travels as a Sigstore bundle whose verification material is the signer's public key named by its key id
(`publicKey.hint`), never a certificate. Its content is either the signature over the artifact's SHA-256
digest (`messageSignature`, what `cosign sign-blob` makes, logged as a `hashedrekord`) or a DSSE envelope of
an in-toto statement (`dsseEnvelope`, what `cosign attest` makes, logged as `dsse`). Its `tlogEntries` hold
the transparency-log entry exactly as the log returned it: canonicalized body, integrated time, log id and
index, signed entry timestamp (`inclusionPromise`) and inclusion proof with the signed checkpoint.

Reading is strict and bounded, and turns a bundle back into what the verifier already judges: the signature
(or the envelope, re-serialised byte for byte as it was logged) and one transparency-log record per entry,
so a bundle is trusted exactly as far as the separate evidence it replaces (same checks, same reasons).
Only JSON fields of the bundle's protobuf schema are written: cosign parses bundles with protojson, which
refuses unknown fields.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .dsse import MAX_ENVELOPE_BYTES, MAX_SIGNATURES, Envelope, EnvelopeSignature
from .errors import InputError
from .jsonsafe import no_duplicate_keys
from .tlog.entries import (
    API_VERSION,
    KINDS,
    MAX_BODY_BYTES,
    MAX_PROOF_HASHES,
    MAX_SIGNATURE_BYTES,
    InclusionProof,
    LogEntry,
)
from .tlog.note import MAX_NOTE_BYTES, MAX_TREE_SIZE

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
# The same version as some clients spell it; a key-based bundle of an older version was never written.
READABLE_MEDIA_TYPES = frozenset({BUNDLE_MEDIA_TYPE, "application/vnd.dev.sigstore.bundle+json;version=0.3"})
# Referrer annotations cosign writes (pkg/oci/remote/write.go) beside the bundle layer.
ANN_BUNDLE_CONTENT = "dev.sigstore.bundle.content"
ANN_BUNDLE_PREDICATE_TYPE = "dev.sigstore.bundle.predicateType"
CONTENT_DSSE = "dsse-envelope"
CONTENT_MESSAGE_SIGNATURE = "message-signature"
# What `cosign sign` signs for an image in the bundle format: an in-toto statement about the manifest digest
# with this predicate type and an empty predicate. `cosign verify` accepts a bundle of it.
COSIGN_SIGN_V1 = "https://sigstore.dev/cosign/sign/v1"

MAX_SIGNATURE_BUNDLE_BYTES = 256 * 1024  # a signature, a key hint and a few log entries
MAX_DSSE_BUNDLE_BYTES = MAX_ENVELOPE_BYTES + 256 * 1024  # the envelope plus its log entries
MAX_TLOG_ENTRIES = 8
_HEX64 = re.compile(r"[0-9a-f]{64}")
_DIGITS = re.compile(r"0|[1-9][0-9]{0,18}")


@dataclass(frozen=True)
class KeyBundle:
    """A key-based bundle, parsed (not verified): the key id it names and what it carries."""

    key_id: str  # verificationMaterial.publicKey.hint
    digest: str | None  # messageSignature: the signed artifact digest, sha256:<hex>
    signature: bytes | None  # messageSignature: the signature over that digest
    envelope: Envelope | None  # dsseEnvelope
    entries: tuple[LogEntry, ...]  # verificationMaterial.tlogEntries, as the log returned them

    @property
    def envelope_json(self) -> bytes:
        """The envelope as it was logged and as the verifier reads it (`Envelope.to_json`)."""
        assert self.envelope is not None
        return self.envelope.to_json()


# ------------------------------------------------------------------------------------------ writing


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _tlog_entry(entry: LogEntry) -> dict[str, Any]:
    """One `TransparencyLogEntry` (protobuf-specs rekor/v1) from a log entry with its inclusion proof."""
    proof = entry.inclusion_proof
    if proof is None:
        raise InputError(f"log entry {entry.log_index}", "has no inclusion proof: a bundle entry needs one "
                                                         "(fetch it from the log with its proof)")
    body = json.loads(entry.body)
    return {"logIndex": str(entry.log_index),
            "logId": {"keyId": _b64(bytes.fromhex(entry.log_id))},
            "kindVersion": {"kind": str(body.get("kind")), "version": str(body.get("apiVersion"))},
            "integratedTime": str(entry.integrated_time),
            "inclusionPromise": {"signedEntryTimestamp": _b64(entry.signed_entry_timestamp)},
            "inclusionProof": {"logIndex": str(proof.log_index),
                               "rootHash": _b64(bytes.fromhex(proof.root_hash)),
                               "treeSize": str(proof.tree_size),
                               "hashes": [_b64(bytes.fromhex(h)) for h in proof.hashes],
                               "checkpoint": {"envelope": proof.checkpoint}},
            "canonicalizedBody": _b64(entry.body)}


def _bundle(key_id: str, entries: Sequence[LogEntry], content: dict[str, Any]) -> bytes:
    doc = {"mediaType": BUNDLE_MEDIA_TYPE,
           "verificationMaterial": {"publicKey": {"hint": key_id},
                                    "tlogEntries": [_tlog_entry(e) for e in entries]},
           **content}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def signature_bundle(digest: str, signature: bytes, key_id: str, entries: Sequence[LogEntry] = ()) -> bytes:
    """A bundle of a signature over the artifact digest `digest` (sha256:<hex>) by key `key_id`."""
    algorithm, _, hex_digest = digest.partition(":")
    if algorithm != "sha256" or not _HEX64.fullmatch(hex_digest):
        raise InputError("signature bundle", f"{digest!r} is not a sha256 digest")
    return _bundle(key_id, entries, {"messageSignature": {
        "messageDigest": {"algorithm": "SHA2_256", "digest": _b64(bytes.fromhex(hex_digest))},
        "signature": _b64(signature)}})


def dsse_bundle(envelope: Envelope, entries: Sequence[LogEntry] = ()) -> bytes:
    """A bundle of a DSSE envelope signed by one key (cosign reads exactly one signature).

    The signature's key id moves to the hint and the envelope's own `keyid` is left empty, as cosign writes
    it: go-securesystemslib skips a verifier whose SSH fingerprint differs from a non-empty keyid, so our
    hex key id there would make `cosign verify-attestation` find no valid signature. The keyid is not
    signed; reading puts the hint back, giving the envelope exactly as it was signed and logged."""
    if len(envelope.signatures) != 1:
        raise InputError("dsse bundle", f"the envelope has {len(envelope.signatures)} signatures; a Sigstore "
                                        "bundle carries exactly one")
    (sig,) = envelope.signatures
    return _bundle(sig.keyid, entries, {"dsseEnvelope": {
        "payload": _b64(envelope.payload), "payloadType": envelope.payload_type,
        "signatures": [{"sig": _b64(sig.sig), "keyid": ""}]}})


# ------------------------------------------------------------------------------------------ reading



def load_bundle_json(data: bytes, where: str) -> dict[str, Any]:
    """A bundle's JSON object, bounded, with duplicate keys refused (two parsers must see one document)."""
    if len(data) > MAX_DSSE_BUNDLE_BYTES:
        raise InputError(where, f"the Sigstore bundle is {len(data)} bytes; the limit is {MAX_DSSE_BUNDLE_BYTES}")
    try:
        doc = json.loads(data, object_pairs_hook=no_duplicate_keys)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InputError(where, f"the Sigstore bundle is not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise InputError(where, "the Sigstore bundle is not a JSON object")
    return doc


def is_key_bundle(doc: dict[str, Any]) -> bool:
    """Whether a bundle names a public key (key-based) rather than a certificate (keyless)."""
    material = doc.get("verificationMaterial")
    return isinstance(material, dict) and "publicKey" in material


def _obj(doc: Any, field: str, where: str) -> dict[str, Any]:
    value = doc.get(field) if isinstance(doc, dict) else None
    if not isinstance(value, dict):
        raise InputError(where, f"{field} must be an object")
    return value


def _bytes(value: Any, where: str, *, exact: int | None = None, limit: int = MAX_SIGNATURE_BYTES) -> bytes:
    """Standard base64 (protojson writes it with padding), bounded before decoding."""
    if not isinstance(value, str) or len(value) > 4 * (limit // 3 + 1):
        raise InputError(where, f"must be a base64 string of at most {limit} bytes")
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise InputError(where, "is not valid base64") from None
    if exact is not None and len(raw) != exact:
        raise InputError(where, f"must be {exact} bytes, not {len(raw)}")
    if not raw:
        raise InputError(where, "is empty")
    return raw


def _int(value: Any, where: str) -> int:
    """A protobuf int64: protojson writes it as a decimal string and also reads a JSON number."""
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        number = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        raise InputError(where, "must be a non-negative integer (a decimal string)")
    if not 0 <= number <= MAX_TREE_SIZE:
        raise InputError(where, f"must be from 0 to {MAX_TREE_SIZE}")
    return number


def _entry(doc: Any, where: str) -> LogEntry:
    if not isinstance(doc, dict):
        raise InputError(where, "must be an object")
    body = _bytes(doc.get("canonicalizedBody"), f"{where}.canonicalizedBody", limit=MAX_BODY_BYTES)
    kind_version = _obj(doc, "kindVersion", where)
    kind, version = kind_version.get("kind"), kind_version.get("version")
    if kind not in KINDS or version != API_VERSION:
        raise InputError(f"{where}.kindVersion", f"{kind!r} {version!r} is not one of {', '.join(KINDS)} "
                                                 f"{API_VERSION}")
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InputError(f"{where}.canonicalizedBody", "is not JSON") from None
    if not isinstance(parsed, dict) or parsed.get("kind") != kind or parsed.get("apiVersion") != version:
        raise InputError(f"{where}.kindVersion", f"says {kind} {version}, but the canonicalized body is another "
                                                 "kind or version")
    set_bytes = _bytes(_obj(doc, "inclusionPromise", where).get("signedEntryTimestamp"),
                       f"{where}.inclusionPromise.signedEntryTimestamp")
    proof_doc = _obj(doc, "inclusionProof", where)
    pwhere = f"{where}.inclusionProof"
    hashes = proof_doc.get("hashes", [])
    if not isinstance(hashes, list) or len(hashes) > MAX_PROOF_HASHES:
        raise InputError(f"{pwhere}.hashes", f"must be a list of at most {MAX_PROOF_HASHES} hashes")
    checkpoint = _obj(proof_doc, "checkpoint", pwhere).get("envelope")
    if not isinstance(checkpoint, str) or not checkpoint or len(checkpoint.encode()) > MAX_NOTE_BYTES:
        raise InputError(f"{pwhere}.checkpoint.envelope", f"must be a signed note of at most {MAX_NOTE_BYTES} bytes")
    proof = InclusionProof(
        _int(proof_doc.get("logIndex"), f"{pwhere}.logIndex"),
        _bytes(proof_doc.get("rootHash"), f"{pwhere}.rootHash", exact=32).hex(),
        _int(proof_doc.get("treeSize"), f"{pwhere}.treeSize"),
        tuple(_bytes(h, f"{pwhere}.hashes[{i}]", exact=32).hex() for i, h in enumerate(hashes)),
        checkpoint)
    return LogEntry(body, _int(doc.get("integratedTime"), f"{where}.integratedTime"),
                    _bytes(_obj(doc, "logId", where).get("keyId"), f"{where}.logId.keyId", exact=32).hex(),
                    _int(doc.get("logIndex"), f"{where}.logIndex"), set_bytes, proof)


def _envelope(doc: dict[str, Any], where: str) -> Envelope:
    payload_type = doc.get("payloadType")
    if not isinstance(payload_type, str) or not payload_type:
        raise InputError(where, "payloadType must be a non-empty string")
    payload = _bytes(doc.get("payload"), f"{where}.payload", limit=MAX_ENVELOPE_BYTES)
    sigs = doc.get("signatures")
    if not isinstance(sigs, list) or not 1 <= len(sigs) <= MAX_SIGNATURES:
        raise InputError(where, f"signatures must list 1 to {MAX_SIGNATURES} signatures")
    out = []
    for i, s in enumerate(sigs):
        keyid = s.get("keyid", "") if isinstance(s, dict) else None
        if not isinstance(keyid, str):
            raise InputError(f"{where}.signatures[{i}]", "must be an object with a string keyid")
        out.append(EnvelopeSignature(keyid, _bytes(s.get("sig"), f"{where}.signatures[{i}].sig")))
    return Envelope(payload_type, payload, tuple(out))


def parse_key_bundle(doc: dict[str, Any], size: int, where: str) -> KeyBundle:
    """A key-based bundle (`is_key_bundle`), strictly; InputError naming the field otherwise."""
    media_type = doc.get("mediaType")
    if media_type not in READABLE_MEDIA_TYPES:
        raise InputError(where, f"mediaType {str(media_type)[:80]!r}: a key-based bundle must be "
                                f"{BUNDLE_MEDIA_TYPE}")
    material = _obj(doc, "verificationMaterial", where)
    certificates = [f for f in ("certificate", "x509CertificateChain") if f in material]
    if certificates:
        raise InputError(f"{where}: verificationMaterial", f"names a public key and a {certificates[0]}: one only")
    key_id = _obj(material, "publicKey", f"{where}: verificationMaterial").get("hint")
    if not isinstance(key_id, str) or not _HEX64.fullmatch(key_id):
        raise InputError(f"{where}: verificationMaterial.publicKey.hint",
                         "must be the signing key's id (64 lower-case hex digits: SHA-256 of its DER public key)")
    raw_entries = material.get("tlogEntries", [])
    if not isinstance(raw_entries, list) or len(raw_entries) > MAX_TLOG_ENTRIES:
        raise InputError(f"{where}: verificationMaterial.tlogEntries", f"must list at most {MAX_TLOG_ENTRIES} entries")
    entries = tuple(_entry(e, f"{where}: verificationMaterial.tlogEntries[{i}]") for i, e in enumerate(raw_entries))
    has_message, has_dsse = "messageSignature" in doc, "dsseEnvelope" in doc
    if has_message == has_dsse:
        raise InputError(where, "a bundle holds exactly one of messageSignature and dsseEnvelope")
    if has_message:
        if size > MAX_SIGNATURE_BUNDLE_BYTES:
            raise InputError(where, f"the signature bundle is {size} bytes; the limit is {MAX_SIGNATURE_BUNDLE_BYTES}")
        message = _obj(doc, "messageSignature", where)
        mwhere = f"{where}: messageSignature"
        digest_doc = _obj(message, "messageDigest", mwhere)
        if digest_doc.get("algorithm") != "SHA2_256":
            raise InputError(f"{mwhere}.messageDigest.algorithm", "must be SHA2_256")
        digest = _bytes(digest_doc.get("digest"), f"{mwhere}.messageDigest.digest", exact=32)
        signature = _bytes(message.get("signature"), f"{mwhere}.signature")
        return KeyBundle(key_id, "sha256:" + digest.hex(), signature, None, entries)
    envelope = _envelope(_obj(doc, "dsseEnvelope", where), f"{where}: dsseEnvelope")
    other = next((s.keyid for s in envelope.signatures if s.keyid not in ("", key_id)), None)
    if other is not None:
        raise InputError(f"{where}: dsseEnvelope", f"a signature names key {other[:16]!r}…, but the bundle's key "
                                                   f"hint is {key_id[:16]}…")
    # The envelope as signed and logged: its signatures name the hinted key (the bundle leaves keyid empty).
    envelope = Envelope(envelope.payload_type, envelope.payload,
                        tuple(EnvelopeSignature(key_id, s.sig) for s in envelope.signatures))
    return KeyBundle(key_id, None, None, envelope, entries)


def digest_of_entry_body(entry: LogEntry) -> tuple[str, str]:
    """(kind, what it logs): the hashedrekord's digest hex, or the dsse envelope's sha256 hex; never raises."""
    try:
        body = json.loads(entry.body)
        spec = body["spec"]
        if body.get("kind") == "hashedrekord":
            return "hashedrekord", str(spec["data"]["hash"]["value"]) + ":" + str(spec["signature"]["content"])
        return str(body.get("kind")), str(spec["envelopeHash"]["value"])
    except (ValueError, KeyError, TypeError):
        return "", ""


def logs_signature(entry: LogEntry, digest: str, signature: bytes) -> bool:
    """Whether a log entry is the hashedrekord of this digest and signature (to put it in the right bundle)."""
    return digest_of_entry_body(entry) == ("hashedrekord", digest.partition(":")[2] + ":" + _b64(signature))


def logs_envelope(entry: LogEntry, envelope_json: bytes) -> bool:
    """Whether a log entry is the dsse entry of exactly these envelope bytes."""
    return digest_of_entry_body(entry) == ("dsse", hashlib.sha256(envelope_json).hexdigest())
