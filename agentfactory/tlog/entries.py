"""Rekor v1 entry kinds, their canonical bodies, and signed entry timestamps (SETs).

What a client POSTs to /api/v1/log/entries is a *proposed* entry; what the log stores (and hashes
into its Merkle tree) is the *canonical body* Rekor derives from it, serialised as RFC 8785 JSON.
Both shapes follow Rekor's `pkg/types/hashedrekord/v0.0.1` and `pkg/types/dsse/v0.0.1` so that
sigstore clients (cosign, sigstore-python) can read our entries. Deliberate narrowings:

* hashedrekord: SHA-256 digests only (Rekor also takes sha384/sha512);
* public keys only, as SubjectPublicKeyInfo PEM: RSA >= 2048 or ECDSA P-256/P-384; no X.509
  certificates (Fulcio) and no Ed25519. Rekor stores the key re-encoded as PEM, and so do we;
* dsse: exactly one verifier per proposed entry, and every envelope signature must verify with it
  (Rekor accepts several verifiers and maps each signature to the one that verifies it).

An entry's UUID is its leaf hash; a server names it by Rekor's entry ID, the log's tree id in 16 hex digits
and then the UUID (`tree_id_hex`, `split_entry_id`), which rekor-cli requires. Records we keep use the UUID.

The SET is Rekor's inclusion promise: the log's ECDSA signature over the canonical JSON of
``{body, integratedTime, logID, logIndex}`` (pkg/api/entries.go `signEntry`; sigstore-python
`TransparencyLogEntry._encode_canonical`).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from ..dsse import MAX_ENVELOPE_BYTES, Envelope, b64decode_strict, pae, parse_envelope
from ..errors import InputError
from ..jsonsafe import load_json_object
from .note import MAX_NOTE_BYTES, MAX_TREE_SIZE, LogKey

API_VERSION = "0.0.1"
KINDS = ("hashedrekord", "dsse")
MAX_ENTRY_BYTES = MAX_ENVELOPE_BYTES + 64 * 1024  # a dsse entry carries the whole envelope
MAX_BODY_BYTES = 64 * 1024  # canonical bodies hold hashes, signatures and keys, never payloads
MAX_PUBLIC_KEY_BYTES = 16 * 1024
MAX_SIGNATURE_BYTES = 2048  # RSA-16384 would be 2 KiB; ECDSA P-384 DER is ~104 bytes
MAX_PROOF_HASHES = 64  # a tree of 2**63 leaves needs 63
MIN_RSA_BITS = 2048
_HEX64 = re.compile(r"[0-9a-f]{64}")
TREE_ID_HEX_CHARS = 16  # Rekor's sharding.TreeIDHexStringLen
UUID_HEX_CHARS = 64
ENTRY_ID_HEX_CHARS = TREE_ID_HEX_CHARS + UUID_HEX_CHARS
_ENTRY_ID = re.compile(r"([0-9a-f]{16})?([0-9a-f]{64})")
_DECIMAL_TREE_ID = re.compile(r"[1-9][0-9]{0,18}")

Kind = Literal["hashedrekord", "dsse"]
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


def canonical(body: Any) -> bytes:
    """RFC 8785 (JCS) for the JSON our bodies hold: objects, arrays, strings, integers.

    Keys sort by UTF-16 code units and strings escape only what JCS escapes, as Rekor's
    `jsoncanonicalizer` does. Floats are refused rather than risk a different number format.
    Every add canonicalises its body, so documents whose keys sort the same by code point (no key
    character at or above U+D800, where UTF-16 order differs) go through the C JSON encoder, which
    escapes strings exactly as `_jcs` does; anything else takes the step-by-step path.
    """
    if _plain(body):
        return json.dumps(body, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return _jcs(body).encode("utf-8")


_MAX_SAFE_INT = 2**53 - 1
_LOW_KEY = re.compile("[\x00-\ud7ff]*")  # keys whose code-point order is their UTF-16 order


def _plain(value: Any) -> bool:
    """Whether `json.dumps(sort_keys=True)` writes `value` exactly as `_jcs` would: only dicts with str keys
    below U+D800, lists, tuples, str, bool, None and I-JSON ints (exact types: a subclass may print otherwise)."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        return bool(-_MAX_SAFE_INT <= value <= _MAX_SAFE_INT)
    if kind is dict:
        return all(type(k) is str and _LOW_KEY.fullmatch(k) is not None and _plain(v) for k, v in value.items())
    if kind is list or kind is tuple:
        return all(_plain(v) for v in value)
    return False


def _jcs(value: Any) -> str:
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise ValueError("JSON object keys must be strings")
        keys = sorted(value, key=lambda k: k.encode("utf-16-be"))
        return "{" + ",".join(f"{_jcs(k)}:{_jcs(value[k])}" for k in keys) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_jcs(v) for v in value) + "]"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int):
        if abs(value) > 2**53 - 1:
            raise ValueError("integer outside the I-JSON range")
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    raise ValueError(f"cannot canonicalise {type(value).__name__}")


def entry_uuid(body_bytes: bytes) -> str:
    """Rekor's entry UUID: the RFC 6962 leaf hash of the canonical body, in hex."""
    return hashlib.sha256(b"\x00" + body_bytes).hexdigest()


def tree_id_hex(tree_id: str) -> str:
    """A decimal tree id (as `/api/v1/log` spells it) as the 16 hex digits that prefix Rekor's entry IDs.

    Rekor's sharding code (`pkg/sharding`) takes a tree id only when it is a positive int64."""
    if not _DECIMAL_TREE_ID.fullmatch(tree_id) or not 0 < int(tree_id) <= MAX_TREE_SIZE:
        raise ValueError(f"tree id {tree_id[:40]!r} is not a positive 64-bit decimal integer")
    return f"{int(tree_id):0{TREE_ID_HEX_CHARS}x}"


def split_entry_id(value: str, where: str) -> tuple[str, str]:
    """(tree id hex or "", UUID) of an entry ID: the 64-hex UUID, or Rekor's EntryID, 16 hex digits of tree id
    then the UUID (what Rekor answers since it sharded, and what rekor-cli requires). Upper case is accepted
    as Rekor's hex decoding does; anything else is an InputError naming `where`."""
    m = _ENTRY_ID.fullmatch(value.lower()) if len(value) in (UUID_HEX_CHARS, ENTRY_ID_HEX_CHARS) else None
    if m is None:
        raise InputError(where, f"{value[:100]!r} is not an entry UUID: give {UUID_HEX_CHARS} hex digits, or "
                                f"{ENTRY_ID_HEX_CHARS} with the {TREE_ID_HEX_CHARS}-digit tree id first")
    return m.group(1) or "", m.group(2)


def load_public_key(pem: bytes, where: str) -> PublicKey:
    """An entry's verification key: SPKI PEM, RSA >= 2048 or ECDSA P-256/P-384.

    Parsed once per distinct PEM (`_parsed_key`): a log sees few signers and many entries by each, and
    parsing costs as much as verifying. Refusals are never cached, so each names its own `where`."""
    if len(pem) > MAX_PUBLIC_KEY_BYTES:
        raise InputError(where, f"public key is {len(pem)} bytes; the limit is {MAX_PUBLIC_KEY_BYTES}")
    try:
        return _parsed_key(bytes(pem))[0]
    except _KeyRefused as e:
        raise InputError(where, str(e)) from None


def canonical_pem(key: PublicKey) -> bytes:
    """The PEM Rekor stores: its `CanonicalValue()` re-encodes the key as SPKI PEM."""
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def canonical_pem_of(pem: bytes, where: str) -> bytes:
    """`canonical_pem(load_public_key(pem, where))`, re-encoded once per distinct PEM."""
    load_public_key(pem, where)  # the size check and the refusal naming `where`
    return _parsed_key(bytes(pem))[1]


class _KeyRefused(Exception):
    """Why a PEM is not an acceptable entry key (the caller adds where it came from)."""


@functools.lru_cache(maxsize=256)  # keys are immutable; at most 256 x 16 KiB of PEM held
def _parsed_key(pem: bytes) -> tuple[PublicKey, bytes]:
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm):
        raise _KeyRefused("public key is not a PEM public key") from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise _KeyRefused(f"RSA public key has {key.key_size} bits; at least {MIN_RSA_BITS} are required")
    elif not (isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1 | ec.SECP384R1)):
        raise _KeyRefused("public key must be RSA (>= 2048 bits) or ECDSA P-256/P-384")
    return key, canonical_pem(key)


def _b64e(data: bytes) -> str:
    return base64.b64encode(data).decode()


def hashedrekord_body(digest_hex: str, signature: bytes, public_key_pem: bytes) -> dict[str, Any]:
    """The body Rekor stores for a hashedrekord v0.0.1 (`Canonicalize`: no data URL, no key URL)."""
    pem = canonical_pem_of(public_key_pem, "hashedrekord publicKey")
    return {"apiVersion": API_VERSION, "kind": "hashedrekord", "spec": {
        "data": {"hash": {"algorithm": "sha256", "value": digest_hex}},
        "signature": {"content": _b64e(signature), "publicKey": {"content": _b64e(pem)}}}}


def dsse_body(envelope_json: bytes, public_key_pem: bytes) -> dict[str, Any]:
    """The body Rekor stores for a dsse v0.0.1 entry: hashes of the envelope and payload, and the
    signatures (as the envelope spells them, sorted) each with its verifier; never the payload."""
    where = "dsse envelope"
    pem = canonical_pem_of(public_key_pem, "dsse verifier")
    envelope = parse_envelope(envelope_json, where)
    doc = json.loads(envelope_json)  # parse_envelope vouched for its shape; keep the sig strings verbatim
    sigs = sorted(s["sig"] for s in doc["signatures"])
    return {"apiVersion": API_VERSION, "kind": "dsse", "spec": {
        "envelopeHash": {"algorithm": "sha256", "value": hashlib.sha256(envelope_json).hexdigest()},
        "payloadHash": {"algorithm": "sha256", "value": hashlib.sha256(envelope.payload).hexdigest()},
        "signatures": [{"signature": s, "verifier": _b64e(pem)} for s in sigs]}}


@dataclass(frozen=True)
class ProposedEntry:
    """A parsed POST /api/v1/log/entries request; `public_key_pem` is already canonical."""

    kind: Kind
    public_key_pem: bytes
    digest_hex: str = ""  # hashedrekord
    signature: bytes = b""  # hashedrekord
    envelope_json: bytes = b""  # dsse, exactly as sent (its hash is envelopeHash)
    envelope: Envelope | None = None  # dsse

    def body(self) -> dict[str, Any]:
        if self.kind == "hashedrekord":
            return hashedrekord_body(self.digest_hex, self.signature, self.public_key_pem)
        return dsse_body(self.envelope_json, self.public_key_pem)

    def canonical_body(self) -> bytes:
        """`canonical(self.body())`, the bytes the log stores and hashes. A hashedrekord body holds only a hex
        digest and base64 text, which JSON writes as they are, under keys already in canonical order: it is
        written directly (every add makes one; the generic path costs several times as much)."""
        if self.kind == "hashedrekord" and _HEX64.fullmatch(self.digest_hex):
            pem = canonical_pem_of(self.public_key_pem, "hashedrekord publicKey")
            return (f'{{"apiVersion":"{API_VERSION}","kind":"hashedrekord","spec":{{"data":{{"hash":{{'
                    f'"algorithm":"sha256","value":"{self.digest_hex}"}}}},"signature":{{"content":'
                    f'"{_b64e(self.signature)}","publicKey":{{"content":"{_b64e(pem)}"}}}}}}}}').encode()
        return canonical(self.body())


def _obj(doc: Any, where: str, field: str) -> dict[str, Any]:
    value = doc.get(field) if isinstance(doc, dict) else None
    if not isinstance(value, dict):
        raise InputError(where, f"missing object {field}")
    return value


def _str(doc: dict[str, Any], where: str, field: str) -> str:
    value = doc.get(field)
    if not isinstance(value, str) or not value:
        raise InputError(where, f"missing string {field}")
    return value


def _key_from_b64(value: Any, where: str) -> bytes:
    return canonical_pem_of(b64decode_strict(value, where), where)


def load_proposed_entry(data: bytes, where: str) -> ProposedEntry:
    """Parse request bytes: bounded before JSON decoding, then `parse_proposed_entry`."""
    return parse_proposed_entry(load_json_object(data, where, max_bytes=MAX_ENTRY_BYTES, what="proposed entry"),
                                where)


def parse_proposed_entry(doc: Any, where: str) -> ProposedEntry:
    """A hashedrekord or dsse v0.0.1 proposal, strictly; the signature is not checked here."""
    if not isinstance(doc, dict):
        raise InputError(where, "proposed entry is not a JSON object")
    kind = doc.get("kind")
    if kind not in KINDS:
        raise InputError(where, f"unknown kind {kind!r}; this log accepts {', '.join(KINDS)}")
    if doc.get("apiVersion") != API_VERSION:
        raise InputError(where, f"unsupported apiVersion {doc.get('apiVersion')!r} for {kind}; use {API_VERSION}")
    spec = _obj(doc, where, "spec")
    if kind == "hashedrekord":
        return _parse_hashedrekord(spec, f"{where}: spec")
    return _parse_dsse(spec, f"{where}: spec")


def _parse_hashedrekord(spec: dict[str, Any], where: str) -> ProposedEntry:
    sig = _obj(spec, where, "signature")
    hsh = _obj(_obj(spec, where, "data"), f"{where}.data", "hash")
    if hsh.get("algorithm") != "sha256":
        raise InputError(f"{where}.data.hash", "algorithm must be sha256")
    value = hsh.get("value")
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise InputError(f"{where}.data.hash", "value must be 64 lowercase hex digits (a SHA-256 digest)")
    signature = b64decode_strict(sig.get("content"), f"{where}.signature.content")
    if not signature or len(signature) > MAX_SIGNATURE_BYTES:
        raise InputError(f"{where}.signature.content", f"signature must be 1-{MAX_SIGNATURE_BYTES} bytes")
    pk = _obj(sig, f"{where}.signature", "publicKey")
    pem = _key_from_b64(pk.get("content"), f"{where}.signature.publicKey.content")
    return ProposedEntry("hashedrekord", pem, digest_hex=value, signature=signature)


def _parse_dsse(spec: dict[str, Any], where: str) -> ProposedEntry:
    if any(spec.get(f) is not None for f in ("signatures", "envelopeHash", "payloadHash")):
        raise InputError(where, "signatures, envelopeHash and payloadHash are computed by the log; "
                                "propose only proposedContent")
    content = _obj(spec, where, "proposedContent")
    envelope_text = _str(content, f"{where}.proposedContent", "envelope")
    envelope_json = envelope_text.encode("utf-8")
    envelope = parse_envelope(envelope_json, f"{where}.proposedContent.envelope")
    verifiers = content.get("verifiers")
    if not isinstance(verifiers, list) or len(verifiers) != 1:
        raise InputError(f"{where}.proposedContent", "verifiers must list exactly one public key")
    pem = _key_from_b64(verifiers[0], f"{where}.proposedContent.verifiers[0]")
    return ProposedEntry("dsse", pem, envelope_json=envelope_json, envelope=envelope)


_PREHASHED = utils.Prehashed(hashes.SHA256())  # stateless: made once, not at every add
_ECDSA_PREHASHED = ec.ECDSA(_PREHASHED)
_PKCS1V15 = padding.PKCS1v15()


def signature_verifies(key: PublicKey, signature: bytes, digest: bytes) -> bool:
    """RSA PKCS#1 v1.5 or ECDSA over a SHA-256 digest (prehashed), as Rekor's verifiers do."""
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, digest, _PKCS1V15, _PREHASHED)
        else:
            key.verify(signature, digest, _ECDSA_PREHASHED)
    except InvalidSignature:
        return False
    return True


def verify_entry_signature(entry: ProposedEntry, where: str = "entry") -> None:
    """Refuse an entry whose signature does not verify: over the digest, or over DSSE PAE.

    For dsse every signature in the envelope must verify, as Rekor's `verifyEnvelope` requires.
    """
    key = load_public_key(entry.public_key_pem, where)
    if entry.kind == "hashedrekord":
        ok = signature_verifies(key, entry.signature, bytes.fromhex(entry.digest_hex))
    else:
        env = entry.envelope
        if env is None:
            raise InputError(where, "dsse entry has no envelope")
        digest = hashlib.sha256(pae(env.payload_type, env.payload)).digest()
        ok = all(signature_verifies(key, s.sig, digest) for s in env.signatures)
    if not ok:
        raise InputError(where, "signature does not verify")


def set_payload(body_b64: str, integrated_time: int, log_id: str, log_index: int) -> bytes:
    """What a SET signs: canonical JSON of Rekor's LogEntryAnon minus verification/attestation.

    Written directly when the strings need no escaping (base64 and hex, as every entry's are) and the
    integers are I-JSON: the same bytes `canonical` gives, at a fraction of the cost of one per add."""
    if type(integrated_time) is int and type(log_index) is int and _B64_TEXT.fullmatch(body_b64) \
            and _B64_TEXT.fullmatch(log_id) and abs(integrated_time) <= _MAX_SAFE_INT \
            and abs(log_index) <= _MAX_SAFE_INT:
        return (f'{{"body":"{body_b64}","integratedTime":{integrated_time},"logID":"{log_id}",'
                f'"logIndex":{log_index}}}').encode()
    return canonical({"body": body_b64, "integratedTime": integrated_time, "logID": log_id, "logIndex": log_index})


_B64_TEXT = re.compile(r"[A-Za-z0-9+/=]*")  # strings JSON writes as they are (hex is a subset)


def sign_set(key: LogKey, body_b64: str, integrated_time: int, log_id: str, log_index: int) -> bytes:
    return key.sign(set_payload(body_b64, integrated_time, log_id, log_index))


def verify_set(public_key: ec.EllipticCurvePublicKey, signature: bytes, body_b64: str, integrated_time: int,
               log_id: str, log_index: int, where: str = "signedEntryTimestamp") -> None:
    try:
        public_key.verify(signature, set_payload(body_b64, integrated_time, log_id, log_index),
                          ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise InputError(where, "signed entry timestamp does not verify") from None


@dataclass(frozen=True)
class InclusionProof:
    log_index: int
    root_hash: str  # hex
    tree_size: int
    hashes: tuple[str, ...]  # hex, leaf to root
    checkpoint: str  # signed note


@dataclass(frozen=True)
class LogEntry:
    """One entry as GET /api/v1/log/entries/{uuid} returns it."""

    body: bytes  # canonical body bytes (the Merkle leaf data)
    integrated_time: int
    log_id: str
    log_index: int
    signed_entry_timestamp: bytes
    inclusion_proof: InclusionProof | None = None

    @functools.cached_property  # a server names the entry, then writes it: one hash of the body, not two
    def uuid(self) -> str:
        return entry_uuid(self.body)

    @property
    def body_b64(self) -> str:
        return _b64e(self.body)

    def to_dict(self, tree_id: str = "") -> dict[str, Any]:
        """`{uuid: entry}`, or Rekor's `{entryID: entry}` given the log's tree id (hex, `tree_id_hex`): the key
        a server answers with. Records we keep use the plain UUID; `parse_log_entry` reads both."""
        if tree_id and len(tree_id) != TREE_ID_HEX_CHARS:
            raise ValueError(f"a tree id prefix is {TREE_ID_HEX_CHARS} hex digits, got {tree_id[:40]!r}")
        verification: dict[str, Any] = {"signedEntryTimestamp": _b64e(self.signed_entry_timestamp)}
        if self.inclusion_proof is not None:
            p = self.inclusion_proof
            verification["inclusionProof"] = {"checkpoint": p.checkpoint, "hashes": list(p.hashes),
                                              "logIndex": p.log_index, "rootHash": p.root_hash,
                                              "treeSize": p.tree_size}
        return {tree_id + self.uuid: {"body": self.body_b64, "integratedTime": self.integrated_time,
                                      "logID": self.log_id, "logIndex": self.log_index,
                                      "verification": verification}}

    def to_json(self, tree_id: str = "") -> bytes:
        """`to_dict` as compact JSON with sorted keys. Every add answers with one, so an entry whose strings
        are all base64 or hex (JSON writes them as they are) is written directly, keys in sorted order; only
        the checkpoint, free text, goes through the encoder. Anything else takes the generic path."""
        p = self.inclusion_proof
        if p is None or not (type(self.integrated_time) is type(self.log_index) is type(p.log_index)
                             is type(p.tree_size) is int) or len(tree_id) not in (0, TREE_ID_HEX_CHARS) \
                or not _B64_TEXT.fullmatch("".join((tree_id, self.log_id, p.root_hash, *p.hashes))):
            return json.dumps(self.to_dict(tree_id), sort_keys=True, separators=(",", ":")).encode()
        hashes = ",".join(f'"{h}"' for h in p.hashes)
        return (f'{{"{tree_id}{self.uuid}":{{"body":"{self.body_b64}","integratedTime":{self.integrated_time},'
                f'"logID":"{self.log_id}","logIndex":{self.log_index},"verification":{{"inclusionProof":{{'
                f'"checkpoint":{json.dumps(p.checkpoint)},"hashes":[{hashes}],'
                f'"logIndex":{p.log_index},"rootHash":"{p.root_hash}","treeSize":{p.tree_size}}},'
                f'"signedEntryTimestamp":"{_b64e(self.signed_entry_timestamp)}"}}}}}}').encode()


def _int(doc: dict[str, Any], where: str, field: str, upper: int = MAX_TREE_SIZE) -> int:
    value = doc.get(field)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= upper:
        raise InputError(where, f"{field} must be an integer from 0 to {upper}")
    return value


def _hex64(doc: dict[str, Any], where: str, field: str) -> str:
    value = doc.get(field)
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise InputError(where, f"{field} must be 64 lowercase hex digits")
    return value


def _parse_proof(doc: dict[str, Any], where: str) -> InclusionProof:
    hashes_ = doc.get("hashes")
    if not isinstance(hashes_, list) or len(hashes_) > MAX_PROOF_HASHES:
        raise InputError(where, f"hashes must be a list of at most {MAX_PROOF_HASHES} hex digests")
    if not all(isinstance(h, str) and _HEX64.fullmatch(h) for h in hashes_):
        raise InputError(where, "hashes must be 64 lowercase hex digits each")
    checkpoint = doc.get("checkpoint")
    if not isinstance(checkpoint, str) or not checkpoint or len(checkpoint.encode()) > MAX_NOTE_BYTES:
        raise InputError(where, f"checkpoint must be a signed note of at most {MAX_NOTE_BYTES} bytes")
    proof = InclusionProof(_int(doc, where, "logIndex"), _hex64(doc, where, "rootHash"),
                           _int(doc, where, "treeSize"), tuple(hashes_), checkpoint)
    if proof.log_index >= proof.tree_size:
        raise InputError(where, "logIndex must be below treeSize")
    return proof


def parse_log_entry(doc: Any, where: str) -> LogEntry:
    """A `{uuid: entry}` response, strictly; the uuid (or the UUID part of an `{entryID: entry}` key, after
    the 16-hex tree id Rekor puts first) must be the leaf hash of the body."""
    if not isinstance(doc, dict) or len(doc) != 1:
        raise InputError(where, "log entry response must be an object with exactly one entry")
    ((key, entry),) = doc.items()
    uuid = key[TREE_ID_HEX_CHARS:] if isinstance(key, str) and _ENTRY_ID.fullmatch(key) and \
        len(key) == ENTRY_ID_HEX_CHARS else key
    if not isinstance(entry, dict):
        raise InputError(where, "log entry is not a JSON object")
    body = b64decode_strict(entry.get("body"), f"{where}: body")
    if not body or len(body) > MAX_BODY_BYTES:
        raise InputError(where, f"body must be 1-{MAX_BODY_BYTES} bytes")
    if uuid != entry_uuid(body):
        raise InputError(where, "uuid is not the leaf hash of the body")
    verification = _obj(entry, where, "verification")
    set_bytes = b64decode_strict(verification.get("signedEntryTimestamp"), f"{where}: signedEntryTimestamp")
    if not set_bytes or len(set_bytes) > MAX_SIGNATURE_BYTES:
        raise InputError(where, f"signedEntryTimestamp must be 1-{MAX_SIGNATURE_BYTES} bytes")
    proof = None
    if verification.get("inclusionProof") is not None:
        proof = _parse_proof(_obj(verification, where, "inclusionProof"), f"{where}: inclusionProof")
    parsed = LogEntry(body, _int(entry, where, "integratedTime", 2**53 - 1), _hex64(entry, where, "logID"),
                      _int(entry, where, "logIndex"), set_bytes, proof)
    # No check that inclusionProof.logIndex equals logIndex: a sharded Rekor answers with the global
    # index at the top and the index within the shard in the proof.
    return parsed
