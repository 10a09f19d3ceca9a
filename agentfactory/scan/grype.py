"""Grype adapter: `grype sbom:FILE -o json` output turned into normalized `Finding`s.

Grype's report is untrusted input like any other file: it is size-bounded, and a document that
is not Grype JSON is refused with the field that is wrong rather than read as "no findings".
The strict field readers, purl normalization and the bounded runner live here and are shared
with the Trivy adapter and VEX, so all three read documents the same way.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from packageurl import PackageURL

from ..errors import InputError
from ..jsonsafe import load_json_object
from .errors import ScannerFailed, ScannerUnavailable
from .model import SEVERITIES, Finding, severity_of_score

MAX_REPORT_BYTES = 64 * 1024 * 1024  # a large image's report is a few MiB; this leaves room without being unbounded
MAX_ITEMS = 100_000  # matches / results / vulnerabilities per document
SCANNER_TIMEOUT_S = 600.0  # a first run may download the vulnerability database

# Grype's ratings beyond the CVSS four: Negligible is below Low; Unknown stays unknown.
_GRYPE_SEVERITY = {"negligible": "low", "unknown": "unknown", "": "unknown"}


# -- strict field readers (shared) -----------------------------------------------------------------

def field_obj(doc: dict[str, Any], key: str, where: str, *, required: bool = True) -> dict[str, Any]:
    """`doc[key]` as an object; absent (or null) is `{}` only when not required."""
    value = doc.get(key)
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise InputError(where, f"{key} must be an object")
    return value


def field_list(doc: dict[str, Any], key: str, where: str, *, required: bool = True) -> list[Any]:
    """`doc[key]` as a bounded list; absent (or null) is `[]` only when not required."""
    value = doc.get(key)
    if value is None and not required:
        return []
    if not isinstance(value, list):
        raise InputError(where, f"{key} must be a list")
    if len(value) > MAX_ITEMS:
        raise InputError(where, f"{key} has {len(value)} items; the limit is {MAX_ITEMS}")
    return value


def field_str(doc: dict[str, Any], key: str, where: str, *, required: bool = True) -> str:
    """`doc[key]` as a string; absent (or null) is "" only when not required, and required means non-empty."""
    value = doc.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise InputError(where, f"{key} must be a non-empty string" if required else f"{key} must be a string")
    return value


def item_obj(items: list[Any], index: int, where: str) -> dict[str, Any]:
    value = items[index]
    if not isinstance(value, dict):
        raise InputError(where, "must be an object")
    return value


def normalize_purl(purl: str, where: str) -> str:
    """The purl without qualifiers and subpath, in canonical spelling, so purls compare equal across tools.

    Qualifiers (arch, repository_url, …) describe where a package came from, not which package and
    version it is; VEX products are matched ignoring them.
    """
    try:
        parsed = PackageURL.from_string(purl)
    except ValueError as exc:
        raise InputError(where, f"{purl!r} is not a package URL ({exc})") from None
    return str(PackageURL(type=parsed.type, namespace=parsed.namespace, name=parsed.name,
                          version=parsed.version).to_string())


def package_of(purl: str, name: str, where: str) -> str:
    """The finding's package: the normalized purl, or the bare name when the tool gave no purl."""
    return normalize_purl(purl, where) if purl else name


def normalize_severity(raw: str, score: float | None) -> str:
    """The scanner's own rating, lower-cased; when it has none, the CVSS score's rating."""
    severity = raw.strip().lower()
    severity = _GRYPE_SEVERITY.get(severity, severity)
    if severity not in SEVERITIES:
        severity = "unknown"
    if severity == "unknown":
        return severity_of_score(score)
    return severity


def score_of(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 10.0:
        raise InputError(where, "a CVSS score must be a number from 0 to 10")
    return float(value)


def run_scanner(argv: list[str], program: str, *, timeout: float = SCANNER_TIMEOUT_S,
                max_bytes: int = MAX_REPORT_BYTES) -> bytes:
    """Run a scanner (found on PATH) and return its stdout; raise with what it said when it fails.

    Output goes to a temporary file rather than a pipe so an oversized report is measured on disk,
    never held whole in memory before the cap applies.
    """
    binary = shutil.which(program)
    if binary is None:
        raise ScannerUnavailable(f"{program} is not on PATH; install it, or scan with the embedded OSV matcher")
    with tempfile.TemporaryFile() as out:
        try:
            done = subprocess.run([binary, *argv], stdout=out, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                  timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise ScannerFailed(f"{program} did not finish within {timeout:.0f} s") from exc
        except OSError as exc:
            raise ScannerFailed(f"cannot run {program}: {exc.strerror or exc}") from exc
        if done.returncode != 0:
            message = done.stderr.decode("utf-8", "replace").strip()[-1000:]
            raise ScannerFailed(f"{program} {' '.join(argv)} failed (exit {done.returncode}): {message}")
        size = out.tell()
        if size > max_bytes:
            raise ScannerFailed(f"{program} answered {size} bytes; the limit is {max_bytes}")
        out.seek(0)
        return out.read()


# -- Grype -----------------------------------------------------------------------------------------

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
