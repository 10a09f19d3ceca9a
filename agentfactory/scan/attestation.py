"""Reading a scan attestation's predicate back: strictly, into what the artifact policy judges.

The predicate is written by `ScanReport.to_predicate`; the verifier reads it from a signed
envelope, so it is trusted as to who said it but still checked as to shape: a finding without an
id or with an unknown severity would otherwise reach the policy as something it cannot judge.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ..errors import InputError
from .model import SEVERITIES

MAX_FINDINGS = 100_000


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sbom_digest(bom: dict[str, Any]) -> str:
    """The SBOM's digest as the scan attestation binds it: SHA-256 of its canonical JSON, so the
    verifier can recompute it from the signed SBOM attestation's predicate."""
    return "sha256:" + hashlib.sha256(canonical_json(bom)).hexdigest()


def _list(doc: dict[str, Any], key: str, where: str) -> list[Any]:
    value = doc.get(key)
    if not isinstance(value, list):
        raise InputError(where, f"{key} must be a list")
    if len(value) > MAX_FINDINGS:
        raise InputError(where, f"{key} has {len(value)} items; the limit is {MAX_FINDINGS}")
    return value


def _finding(item: Any, where: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise InputError(where, "must be an object")
    fid, severity = item.get("id"), item.get("severity")
    if not isinstance(fid, str) or not fid:
        raise InputError(where, "id must be a non-empty string")
    if severity not in SEVERITIES:
        raise InputError(where, f"severity must be one of {', '.join(SEVERITIES)}")
    suppressed = item.get("suppressed")
    if not isinstance(suppressed, bool):
        raise InputError(where, "suppressed must be true or false")
    fixed = item.get("fixedVersions", [])
    if not isinstance(fixed, list) or not all(isinstance(v, str) for v in fixed):
        raise InputError(where, "fixedVersions must be a list of strings")
    aliases = item.get("aliases", [])
    if not isinstance(aliases, list):  # a string would otherwise reach the policy as its characters
        raise InputError(where, "aliases must be a list")
    by = item.get("suppressedBy")
    if suppressed and not isinstance(by, dict):
        raise InputError(where, "a suppressed finding must carry suppressedBy (the VEX statement)")
    return {"id": fid, "aliases": [a for a in aliases if isinstance(a, str)],
            "severity": severity, "package": str(item.get("package", "")), "version": str(item.get("version", "")),
            "fixAvailable": bool(fixed), "fixedVersions": fixed, "suppressed": suppressed,
            "suppressedBy": by if suppressed else None}


def scan_input(predicate: Any, where: str) -> dict[str, Any]:
    """`input.scan` for the artifact policy (docs/policy-inputs.md), from a scan predicate."""
    if not isinstance(predicate, dict):
        raise InputError(where, "the scan predicate is not an object")
    findings = [_finding(f, f"{where}: findings[{i}]") for i, f in enumerate(_list(predicate, "findings", where))]
    unscanned = [u for u in _list(predicate, "unscanned", where) if isinstance(u, dict)]
    scanners = [s.get("name") for s in _list(predicate, "scanners", where) if isinstance(s, dict)]
    if not scanners:
        raise InputError(where, "the scan names no scanner")
    metadata = predicate.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    return {"findings": findings, "unscanned": unscanned, "scanners": scanners,
            "scannedOn": str(metadata.get("scanFinishedOn", ""))}


def sbom_digest_of(predicate: Any) -> str:
    sbom = predicate.get("sbom") if isinstance(predicate, dict) else None
    digest = sbom.get("digest") if isinstance(sbom, dict) else None
    return digest if isinstance(digest, str) else ""


def finished_on(predicate: Any) -> str:
    metadata = predicate.get("metadata") if isinstance(predicate, dict) else None
    value = metadata.get("scanFinishedOn") if isinstance(metadata, dict) else None
    return value if isinstance(value, str) else ""
