"""`agentfactory osv import`, `agentfactory scan` and `agentfactory vex sign` as a user runs them.

The SBOM scanned is the one the pipeline would write for the example agent htmlpage (it vendors
lodash 4.17.20, which the real advisory GHSA-35jh-r3h4-6jhm matches); no build is needed for it.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from helpers import EXAMPLE_OSV, EXAMPLES_SCANNING

from agentfactory.template import load_template
from pipelines.sbom import build_sbom

GHSA = "GHSA-35jh-r3h4-6jhm"
LODASH = "pkg:npm/lodash@4.17.20"
EXAMPLE_VEX = EXAMPLES_SCANNING / "vex" / "htmlpage.openvex.json"
DIGEST = "sha256:" + "12" * 32


def af(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("agentfactory")
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def as_json(proc: subprocess.CompletedProcess[str]) -> Any:
    try:
        return json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"not JSON (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}") from None


@pytest.fixture
def sbom(tmp_path: Path) -> Path:
    """The CycloneDX SBOM of the example agent, as the pipeline's sbom stage writes it."""
    t = load_template(EXAMPLES_SCANNING / "templates" / "htmlpage", "htmlpage/agent.yaml")
    toolchain = {"name": "zig", "version": "0.13.0", "package": "ziglang==0.13.0", "target": "wasm32-wasi"}
    path = tmp_path / "htmlpage.cdx.json"
    path.write_bytes(build_sbom(t, digest=DIGEST, toolchain=toolchain, epoch=0, commit=None))
    return path


def subject(sbom: Path) -> str:
    purl: str = json.loads(sbom.read_text())["metadata"]["component"]["purl"]
    return purl


# --- osv import -------------------------------------------------------------------------------

def test_osv_import_of_a_folder(tmp_path: Path, sbom: Path) -> None:
    db = tmp_path / "db"
    proc = af(tmp_path, "osv", "import", str(EXAMPLE_OSV), "--osv-db", str(db), "--json")
    assert proc.returncode == 0, proc.stderr
    assert as_json(proc) == {"database": str(db), "records": 5, "advisories": 5, "skipped": []}
    assert sorted(p.name for p in db.iterdir()) == [
        "GHSA-35jh-r3h4-6jhm.json", "GHSA-j8r2-6x86-q33q.json", "PYSEC-2021-66.json", "PYSEC-2023-192.json",
        "PYSEC-2023-74.json"]
    scanned = af(tmp_path, "scan", str(sbom), "--osv-db", str(db), "--json")
    assert scanned.returncode == 1 and as_json(scanned)["findings"][0]["id"] == GHSA
    assert as_json(scanned)["scanners"][0]["database"]["uri"] == db.resolve().as_uri()


def test_osv_import_of_a_zip_skips_a_malformed_record_and_names_it(tmp_path: Path, sbom: Path) -> None:
    export = tmp_path / "all.zip"
    with zipfile.ZipFile(export, "w") as zf:
        for record in sorted(EXAMPLE_OSV.iterdir()):
            zf.write(record, f"osv/{record.name}")
        zf.writestr("osv/GHSA-broken.json", '{"id": "GHSA-broken", "affected": [')
        zf.writestr("osv/README.txt", "not a record; not read")
    db = tmp_path / "db"
    proc = af(tmp_path, "osv", "import", str(export), "--osv-db", str(db))
    assert proc.returncode == 0, proc.stderr
    assert f"skipped: {export}!osv/GHSA-broken.json" in proc.stderr
    assert f"imported 5 OSV record(s) into {db} (5 indexed, 1 skipped)" in proc.stdout
    assert len(list(db.iterdir())) == 5

    again = as_json(af(tmp_path, "osv", "import", str(export), "--osv-db", str(db), "--json"))
    (skipped,) = again["skipped"]
    assert skipped.startswith(f"skipped: {export}!osv/GHSA-broken.json") and again["records"] == 5
    scanned = af(tmp_path, "scan", str(sbom), "--osv-db", str(db))
    assert scanned.returncode == 1 and GHSA in scanned.stdout


def test_osv_import_replaces_the_database(tmp_path: Path) -> None:
    db = tmp_path / "db"
    (db / "stale").mkdir(parents=True)
    (db / "stale" / "OLD-1.json").write_text("{}")
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(EXAMPLE_OSV / "GHSA-35jh-r3h4-6jhm.json", one)
    assert as_json(af(tmp_path, "osv", "import", str(one), "--osv-db", str(db), "--json"))["records"] == 1
    assert [p.name for p in db.iterdir()] == ["GHSA-35jh-r3h4-6jhm.json"]


def test_the_default_database_is_the_one_imported_into_the_home(tmp_path: Path, sbom: Path, af_home: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "AGENTFACTORY_OSV_DB"}
    exe = Path(sys.executable).with_name("agentfactory")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(exe), *args], cwd=tmp_path, capture_output=True, text=True, env=env)

    missing = run("scan", str(sbom))
    assert missing.returncode == 2 and f"no OSV database at {af_home / 'osv'}" in missing.stderr
    assert run("osv", "import", str(EXAMPLE_OSV)).returncode == 0
    assert (af_home / "osv" / "GHSA-35jh-r3h4-6jhm.json").is_file()
    scanned = run("scan", str(sbom))
    assert scanned.returncode == 1 and GHSA in scanned.stdout


def test_osv_import_of_nothing_usable(tmp_path: Path) -> None:
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"PK not really a zip")
    proc = af(tmp_path, "osv", "import", str(bad), "--osv-db", str(tmp_path / "db"))
    assert proc.returncode == 2 and "not a readable zip file" in proc.stderr
    assert not (tmp_path / "db").exists()


# --- scan -------------------------------------------------------------------------------------

def test_scan_of_an_sbom_with_a_known_advisory_fails_the_gate(tmp_path: Path, sbom: Path) -> None:
    proc = af(tmp_path, "scan", str(sbom))
    assert proc.returncode == 1, proc.stderr
    assert f"BLOCKS     HIGH 7.2 {GHSA} (also CVE-2021-23337) in {LODASH}" in proc.stdout
    assert "fix: upgrade to 4.17.21" in proc.stdout
    assert "gate (fail on high): FAILED, 1 finding(s) block" in proc.stdout
    assert f"scanned {subject(sbom)} with agentfactory-osv" in proc.stdout


def test_scan_json(tmp_path: Path, sbom: Path) -> None:
    proc = af(tmp_path, "scan", str(sbom), "--json")
    assert proc.returncode == 1, proc.stderr
    doc = as_json(proc)
    assert doc["gate"] == {"failOn": "high", "ignoreUnfixed": False, "passed": False, "blocking": [GHSA],
                           "coverage": []}
    (finding,) = doc["findings"]
    assert finding["id"] == GHSA and finding["package"] == LODASH and finding["severity"] == "high"
    assert finding["fixedVersions"] == ["4.17.21"] and finding["suppressed"] is False
    assert doc["subject"] == subject(sbom) and doc["unscanned"] == [] and doc["vex"] == []
    assert doc["summary"]["high"] == 1 and doc["unusedVex"] == [] and doc["warnings"] == []
    assert doc["sbom"]["digest"].startswith("sha256:") and doc["metadata"]["scanFinishedOn"]
    assert "attestation" not in doc


@pytest.mark.parametrize(("args", "code", "verdict"), [
    (["--fail-on", "critical"], 0, "gate (fail on critical): passed"),
    (["--fail-on", "none"], 0, "gate (fail on none): passed"),
    (["--fail-on", "medium"], 1, "gate (fail on medium): FAILED"),
    (["--ignore-unfixed"], 1, "gate (fail on high): FAILED"),  # 4.17.21 fixes it: not unfixed
])
def test_scan_thresholds(tmp_path: Path, sbom: Path, args: list[str], code: int, verdict: str) -> None:
    proc = af(tmp_path, "scan", str(sbom), *args)
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert verdict in proc.stdout
    assert GHSA in proc.stdout  # reported whether or not it blocks
    if code == 0:
        assert f"allowed    HIGH 7.2 {GHSA}" in proc.stdout


def test_an_unknown_threshold_is_a_usage_error(tmp_path: Path, sbom: Path) -> None:
    proc = af(tmp_path, "scan", str(sbom), "--fail-on", "severe")
    assert proc.returncode == 2 and "--fail-on" in proc.stderr


def test_scan_with_a_plain_vex_document(tmp_path: Path, sbom: Path) -> None:
    proc = af(tmp_path, "scan", str(sbom), "--vex", str(EXAMPLE_VEX))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"suppressed HIGH 7.2 {GHSA}" in proc.stdout
    assert "VEX not_affected: vulnerable_code_not_in_execute_path" in proc.stdout
    assert "https://agentfactory.dev/examples/vex/htmlpage-2026-001#statements[0]" in proc.stdout
    assert "1 finding(s): 1 suppressed" in proc.stdout and "gate (fail on high): passed" in proc.stdout
    doc = as_json(af(tmp_path, "scan", str(sbom), "--vex", str(EXAMPLE_VEX), "--json"))
    assert doc["gate"]["passed"] is True and doc["findings"][0]["suppressed"] is True
    assert doc["vex"][0]["uri"] == str(EXAMPLE_VEX) and doc["vex"][0]["signedBy"] == ""


def test_scan_reports_a_vex_statement_for_another_product(tmp_path: Path, sbom: Path) -> None:
    doc = json.loads(EXAMPLE_VEX.read_text())
    doc["statements"][0]["products"][0]["@id"] = "pkg:oci/otheragent"
    other = tmp_path / "other.openvex.json"
    other.write_text(json.dumps(doc))
    proc = af(tmp_path, "scan", str(sbom), "--vex", str(other))
    assert proc.returncode == 1 and f"BLOCKS     HIGH 7.2 {GHSA}" in proc.stdout
    assert f"unused VEX statement https://agentfactory.dev/examples/vex/htmlpage-2026-001#statements[0] ({GHSA} " \
           f"for pkg:oci/otheragent): it matches no finding of {subject(sbom)}" in proc.stdout


def test_require_signed_vex_refuses_a_plain_document(tmp_path: Path, sbom: Path) -> None:
    proc = af(tmp_path, "scan", str(sbom), "--vex", str(EXAMPLE_VEX), "--require-signed-vex")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"{EXAMPLE_VEX}: this VEX document is not signed" in proc.stderr
    assert proc.stdout == ""  # no report for a scan that was not run as asked


@pytest.mark.parametrize(("content", "message"), [
    (EXAMPLE_VEX.read_text(), "$.bomFormat: None is not 'CycloneDX': not a CycloneDX SBOM"),
    ('{"bomFormat": "SPDX"}', "not a CycloneDX SBOM"),
    ("{truncated", "not JSON"),
    ("[]", "SBOM is a JSON list, not an object"),
])
def test_scan_of_something_that_is_not_a_cyclonedx_sbom(tmp_path: Path, content: str, message: str) -> None:
    target = tmp_path / "target.json"
    target.write_text(content)
    proc = af(tmp_path, "scan", str(target))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert str(target) in proc.stderr and message in proc.stderr, proc.stderr


def test_scan_without_an_osv_database_says_how_to_get_one(tmp_path: Path, sbom: Path) -> None:
    missing = tmp_path / "no-osv"
    for how in (["--osv-db", str(missing)], []):
        proc = af(tmp_path, "scan", str(sbom), *how, env={"AGENTFACTORY_OSV_DB": str(missing)})
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert f"no OSV database at {missing}" in proc.stderr and "agentfactory osv import" in proc.stderr


def test_an_sbom_without_a_product_needs_product_for_vex(tmp_path: Path, sbom: Path) -> None:
    bom = json.loads(sbom.read_text())
    del bom["metadata"]["component"]["purl"]
    anonymous = tmp_path / "anonymous.cdx.json"
    anonymous.write_text(json.dumps(bom))
    assert af(tmp_path, "scan", str(anonymous)).returncode == 1  # without VEX, no product is needed
    proc = af(tmp_path, "scan", str(anonymous), "--vex", str(EXAMPLE_VEX))
    assert proc.returncode == 2 and "give --product PURL" in proc.stderr
    proc = af(tmp_path, "scan", str(anonymous), "--vex", str(EXAMPLE_VEX), "--product", "pkg:oci/htmlpage")
    assert proc.returncode == 0 and f"suppressed HIGH 7.2 {GHSA}" in proc.stdout


@pytest.mark.parametrize("name", ["grype", "trivy"])
def test_a_named_scanner_that_is_not_installed(tmp_path: Path, sbom: Path, name: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTFACTORY_TOOLS_BIN", str(tmp_path / "no-tools"))
    monkeypatch.setenv("PATH", f"{tmp_path / 'empty'}:/usr/bin:/bin")  # git, not the scanner
    proc = af(tmp_path, "scan", str(sbom), "--scanner", name)
    assert proc.returncode == 2 and f"{name} is not installed: run `make tools`" in proc.stderr


# --- vex sign ---------------------------------------------------------------------------------

def test_vex_sign_then_scan_with_required_signatures(tmp_path: Path, sbom: Path) -> None:
    document = tmp_path / "htmlpage.openvex.json"
    shutil.copy(EXAMPLE_VEX, document)
    proc = af(tmp_path, "vex", "sign", str(document))  # the first key is made on demand
    assert proc.returncode == 0, proc.stderr
    envelope = tmp_path / "htmlpage.openvex.dsse.json"  # the default output name
    assert f"signed {document}" in proc.stderr and str(envelope) in proc.stderr
    env = json.loads(envelope.read_text())
    key_id = env["signatures"][0]["keyid"]
    assert json.loads(base64.b64decode(env["payload"]))["predicate"] == json.loads(EXAMPLE_VEX.read_text())

    scanned = af(tmp_path, "scan", str(sbom), "--require-signed-vex", "--vex", str(envelope), "--json")
    assert scanned.returncode == 0, scanned.stdout + scanned.stderr
    doc = as_json(scanned)
    assert doc["gate"]["passed"] is True and doc["findings"][0]["suppressed"] is True
    assert doc["vex"][0] == {"uri": str(envelope), "digest": doc["vex"][0]["digest"], "statements": 1,
                             "signedBy": key_id}

    # -o, and a folder of signed documents.
    folder = tmp_path / "vex"
    assert af(tmp_path, "vex", "sign", str(document), "-o", str(folder / "h.dsse.json")).returncode == 0
    scanned = af(tmp_path, "scan", str(sbom), "--require-signed-vex", "--vex", str(folder))
    assert scanned.returncode == 0 and f"suppressed HIGH 7.2 {GHSA}" in scanned.stdout

    # Someone else's keys do not vouch for it.
    stranger = af(tmp_path, "scan", str(sbom), "--require-signed-vex", "--vex", str(envelope),
                  env={"AGENTFACTORY_HOME": str(tmp_path / "elsewhere")})
    assert stranger.returncode == 2 and f"{envelope}: the VEX signature is not trusted" in stranger.stderr


def test_vex_sign_refuses_a_document_that_is_not_vex(tmp_path: Path, sbom: Path) -> None:
    proc = af(tmp_path, "vex", "sign", str(sbom), "-o", str(tmp_path / "out.dsse.json"))
    assert proc.returncode == 2 and str(sbom) in proc.stderr
    assert not (tmp_path / "out.dsse.json").exists()


def test_keyless_attestation_needs_attest_and_an_ambient_identity(tmp_path: Path, sbom: Path) -> None:
    """`scan --attest --keyless` (the rescan workflow) asks for the CI's OIDC token before it scans:
    outside a CI that offers one it stops with exit 2 and attaches nothing."""
    alone = af(tmp_path, "scan", str(sbom), "--keyless")
    assert alone.returncode == 2 and "--keyless: signs the scan attestation: give --attest too" in alone.stderr
    exe = Path(sys.executable).with_name("agentfactory")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACTIONS_", "GITHUB_", "SIGSTORE_"))}
    proc = subprocess.run([str(exe), "scan", "htmlpage", "--attest", "--keyless"], cwd=tmp_path,
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "no ambient OIDC identity" in proc.stderr and proc.stdout == ""
