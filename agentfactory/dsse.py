"""DSSE envelopes (https://github.com/secure-systems-lab/dsse): sign and verify attestations.

The signature covers PAE(payloadType, payload), never the JSON around it, so re-encoding the
envelope cannot change what was signed. Parsing is strict and bounded: a malformed envelope,
bad base64 or an oversized document is an error that names what is wrong.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from .errors import InputError
from .jsonsafe import load_json_object
from .keys.base import KeyProvider

ENVELOPE_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"
INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
MAX_ENVELOPE_BYTES = 32 * 1024 * 1024
MAX_SIGNATURES = 16


def pae(payload_type: str, payload: bytes) -> bytes:
    """The DSSE v1 pre-authentication encoding."""
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


@dataclass(frozen=True)
class EnvelopeSignature:
    keyid: str
    sig: bytes


@dataclass(frozen=True)
class Envelope:
    payload_type: str
    payload: bytes
    signatures: tuple[EnvelopeSignature, ...]

    def to_json(self) -> bytes:
        return json.dumps({
            "payload": base64.b64encode(self.payload).decode(),
            "payloadType": self.payload_type,
            "signatures": [{"keyid": s.keyid, "sig": base64.b64encode(s.sig).decode()} for s in self.signatures],
        }, sort_keys=True, separators=(",", ":")).encode()

    @property
    def signed_bytes(self) -> bytes:
        return pae(self.payload_type, self.payload)


def b64decode_strict(value: object, where: str) -> bytes:
    """Standard base64 with padding; anything else is an error, not a guess."""
    if not isinstance(value, str):
        raise InputError(where, "must be a base64 string")
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise InputError(where, "is not valid base64 (truncated or corrupted?)") from None


def sign_envelope(payload_type: str, payload: bytes, provider: KeyProvider) -> Envelope:
    signature = provider.sign(pae(payload_type, payload))
    return Envelope(payload_type, payload, (EnvelopeSignature(signature.key_id, signature.signature),))


def parse_envelope(data: bytes, where: str) -> Envelope:
    """Parse a DSSE envelope from JSON bytes, strictly."""
    doc = load_json_object(data, where, max_bytes=MAX_ENVELOPE_BYTES, what="envelope")
    payload_type = doc.get("payloadType")
    if not isinstance(payload_type, str) or not payload_type:
        raise InputError(where, "envelope has no payloadType")
    payload = b64decode_strict(doc.get("payload"), f"{where}: payload")
    sigs = doc.get("signatures")
    if not isinstance(sigs, list) or not sigs:
        raise InputError(where, "envelope has no signatures")
    if len(sigs) > MAX_SIGNATURES:
        raise InputError(where, f"envelope has {len(sigs)} signatures; the limit is {MAX_SIGNATURES}")
    parsed = []
    for i, s in enumerate(sigs):
        if not isinstance(s, dict) or not isinstance(s.get("keyid", ""), str):
            raise InputError(where, f"signatures[{i}] is malformed")
        sig = b64decode_strict(s.get("sig"), f"{where}: signatures[{i}].sig")
        parsed.append(EnvelopeSignature(s.get("keyid", ""), sig))
    return Envelope(payload_type, payload, tuple(parsed))
