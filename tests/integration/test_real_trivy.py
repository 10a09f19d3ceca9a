"""The real Trivy (v0.74.0 from `make tools`) through the adapter, offline, on a database built from OSV.

`agentfactory.scan.trivydb` writes a trivy-db (schema 2) bbolt database from the committed OSV
records; the real `trivy sbom --skip-db-update` on an SBOM written by the pipeline's own SBOM stage
finds what the embedded matcher finds (named by CVE, the advisory ids as aliases). A missing,
corrupt or other-schema database fails closed with a message naming the folder and the fix, never
as "0 findings", and settings in the caller's environment cannot send the scan elsewhere. A
missing binary fails these tests (`require`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers import EXAMPLE_OSV
from peer_tools import require
from test_real_grype import VERSIONS_DEPENDENCIES, pipeline_sbom, versions_osv

from agentfactory.peertools import pinned_version
from agentfactory.scan.errors import ScannerFailed, ScannerUnavailable
from agentfactory.scan.model import Finding, severity_rank
from agentfactory.scan.osv import OsvDatabase
from agentfactory.scan.peerscan import run_peer
from agentfactory.scan.trivy import (
    OFFLINE_FLAGS,
    parse_trivy_cyclonedx,
    run_trivy,
    scan_trivy,
    trivy_db_metadata,
    trivy_version,
)
from agentfactory.scan.trivydb import SCHEMA_VERSION, build_trivy_db


@pytest.fixture
def trivy() -> Path:
    return require("trivy")


@pytest.fixture
def cache(tmp_path: Path, trivy: Path) -> Path:
    """A Trivy cache folder holding the database built from the example OSV records."""
    folder = tmp_path / "trivy-cache"
    build_trivy_db(EXAMPLE_OSV, folder)
    return folder


def set_schema(cache: Path, version: int) -> None:
    meta_path = cache / "db" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["Version"] = version
    meta_path.write_text(json.dumps(meta))


def test_trivy_is_the_pinned_version(trivy: Path) -> None:
    assert trivy_version() == pinned_version("trivy") == "v0.74.0"


def test_database_schema_is_the_binary_s(tmp_path: Path, cache: Path) -> None:
    """Trivy reads our metadata as schema 2, and refuses any other with --skip-db-update, naming the one it expects."""
    assert trivy_db_metadata(cache)["Version"] == SCHEMA_VERSION == 2
    sbom = pipeline_sbom(tmp_path / "agent.cdx.json")
    set_schema(cache, 1)
    with pytest.raises(ScannerFailed, match=r"old DB schema. Local DB: 1, Expected: 2"):
        scan_trivy(sbom, cache_dir=cache)
    set_schema(cache, 3)
    with pytest.raises(ScannerFailed, match=r"Local DB: 3, Expected: 2"):
        scan_trivy(sbom, cache_dir=cache)


def test_run_trivy_for_real(tmp_path: Path, cache: Path) -> None:
    """The pipeline's SBOM is accepted and judged like the embedded matcher judges it.

    Trivy keys a vulnerability by its CVE (PYSEC-2023-74 and GHSA-j8r2-6x86-q33q are both
    CVE-2023-32681 for requests), so each Trivy finding must match the embedded findings for the
    same package that share an id, with the most severe of their ratings.
    """
    sbom = pipeline_sbom(tmp_path / "agent.cdx.json")
    result = scan_trivy(sbom, cache_dir=cache)
    osv, _ = OsvDatabase(EXAMPLE_OSV).scan_sbom(json.loads(sbom.read_bytes()))
    assert {(f.id, f.package, f.severity, f.cvss_score) for f in result.findings} == {
        ("CVE-2021-23337", "pkg:npm/lodash@4.17.20", "high", 7.2),
        ("CVE-2023-32681", "pkg:pypi/requests@2.28.1", "medium", 6.1),
        ("CVE-2023-43804", "pkg:pypi/urllib3@1.26.5", "high", 8.1),
        ("CVE-2020-28493", "pkg:pypi/jinja2@2.11.2", "unknown", None)}
    for finding in result.findings:
        same = [o for o in osv if o.package == finding.package and set(o.names) & set(finding.names)]
        assert same, finding
        assert {o.id for o in same} <= set(finding.aliases)
        assert max(severity_rank(o.severity) for o in same) == severity_rank(finding.severity)
        assert set(finding.fixed_versions) == {v for o in same for v in o.fixed_versions}
    assert {o.id for o in osv} <= {a for f in result.findings for a in f.aliases}
    assert result.version == "v0.74.0"
    assert result.database["metadata"]["Version"] == 2
    assert result.database["builtFrom"]["osv"] == str(EXAMPLE_OSV.resolve())
    assert run_trivy(sbom, cache_dir=cache) == result.findings


def test_cyclonedx_output_reads_the_same(tmp_path: Path, cache: Path) -> None:
    """Trivy's CycloneDX output (vulnerabilities[] with affects refs) reads to the same vulnerabilities."""
    sbom = pipeline_sbom(tmp_path / "agent.cdx.json")
    run = run_peer("trivy", ["sbom", str(sbom), "--format", "cyclonedx", "--scanners", "vuln", "--quiet",
                             "--cache-dir", str(cache), *OFFLINE_FLAGS])
    assert run.returncode == 0, run.stderr
    from_cdx = parse_trivy_cyclonedx(run.stdout, "trivy.cdx.json")

    def ids(findings: list[Finding]) -> set[tuple[str, str]]:
        return {(f.id, f.package) for f in findings}

    assert ids(from_cdx) == ids(scan_trivy(sbom, cache_dir=cache).findings)


def test_versions_lists_and_python_names(tmp_path: Path, trivy: Path) -> None:
    """A `versions` list becomes `=V` advisories Trivy matches exactly. A known difference, pinned: Trivy folds a
    Python name's case and `_` only (trivy-db's NormalizePkgName), PEP 503 also folds `.`, so the record's
    "Zope_Interface" is not found for an SBOM that says "zope.interface" (the embedded matcher and Grype find it),
    and is for one that says "zope_interface"."""
    osv = versions_osv(tmp_path / "osv")
    build_trivy_db(osv, tmp_path / "cache")
    sbom = pipeline_sbom(tmp_path / "agent.cdx.json", VERSIONS_DEPENDENCIES)
    found = scan_trivy(sbom, cache_dir=tmp_path / "cache").findings
    assert [(f.id, f.package, f.severity, f.aliases) for f in found] == [
        ("CVE-2099-0001", "pkg:npm/left-pad@1.1.0", "high", ("TEST-V",))]
    underscored = pipeline_sbom(tmp_path / "underscored.cdx.json", tuple(
        ("zope_interface", version, purl) for name, version, purl in VERSIONS_DEPENDENCIES if name == "zope.interface"))
    assert sorted(f.version for f in scan_trivy(underscored, cache_dir=tmp_path / "cache").findings) == ["4.0", "5.1"]


def test_sbom_with_nothing_vulnerable(tmp_path: Path, cache: Path) -> None:
    sbom = pipeline_sbom(tmp_path / "fixed.cdx.json", (("lodash", "4.17.21", "pkg:npm/lodash@4.17.21"),))
    assert scan_trivy(sbom, cache_dir=cache).findings == []


def test_no_database_fails_closed(tmp_path: Path, trivy: Path) -> None:
    with pytest.raises(ScannerFailed) as caught:
        scan_trivy(pipeline_sbom(tmp_path / "agent.cdx.json"), cache_dir=tmp_path / "empty")
    message = str(caught.value)
    assert "no usable vulnerability database (trivy.db, metadata.json missing)" in message
    assert "--skip-db-update cannot be specified on the first run" in message  # what Trivy itself said
    assert f"vulnerability database in {tmp_path / 'empty' / 'db'}" in message
    assert "python -m agentfactory.scan.trivydb" in message and "AGENTFACTORY_TRIVY_CACHE" in message


def test_corrupt_database_fails_closed(tmp_path: Path, cache: Path) -> None:
    db = cache / "db" / "trivy.db"
    data = db.read_bytes()
    db.write_bytes(data[:4096 * 3] + bytes(len(data) - 4096 * 3))  # the meta pages survive, the tree is zeroed
    with pytest.raises(ScannerFailed, match=r"trivy sbom .* failed \(exit 2\): panic: assertion failed: Page "
                                            r"expected to be: \d+, but self identifies as 0"):
        scan_trivy(pipeline_sbom(tmp_path / "agent.cdx.json"), cache_dir=cache)
    db.write_bytes(b"\0" * 8192)
    with pytest.raises(ScannerFailed, match=r"failed \(exit 1\): .*failed to open db: invalid database"):
        scan_trivy(pipeline_sbom(tmp_path / "agent2.cdx.json"), cache_dir=cache)


def test_environment_cannot_send_the_scan_elsewhere(tmp_path: Path, cache: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """TRIVY_* settings in the caller's shell (a server to ask, another cache) do not reach the scanner."""
    monkeypatch.setenv("TRIVY_SERVER", "http://127.0.0.1:9")
    monkeypatch.setenv("TRIVY_CACHE_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("TRIVY_SEVERITY", "CRITICAL")
    findings = scan_trivy(pipeline_sbom(tmp_path / "agent.cdx.json"), cache_dir=cache).findings
    assert len(findings) == 4


def test_large_database_is_read_through_branch_pages(tmp_path: Path, trivy: Path) -> None:
    """3000 packages: the bbolt tree needs branch pages and out-of-line buckets; Trivy reads both ends of it."""
    osv = tmp_path / "osv"
    osv.mkdir()
    for i in range(3000):
        record: dict[str, Any] = {
            "id": f"TEST-{i}", "modified": "2024-01-01T00:00:00Z", "summary": f"synthetic {i}",
            "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:N"}],
            "affected": [{"package": {"ecosystem": "npm", "name": f"pkg-{i:04d}"},
                          "ranges": [{"type": "SEMVER", "events": [{"introduced": "1.0.0"}, {"fixed": "1.4.0"}]}]}]}
        (osv / f"TEST-{i}.json").write_text(json.dumps(record))
    cache = tmp_path / "cache"
    summary = build_trivy_db(osv, cache)
    assert summary["advisories"] == 3000 and summary["bytes"] > 100 * 4096
    sbom = pipeline_sbom(tmp_path / "agent.cdx.json", tuple(
        (f"pkg-{n}", version, f"pkg:npm/pkg-{n}@{version}")
        for n, version in (("0000", "1.2.0"), ("2999", "1.2.0"), ("1500", "1.4.0"), ("1777", "1.0.0"))))
    found = {(f.id, f.package, f.severity) for f in scan_trivy(sbom, cache_dir=cache).findings}
    assert found == {("TEST-0", "pkg:npm/pkg-0000@1.2.0", "critical"), ("TEST-2999", "pkg:npm/pkg-2999@1.2.0",
                                                                        "critical"),
                     ("TEST-1777", "pkg:npm/pkg-1777@1.0.0", "critical")}


def test_trivy_looks_packages_up_by_component_name(tmp_path: Path, cache: Path) -> None:
    """A known difference, pinned: Trivy (like Grype) takes a CycloneDX component's package name from `name`.

    A template that names a dependency otherwise than its purl (here "urllib3-legacy" for
    pkg:pypi/urllib3@1.26.5) is matched by the embedded matcher (by purl) and missed by Trivy.
    """
    sbom = pipeline_sbom(tmp_path / "agent.cdx.json", (("urllib3-legacy", "1.26.5", "pkg:pypi/urllib3@1.26.5"),))
    assert scan_trivy(sbom, cache_dir=cache).findings == []
    osv, _ = OsvDatabase(EXAMPLE_OSV).scan_sbom(json.loads(sbom.read_bytes()))
    assert [f.id for f in osv] == ["PYSEC-2023-192"]
    renamed = pipeline_sbom(tmp_path / "renamed.cdx.json", (("urllib3", "1.26.5", "pkg:pypi/urllib3@1.26.5"),))
    assert [f.id for f in scan_trivy(renamed, cache_dir=cache).findings] == ["CVE-2023-43804"]


def test_malformed_sbom_is_the_scanner_s_failure(tmp_path: Path, cache: Path) -> None:
    bad = tmp_path / "bad.cdx.json"
    bad.write_text('{"bomFormat": "CycloneDX", "specVersion": "1.6", "components": {}}')
    with pytest.raises(ScannerFailed, match=r"trivy sbom .*bad.cdx.json .* failed \(exit 1\)"):
        scan_trivy(bad, cache_dir=cache)


def test_timeout_kills_the_scan(tmp_path: Path, cache: Path) -> None:
    with pytest.raises(ScannerFailed, match="trivy did not finish within 0.001 s"):
        scan_trivy(pipeline_sbom(tmp_path / "agent.cdx.json"), cache_dir=cache, timeout=0.001)


def test_missing_binary_names_make_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTFACTORY_TOOLS_BIN", str(tmp_path / "empty-bin"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty-path"))
    with pytest.raises(ScannerUnavailable, match=r"trivy is not installed: run `make tools`, which builds trivy "
                                                 r"v0.74.0 \(from github.com/aquasecurity/trivy/cmd/trivy\)"):
        scan_trivy(pipeline_sbom(tmp_path / "agent.cdx.json"), cache_dir=tmp_path / "cache")
