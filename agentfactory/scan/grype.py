"""Grype adapter: the real `grype sbom:FILE -o json`, offline, and its report as normalized `Finding`s.

Grype's report is untrusted input like any other file: it is size-bounded, and a document that
is not Grype JSON is refused with the field that is wrong rather than read as "no findings".
The strict field readers and purl normalization are in common.py, shared with the Trivy adapter
and VEX, so all three read documents the same way.

Running it: the binary `make tools` pinned (`peerscan`), with its database in a folder we name
(`GRYPE_DB_CACHE_DIR`: `$AGENTFACTORY_GRYPE_DB`, else `$AGENTFACTORY_HOME/grype-db`) and every
network step off (no database update, no update check), so a scan never depends on reaching
Anchore. Grype refuses to scan without a valid database (missing, wrong schema, or older than its
maximum age); that refusal is a `ScannerFailed` naming the folder and how to load one offline
(`grypedb` builds one from the OSV folder; `grype db import` loads it, or an archive from a
mirror), never an empty result. A report whose descriptor does not show a valid database is
refused too.
"""

from __future__ import annotations

import json
import os
import re
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

GRYPE_DB_ENV = "AGENTFACTORY_GRYPE_DB"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


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
    return _matches(load_json_object(data, where, max_bytes=MAX_REPORT_BYTES, what="the Grype report"), where)


def _matches(doc: dict[str, Any], where: str) -> list[Finding]:
    if "matches" not in doc:
        raise InputError(where, "matches is missing: this is not Grype JSON output (grype -o json)")
    matches = field_list(doc, "matches", where)
    return [_grype_match(item_obj(matches, i, f"{where}: matches[{i}]"), f"{where}: matches[{i}]")
            for i in range(len(matches))]


@dataclass
class GrypeScan:
    """What a Grype run found, and which database it judged against (for the scan attestation)."""

    findings: list[Finding]
    version: str
    database: dict[str, Any] = field(default_factory=dict)


def grype_db_dir() -> Path:
    """Grype's database folder: `$AGENTFACTORY_GRYPE_DB`, else `$AGENTFACTORY_HOME/grype-db`."""
    value = os.environ.get(GRYPE_DB_ENV)
    return Path(value).expanduser().resolve() if value else home() / "grype-db"


def grype_env(db_dir: Path) -> dict[str, str]:
    """Grype's settings for an offline run against `db_dir` (Grype reads them from GRYPE_* variables)."""
    return {"GRYPE_DB_CACHE_DIR": str(db_dir), "GRYPE_DB_AUTO_UPDATE": "false",
            "GRYPE_DB_REQUIRE_UPDATE_CHECK": "false", "GRYPE_CHECK_FOR_APP_UPDATE": "false", "NO_COLOR": "1"}


def grype_version() -> str:
    """The pinned binary's module version (v0.121.3): `go install` builds print "[not provided]" themselves."""
    found = go_module_version(scanner_binary("grype"))
    if found is not None:
        return found[1]
    run = run_peer("grype", ["version", "-o", "json"], timeout=60)
    try:
        return str(json.loads(require_success(run))["version"])
    except (ValueError, KeyError, TypeError):
        return "unknown"


def _json(run_stdout: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(run_stdout)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise ScannerFailed(f"{what} did not answer a JSON object")
    return doc


def grype_db_status(db_dir: Path | None = None) -> dict[str, Any]:
    """`grype db status -o json` for `db_dir`: schemaVersion, built, path, valid, and error when not valid."""
    db_dir = db_dir or grype_db_dir()
    run = run_peer("grype", ["db", "status", "-o", "json"], env=grype_env(db_dir), timeout=60)
    return _json(run.stdout, "grype db status")


def no_database_help(db_dir: Path) -> str:
    return (f"Grype needs a vulnerability database in {db_dir} and cannot download one here. Load one offline: "
            f"`python -m agentfactory.scan.grypedb OSV_FOLDER grype.db` builds it from the OSV database, then "
            f"`GRYPE_DB_CACHE_DIR={db_dir} grype db import grype.db` (an archive or URL from an internal mirror of "
            f"Anchore's databases imports the same way); or set {GRYPE_DB_ENV} to a folder that holds one.")


def import_grype_db(reference: str | Path, db_dir: Path | None = None) -> dict[str, Any]:
    """`grype db import REFERENCE` (a .db file, an archive, or a mirror's URL) into `db_dir`; its status after."""
    db_dir = db_dir or grype_db_dir()
    run = run_peer("grype", ["db", "import", str(reference)], env=grype_env(db_dir), timeout=SCANNER_TIMEOUT_S)
    require_success(run, f"the database {reference} was not imported into {db_dir}")
    status = grype_db_status(db_dir)
    if status.get("valid") is not True:
        raise ScannerFailed(f"grype imported {reference} into {db_dir} but does not accept it: "
                            f"{status.get('error') or status}")
    return status


def _database(doc: dict[str, Any], where: str) -> dict[str, Any]:
    """The report's own account of its database; a report without a valid one proves nothing."""
    db = field_obj(field_obj(doc, "descriptor", where, required=False), "db", f"{where}: descriptor",
                   required=False)
    status = field_obj(db, "status", f"{where}: descriptor.db", required=False)
    if status.get("valid") is not True:
        raise ScannerFailed(f"{where}: the report does not show a valid vulnerability database "
                            f"(descriptor.db.status: {status or 'missing'}); refusing it rather than reading it "
                            "as no findings")
    path = status.get("path")
    return {"uri": Path(path).as_uri() if isinstance(path, str) and path.startswith("/") else str(path),
            "schema": status.get("schemaVersion"), "built": status.get("built"), "from": status.get("from"),
            "providers": db.get("providers", {})}


def scan_grype(sbom_path: str | Path, *, db_dir: Path | None = None,
               timeout: float = SCANNER_TIMEOUT_S) -> GrypeScan:
    """Scan a CycloneDX/SPDX SBOM file with the pinned Grype, offline, against the database in `db_dir`."""
    path = Path(sbom_path)
    if not path.is_file():
        raise InputError(str(path), "the SBOM file does not exist")
    db_dir = db_dir or grype_db_dir()
    run = run_peer("grype", [f"sbom:{path}", "-o", "json"], env=grype_env(db_dir), timeout=timeout)
    where = f"grype sbom:{path}"
    if run.returncode != 0:
        status = grype_db_status(db_dir)
        said = _ANSI.sub("", run.stderr).strip()[-1000:]
        if status.get("valid") is not True:
            raise ScannerFailed(f"{where} failed: no usable vulnerability database ({status.get('error') or said}). "
                                + no_database_help(db_dir))
        require_success(run)
    doc = load_json_object(run.stdout, where, max_bytes=MAX_REPORT_BYTES, what="the Grype report")
    database = _database(doc, where)
    return GrypeScan(_matches(doc, where), grype_version(), database)


def run_grype(sbom_path: str | Path, *, db_dir: Path | None = None,
              timeout: float = SCANNER_TIMEOUT_S) -> list[Finding]:
    """The findings of `scan_grype`."""
    return scan_grype(sbom_path, db_dir=db_dir, timeout=timeout).findings
