"""Grype adapter: `grype sbom:FILE -o json` output turned into normalized `Finding`s.

Grype's report is untrusted input like any other file: it is size-bounded, and a document that
is not Grype JSON is refused with the field that is wrong rather than read as "no findings".
The strict field readers, purl normalization and the bounded runner are in common.py, shared with
the Trivy adapter and VEX, so all three read documents the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InputError
from ..jsonsafe import load_json_object
from .common import (
    MAX_REPORT_BYTES,
    SCANNER_TIMEOUT_S,
    field_list,
    field_obj,
    field_str,
    item_obj,
    normalize_severity,
    package_of,
    run_scanner,
    score_of,
)
from .model import Finding


def _grype_cvss(vuln: dict[str, Any], where: str) -> tuple[float | None, str]:
    """The first CVSS v3.x entry (Grype lists the primary source first); v2 scores are not v3-comparable."""
    entries = field_list(vuln, "cvss", where, required=False)
    for i in range(len(entries)):
        at = f"{where}.cvss[{i}]"
        item = item_obj(entries, i, at)
        if field_str(item, "version", at, required=False).startswith("3"):
            metrics = field_obj(item, "metrics", at, required=False)
            score = score_of(metrics.get("baseScore"), f"{at}.metrics.baseScore")
            return score, field_str(item, "vector", at, required=False)
    return None, ""


def _grype_match(match: dict[str, Any], where: str) -> Finding:
    vuln = field_obj(match, "vulnerability", where)
    artifact = field_obj(match, "artifact", where)
    vid = field_str(vuln, "id", f"{where}.vulnerability")
    aliases: list[str] = []
    related = field_list(match, "relatedVulnerabilities", where, required=False)
    for i in range(len(related)):
        alias = field_str(item_obj(related, i, f"{where}.relatedVulnerabilities[{i}]"), "id",
                          f"{where}.relatedVulnerabilities[{i}]")
        if alias != vid and alias not in aliases:
            aliases.append(alias)
    score, vector = _grype_cvss(vuln, f"{where}.vulnerability")
    fix = field_obj(vuln, "fix", f"{where}.vulnerability", required=False)
    fixed = field_list(fix, "versions", f"{where}.vulnerability.fix", required=False)
    if not all(isinstance(v, str) and v for v in fixed):
        raise InputError(f"{where}.vulnerability.fix.versions", "must be a list of version strings")
    at = f"{where}.artifact"
    return Finding(
        id=vid,
        package=package_of(field_str(artifact, "purl", at, required=False), field_str(artifact, "name", at),
                           f"{at}.purl"),
        version=field_str(artifact, "version", at),
        severity=normalize_severity(field_str(vuln, "severity", f"{where}.vulnerability", required=False), score),
        aliases=tuple(aliases),
        cvss_score=score,
        cvss_vector=vector,
        fixed_versions=tuple(fixed),
        source="grype",
        summary=field_str(vuln, "description", f"{where}.vulnerability", required=False),
    )


def parse_grype(data: bytes, where: str | Path) -> list[Finding]:
    """Findings from `grype … -o json`; a document without `matches` is not Grype JSON and is refused."""
    where = str(where)
    doc = load_json_object(data, where, max_bytes=MAX_REPORT_BYTES, what="the Grype report")
    if "matches" not in doc:
        raise InputError(where, "matches is missing: this is not Grype JSON output (grype -o json)")
    matches = field_list(doc, "matches", where)
    return [_grype_match(item_obj(matches, i, f"{where}: matches[{i}]"), f"{where}: matches[{i}]")
            for i in range(len(matches))]


def run_grype(sbom_path: str | Path, *, timeout: float = SCANNER_TIMEOUT_S) -> list[Finding]:
    """Scan a CycloneDX/SPDX SBOM file with Grype (`grype sbom:FILE -o json`)."""
    path = Path(sbom_path)
    if not path.is_file():
        raise InputError(str(path), "the SBOM file does not exist")
    return parse_grype(run_scanner([f"sbom:{path}", "-o", "json"], "grype", timeout=timeout), f"grype sbom:{path}")
