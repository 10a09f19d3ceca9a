"""The real Grype (v0.121.3 from `make tools`) through the adapter, offline, on a database built from OSV.

`agentfactory.scan.grypedb` writes a Grype schema-v6 database from the committed OSV records; the
real `grype db import` accepts it, and `grype sbom:FILE` on an SBOM written by the pipeline's own
SBOM stage finds what the embedded matcher finds. Every way the database can be unusable (none,
stale, wrong schema) and a report that shows no valid database fail closed with a message naming
the folder and the fix, never as "0 findings". A missing binary fails these tests (`require`).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from helpers import EXAMPLE_OSV, EXAMPLES_SCANNING
from peer_tools import require

from agentfactory.peertools import pinned_version
from agentfactory.scan.errors import ScannerFailed, ScannerUnavailable
from agentfactory.scan.grype import (
    _database,
    grype_db_status,
    grype_version,
    import_grype_db,
    run_grype,
    scan_grype,
)
from agentfactory.scan.grypedb import ADDITION, MODEL, REVISION, SCHEMA, build_grype_db
from agentfactory.scan.model import Finding
from agentfactory.scan.osv import OsvDatabase
from agentfactory.scan.osvexport import export
from agentfactory.scan.peerscan import run_peer
from agentfactory.template import Dependency, load_template
from pipelines.sbom import build_sbom

DIGEST = "sha256:" + "ab" * 32
# Affected versions of every committed advisory, and fixed ones beside them that must not match.
DEPENDENCIES = (
    ("lodash", "4.17.20", "pkg:npm/lodash@4.17.20"),  # GHSA-35jh-r3h4-6jhm, high
    ("lodash-es", "4.17.21", "pkg:npm/lodash-es@4.17.21"),  # fixed
    ("requests", "2.28.1", "pkg:pypi/requests@2.28.1"),  # PYSEC-2023-74 and GHSA-j8r2-6x86-q33q
    ("urllib3", "1.26.5", "pkg:pypi/urllib3@1.26.5"),  # PYSEC-2023-192
    ("Jinja2", "2.11.2", "pkg:pypi/jinja2@2.11.2"),  # PYSEC-2021-66 (no CVSS: unknown)
    ("urllib3", "2.0.6", "pkg:pypi/urllib3@2.0.6"),  # fixed
)


def pipeline_sbom(path: Path, deps: tuple[tuple[str, str, str], ...] = DEPENDENCIES) -> Path:
    """The pipeline's own CycloneDX 1.6 SBOM (pipelines.sbom.build_sbom) of the example agent with `deps`."""
    template = load_template(EXAMPLES_SCANNING / "templates" / "htmlpage", "htmlpage/agent.yaml")
    template = replace(template, dependencies=tuple(
        Dependency(name, version, purl, "MIT", f"vendor/{name}", "0" * 64) for name, version, purl in deps))
    toolchain = {"name": "zig", "version": "0.13.0", "package": "ziglang==0.13.0", "target": "wasm32-wasi"}
    path.write_bytes(build_sbom(template, digest=DIGEST, toolchain=toolchain, epoch=0, commit=None))
    return path


# A record with what the committed ones lack: a `versions` list with no range (npm), a `last_affected`
# window and a listed version outside it (PyPI, under a non-canonical name), and only a GHSA rating word.
VERSIONS_RECORD = {
    "id": "TEST-V", "modified": "2024-01-01T00:00:00Z", "summary": "versions only", "aliases": ["CVE-2099-0001"],
    "database_specific": {"severity": "HIGH"},
    "affected": [
        {"package": {"ecosystem": "npm", "name": "left-pad"}, "versions": ["1.1.0", "1.3.0"]},
        {"package": {"ecosystem": "PyPI", "name": "Zope_Interface"}, "versions": ["4.0"],
         "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "5.0"}, {"last_affected": "5.2"}]}]}]}
VERSIONS_DEPENDENCIES = (
    ("left-pad", "1.1.0", "pkg:npm/left-pad@1.1.0"), ("left-pad", "1.2.0", "pkg:npm/left-pad@1.2.0"),
    ("zope.interface", "5.1", "pkg:pypi/zope.interface@5.1"), ("zope.interface", "4.0", "pkg:pypi/zope.interface@4.0"),
    ("zope.interface", "5.3", "pkg:pypi/zope.interface@5.3"))


def versions_osv(folder: Path) -> Path:
    folder.mkdir()
    (folder / "TEST-V.json").write_text(json.dumps(VERSIONS_RECORD))
    return folder


def comparable(f: Finding) -> tuple[object, ...]:
    """What two scanners must agree on (aliases and summaries differ by source: Grype keeps CVE and GHSA ids only)."""
    return f.id, f.package, f.version, f.severity, f.cvss_score, f.cvss_vector, frozenset(f.fixed_versions)


@pytest.fixture
def grype() -> Path:
    return require("grype")


@pytest.fixture
def db_dir(tmp_path: Path, grype: Path) -> Path:
    """A Grype database folder loaded with the database built from the example OSV records."""
    folder = tmp_path / "grype-db"
    build_grype_db(EXAMPLE_OSV, tmp_path / "osv.db")
    import_grype_db(tmp_path / "osv.db", folder)
    return folder


def test_grype_is_the_pinned_version(grype: Path) -> None:
    assert grype_version() == pinned_version("grype") == "v0.121.3"
    doc = json.loads(run_peer("grype", ["version", "-o", "json"]).stdout)
    assert doc["application"] == "grype"
    assert doc["supportedDbSchema"] == MODEL


def test_database_schema_is_the_binary_s(tmp_path: Path, grype: Path) -> None:
    """Grype records its own schema version (client_version) on import: it must be the one we write."""
    summary = build_grype_db(EXAMPLE_OSV, tmp_path / "osv.db")
    assert summary["schema"] == f"v{MODEL}.{REVISION}.{ADDITION}"
    status = import_grype_db(tmp_path / "osv.db", tmp_path / "db")
    assert status["valid"] is True and status["schemaVersion"] == summary["schema"]
    imported = json.loads((tmp_path / "db" / "6" / "import.json").read_text())
    assert imported["client_version"] == summary["schema"]
    # Hydration (gorm's AutoMigrate) added tables and indexes, and left ours as we wrote them.
    ours = sqlite3.connect(":memory:")
    ours.executescript(SCHEMA)
    hydrated = sqlite3.connect(tmp_path / "db" / "6" / "vulnerability.db")
    tables = [r[0] for r in ours.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    for table in tables:
        assert (hydrated.execute(f"SELECT sql FROM sqlite_master WHERE name='{table}'").fetchone()
                == ours.execute(f"SELECT sql FROM sqlite_master WHERE name='{table}'").fetchone())
    assert {"operating_systems", "affected_cpe_handles", "vulnerability_aliases"} <= {
        r[0] for r in hydrated.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def test_run_grype_for_real(tmp_path: Path, db_dir: Path) -> None:
    """The pipeline's SBOM is accepted and judged like the embedded matcher judges it, finding for finding."""
    sbom = pipeline_sbom(tmp_path / "agent.cdx.json")
    result = scan_grype(sbom, db_dir=db_dir)
    osv, unscanned = OsvDatabase(EXAMPLE_OSV).scan_sbom(json.loads(sbom.read_bytes()))
    assert not unscanned

    assert sorted(map(comparable, result.findings), key=str) == sorted(map(comparable, osv), key=str)
    assert {(f.id, f.package) for f in result.findings} == {
        ("GHSA-35jh-r3h4-6jhm", "pkg:npm/lodash@4.17.20"), ("GHSA-j8r2-6x86-q33q", "pkg:pypi/requests@2.28.1"),
        ("PYSEC-2023-74", "pkg:pypi/requests@2.28.1"), ("PYSEC-2023-192", "pkg:pypi/urllib3@1.26.5"),
        ("PYSEC-2021-66", "pkg:pypi/jinja2@2.11.2")}
    lodash = next(f for f in result.findings if f.id == "GHSA-35jh-r3h4-6jhm")
    assert (lodash.severity, lodash.aliases, lodash.source) == ("high", ("CVE-2021-23337",), "grype")
    # The report names the database it used: ours, built from this OSV folder.
    assert result.version == "v0.121.3"
    assert result.database["schema"] == f"v{MODEL}.{REVISION}.{ADDITION}"
    assert result.database["providers"]["agentfactory-osv"]["input"] == export(EXAMPLE_OSV).digest
    assert run_grype(sbom, db_dir=db_dir) == result.findings


def test_versions_lists_and_last_affected_match_like_the_embedded_matcher(tmp_path: Path, grype: Path) -> None:
    osv = versions_osv(tmp_path / "osv")
    build_grype_db(osv, tmp_path / "v.db")
    import_grype_db(tmp_path / "v.db", tmp_path / "db")
    sbom = pipeline_sbom(tmp_path / "agent.cdx.json", VERSIONS_DEPENDENCIES)
    found = scan_grype(sbom, db_dir=tmp_path / "db").findings
    expected, _ = OsvDatabase(osv).scan_sbom(json.loads(sbom.read_bytes()))
    assert sorted(map(comparable, found), key=str) == sorted(map(comparable, expected), key=str)
    assert {(f.package, f.severity) for f in found} == {
        ("pkg:npm/left-pad@1.1.0", "high"), ("pkg:pypi/zope.interface@4.0", "high"),
        ("pkg:pypi/zope.interface@5.1", "high")}


def test_sbom_with_nothing_vulnerable_is_an_empty_scan_with_a_database(tmp_path: Path, db_dir: Path) -> None:
    sbom = pipeline_sbom(tmp_path / "fixed.cdx.json", (("lodash", "4.17.21", "pkg:npm/lodash@4.17.21"),))
    result = scan_grype(sbom, db_dir=db_dir)
    assert result.findings == [] and result.database["schema"] == f"v{MODEL}.{REVISION}.{ADDITION}"


def test_grype_looks_packages_up_by_component_name(tmp_path: Path, db_dir: Path) -> None:
    """A known difference, pinned: Grype (Syft's CycloneDX reader) takes the package name from `name`, not the purl.

    A dependency named otherwise than its purl ("lodash-browser" for pkg:npm/lodash@4.17.20) is
    matched by the embedded matcher (by purl) and missed by Grype.
    """
    sbom = pipeline_sbom(tmp_path / "agent.cdx.json", (("lodash-browser", "4.17.20", "pkg:npm/lodash@4.17.20"),))
    assert scan_grype(sbom, db_dir=db_dir).findings == []
    osv, _ = OsvDatabase(EXAMPLE_OSV).scan_sbom(json.loads(sbom.read_bytes()))
    assert [f.id for f in osv] == ["GHSA-35jh-r3h4-6jhm"]


def test_no_database_fails_closed(tmp_path: Path, grype: Path) -> None:
    sbom = pipeline_sbom(tmp_path / "agent.cdx.json")
    empty = tmp_path / "no-db"
    assert grype_db_status(empty) == {"schemaVersion": "", "path": str(empty / "6" / "vulnerability.db"),
                                      "valid": False, "error": "database does not exist"}
    with pytest.raises(ScannerFailed) as caught:
        scan_grype(sbom, db_dir=empty)
    message = str(caught.value)
    assert "no usable vulnerability database (database does not exist)" in message
    assert f"vulnerability database in {empty}" in message
    assert "python -m agentfactory.scan.grypedb" in message and "grype db import" in message
    assert "AGENTFACTORY_GRYPE_DB" in message


def test_stale_database_is_refused_even_when_the_environment_says_not_to_check(
        tmp_path: Path, grype: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Grype refuses a database older than 5 days; a GRYPE_* variable in the caller's shell cannot relax that."""
    build_grype_db(EXAMPLE_OSV, tmp_path / "old.db", now=datetime(2020, 1, 1, tzinfo=UTC))
    monkeypatch.setenv("GRYPE_DB_VALIDATE_AGE", "false")
    monkeypatch.setenv("GRYPE_DB_MAX_ALLOWED_BUILT_AGE", "87600h")
    with pytest.raises(ScannerFailed, match=r"does not accept it: the vulnerability database was built \d+ years ago"):
        import_grype_db(tmp_path / "old.db", tmp_path / "db")
    with pytest.raises(ScannerFailed, match=r"no usable vulnerability database \(the vulnerability database was "
                                            r"built \d+ years ago \(max allowed age is 5 days\)\)"):
        scan_grype(pipeline_sbom(tmp_path / "agent.cdx.json"), db_dir=tmp_path / "db")


def test_database_of_another_schema_is_refused(tmp_path: Path, grype: Path) -> None:
    build_grype_db(EXAMPLE_OSV, tmp_path / "v5.db")
    with sqlite3.connect(tmp_path / "v5.db") as db:
        db.execute("UPDATE db_metadata SET model = 5")
    with pytest.raises(ScannerFailed, match="not a v6 database"):
        import_grype_db(tmp_path / "v5.db", tmp_path / "db")
    with pytest.raises(ScannerFailed, match="no usable vulnerability database"):
        scan_grype(pipeline_sbom(tmp_path / "agent.cdx.json"), db_dir=tmp_path / "db")


def test_report_that_shows_no_valid_database_is_refused(tmp_path: Path, db_dir: Path) -> None:
    """A Grype JSON report is accepted as "no findings" only when it says a valid database judged it."""
    sbom = pipeline_sbom(tmp_path / "agent.cdx.json")
    doc = json.loads(run_peer("grype", [f"sbom:{sbom}", "-o", "json"],
                              env={"GRYPE_DB_CACHE_DIR": str(db_dir), "GRYPE_DB_AUTO_UPDATE": "false",
                                   "GRYPE_CHECK_FOR_APP_UPDATE": "false"}).stdout)
    assert _database(doc, "r.json")["schema"] == f"v{MODEL}.{REVISION}.{ADDITION}"
    doc["descriptor"]["db"]["status"]["valid"] = False
    with pytest.raises(ScannerFailed, match="does not show a valid vulnerability database"):
        _database(doc, "r.json")
    del doc["descriptor"]["db"]
    with pytest.raises(ScannerFailed, match=r"descriptor.db.status: missing"):
        _database(doc, "r.json")


def test_malformed_sbom_is_the_scanner_s_failure(tmp_path: Path, db_dir: Path) -> None:
    bad = tmp_path / "bad.cdx.json"
    bad.write_text('{"bomFormat": "CycloneDX", "specVersion": "1.6", "components": {}}')
    with pytest.raises(ScannerFailed, match=r"grype sbom:.*bad.cdx.json -o json failed \(exit 1\)"):
        scan_grype(bad, db_dir=db_dir)


def test_timeout_kills_the_scan(tmp_path: Path, db_dir: Path) -> None:
    with pytest.raises(ScannerFailed, match="grype did not finish within 0.001 s"):
        scan_grype(pipeline_sbom(tmp_path / "agent.cdx.json"), db_dir=db_dir, timeout=0.001)


def test_missing_binary_names_make_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTFACTORY_TOOLS_BIN", str(tmp_path / "empty-bin"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty-path"))
    with pytest.raises(ScannerUnavailable, match=r"grype is not installed: run `make tools`, which builds grype "
                                                 r"v0.121.3 \(from github.com/anchore/grype/cmd/grype\)"):
        scan_grype(pipeline_sbom(tmp_path / "agent.cdx.json"), db_dir=tmp_path / "db")
