"""A Sigstore trusted root naming our transparency logs: what cosign needs to verify our bundles offline.

cosign v3 (sigstore-go) verifies a bundle's transparency-log entry against the logs of a *trusted root*
(`--trusted-root FILE`, protobuf-specs `TrustedRoot`): the entry's log id picks the log, whose public key
verifies the signed entry timestamp and the checkpoint. Key-based signatures need no certificate
authority, CT log or timestamp authority, so the root lists only `tlogs`: each log's ECDSA P-256 key
(DER), its log id (SHA-256 of that DER) and the time from which the key is trusted (`validFor.start`:
sigstore-go refuses an entry integrated before it). The public key is pinned by whoever writes the root,
never fetched from the log.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric import ec

from .tlog.note import load_log_public_key, log_id_of, spki_der

TRUSTED_ROOT_MEDIA_TYPE = "application/vnd.dev.sigstore.trustedroot+json;version=0.1"


@dataclass(frozen=True)
class TrustedLog:
    """One transparency log for the trusted root: its pinned key, where it is served, since when it is trusted."""

    public_key: ec.EllipticCurvePublicKey
    base_url: str
    valid_from: datetime

    @property
    def log_id(self) -> str:
        return log_id_of(self.public_key)


def trusted_log(public_key_pem: bytes, base_url: str, valid_from: datetime, where: str) -> TrustedLog:
    """A log from its public key PEM (ECDSA P-256, as Rekor's; InputError naming `where` otherwise)."""
    return TrustedLog(load_log_public_key(public_key_pem, where), base_url, valid_from.astimezone(UTC))


def _rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def trusted_root(logs: list[TrustedLog]) -> bytes:
    """The trusted_root.json cosign reads with `--trusted-root`: these logs, and no CA, CT log or TSA."""
    tlogs = [{"baseUrl": log.base_url, "hashAlgorithm": "SHA2_256",
              "publicKey": {"rawBytes": base64.b64encode(spki_der(log.public_key)).decode(),
                            "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                            "validFor": {"start": _rfc3339(log.valid_from)}},
              "logId": {"keyId": base64.b64encode(bytes.fromhex(log.log_id)).decode()}} for log in logs]
    doc = {"mediaType": TRUSTED_ROOT_MEDIA_TYPE, "tlogs": tlogs, "certificateAuthorities": [], "ctlogs": [],
           "timestampAuthorities": []}
    return json.dumps(doc, indent=2).encode() + b"\n"
