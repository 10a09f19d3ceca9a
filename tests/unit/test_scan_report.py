"""One scan of one SBOM: merging, the gate, VEX, the report and its attestation predicate.

Every scan here runs the real embedded OSV matcher over the committed example database (five
real OSV advisories: lodash, requests twice, urllib3, jinja2), on CycloneDX documents written by hand.
"""

from __future__ import annotations

import copy
import itertools
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from helpers import EXAMPLE_OSV, EXAMPLES_SCANNING

from agentfactory.errors import ConfigError, InputError
from agentfactory.scan.attestation import finished_on, sbom_digest, sbom_digest_of, scan_input
from agentfactory.scan.base import GrypeScanner, OsvScanner, TrivyScanner, open_scanners
from agentfactory.scan.errors import ScannerUnavailable
from agentfactory.scan.gate import Gate
from agentfactory.scan.model import Finding, Suppression
from agentfactory.scan.report import ScanReport, merge_findings, render_text, scan, subject_of
from agentfactory.scan.vexdocs import load_vex

PRODUCT = "pkg:oci/demo@sha256:" + "ab" * 32
LODASH = "pkg:npm/lodash@4.17.20"
REQUESTS = "pkg:pypi/requests@2.28.1"
URLLIB3 = "pkg:pypi/urllib3@1.26.5"
GHSA_LODASH = "GHSA-35jh-r3h4-6jhm"
GHSA_REQUESTS, PYSEC_REQUESTS, CVE_REQUESTS = "GHSA-j8r2-6x86-q33q", "PYSEC-2023-74", "CVE-2023-32681"
PYSEC_URLLIB3 = "PYSEC-2023-192"


def component(purl: str | None, name: str | None = None, version: str | None = None) -> dict[str, Any]:
    """A CycloneDX library component; name and version default to the purl's."""
    comp: dict[str, Any] = {"type": "library"}
    if purl is not None:
        comp["purl"] = purl
        tail = purl.rsplit("/", 1)[-1]
        name = name or tail.split("@", 1)[0]
        version = version or (tail.split("@", 1)[1] if "@" in tail else None)
    comp["name"] = name
    if version is not None:
        comp["version"] = version
    return comp


def cyclonedx(*components: dict[str, Any], product: str | None = PRODUCT) -> dict[str, Any]:
    meta: dict[str, Any] = {"component": {"type": "application", "name": "demo"}}
    if product is not None:
        meta["component"]["purl"] = product
    return {"bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1, "metadata": meta,
            "components": list(components)}


def openvex(tmp_path: Path, *statements: dict[str, Any], name: str = "demo.openvex.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps({"@context": "https://openvex.dev/ns/v0.2.0", "@id": f"https://example.test/{name}",
                                "author": "Demo team", "timestamp": "2026-01-01T00:00:00Z", "version": 1,
                                "statements": list(statements)}))
    return path


def not_affected(vuln: str, product: str = PRODUCT, **extra: Any) -> dict[str, Any]:
    return {"vulnerability": {"name": vuln}, "products": [{"@id": product}], "status": "not_affected",
            "justification": "vulnerable_code_not_in_execute_path", **extra}


@pytest.fixture
def osv() -> OsvScanner:
    return OsvScanner(EXAMPLE_OSV)


def by_id(report: ScanReport) -> dict[str, Finding]:
    return {f.id: f for f in report.findings}


# --- merge_findings ---------------------------------------------------------------------------

def test_pysec_and_ghsa_for_requests_merge_through_their_aliases(osv: OsvScanner, tmp_path: Path) -> None:
    raw = osv.scan(cyclonedx(component(REQUESTS)), tmp_path / "unused").findings
    # The database holds the vulnerability twice (PyPA's PYSEC record and GitHub's GHSA record) ...
    assert sorted(f.id for f in raw) == [GHSA_REQUESTS, PYSEC_REQUESTS]
    # ... and the report holds it once, under every name, so one VEX statement or one gate count covers it.
    for order in (raw, raw[::-1]):
        (merged,) = merge_findings(order)
        assert set(merged.names) == {GHSA_REQUESTS, PYSEC_REQUESTS, CVE_REQUESTS}
        assert len(merged.names) == 3 and merged.id not in merged.aliases
        assert merged.severity == "medium" and merged.cvss_score == 6.1  # GHSA's CVSS; PYSEC's record has none
        assert merged.cvss_vector.startswith("CVSS:3.1/")
        assert merged.fixed_versions == ("2.31.0",)
        assert merged.source == "osv"
        assert merged.package == REQUESTS and merged.version == "2.28.1"


def test_the_same_advisory_in_different_packages_or_versions_stays_apart() -> None:
    findings = [Finding(id="GHSA-xxxx-yyyy-zzzz", package=package, version=version, severity="high", source="osv")
                for package, version in (("pkg:npm/lodash@4.17.20", "4.17.20"),
                                         ("pkg:npm/lodash-es@4.17.20", "4.17.20"),
                                         ("pkg:npm/lodash@4.17.19", "4.17.19"))]
    assert merge_findings(findings) == findings
    assert merge_findings([]) == []


def test_unrelated_advisories_for_one_package_stay_apart() -> None:
    a = Finding(id="CVE-2020-1", package=REQUESTS, version="2.28.1", severity="low")
    b = Finding(id="CVE-2020-2", package=REQUESTS, version="2.28.1", severity="low", aliases=("GHSA-a",))
    assert merge_findings([a, b]) == [a, b]


def test_merge_keeps_the_highest_severity_and_every_alias_fix_and_source() -> None:
    grype = Finding(id=GHSA_REQUESTS, package=REQUESTS, version="2.28.1", severity="medium", cvss_score=6.1,
                    cvss_vector="CVSS:3.1/AV:N/AC:H/PR:N/UI:R/S:C/C:H/I:N/A:N", aliases=(CVE_REQUESTS,),
                    fixed_versions=("2.31.0",), source="grype", summary="")
    trivy = Finding(id=CVE_REQUESTS, package=REQUESTS, version="2.28.1", severity="high", cvss_score=7.5,
                    cvss_vector="CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N", fixed_versions=("2.31.0", "3.0.0"),
                    source="trivy", summary="Proxy-Authorization leak")
    osv = Finding(id=PYSEC_REQUESTS, package=REQUESTS, version="2.28.1", severity="unknown",
                  aliases=(CVE_REQUESTS, GHSA_REQUESTS), source="osv")
    again = Finding(id=GHSA_REQUESTS, package=REQUESTS, version="2.28.1", severity="low", source="grype")
    (merged,) = merge_findings([grype, trivy, osv, again])
    assert merged.id == GHSA_REQUESTS  # the first reporter's id; the others become aliases
    assert merged.aliases == (CVE_REQUESTS, PYSEC_REQUESTS)
    assert (merged.severity, merged.cvss_score) == ("high", 7.5)
    assert merged.cvss_vector == trivy.cvss_vector  # the score and its vector come from the same report
    assert merged.fixed_versions == ("2.31.0", "3.0.0")
    assert merged.source == "grype,trivy,osv"  # each once, in the order they reported
    assert merged.summary == "Proxy-Authorization leak"
    # An unknown severity never lowers a known one.
    (kept,) = merge_findings([osv, grype])
    assert kept.id == PYSEC_REQUESTS and kept.severity == "medium" and kept.cvss_score == 6.1


def test_merging_does_not_depend_on_the_order_findings_arrive_in() -> None:
    # Trivy names the CVE, Grype the GHSA (no alias between them), the OSV record names both: one
    # vulnerability, whichever scanner reported first.
    cve = Finding(id=CVE_REQUESTS, package=REQUESTS, version="2.28.1", severity="medium", source="trivy")
    ghsa = Finding(id=GHSA_REQUESTS, package=REQUESTS, version="2.28.1", severity="high", source="grype")
    pysec = Finding(id=PYSEC_REQUESTS, package=REQUESTS, version="2.28.1", aliases=(CVE_REQUESTS, GHSA_REQUESTS),
                    source="osv")
    lodash = Finding(id=GHSA_LODASH, package=LODASH, version="4.17.20", severity="high", source="osv")
    for order in itertools.permutations([cve, ghsa, pysec, lodash]):
        merged = merge_findings(list(order))
        assert len(merged) == 2, order
        (requests,) = [f for f in merged if f.package == REQUESTS]
        assert set(requests.names) == {CVE_REQUESTS, GHSA_REQUESTS, PYSEC_REQUESTS}
        assert requests.severity == "high"
        assert sorted(requests.source.split(",")) == ["grype", "osv", "trivy"]


# --- the gate ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("fail_on", "severities"), [
    ("critical", ["critical"]),
    ("high", ["high", "critical"]),
    ("medium", ["medium", "high", "critical"]),
    ("low", ["low", "medium", "high", "critical"]),
    ("unknown", ["unknown", "low", "medium", "high", "critical"]),
    ("none", []),
])
def test_gate_severities(fail_on: str, severities: list[str]) -> None:
    gate = Gate(fail_on)
    assert gate.severities == severities
    for severity in ("unknown", "low", "medium", "high", "critical"):
        finding = Finding(id="X-1", package=LODASH, version="4.17.20", severity=severity, fixed_versions=("9",))
        assert gate.blocks(finding) is (severity in severities), severity


def test_gate_default_is_high_and_counts_unfixed() -> None:
    gate = Gate()
    assert (gate.fail_on, gate.ignore_unfixed) == ("high", False)
    unfixed = Finding(id="X-1", package=LODASH, version="4.17.20", severity="critical")
    assert not unfixed.fixed and gate.blocks(unfixed)  # unfixable is not harmless


def test_ignore_unfixed_lets_only_findings_without_a_fix_through() -> None:
    gate = Gate("high", ignore_unfixed=True)
    unfixed = Finding(id="X-1", package=LODASH, version="4.17.20", severity="critical")
    fixed = Finding(id="X-2", package=LODASH, version="4.17.20", severity="critical", fixed_versions=("4.17.21",))
    assert not gate.blocks(unfixed) and gate.blocks(fixed)
    assert gate.blocking([unfixed, fixed]) == [fixed]


def test_a_suppressed_finding_never_blocks() -> None:
    by = Suppression("not_affected", "component_not_present", "vex#statements[0]")
    finding = Finding(id="X-1", package=LODASH, version="4.17.20", severity="critical").suppress(by)
    for fail_on in ("critical", "high", "low", "unknown"):
        assert not Gate(fail_on).blocks(finding)
    assert Gate("unknown").blocking([finding]) == []


@pytest.mark.parametrize("bad", ["severe", "", "HIGH", "moderate"])
def test_an_unknown_threshold_is_a_config_error(bad: str) -> None:
    with pytest.raises(ConfigError, match="--fail-on") as exc:
        Gate(bad)
    assert "critical, high, medium, low, unknown, none" in str(exc.value)


# --- scan() on hand-made SBOMs ----------------------------------------------------------------

MIXED = (
    component(LODASH),
    component(REQUESTS),
    component(URLLIB3),
    component("pkg:pypi/jinja2@2.11.3"),  # PYSEC-2021-66 is fixed in 2.11.3: no finding
    component(None, name="handwritten-parser", version="0.1"),  # no purl
    component("pkg:deb/debian/curl@7.88.1"),  # a purl type OSV has no ecosystem for here
    component("pkg:pypi/jinja2@not-a-version!", version="not a version!"),
)


def test_scan_finds_reports_and_explains(osv: OsvScanner) -> None:
    bom = cyclonedx(*MIXED)
    report = scan(bom, [osv], subject=subject_of(bom, "demo.cdx.json"))
    assert report.subject == PRODUCT and report.sbom_digest == sbom_digest(bom)
    # Sorted most severe first, then by package.
    assert [(f.id, f.package, f.severity) for f in report.findings] == [
        (GHSA_LODASH, LODASH, "high"), (PYSEC_URLLIB3, URLLIB3, "high"), (GHSA_REQUESTS, REQUESTS, "medium")]
    lodash = by_id(report)[GHSA_LODASH]
    assert lodash.aliases == ("CVE-2021-23337",) and lodash.cvss_score == 7.2
    assert lodash.fixed_versions == ("4.17.21",) and lodash.summary == "Command Injection in lodash"
    assert set(by_id(report)[PYSEC_URLLIB3].fixed_versions) == {"1.26.17", "2.0.6"}
    assert [(u.component, u.reason.split(":")[0]) for u in report.unscanned] == [
        ("handwritten-parser@0.1", "no purl"),
        ("pkg:deb/debian/curl@7.88.1", "purl type 'deb' has no OSV ecosystem here"),
        ("pkg:pypi/jinja2@not-a-version!", "unparsable version"),
    ]
    assert "not a valid PyPI version" in report.unscanned[2].reason
    assert report.counts() == {"critical": 0, "high": 2, "medium": 1, "low": 0, "unknown": 0, "suppressed": 0}
    assert report.vex == [] and report.unused_vex == [] and report.warnings == []
    (info,) = report.scanners
    assert info.name == "agentfactory-osv" and info.database["advisories"] == 5
    assert info.database["uri"] == EXAMPLE_OSV.resolve().as_uri()
    assert info.database["listing"].startswith("sha256:")
    assert report.started and report.started <= report.finished

    gate = Gate()
    doc = json.loads(json.dumps(report.to_json(gate)))
    assert doc["gate"] == {"failOn": "high", "ignoreUnfixed": False, "passed": False,
                           "blocking": [GHSA_LODASH, PYSEC_URLLIB3]}
    assert doc["findings"][0]["id"] == GHSA_LODASH and doc["summary"]["high"] == 2
    assert "gate" not in report.to_json()
    text = "\n".join(render_text(report, gate))
    assert f"scanned {PRODUCT} with agentfactory-osv" in text and "(5 advisories)" in text
    assert f"BLOCKS     HIGH 7.2 {GHSA_LODASH} (also CVE-2021-23337) in {LODASH}" in text
    assert f"allowed    MEDIUM 6.1 {GHSA_REQUESTS}" in text
    assert "fix: upgrade to 4.17.21" in text
    assert "unscanned  handwritten-parser@0.1: no purl" in text
    assert text.endswith("3 finding(s): 2 high, 1 medium; 3 component(s) unscanned; "
                         "gate (fail on high): FAILED, 2 finding(s) block")
    assert Gate("critical").blocking(report.findings) == []
    assert render_text(report, Gate("critical"))[-1].endswith("gate (fail on critical): passed")


def test_nested_components_are_scanned_too(osv: OsvScanner) -> None:
    outer = component("pkg:npm/left-pad@1.3.0")
    outer["components"] = [component(LODASH)]
    report = scan(cyclonedx(outer), [osv], subject=PRODUCT)
    assert [f.id for f in report.findings] == [GHSA_LODASH]


def test_a_clean_sbom_has_no_findings_and_passes(osv: OsvScanner) -> None:
    report = scan(cyclonedx(component("pkg:npm/lodash@4.17.21"), component("pkg:pypi/requests@2.31.0")), [osv],
                  subject=PRODUCT)
    assert report.findings == [] and report.unscanned == []
    assert report.to_json(Gate())["gate"]["passed"] is True
    assert render_text(report, Gate())[-1] == "0 finding(s); 0 component(s) unscanned; gate (fail on high): passed"


def test_vex_suppresses_this_products_findings_and_reports_unused_statements(osv: OsvScanner,
                                                                            tmp_path: Path) -> None:
    vex_file = openvex(
        tmp_path,
        not_affected(GHSA_LODASH, "pkg:oci/demo"),  # versionless: every version of the product
        not_affected(CVE_REQUESTS, impact_statement="no proxy is ever configured"),  # an alias of the merged finding
        not_affected(PYSEC_URLLIB3, "pkg:oci/otheragent"),  # another product: must not apply, must be reported
    )
    vex = load_vex([vex_file], trust=None, require_signed=False)
    report = scan(cyclonedx(*MIXED), [osv], subject=PRODUCT, vex=vex)
    found = by_id(report)
    assert found[GHSA_LODASH].suppressed_by == Suppression(
        "not_affected", "vulnerable_code_not_in_execute_path",
        "https://example.test/demo.openvex.json#statements[0]", "Demo team")
    assert found[GHSA_REQUESTS].suppressed  # the statement named the CVE; the finding is filed under the GHSA
    assert not found[PYSEC_URLLIB3].suppressed
    (unused,) = report.unused_vex
    assert unused.vulnerability == PYSEC_URLLIB3 and unused.products == ("pkg:oci/otheragent",)
    assert report.counts()["suppressed"] == 2 and report.counts()["high"] == 1
    (source,) = report.vex
    assert source.where == str(vex_file) and source.statements == 3 and source.signed_by == ""

    gate = Gate()
    assert [f.id for f in gate.blocking(report.findings)] == [PYSEC_URLLIB3]
    doc = report.to_json(gate)
    assert doc["unusedVex"] == [{"vulnerability": PYSEC_URLLIB3, "products": ["pkg:oci/otheragent"],
                                 "where": "https://example.test/demo.openvex.json#statements[2]"}]
    assert doc["vex"] == [{"uri": str(vex_file), "digest": source.digest, "statements": 3, "signedBy": ""}]
    text = "\n".join(render_text(report, gate))
    assert f"suppressed HIGH 7.2 {GHSA_LODASH}" in text
    assert "VEX not_affected: vulnerable_code_not_in_execute_path — https://example.test/demo.openvex.json" \
           "#statements[0] by Demo team" in text
    assert "VEX not_affected: vulnerable_code_not_in_execute_path — https://example.test/demo.openvex.json" \
           "#statements[1]" in text  # a justification is shown in preference to the impact statement
    assert (f"unused VEX statement https://example.test/demo.openvex.json#statements[2] ({PYSEC_URLLIB3} for "
            f"pkg:oci/otheragent): it matches no finding of {PRODUCT}") in text


def test_the_example_vex_suppresses_the_example_finding(osv: OsvScanner) -> None:
    vex = load_vex([EXAMPLES_SCANNING / "vex" / "htmlpage.openvex.json"], trust=None, require_signed=False)
    subject = "pkg:oci/htmlpage@sha256:" + "12" * 32 + "?tag=1.0.0"
    (finding,) = scan(cyclonedx(component(LODASH), product=subject), [osv], subject=subject, vex=vex).findings
    assert finding.id == GHSA_LODASH and finding.suppressed
    # The same statement says nothing about another agent carrying the same library.
    other = "pkg:oci/otheragent@sha256:" + "12" * 32
    report = scan(cyclonedx(component(LODASH), product=other), [osv], subject=other, vex=vex)
    assert not report.findings[0].suppressed and len(report.unused_vex) == 1


def test_subject_of() -> None:
    assert subject_of(cyclonedx(), "x") == PRODUCT
    for bom in (cyclonedx(product=None), {"bomFormat": "CycloneDX"}, {"metadata": "nope"},
                {"metadata": {"component": "nope"}}, {"metadata": {"component": {"purl": ""}}}):
        with pytest.raises(InputError, match="metadata.component.purl is missing") as exc:
            subject_of(bom, "sbom.cdx.json")
        assert exc.value.where == "sbom.cdx.json"


# --- the predicate and its strict reader ------------------------------------------------------

def test_predicate_round_trips_through_the_strict_reader(osv: OsvScanner, tmp_path: Path) -> None:
    vex = load_vex([openvex(tmp_path, not_affected(GHSA_LODASH))], trust=None, require_signed=False)
    bom = cyclonedx(*MIXED)
    report = scan(bom, [osv], subject=PRODUCT, vex=vex)
    predicate = json.loads(json.dumps(report.to_predicate()))  # as it travels, signed, in an envelope
    assert sbom_digest_of(predicate) == sbom_digest(bom) and finished_on(predicate) == report.finished
    assert predicate["subject"] == PRODUCT and predicate["summary"] == report.counts()
    assert predicate["metadata"] == {"scanStartedOn": report.started, "scanFinishedOn": report.finished}
    got = scan_input(predicate, "scan")
    assert got["scanners"] == ["agentfactory-osv"] and got["scannedOn"] == report.finished
    assert got["unscanned"] == [u.to_json() for u in report.unscanned]
    assert [f["id"] for f in got["findings"]] == [f.id for f in report.findings]
    lodash, urllib3, requests = got["findings"]
    assert lodash == {"id": GHSA_LODASH, "aliases": ["CVE-2021-23337"], "severity": "high", "package": LODASH,
                      "version": "4.17.20", "fixAvailable": True, "fixedVersions": ["4.17.21"], "suppressed": True,
                      "suppressedBy": {"status": "not_affected", "justification": "vulnerable_code_not_in_execute_path",
                                       "statement": "https://example.test/demo.openvex.json#statements[0]",
                                       "author": "Demo team"}}
    assert urllib3["suppressed"] is False and urllib3["suppressedBy"] is None
    assert requests["severity"] == "medium" and set(requests["aliases"]) == {CVE_REQUESTS, PYSEC_REQUESTS}


def _valid_predicate() -> dict[str, Any]:
    return {"scanners": [{"name": "agentfactory-osv", "version": "0.1.0", "database": {}}], "subject": PRODUCT,
            "sbom": {"digest": "sha256:" + "0" * 64}, "vex": [],
            "findings": [{"id": GHSA_LODASH, "aliases": [], "package": LODASH, "version": "4.17.20",
                          "severity": "high", "fixedVersions": ["4.17.21"], "suppressed": False}],
            "unscanned": [], "summary": {}, "metadata": {"scanFinishedOn": "2026-01-01T00:00:00.000Z"}}


def _without(key: str) -> Any:
    def change(p: dict[str, Any]) -> dict[str, Any]:
        del p[key]
        return p
    return change


def _finding(**fields: Any) -> Any:
    def change(p: dict[str, Any]) -> dict[str, Any]:
        p["findings"][0].update(fields)
        return p
    return change


@pytest.mark.parametrize(("mutate", "where", "message"), [
    (lambda p: [p], "scan", "the scan predicate is not an object"),
    (lambda p: "findings", "scan", "the scan predicate is not an object"),
    (_without("findings"), "scan", "findings must be a list"),
    (lambda p: {**p, "findings": {"0": p["findings"][0]}}, "scan", "findings must be a list"),
    (_without("unscanned"), "scan", "unscanned must be a list"),
    (_without("scanners"), "scan", "scanners must be a list"),
    (lambda p: {**p, "scanners": []}, "scan", "the scan names no scanner"),
    (lambda p: {**p, "findings": ["GHSA-35jh-r3h4-6jhm"]}, "scan: findings[0]", "must be an object"),
    (_finding(id=""), "scan: findings[0]", "id must be a non-empty string"),
    (_finding(id=7), "scan: findings[0]", "id must be a non-empty string"),
    (_finding(severity="severe"), "scan: findings[0]", "severity must be one of"),
    (_finding(severity="HIGH"), "scan: findings[0]", "severity must be one of"),
    (_finding(severity=None), "scan: findings[0]", "severity must be one of"),
    (_finding(suppressed="yes"), "scan: findings[0]", "suppressed must be true or false"),
    (_finding(suppressed=True), "scan: findings[0]", "a suppressed finding must carry suppressedBy"),
    (_finding(suppressed=True, suppressedBy="vex"), "scan: findings[0]", "must carry suppressedBy"),
    (_finding(fixedVersions="4.17.21"), "scan: findings[0]", "fixedVersions must be a list of strings"),
    (_finding(fixedVersions=[4]), "scan: findings[0]", "fixedVersions must be a list of strings"),
    (_finding(aliases="CVE-2021-23337"), "scan: findings[0]", "aliases must be a list"),
])
def test_the_strict_reader_refuses_malformed_predicates(mutate: Any, where: str, message: str) -> None:
    assert scan_input(_valid_predicate(), "scan")["findings"][0]["id"] == GHSA_LODASH  # the base is valid
    with pytest.raises(InputError) as exc:
        scan_input(mutate(_valid_predicate()), "scan")
    assert exc.value.where == where and message in exc.value.message


def test_a_finding_without_suppressed_key_is_refused_rather_than_assumed() -> None:
    predicate = _valid_predicate()
    del predicate["findings"][0]["suppressed"]
    with pytest.raises(InputError, match="suppressed must be true or false"):
        scan_input(predicate, "scan")


def test_the_reader_keeps_a_second_finding_error_located() -> None:
    predicate = _valid_predicate()
    predicate["findings"].append({**copy.deepcopy(predicate["findings"][0]), "severity": "catastrophic"})
    with pytest.raises(InputError) as exc:
        scan_input(predicate, "evidence@sha256:1")
    assert exc.value.where == "evidence@sha256:1: findings[1]"


# --- scale ------------------------------------------------------------------------------------

def test_a_huge_sbom_scans_and_reports_correctly(osv: OsvScanner) -> None:
    components = []
    for i in range(20_000):
        if i == 7_001:
            components.append(component(LODASH))
        elif i == 13_002:
            components.append(component(REQUESTS))
        elif i == 19_999:
            components.append(component(URLLIB3))
        elif i % 4 == 0:
            components.append(component(None, name=f"file-{i}", version="1"))  # no purl: unscanned
        elif i % 4 == 1:
            components.append(component(f"pkg:npm/%40scope/pkg-{i}@1.0.{i}"))
        elif i % 4 == 2:
            components.append(component(f"pkg:pypi/pkg-{i}@{i}.0"))
        else:
            components.append(component(f"pkg:cargo/crate-{i}@0.{i}.0"))
    bom = cyclonedx(*components)
    report = scan(bom, [osv], subject=PRODUCT)
    assert [f.id for f in report.findings] == [GHSA_LODASH, PYSEC_URLLIB3, GHSA_REQUESTS]
    assert len(report.unscanned) == 5_000  # every purl-less component, once, in SBOM order
    assert report.unscanned[0].component == "file-0@1" and report.unscanned[-1].component == "file-19996@1"
    assert report.counts()["high"] == 2 and report.counts()["medium"] == 1
    got = scan_input(json.loads(json.dumps(report.to_predicate())), "scan")
    assert len(got["findings"]) == 3 and len(got["unscanned"]) == 5_000
    assert report.sbom_digest == sbom_digest(bom)


def test_identical_unscanned_components_are_reported_once(osv: OsvScanner) -> None:
    same = component(None, name="blob", version="1")
    report = scan(cyclonedx(same, dict(same), component(None, name="blob", version="2")), [osv], subject=PRODUCT)
    assert [u.component for u in report.unscanned] == ["blob@1", "blob@2"]


# --- the OSV scanner's database ---------------------------------------------------------------

def test_a_missing_database_is_a_config_error_saying_how_to_load_one(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-osv"
    with pytest.raises(ConfigError) as exc:
        OsvScanner(missing)
    message = str(exc.value)
    assert str(missing) in message and "agentfactory osv import" in message and "AGENTFACTORY_OSV_DB" in message


def test_an_empty_database_is_a_config_error(tmp_path: Path) -> None:
    empty = tmp_path / "osv"
    empty.mkdir()
    with pytest.raises(ConfigError, match="holds no usable advisory") as exc:
        OsvScanner(empty)
    assert str(empty) in str(exc.value) and "would prove nothing" in str(exc.value)
    (empty / "broken.json").write_text("{not json")  # only unusable records: still nothing to match against
    with pytest.raises(ConfigError, match="holds no usable advisory"):
        OsvScanner(empty)


def test_a_malformed_record_is_skipped_with_a_warning_naming_it(tmp_path: Path) -> None:
    folder = tmp_path / "osv"
    shutil.copytree(EXAMPLE_OSV, folder)
    (folder / "broken.json").write_text('{"id": "GHSA-broken", "affected": [')
    (folder / "no-id.yaml").write_text("summary: a record without an id\naffected: []\n")
    report = scan(cyclonedx(component(LODASH)), [OsvScanner(folder)], subject=PRODUCT)
    assert [f.id for f in report.findings] == [GHSA_LODASH]  # the scan went on with the good records
    assert report.scanners[0].database["advisories"] == 5
    assert len(report.warnings) == 2
    assert any(str(folder / "broken.json") in w and "skipped" in w for w in report.warnings), report.warnings
    assert any(str(folder / "no-id.yaml") in w and "no 'id' string" in w for w in report.warnings), report.warnings
    assert any(line.startswith("  warning: ") and "broken.json" in line
               for line in render_text(report, Gate()))
    # The warnings survive the index cache: a second open reads the cache and still names the files.
    again = OsvScanner(folder)
    assert not again.db.rebuilt and sorted(again.db.warnings) == sorted(report.warnings)


def test_the_default_database_comes_from_the_environment() -> None:
    # conftest points AGENTFACTORY_OSV_DB at the example database.
    assert OsvScanner().folder == EXAMPLE_OSV.resolve()


def test_open_scanners(tmp_path: Path) -> None:
    (default, *others) = open_scanners()
    assert isinstance(default, OsvScanner)
    assert all(isinstance(s, GrypeScanner | TrivyScanner) and s.available() for s in others)
    (osv,) = open_scanners(["osv", "osv"], osv_db=EXAMPLE_OSV)
    assert isinstance(osv, OsvScanner)
    with pytest.raises(ConfigError, match="unknown scanner 'snyk'"):
        open_scanners(["snyk"])
    with pytest.raises(ConfigError, match="no OSV database at"):
        open_scanners(["osv"], osv_db=tmp_path / "missing")


@pytest.mark.parametrize("scanner", [GrypeScanner, TrivyScanner])
def test_an_external_scanner_named_but_not_installed_is_an_error(
        scanner: type[GrypeScanner | TrivyScanner], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTFACTORY_TOOLS_BIN", str(tmp_path / "no-tools"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert not scanner().available()
    with pytest.raises(ScannerUnavailable, match=f"{scanner.program} is not installed: run `make tools`"):
        open_scanners([scanner.program])
    (default,) = open_scanners()  # left out of the default set, never a silent "0 findings"
    assert isinstance(default, OsvScanner)


@pytest.mark.parametrize(("config", "fail_on", "unfixed", "severities"), [
    ({}, "high", False, ["high", "critical"]),
    ({"blocking_severities": ["high", "critical"]}, "high", False, ["high", "critical"]),
    ({"blocking_severities": ["critical"], "ignore_unfixed": True}, "critical", True, ["critical"]),
    ({"blocking_severities": ["medium", "high", "critical"]}, "medium", False, ["medium", "high", "critical"]),
    ({"blocking_severities": []}, "none", False, []),
    ({"blocking_severities": ["low", "critical"]}, "low", False, ["low", "critical"]),  # not "low and above"
    (None, "high", False, ["high", "critical"]),
])
def test_the_gate_of_the_artifact_policy(config: Any, fail_on: str, unfixed: bool, severities: list[str]) -> None:
    gate = Gate.from_policy(config)
    assert (gate.fail_on, gate.ignore_unfixed, sorted(gate.severities)) == (fail_on, unfixed, sorted(severities))
    medium = Finding("CVE-1", "pkg:npm/x@1", "1", severity="medium")
    assert gate.blocks(medium) == ("medium" in severities)
