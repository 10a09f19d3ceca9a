"""Transparency-log records as evidence, and their offline verification against a pinned log key.

A `TlogRecord` is one log entry exactly as the log returned it (body, integratedTime, logID, logIndex,
signed entry timestamp, inclusion proof with its checkpoint), stored as an OCI referrer of the agent
beside the signature or attestation it logs. The verifier never asks the log again: the SET, the
inclusion proof and the signed checkpoint are all checkable with the log's public key alone, so an
air-gapped node can tell that a signature was published where monitors can see it.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from ..errors import InputError
from ..jsonsafe import load_json_object
from . import merkle, note
from .entries import (
    MAX_BODY_BYTES,
    LogEntry,
    PublicKey,
    canonical_pem,
    load_public_key,
    parse_log_entry,
    parse_proposed_entry,
    verify_set,
)

TLOG_ENTRY_ARTIFACT_TYPE = "application/vnd.dev.agentfactory.tlog-entry.v1+json"
MAX_RECORD_BYTES = 2 * MAX_BODY_BYTES + 64 * 1024  # base64 body, proof hashes and a checkpoint

BodyCheck = Callable[[dict[str, Any]], "str | None"]
"""Judges a parsed canonical body: None when it logs what the caller expects, else why not."""


@dataclass(frozen=True)
class TlogRecord:
    """What is stored as evidence for one signature or attestation: the entry as the log returned it."""

    entry: LogEntry

    def to_json(self) -> bytes:
        return self.entry.to_json()


def parse_record(data: bytes, where: str) -> TlogRecord:
    """A stored record, strictly: one Rekor log entry with an inclusion proof (bounded before decoding)."""
    doc = load_json_object(data, where, max_bytes=MAX_RECORD_BYTES, what="transparency-log record")
    entry = parse_log_entry(doc, where)
    if entry.inclusion_proof is None:
        raise InputError(where, "the log entry has no inclusion proof, so it cannot be checked offline")
    return TlogRecord(entry)


def check_record(record_json: bytes, trusted_logs: Mapping[str, ec.EllipticCurvePublicKey], where: str,
                 origins: Mapping[str, str] | None = None) -> tuple[LogEntry, dict[str, Any]]:
    """The entry and its parsed body when the record holds cryptographically; InputError naming why not.

    Checks, in order: a trusted logID, the SET, the checkpoint's signature (and origin, when pinned),
    and the inclusion proof from the body's leaf hash to the checkpoint's root at the checkpoint's size.
    """
    entry = parse_record(record_json, where).entry
    proof = entry.inclusion_proof
    assert proof is not None  # parse_record refuses records without one
    key = trusted_logs.get(entry.log_id)
    if key is None:
        raise InputError(where, f"logged by log {entry.log_id[:16]}…, which the trust policy does not list")
    if note.log_id_of(key) != entry.log_id:
        raise InputError(where, "the trusted key listed under this logID has another id")  # a caller bug
    verify_set(key, entry.signed_entry_timestamp, entry.body_b64, entry.integrated_time, entry.log_id,
               entry.log_index, f"{where}: signedEntryTimestamp")
    checkpoint = _verified_checkpoint(proof.checkpoint, key, entry.log_id, (origins or {}).get(entry.log_id), where)
    if checkpoint.size != proof.tree_size or checkpoint.root_hash.hex() != proof.root_hash:
        raise InputError(where, f"the inclusion proof is for tree size {proof.tree_size} and root "
                                f"{proof.root_hash[:16]}…, but the checkpoint commits to size {checkpoint.size} "
                                f"and root {checkpoint.root_hash.hex()[:16]}…")
    leaf = merkle.leaf_hash(entry.body)
    if leaf.hex() != entry.uuid:
        raise InputError(where, "the entry's uuid is not the leaf hash of its body")
    try:
        merkle.verify_inclusion(leaf, proof.log_index, proof.tree_size, [bytes.fromhex(h) for h in proof.hashes],
                                checkpoint.root_hash)
    except merkle.ProofError as exc:
        raise InputError(where, f"inclusion proof: {exc}") from None
    try:
        body = json.loads(entry.body)
    except (ValueError, UnicodeDecodeError):
        raise InputError(where, "the entry body is not JSON") from None
    if not isinstance(body, dict):
        raise InputError(where, "the entry body is not a JSON object")
    return entry, body


_CHECKPOINTS: dict[tuple[str, str, str | None], note.Checkpoint] = {}
_CHECKPOINT_MEMO = 64


def _verified_checkpoint(text: str, key: ec.EllipticCurvePublicKey, log_id: str, origin: str | None,
                         where: str) -> note.Checkpoint:
    """`note.verify`, remembered for the few checkpoints an audit of thousands of entries meets (successes only:
    a failure is re-checked, and says where)."""
    memo = (text, log_id, origin)
    found = _CHECKPOINTS.get(memo)
    if found is None:
        found = note.verify(text, key, origin, f"{where}: checkpoint")
        if len(_CHECKPOINTS) >= _CHECKPOINT_MEMO:
            _CHECKPOINTS.clear()
        _CHECKPOINTS[memo] = found
    return found


def verify_record(record_json: bytes, *, trusted_logs: Mapping[str, ec.EllipticCurvePublicKey],
                  expected_body: bytes | BodyCheck | None, where: str,
                  origins: Mapping[str, str] | None = None) -> str | None:
    """None when the record holds and logs what was signed, else the reason (never raises on bad input).

    `expected_body` is the exact canonical body, or a `BodyCheck` (see `hashedrekord_check` and
    `dsse_check`), or None to check only that the record is a genuine entry of a trusted log.
    """
    try:
        entry, body = check_record(record_json, trusted_logs, where, origins)
    except InputError as exc:
        return str(exc)
    if expected_body is None:
        return None
    if isinstance(expected_body, bytes):
        return None if entry.body == expected_body else f"{where}: the entry logs {describe(body)}, not this one"
    problem = expected_body(body)
    return None if problem is None else f"{where}: {problem}"


def _sub(doc: dict[str, Any], field: str) -> dict[str, Any]:
    value = doc.get(field)
    return value if isinstance(value, dict) else {}


def _same_key(pem: bytes, key: PublicKey) -> bool:
    return pem == canonical_pem(key)


def _key_b64(value: Any) -> bytes:
    return base64.b64decode(value, validate=True) if isinstance(value, str) else b""


def hashedrekord_check(digest_hex: str, signature: bytes, public_key_pem: bytes) -> BodyCheck:
    """Expect a hashedrekord entry of exactly this SHA-256 digest, signature and signer."""
    key = load_public_key(public_key_pem, "signer's public key")

    def check(body: dict[str, Any]) -> str | None:
        if body.get("kind") != "hashedrekord":
            return f"the entry logs {describe(body)}, not a hashedrekord"
        try:
            logged = parse_proposed_entry(body, "body")
        except InputError as exc:
            return f"the hashedrekord body is malformed: {exc}"
        if logged.digest_hex != digest_hex:
            return f"the entry is for sha256:{logged.digest_hex}, not sha256:{digest_hex}"
        if logged.signature != signature:
            return "the entry logs another signature over this digest"
        if not _same_key(logged.public_key_pem, key):
            return "the entry logs a signature by another public key"
        return None

    return check


def dsse_check(envelope_json: bytes, public_key_pem: bytes) -> BodyCheck:
    """Expect a dsse entry of exactly these envelope bytes, verified with this signer's key."""
    want = hashlib.sha256(envelope_json).hexdigest()
    return _dsse_entry("envelopeHash", want, public_key_pem,
                       lambda got: f"the entry is for envelope sha256:{got[:16]}…, not sha256:{want[:16]}…")


def statement_check(payload: bytes, public_key_pem: bytes) -> BodyCheck:
    """Expect a dsse entry of *any* envelope signing exactly this payload, verified with this signer's key.

    Re-encoding a genuine envelope (its signature listed twice, its keys reordered) needs no key and makes a new
    entry of the same signed statement: where a statement stands in the log is its earliest such entry."""
    return _dsse_entry("payloadHash", hashlib.sha256(payload).hexdigest(), public_key_pem,
                       lambda _got: "the entry is for another statement")


def _dsse_entry(field: str, want: str, public_key_pem: bytes, mismatch: Callable[[str], str]) -> BodyCheck:
    """A dsse v0.0.1 entry whose `field` (envelopeHash, payloadHash) is the SHA-256 `want`, every signature of it
    verified with this key."""
    key = load_public_key(public_key_pem, "signer's public key")

    def check(body: dict[str, Any]) -> str | None:
        if body.get("kind") != "dsse" or body.get("apiVersion") != "0.0.1":
            return f"the entry logs {describe(body)}, not a dsse v0.0.1 envelope"
        spec = _sub(body, "spec")
        logged = _sub(spec, field)
        if logged.get("algorithm") != "sha256" or logged.get("value") != want:
            return mismatch(str(logged.get("value")))
        sigs = spec.get("signatures")
        if not isinstance(sigs, list) or not sigs:
            return "the dsse entry lists no signatures"
        try:
            verifiers = [_key_b64(s.get("verifier")) if isinstance(s, dict) else b"" for s in sigs]
        except ValueError:
            return "the dsse entry's verifier is not valid base64"
        if not all(_same_key(v, key) for v in verifiers):
            return "the dsse entry was verified with another public key"
        return None

    return check


def describe(body: dict[str, Any]) -> str:
    """A one-line summary of a canonical body, for reasons."""
    spec = _sub(body, "spec")
    kind = body.get("kind")
    if kind == "hashedrekord":
        data = _sub(spec, "data")
        h = _sub(data, "hash")
        return f"a hashedrekord for sha256:{str(h.get('value'))[:16]}…"
    if kind == "dsse":
        h = _sub(spec, "envelopeHash")
        return f"a dsse envelope sha256:{str(h.get('value'))[:16]}…"
    return f"an entry of kind {str(kind)[:32]!r}"
