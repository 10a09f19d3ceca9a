"""Trivy adapter: the real `trivy sbom FILE -f json`, offline, and its report (or its CycloneDX
`vulnerabilities[]`) as `Finding`s.

Trivy reports one severity per vulnerability but CVSS per vendor; the score kept is the one from
the source Trivy took its severity from, then NVD, then GHSA, so the vector and the rating agree
whenever Trivy's data allows it. Trivy names a vulnerability by its CVE and lists the advisories'
own ids (GHSA, PYSEC) as `VendorIDs`; those become the finding's aliases, so merging with other
scanners by id or alias works.

Running it: the binary `make tools` pinned (`peerscan`), with `--cache-dir` a folder we name
(`$AGENTFACTORY_TRIVY_CACHE`, else `$AGENTFACTORY_HOME/trivy-cache`; the database is its `db/`),
`--skip-db-update --skip-java-db-update --offline-scan --skip-version-check --disable-telemetry`,
so Trivy never reaches the network. Without a database Trivy refuses ("--skip-db-update cannot be
specified on the first run"); that refusal is a `ScannerFailed` naming the folder and how to
provide one offline (`trivydb` builds one from the OSV folder), never an empty result.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import home
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
    score_of,
)
from .errors import ScannerFailed
from .model import Finding
from .peerscan import go_module_version, require_success, run_peer, scanner_binary

TRIVY_CACHE_ENV = "AGENTFACTORY_TRIVY_CACHE"
OFFLINE_FLAGS = ("--skip-db-update", "--skip-java-db-update", "--offline-scan", "--skip-version-check",
                 "--disable-telemetry", "--no-progress")

# CycloneDX rating methods, most preferred first: the model's score is a CVSS v3 base score.
_CDX_METHODS = ("CVSSv31", "CVSSv3")
# CycloneDX severities beyond the CVSS four: info is below low; none carries no rating.
_CDX_SEVERITY = {"info": "low", "none": "unknown"}


def _trivy_cvss(vuln: dict[str, Any], where: str) -> tuple[float | None, str]:
    cvss = field_obj(vuln, "CVSS", where, required=False)
    preferred = [field_str(vuln, "SeveritySource", where, required=False), "nvd", "ghsa", *sorted(cvss)]
    for source in preferred:
        if source not in cvss:
            continue
        at = f"{where}.CVSS.{source}"
        entry = field_obj(cvss, source, f"{where}.CVSS")
        score = score_of(entry.get("V3Score"), f"{at}.V3Score")
        if score is not None:
            return score, field_str(entry, "V3Vector", at, required=False)
    return None, ""


def _trivy_vuln(vuln: dict[str, Any], where: str) -> Finding:
    score, vector = _trivy_cvss(vuln, where)
    fixed = tuple(v.strip() for v in field_str(vuln, "FixedVersion", where, required=False).split(",") if v.strip())
    ident = field_obj(vuln, "PkgIdentifier", where, required=False)
    vid = field_str(vuln, "VulnerabilityID", where)
    vendor_ids = field_list(vuln, "VendorIDs", where, required=False)
    if not all(isinstance(v, str) and v for v in vendor_ids):
        raise InputError(f"{where}.VendorIDs", "must be a list of vulnerability ids")
    return Finding(
        id=vid,
        aliases=tuple(dict.fromkeys(v for v in vendor_ids if v != vid)),
        package=package_of(field_str(ident, "PURL", f"{where}.PkgIdentifier", required=False),
                           field_str(vuln, "PkgName", where), f"{where}.PkgIdentifier.PURL"),
        version=field_str(vuln, "InstalledVersion", where),
        severity=normalize_severity(field_str(vuln, "Severity", where, required=False), score),
        cvss_score=score,
        cvss_vector=vector,
        fixed_versions=fixed,
        source="trivy",
        summary=field_str(vuln, "Title", where, required=False) or field_str(vuln, "Description", where,
                                                                              required=False),
    )


def parse_trivy(data: bytes, where: str | Path) -> list[Finding]:
    """Findings from Trivy's JSON report (SchemaVersion 2); anything else is refused, naming the field."""
    where = str(where)
    doc = load_json_object(data, where, max_bytes=MAX_REPORT_BYTES, what="the Trivy report")
    if doc.get("bomFormat") == "CycloneDX":
        raise InputError(where, "this is a CycloneDX document, not Trivy JSON; use parse_cyclonedx_vulnerabilities")
    if doc.get("SchemaVersion") != 2:
        raise InputError(where, f"SchemaVersion is {doc.get('SchemaVersion')!r}, not 2: this is not Trivy JSON "
                                "output (trivy … -f json)")
    findings: list[Finding] = []
    results = field_list(doc, "Results", where, required=False)  # Trivy omits Results when nothing was scanned
    for i in range(len(results)):
        at = f"{where}: Results[{i}]"
        vulns = field_list(item_obj(results, i, at), "Vulnerabilities", at, required=False)
        for j in range(len(vulns)):
            findings.append(_trivy_vuln(item_obj(vulns, j, f"{at}.Vulnerabilities[{j}]"), f"{at}.Vulnerabilities[{j}]"))
    return findings


def _cdx_components(doc: dict[str, Any], where: str) -> dict[str, dict[str, Any]]:
    """Every component by bom-ref, nested ones included (bounded by the list limits at each level)."""
    found: dict[str, dict[str, Any]] = {}
    stack: list[tuple[dict[str, Any], str]] = [(doc, where)]
    metadata = field_obj(doc, "metadata", where, required=False)
    if "component" in metadata:
        component = field_obj(metadata, "component", f"{where}.metadata")
        found[field_str(component, "bom-ref", f"{where}.metadata.component", required=False)] = component
    while stack:
        node, at = stack.pop()
        items = field_list(node, "components", at, required=False)
        for i in range(len(items)):
            here = f"{at}.components[{i}]"
            component = item_obj(items, i, here)
            ref = field_str(component, "bom-ref", here, required=False)
            if ref:
                found[ref] = component
            stack.append((component, here))
            if len(found) > 100_000:
                raise InputError(where, "more than 100000 components")
    found.pop("", None)
    return found


def _cdx_rating(vuln: dict[str, Any], where: str) -> tuple[str, float | None, str]:
    """(severity, score, vector) from the preferred CVSS v3 rating, else the first rating's severity."""
    ratings = [item_obj(vuln["ratings"], i, f"{where}.ratings[{i}]")
               for i in range(len(field_list(vuln, "ratings", where, required=False)))]
    for method in _CDX_METHODS:
        for i, rating in enumerate(ratings):
            if rating.get("method") == method:
                at = f"{where}.ratings[{i}]"
                score = score_of(rating.get("score"), f"{at}.score")
                severity = field_str(rating, "severity", at, required=False).lower()
                return _CDX_SEVERITY.get(severity, severity), score, field_str(rating, "vector", at, required=False)
    if ratings:
        severity = field_str(ratings[0], "severity", f"{where}.ratings[0]", required=False).lower()
        return _CDX_SEVERITY.get(severity, severity), None, ""
    return "unknown", None, ""


def parse_cyclonedx_vulnerabilities(doc: dict[str, Any], where: str, *, source: str = "trivy") -> list[Finding]:
    """Findings from a CycloneDX BOM's `vulnerabilities[]` (Trivy's `--format cyclonedx`), one per affected component.

    An `affects[].ref` that names no component in the document is refused: the finding would have
    no package to gate on.
    """
    if doc.get("bomFormat") != "CycloneDX":
        raise InputError(where, "bomFormat must be \"CycloneDX\"")
    components = _cdx_components(doc, where)
    findings: list[Finding] = []
    vulns = field_list(doc, "vulnerabilities", where, required=False)
    for i in range(len(vulns)):
        at = f"{where}: vulnerabilities[{i}]"
        vuln = item_obj(vulns, i, at)
        vid = field_str(vuln, "id", at)
        refs = field_list(vuln, "references", at, required=False)
        aliases = tuple(dict.fromkeys(
            a for a in (field_str(item_obj(refs, k, f"{at}.references[{k}]"), "id", f"{at}.references[{k}]")
                        for k in range(len(refs))) if a != vid))
        raw_severity, score, vector = _cdx_rating(vuln, at)
        severity = normalize_severity(raw_severity, score)
        affects = field_list(vuln, "affects", at)
        for k in range(len(affects)):
            here = f"{at}.affects[{k}]"
            ref = field_str(item_obj(affects, k, here), "ref", here)
            component = components.get(ref)
            if component is None:
                raise InputError(here, f"ref {ref!r} names no component in this BOM")
            findings.append(Finding(
                id=vid,
                package=package_of(field_str(component, "purl", here, required=False),
                                   field_str(component, "name", here), f"{here} (component purl)"),
                version=field_str(component, "version", here, required=False),
                severity=severity,
                aliases=aliases,
                cvss_score=score,
                cvss_vector=vector,
                source=source,
                summary=field_str(vuln, "description", at, required=False),
            ))
    return findings


def parse_trivy_cyclonedx(data: bytes, where: str | Path) -> list[Finding]:
    """Findings from Trivy's CycloneDX output (`trivy … --format cyclonedx --scanners vuln`)."""
    where = str(where)
    doc = load_json_object(data, where, max_bytes=MAX_REPORT_BYTES, what="the CycloneDX document")
    return parse_cyclonedx_vulnerabilities(doc, where, source="trivy")


@dataclass
class TrivyScan:
    """What a Trivy run found, and which database it judged against (for the scan attestation)."""

    findings: list[Finding]
    version: str
    database: dict[str, Any] = field(default_factory=dict)


def trivy_cache_dir() -> Path:
    """Trivy's cache folder: `$AGENTFACTORY_TRIVY_CACHE`, else `$AGENTFACTORY_HOME/trivy-cache`."""
    value = os.environ.get(TRIVY_CACHE_ENV)
    return Path(value).expanduser().resolve() if value else home() / "trivy-cache"


def trivy_version() -> str:
    """The pinned binary's module version (v0.74.0): `go install` builds print "dev" themselves."""
    found = go_module_version(scanner_binary("trivy"))
    if found is not None:
        return found[1]
    run = run_peer("trivy", ["version", "-f", "json"], timeout=60)
    try:
        return str(json.loads(require_success(run))["Version"])
    except (ValueError, KeyError, TypeError):
        return "unknown"


def trivy_db_metadata(cache_dir: Path | None = None) -> dict[str, Any]:
    """`trivy version -f json --cache-dir DIR`'s account of the database there: {} when there is none."""
    cache_dir = cache_dir or trivy_cache_dir()
    run = run_peer("trivy", ["version", "-f", "json", "--cache-dir", str(cache_dir)], timeout=60)
    try:
        doc = json.loads(require_success(run))
    except ValueError:
        raise ScannerFailed("trivy version -f json did not answer JSON") from None
    db = doc.get("VulnerabilityDB") if isinstance(doc, dict) else None
    return db if isinstance(db, dict) else {}


def no_database_help(cache_dir: Path) -> str:
    return (f"Trivy needs a vulnerability database in {cache_dir / 'db'} (trivy.db and metadata.json, schema 2) "
            f"and cannot download one here. Provide one offline: `python -m agentfactory.scan.trivydb OSV_FOLDER "
            f"{cache_dir}` builds it from the OSV database; or copy in the trivy.db and metadata.json of a trivy-db "
            f"OCI artifact pulled on a connected machine (from an internal mirror: --db-repository); or set "
            f"{TRIVY_CACHE_ENV} to a cache folder that holds one.")


def _database(cache_dir: Path) -> dict[str, Any]:
    """What the scan was judged against: Trivy's metadata.json, and our manifest when we built it."""
    db_dir = cache_dir / "db"
    out: dict[str, Any] = {"uri": (db_dir / "trivy.db").as_uri()}
    for name, key in (("metadata.json", "metadata"), ("agentfactory.json", "builtFrom")):
        try:
            doc = json.loads((db_dir / name).read_bytes())
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict):
            out[key] = {k: doc[k] for k in ("Version", "UpdatedAt", "schemaVersion", "osv", "osvDigest",
                                            "advisories", "built") if k in doc}
    return out


def scan_trivy(sbom_path: str | Path, *, cache_dir: Path | None = None,
               timeout: float = SCANNER_TIMEOUT_S) -> TrivyScan:
    """Scan a CycloneDX/SPDX SBOM file with the pinned Trivy, offline, against the database in `cache_dir`."""
    path = Path(sbom_path)
    if not path.is_file():
        raise InputError(str(path), "the SBOM file does not exist")
    cache_dir = cache_dir or trivy_cache_dir()
    argv = ["sbom", str(path), "-f", "json", "--quiet", "--scanners", "vuln", "--cache-dir", str(cache_dir),
            *OFFLINE_FLAGS]
    run = run_peer("trivy", argv, timeout=timeout)
    if run.returncode != 0:
        db_dir = cache_dir / "db"
        missing = [n for n in ("trivy.db", "metadata.json") if not (db_dir / n).is_file()]
        said = run.stderr[-1000:]
        if missing or "--skip-db-update" in said:
            raise ScannerFailed(f"trivy sbom {path} failed: no usable vulnerability database"
                                f"{' (' + ', '.join(missing) + ' missing)' if missing else ''}: {said}\n"
                                + no_database_help(cache_dir))
        require_success(run)
    return TrivyScan(parse_trivy(run.stdout, f"trivy sbom {path}"), trivy_version(), _database(cache_dir))


def run_trivy(sbom_path: str | Path, *, cache_dir: Path | None = None,
              timeout: float = SCANNER_TIMEOUT_S) -> list[Finding]:
    """The findings of `scan_trivy`."""
    return scan_trivy(sbom_path, cache_dir=cache_dir, timeout=timeout).findings
