"""Grype and Trivy reports normalize to one finding model; malformed reports and missing scanners fail clearly."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from agentfactory.errors import InputError
from agentfactory.scan.errors import ScannerUnavailable
from agentfactory.scan.grype import parse_grype, run_grype
from agentfactory.scan.model import Finding
from agentfactory.scan.trivy import parse_cyclonedx_vulnerabilities, parse_trivy, parse_trivy_cyclonedx, run_trivy

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"  # see tests/fixtures/SOURCES.md
GRYPE = FIXTURES / "grype" / "TestJsonImgsPresenter.golden"
TRIVY = FIXTURES / "trivy" / "pip.json.golden"
TRIVY_CDX = FIXTURES / "trivy" / "pywin32-cyclonedx.json"
CDX_VULNS = FIXTURES / "cyclonedx" / "valid-vulnerability-1.6.json"


def test_grype_fixture() -> None:
    one, two = parse_grype(GRYPE.read_bytes(), GRYPE)
    assert one == Finding(
        id="CVE-1999-0001", package="package-1", version="1.1.1", severity="low",  # Grype's rating, not the score's
        cvss_score=8.2, cvss_vector="CVSS:3.1/AV:N/AC:L/PR:L/UI:R/S:C/C:L/I:L/A:H",
        fixed_versions=("1.2.1", "2.1.3", "3.4.0"), source="grype")
    assert one.fixed and not one.suppressed
    assert two == Finding(
        id="CVE-1999-0002", package="pkg:deb/package-2@2.2.2", version="2.2.2", severity="critical",
        cvss_score=8.5, cvss_vector="CVSS:3.1/AV:N/AC:H/PR:L/UI:N/S:C/C:H/I:H/A:H", source="grype")
    assert not two.fixed


def test_trivy_fixture() -> None:
    pin, redirect = parse_trivy(TRIVY.read_bytes(), TRIVY)
    assert pin == Finding(
        id="CVE-2019-14806", package="pkg:pypi/werkzeug@0.11", version="0.11", severity="high",
        cvss_score=7.5, cvss_vector="CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N",  # NVD's, not Red Hat's
        fixed_versions=("0.15.3",), source="trivy",
        summary="python-werkzeug: insufficient debugger PIN randomness vulnerability")
    assert (redirect.id, redirect.severity, redirect.cvss_score, redirect.fixed_versions) == (
        "CVE-2020-28724", "medium", 6.1, ("0.11.6",))


def test_trivy_cyclonedx_fixture_is_an_sbom_without_vulnerabilities() -> None:
    """pywin32-cyclonedx.json is Trivy's CycloneDX SBOM output with an empty vulnerabilities[]."""
    assert parse_trivy_cyclonedx(TRIVY_CDX.read_bytes(), TRIVY_CDX) == []
    with pytest.raises(InputError, match="CycloneDX document, not Trivy JSON"):
        parse_trivy(TRIVY_CDX.read_bytes(), TRIVY_CDX)


def test_cyclonedx_vulnerabilities() -> None:
    (finding,) = parse_trivy_cyclonedx(CDX_VULNS.read_bytes(), CDX_VULNS)
    assert finding == Finding(
        id="SNYK-JAVA-COMFASTERXMLJACKSONCORE-32111", aliases=("CVE-2018-7489",),
        package="pkg:maven/com.fasterxml.jackson.core/jackson-databind@2.9.4", version="2.9.4",
        severity="critical", cvss_score=9.8, cvss_vector="AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", source="trivy",
        summary=finding.summary)
    assert finding.summary.startswith("FasterXML jackson-databind before 2.7.9.3")
    doc = json.loads(CDX_VULNS.read_bytes())
    doc["vulnerabilities"][0]["affects"][0]["ref"] = "nowhere"
    with pytest.raises(InputError, match=r"affects\[0\]: ref 'nowhere' names no component"):
        parse_cyclonedx_vulnerabilities(doc, "bom.json")


def _grype_doc(vid: str, related: list[str], purl: str, version: str, score: float, vector: str,
               fixed: list[str], severity: str) -> dict[str, Any]:
    return {"matches": [{
        "vulnerability": {"id": vid, "severity": severity, "fix": {"versions": fixed, "state": "fixed"},
                          "cvss": [{"version": "2.0", "vector": "AV:N/AC:L/Au:N/C:P/I:N/A:N",
                                    "metrics": {"baseScore": 5.0}},
                                   {"version": vector[5:8], "vector": vector, "metrics": {"baseScore": score}}]},
        "relatedVulnerabilities": [{"id": r} for r in related],
        "artifact": {"name": "Werkzeug", "version": version, "purl": purl}}],
        "descriptor": {"name": "grype"}}


def test_same_vulnerability_normalizes_equal() -> None:
    """The two upstream fixtures share no vulnerability, so Trivy's Werkzeug finding is restated as Grype reports it.

    Grype spells the purl from the installed name (pkg:pypi/Werkzeug@0.11), lists the v2 score
    first and rates "High"; after normalization only the source differs.
    """
    (trivy,) = [f for f in parse_trivy(TRIVY.read_bytes(), TRIVY) if f.id == "CVE-2019-14806"]
    grype_doc = _grype_doc("CVE-2019-14806", [], "pkg:pypi/Werkzeug@0.11?repository_url=https://pypi.org", "0.11",
                           7.5, trivy.cvss_vector, ["0.15.3"], "High")
    (grype,) = parse_grype(json.dumps(grype_doc).encode(), "grype.json")
    assert grype.source == "grype" and trivy.source == "trivy"
    assert replace(grype, source="trivy", summary=trivy.summary) == trivy


def test_grype_aliases_and_severity_mapping() -> None:
    doc = _grype_doc("GHSA-gq9m-qvpx-68hc", ["CVE-2019-14806", "GHSA-gq9m-qvpx-68hc", "CVE-2019-14806"],
                     "", "0.11", 7.5, "CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N", [], "Negligible")
    (f,) = parse_grype(json.dumps(doc).encode(), "g.json")
    assert (f.id, f.aliases, f.package, f.severity, f.fixed) == (
        "GHSA-gq9m-qvpx-68hc", ("CVE-2019-14806",), "Werkzeug", "low", False)
    doc["matches"][0]["vulnerability"]["severity"] = "Unknown"
    assert parse_grype(json.dumps(doc).encode(), "g.json")[0].severity == "high"  # no rating: the score's


@pytest.mark.parametrize(("data", "message"), [
    (b"[]", "not a JSON object"),
    (b"{", "is not JSON"),
    (b'{"SchemaVersion": 2}', "matches is missing: this is not Grype JSON"),
    (b'{"matches": {}}', "matches must be a list"),
    (b'{"matches": [1]}', r"matches\[0\]: must be an object"),
    (b'{"matches": [{"vulnerability": {"id": "CVE-1"}}]}', r"matches\[0\]: artifact must be an object"),
    (b'{"matches": [{"vulnerability": {}, "artifact": {}}]}', r"matches\[0\].vulnerability: id must be"),
    (b'{"matches": [{"vulnerability": {"id": "X", "cvss": [{"version": "3.1", "metrics": {"baseScore": 11}}]},'
     b' "artifact": {"name": "a", "version": "1"}}]}', "CVSS score must be a number from 0 to 10"),
    (b'{"matches": [{"vulnerability": {"id": "X"}, "artifact": {"name": "a", "version": "1", "purl": "nope"}}]}',
     "artifact.purl: 'nope' is not a package URL"),
])
def test_grype_refuses_malformed(data: bytes, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_grype(data, "report.json")


def test_grype_refuses_oversized() -> None:
    with pytest.raises(InputError, match="the limit is"):
        parse_grype(b" " * (64 * 1024 * 1024 + 1), "report.json")


@pytest.mark.parametrize(("data", "message"), [
    (b'{"matches": []}', "SchemaVersion is None, not 2: this is not Trivy JSON"),
    (b'{"SchemaVersion": 2, "Results": [{"Vulnerabilities": [{"PkgName": "a", "InstalledVersion": "1"}]}]}',
     r"Results\[0\].Vulnerabilities\[0\]: VulnerabilityID must be a non-empty string"),
    (b'{"SchemaVersion": 2, "Results": [{"Vulnerabilities": [{"VulnerabilityID": "X", "PkgName": "a",'
     b' "InstalledVersion": "1", "CVSS": {"nvd": {"V3Score": "high"}}}]}]}', r"CVSS.nvd.V3Score: a CVSS score"),
    (b'{"SchemaVersion": 2, "Results": {}}', "Results must be a list"),
])
def test_trivy_refuses_malformed(data: bytes, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_trivy(data, "report.json")


def test_trivy_empty_report() -> None:
    assert parse_trivy(b'{"SchemaVersion": 2, "ArtifactName": "x"}', "r.json") == []
    assert parse_trivy(b'{"SchemaVersion": 2, "Results": [{"Target": "t", "Vulnerabilities": null}]}', "r") == []


def test_trivy_fixed_versions_are_split() -> None:
    doc = {"SchemaVersion": 2, "Results": [{"Vulnerabilities": [{
        "VulnerabilityID": "CVE-1", "PkgName": "a", "InstalledVersion": "1", "FixedVersion": "1.2.3, 2.0.1,",
        "Severity": "UNKNOWN", "CVSS": {"ghsa": {"V3Score": 9.1, "V3Vector": "CVSS:3.1/X"}}}]}]}
    (f,) = parse_trivy(json.dumps(doc).encode(), "r.json")
    assert (f.fixed_versions, f.severity, f.cvss_score, f.package) == (("1.2.3", "2.0.1"), "critical", 9.1, "a")


def test_trivy_vendor_ids_are_aliases() -> None:
    """Trivy names a vulnerability by its CVE; the advisories' own ids come as VendorIDs and must merge by alias."""
    doc = {"SchemaVersion": 2, "Results": [{"Vulnerabilities": [{
        "VulnerabilityID": "CVE-2023-32681", "VendorIDs": ["GHSA-j8r2-6x86-q33q", "PYSEC-2023-74", "CVE-2023-32681"],
        "PkgName": "requests", "InstalledVersion": "2.28.1", "Severity": "MEDIUM"}]}]}
    (f,) = parse_trivy(json.dumps(doc).encode(), "r.json")
    assert (f.id, f.aliases) == ("CVE-2023-32681", ("GHSA-j8r2-6x86-q33q", "PYSEC-2023-74"))
    doc["Results"][0]["Vulnerabilities"][0]["VendorIDs"] = ["GHSA-x", 7]
    with pytest.raises(InputError, match=r"Vulnerabilities\[0\].VendorIDs: must be a list of vulnerability ids"):
        parse_trivy(json.dumps(doc).encode(), "r.json")


@pytest.mark.parametrize(("name", "run"), [("grype", run_grype), ("trivy", run_trivy)])
def test_run_without_binary_names_make_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str,
                                             run: Any) -> None:
    """Neither in `make tools`' folder nor on PATH: the scan cannot happen, and the error says how to install it."""
    sbom = tmp_path / "sbom.json"
    sbom.write_bytes((FIXTURES / "cyclonedx" / "valid-minimal-viable-1.6.json").read_bytes())
    monkeypatch.setenv("AGENTFACTORY_TOOLS_BIN", str(tmp_path / "empty-bin"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty-path"))
    with pytest.raises(ScannerUnavailable, match=rf"{name} is not installed: run `make tools`.*or scan with the "
                                                 "embedded OSV matcher"):
        run(sbom)


def test_run_on_missing_sbom(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="the SBOM file does not exist"):
        run_grype(tmp_path / "absent.json")
