"""VEX: OpenVEX and CycloneDX statements suppress only this product's findings, visibly and for a stated reason."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agentfactory.errors import InputError
from agentfactory.scan.model import Finding, Suppression
from agentfactory.scan.vex import apply_vex, parse_vex, unused_statements

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"  # see tests/fixtures/SOURCES.md
DEMO = FIXTURES / "openvex" / "demo.vex.json"
CDX_VULNS = FIXTURES / "cyclonedx" / "valid-vulnerability-1.6.json"
AGENT = "pkg:oci/wordstats@sha256:" + "ab" * 32
OTHER = "pkg:oci/other@sha256:" + "cd" * 32

REQUESTS = Finding(id="GHSA-j8r2-6x86-q33q", aliases=("CVE-2023-32681", "PYSEC-2023-74"),
                   package="pkg:pypi/requests@2.30.0", version="2.30.0", severity="medium",
                   fixed_versions=("2.31.0",), source="osv")
WERKZEUG = Finding(id="CVE-2019-14806", package="pkg:pypi/werkzeug@0.11", version="0.11", severity="high",
                   fixed_versions=("0.15.3",), source="trivy")


def _openvex(*statements: dict[str, Any], doc_id: str = "https://example.test/vex-1") -> bytes:
    return json.dumps({"@context": "https://openvex.dev/ns/v0.2.0", "@id": doc_id, "author": "Wordstats team",
                       "timestamp": "2024-01-01T00:00:00Z", "version": 1, "statements": list(statements)}).encode()


def _st(name: str, status: str, product: str = AGENT, **extra: Any) -> dict[str, Any]:
    return {"vulnerability": {"name": name}, "products": [{"@id": product}], "status": status, **extra}


NOT_AFFECTED = _st("CVE-2023-32681", "not_affected", justification="vulnerable_code_not_in_execute_path")


def test_demo_fixture_parses() -> None:
    (st,) = parse_vex(DEMO.read_bytes(), DEMO)
    assert (st.vulnerability, st.status, st.author) == ("CVE-2014-123456", "fixed", "Wolfi J Inkinson")
    assert st.products == ("pkg:apk/distro/git@2.39.0-r1",)  # both arch-qualified purls are the same product
    assert st.timestamp is not None and st.timestamp.isoformat() == "2023-12-04T21:55:19.945015-06:00"
    assert st.where.endswith("vex-d7653e1c3ccc092c02e2cfd2b12549be29264ff28f9f704f599613b007584dbe#statements[0]")
    git = Finding(id="CVE-2014-123456", package="pkg:apk/distro/git@2.39.0-r1", version="2.39.0-r1")
    (applied,) = apply_vex([git], [st], "pkg:apk/distro/git@2.39.0-r1?arch=aarch64")  # qualifiers ignored
    assert applied.suppressed_by == Suppression("fixed", "", st.where, "Wolfi J Inkinson")
    assert apply_vex([git], [st], AGENT) == [git] and not apply_vex([git], [st], AGENT)[0].suppressed
    assert unused_statements([git], [st], AGENT) == [st]


def test_not_affected_with_justification_suppresses_by_alias() -> None:
    statements = parse_vex(_openvex(NOT_AFFECTED), "vex.json")
    findings = apply_vex([REQUESTS, WERKZEUG], statements, AGENT + "?repository_url=ghcr.io/acme/wordstats")
    assert [f.id for f in findings] == ["GHSA-j8r2-6x86-q33q", "CVE-2019-14806"]  # suppressed findings stay listed
    assert findings[0].suppressed_by == Suppression(
        "not_affected", "vulnerable_code_not_in_execute_path", "https://example.test/vex-1#statements[0]",
        "Wordstats team")
    assert findings[0].to_json()["suppressed"] is True and not findings[1].suppressed
    assert unused_statements(findings, statements, AGENT) == []


def test_ghsa_statement_matches_cve_finding_via_statement_aliases() -> None:
    stmt = _st("GHSA-gq9m-qvpx-68hc", "not_affected", impact_statement="the debugger is never enabled")
    stmt["vulnerability"]["aliases"] = ["CVE-2019-14806"]
    (f,) = apply_vex([WERKZEUG], parse_vex(_openvex(stmt), "v"), AGENT)
    assert f.suppressed_by is not None and f.suppressed_by.justification == "the debugger is never enabled"


def test_statement_for_another_product_does_not_apply_and_is_reported() -> None:
    statements = parse_vex(_openvex(_st("CVE-2023-32681", "not_affected", OTHER,
                                        justification="component_not_present")), "vex.json")
    (f,) = apply_vex([REQUESTS], statements, AGENT)
    assert not f.suppressed
    assert unused_statements([REQUESTS], statements, AGENT) == statements
    other_version = "pkg:oci/wordstats@sha256:" + "ef" * 32
    assert not apply_vex([REQUESTS], parse_vex(_openvex(NOT_AFFECTED), "v"), other_version)[0].suppressed


@pytest.mark.parametrize(("status", "suppressed"), [
    ("fixed", True), ("affected", False), ("under_investigation", False)])
def test_statuses(status: str, suppressed: bool) -> None:
    (f,) = apply_vex([WERKZEUG], parse_vex(_openvex(_st("CVE-2019-14806", status)), "v"), AGENT)
    assert f.suppressed is suppressed
    if suppressed:
        assert f.suppressed_by == Suppression("fixed", "", "https://example.test/vex-1#statements[0]",
                                              "Wordstats team")


def test_latest_statement_wins() -> None:
    early = {**NOT_AFFECTED, "timestamp": "2024-02-01T00:00:00Z"}
    late = _st("GHSA-j8r2-6x86-q33q", "affected", action_statement="upgrade", timestamp="2024-03-01T00:00:00+01:00")
    statements = parse_vex(_openvex(late, early), "v")  # document order is not time order
    assert not apply_vex([REQUESTS], statements, AGENT)[0].suppressed
    statements = parse_vex(_openvex({**late, "timestamp": "2024-01-15T00:00:00Z"}, early), "v")
    assert apply_vex([REQUESTS], statements, AGENT)[0].suppressed


def test_subcomponents_narrow_the_statement() -> None:
    stmt = _st("CVE-2019-14806", "not_affected", justification="vulnerable_code_not_present")
    stmt["products"][0]["subcomponents"] = [{"@id": "pkg:pypi/Werkzeug@0.11"}]
    statements = parse_vex(_openvex(stmt), "v")
    assert apply_vex([WERKZEUG], statements, AGENT)[0].suppressed
    elsewhere = Finding(id="CVE-2019-14806", package="pkg:pypi/werkzeug@0.10", version="0.10")
    assert not apply_vex([elsewhere], statements, AGENT)[0].suppressed


def _cyclonedx(state: str, **analysis: str) -> bytes:
    return json.dumps({
        "bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1,
        "serialNumber": "urn:uuid:3e671687-395b-41f5-a30f-a58921a69b79",
        "metadata": {"timestamp": "2024-01-01T00:00:00Z", "component": {"type": "application", "name": "wordstats",
                                                                          "purl": AGENT, "bom-ref": "agent"}},
        "components": [{"bom-ref": "requests", "type": "library", "name": "requests", "version": "2.30.0",
                        "purl": "pkg:pypi/requests@2.30.0"}],
        "vulnerabilities": [
            {"id": "CVE-2023-32681", "analysis": {"state": state, **analysis}, "affects": [{"ref": "requests"}]},
            {"id": "CVE-2099-0001", "description": "no analysis: not a VEX statement",
             "affects": [{"ref": "requests"}]},
        ]}).encode()


@pytest.mark.parametrize(("state", "analysis", "status"), [
    ("not_affected", {"justification": "code_not_reachable"}, "not_affected"),
    ("false_positive", {}, "not_affected"),
    ("resolved", {}, "fixed"),
    ("exploitable", {}, None),
    ("in_triage", {}, None),
])
def test_cyclonedx_vex(state: str, analysis: dict[str, str], status: str | None) -> None:
    statements = parse_vex(_cyclonedx(state, **analysis), "bom.vex.json")
    assert len(statements) == 1 and statements[0].subcomponents == ("pkg:pypi/requests@2.30.0",)
    (f,) = apply_vex([REQUESTS], statements, AGENT)
    assert (f.suppressed_by.status if f.suppressed_by else None) == status
    if f.suppressed_by is not None:
        assert f.suppressed_by.statement == "urn:uuid:3e671687-395b-41f5-a30f-a58921a69b79#vulnerabilities[0]"
    assert unused_statements([REQUESTS], statements, OTHER) == statements


def test_cyclonedx_fixture_reads_as_vex() -> None:
    """The CycloneDX conformance BOM carries an analysis; without a product it names the component itself."""
    (st,) = parse_vex(CDX_VULNS.read_bytes(), CDX_VULNS)
    assert (st.vulnerability, st.aliases, st.status, st.justification) == (
        "SNYK-JAVA-COMFASTERXMLJACKSONCORE-32111", ("CVE-2018-7489",), "not_affected", "code_not_reachable")
    assert st.products == ("pkg:maven/com.fasterxml.jackson.core/jackson-databind@2.9.4",)
    assert st.timestamp is not None and st.timestamp.isoformat() == "2022-02-01T00:00:00+00:00"  # lastUpdated


@pytest.mark.parametrize(("data", "message"), [
    (b"[]", "not a JSON object"),
    (b'{"statements": []}', "neither an OpenVEX document"),
    (b'{"@context": "https://example.com", "statements": []}', "not an OpenVEX document"),
    (_openvex(_st("CVE-1", "not_affected")), r"statements\[0\]: status not_affected needs a justification"),
    (_openvex(_st("CVE-1", "not_affected", justification="trust_me")), "justification 'trust_me' is not one of"),
    (_openvex(_st("CVE-1", "wontfix")), "status 'wontfix' is not one of"),
    (_openvex({"vulnerability": {"name": "CVE-1"}, "status": "fixed", "products": []}),
     "products must name at least one product"),
    (_openvex({"vulnerability": {"name": "CVE-1"}, "status": "fixed", "products": [{}]}),
     r"products\[0\]: needs an @id or identifiers.purl"),
    (_openvex({"vulnerability": "CVE-1", "status": "fixed", "products": [{"@id": AGENT}]}),
     "vulnerability must be an object"),
    (_openvex(_st("CVE-1", "fixed", "pkg:"), ), "is not a package URL"),
    (_openvex(_st("CVE-1", "fixed", timestamp="2024-01-01T00:00:00")), "has no time zone"),
    (_openvex(_st("CVE-1", "fixed", timestamp="yesterday")), "is not RFC 3339"),
    (_cyclonedx("not_affected"), r"vulnerabilities\[0\]: status not_affected needs a justification"),
    (_cyclonedx("maybe"), "state 'maybe' is not one of"),
    (b'{"bomFormat": "SPDX"}', 'bomFormat must be "CycloneDX"'),
])
def test_malformed_vex_refused(data: bytes, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_vex(data, "vex.json")


def test_oversized_vex_refused() -> None:
    with pytest.raises(InputError, match="the VEX document is .* bytes; the limit is"):
        parse_vex(b" " * (16 * 1024 * 1024 + 1), "vex.json")
