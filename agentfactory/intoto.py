"""in-toto Statement v1: what an attestation is about (subject) and what it says (predicate)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .digest import DIGEST_RE
from .errors import InputError
from .jsonsafe import load_json_object

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
SLSA_PROVENANCE_V1 = "https://slsa.dev/provenance/v1"
CYCLONEDX_BOM = "https://cyclonedx.org/bom"
SCAN_V1 = "https://agentfactory.dev/attestation/scan/v1"  # docs/scanning.md
SLSA_VSA_V1 = "https://slsa.dev/verification_summary/v1"  # promotions: docs/promotion.md
MAX_STATEMENT_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class Statement:
    subjects: tuple[tuple[str, str], ...]  # (name, "sha256:<hex>")
    predicate_type: str
    predicate: Any

    def is_about(self, digest: str) -> bool:
        return any(d == digest for _, d in self.subjects)


def make_statement(name: str, digest: str, predicate_type: str, predicate: Any) -> bytes:
    """Canonical JSON bytes of a Statement about one artifact."""
    if not DIGEST_RE.match(digest):
        raise InputError("statement subject", f"{digest!r} is not a sha256 digest")
    return json.dumps({
        "_type": STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {"sha256": digest.split(":", 1)[1]}}],
        "predicateType": predicate_type,
        "predicate": predicate,
    }, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def parse_statement(payload: bytes, where: str) -> Statement:
    doc = load_json_object(payload, where, max_bytes=MAX_STATEMENT_BYTES, what="statement")
    if doc.get("_type") != STATEMENT_TYPE:
        raise InputError(where, f"not an in-toto Statement v1 (_type must be {STATEMENT_TYPE})")
    subjects = doc.get("subject")
    if not isinstance(subjects, list) or not subjects:
        raise InputError(where, "statement has no subject")
    out = []
    for i, s in enumerate(subjects):
        sha = s.get("digest", {}).get("sha256") if isinstance(s, dict) and isinstance(s.get("digest"), dict) else None
        if not isinstance(sha, str) or not DIGEST_RE.match("sha256:" + sha):
            raise InputError(where, f"subject[{i}] has no sha256 digest")
        out.append((str(s.get("name", "")), "sha256:" + sha))
    predicate_type = doc.get("predicateType")
    if not isinstance(predicate_type, str):
        raise InputError(where, "statement has no predicateType")
    return Statement(tuple(out), predicate_type, doc.get("predicate"))
