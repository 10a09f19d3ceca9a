"""Attack: pass the vulnerability gate without being judged by it.

Three ways in, each by someone who controls an input of the scan but no signing key:
- the template author gives every dependency a purl no advisory database knows (an unknown type),
  so the scan looks at nothing and finds nothing, which passed like a clean scan;
- an advisory without a severity (`unknown`: no CVSS vector, no database rating) passed the
  default gate, which blocks High and Critical only;
- whoever feeds the advisory database imports an empty export over a working one: every later
  scan matches nothing and passes.

What stops each now: the artifact policy (A7) denies a scan that scanned nothing in every stage, and
`agentfactory scan` fails its gate likewise (`--fail-on-unscanned` and config fail_on_unscanned
make any unscanned component fail); config unknown_severity_as_high (on for prod) judges an unknown
severity as High (A4); `osv import` refuses an export with no usable record unless --allow-empty,
leaving the database as it was. Scans here run the real OSV matcher; decisions the real Rego engine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from helpers import EXAMPLE_OSV, EXAMPLES_SCANNING, ROOT

from agentfactory.policy import RegoEngine
from agentfactory.scan.attestation import scan_input
from agentfactory.scan.base import OsvScanner
from agentfactory.scan.report import scan, subject_of
from agentfactory.template import load_template
from agentfactory.verifier import sbom_components
from pipelines.sbom import build_sbom

DIGEST = "sha256:" + "12" * 32
GHSA = "GHSA-35jh-r3h4-6jhm"
NOW = "2026-12-06T08:00:00Z"
CHECKS = ["digest", "signature", "key-status", "sbom", "provenance", "scan", "builder", "source"]


def af(cwd: Path, *args: str, osv_db: Path = EXAMPLE_OSV) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("agentfactory")
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "AGENTFACTORY_OSV_DB": str(osv_db)})


@pytest.fixture(scope="module")
def engine() -> RegoEngine:
    return RegoEngine(ROOT / "policies")


def htmlpage_sbom(**replace: str) -> dict[str, Any]:
    """The pipeline's SBOM of htmlpage (lodash 4.17.20), with strings replaced in its JSON text."""
    t = load_template(EXAMPLES_SCANNING / "templates" / "htmlpage", "htmlpage/agent.yaml")
    toolchain = {"name": "zig", "version": "0.13.0", "package": "ziglang==0.13.0", "target": "wasm32-wasi"}
    text = build_sbom(t, digest=DIGEST, toolchain=toolchain, epoch=0, commit=None).decode()
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    doc: dict[str, Any] = json.loads(text)
    return doc


def decide(engine: RegoEngine, stage: str, bom: dict[str, Any], osv_db: Path) -> tuple[bool, tuple[str, ...]]:
    """Scan `bom` for real, then ask the artifact policy as the verifier would, with a fresh scan, a
    clean build and a trust policy that names its repositories (the contract's inputs)."""
    report = scan(bom, [OsvScanner(osv_db)], subject=subject_of(bom, "sbom"))
    document = {
        "artifact": {"name": "htmlpage", "version": "1.0.0", "digest": DIGEST}, "stage": stage,
        "verdict": {"score": 10.0, "checks": [{"name": n, "ok": True, "reason": "verified"} for n in CHECKS]},
        "sbom": {"components": sbom_components(bom)}, "agent": None,
        "scan": {**scan_input(report.to_predicate(), "scan"), "scannedOn": "2026-12-06T07:59:00.000Z"},
        "now": NOW, "provenance": {"dirty": False, "repository": "https://github.com/example/agents",
                                   "builder": "https://agentfactory.dev/builders/pipeline@v1"},
        "trust": {"repositories": ["https://github.com/example/*"]}, "promotion": None}
    decision = engine.decide("artifact", document)
    return decision.allow, decision.deny


# --- nothing scanned ------------------------------------------------------------------------------

UNKNOWN_TYPE = {"pkg:npm/lodash@4.17.20": "pkg:unknowntype/lodash@4.17.20"}


def test_a_scan_that_scanned_nothing_fails_the_cli_gate(tmp_path: Path) -> None:
    path = tmp_path / "hidden.cdx.json"
    path.write_text(json.dumps(htmlpage_sbom(**UNKNOWN_TYPE)))
    proc = af(tmp_path, "scan", str(path), "--json")
    assert proc.returncode == 1, proc.stdout + proc.stderr  # it passed with 0 before
    doc = json.loads(proc.stdout)
    assert doc["findings"] == [] and doc["unscanned"][0]["component"] == "pkg:unknowntype/lodash@4.17.20"
    assert doc["gate"]["passed"] is False and doc["gate"]["coverage"][0].startswith("nothing was scanned")
    text = af(tmp_path, "scan", str(path))
    assert text.returncode == 1 and "gate: FAILED, nothing was scanned" in text.stdout


@pytest.mark.parametrize("stage", ["dev", "canary", "prod"])
def test_a_scan_that_scanned_nothing_is_denied_by_the_policy(engine: RegoEngine, stage: str) -> None:
    allowed, deny = decide(engine, stage, htmlpage_sbom(**UNKNOWN_TYPE), EXAMPLE_OSV)
    assert not allowed
    assert any(m.startswith("scan.unscanned: nothing was scanned: all 1 component(s)") for m in deny), deny
    # the same SBOM honestly typed is judged on its finding instead
    allowed, deny = decide(engine, stage, htmlpage_sbom(), EXAMPLE_OSV)
    assert not allowed and any(GHSA in m for m in deny) and not any("nothing was scanned" in m for m in deny)


def test_fail_on_unscanned_fails_any_unscanned_component(tmp_path: Path) -> None:
    """One component scanned, one not: passes by default, fails with --fail-on-unscanned."""
    bom = htmlpage_sbom()
    extra = dict(bom["components"][0])
    extra.update({"name": "mystery", "purl": "pkg:unknowntype/mystery@1.0", "bom-ref": "pkg:unknowntype/mystery@1.0"})
    bom["components"].append(extra)
    bom["dependencies"].append({"ref": "pkg:unknowntype/mystery@1.0"})
    clean_db = tmp_path / "db"  # lodash's advisory left out: the scanned component is clean
    clean_db.mkdir()
    shutil.copy(EXAMPLE_OSV / "PYSEC-2023-74.yaml", clean_db)
    path = tmp_path / "two.cdx.json"
    path.write_text(json.dumps(bom))
    assert af(tmp_path, "scan", str(path), osv_db=clean_db).returncode == 0
    proc = af(tmp_path, "scan", str(path), "--fail-on-unscanned", "--json", osv_db=clean_db)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (problem,) = json.loads(proc.stdout)["gate"]["coverage"]
    assert problem.startswith("pkg:unknowntype/mystery@1.0 was not scanned")


# --- unknown severity -----------------------------------------------------------------------------

@pytest.fixture
def unknown_db(tmp_path: Path) -> Path:
    """The lodash advisory with its severity removed (no CVSS vector, no database rating)."""
    record = json.loads((EXAMPLE_OSV / f"{GHSA}.json").read_text())
    record.pop("severity")
    record["database_specific"].pop("severity")
    record["id"], record["aliases"] = "OSV-2026-UNRATED", []
    db = tmp_path / "unknown-db"
    db.mkdir()
    (db / "OSV-2026-UNRATED.json").write_text(json.dumps(record))
    return db


def test_an_unknown_severity_is_high_for_prod(engine: RegoEngine, unknown_db: Path) -> None:
    allowed, deny = decide(engine, "prod", htmlpage_sbom(), unknown_db)
    assert not allowed
    assert any(m.startswith("scan.findings[0]: OSV-2026-UNRATED (severity unknown, judged as high for this stage "
                            "(config unknown_severity_as_high)") for m in deny), deny
    assert decide(engine, "dev", htmlpage_sbom(), unknown_db) == (True, ())  # off by default elsewhere


def test_the_cli_can_fail_on_unknown(tmp_path: Path, unknown_db: Path) -> None:
    path = tmp_path / "htmlpage.cdx.json"
    path.write_text(json.dumps(htmlpage_sbom()))
    assert af(tmp_path, "scan", str(path), osv_db=unknown_db).returncode == 0
    proc = af(tmp_path, "scan", str(path), "--fail-on", "unknown", osv_db=unknown_db)
    assert proc.returncode == 1 and "OSV-2026-UNRATED" in proc.stdout


# --- an empty database ----------------------------------------------------------------------------

@pytest.fixture
def working_db(tmp_path: Path) -> Path:
    db = tmp_path / "db"
    assert af(tmp_path, "osv", "import", str(EXAMPLE_OSV), "--osv-db", str(db)).returncode == 0
    return db


def _still_works(tmp_path: Path, db: Path) -> None:
    path = tmp_path / "htmlpage.cdx.json"
    path.write_text(json.dumps(htmlpage_sbom()))
    proc = af(tmp_path, "scan", str(path), osv_db=db)
    assert proc.returncode == 1 and GHSA in proc.stdout, proc.stdout + proc.stderr


def test_importing_an_empty_folder_leaves_the_database_alone(tmp_path: Path, working_db: Path) -> None:
    before = sorted(p.name for p in working_db.iterdir())
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = af(tmp_path, "osv", "import", str(empty), "--osv-db", str(working_db))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"error: {empty}: the export holds no usable OSV record" in proc.stderr
    assert "the database is unchanged (give --allow-empty to empty it on purpose)" in proc.stderr
    assert sorted(p.name for p in working_db.iterdir()) == before
    _still_works(tmp_path, working_db)


def test_importing_only_broken_records_leaves_the_database_alone(tmp_path: Path, working_db: Path) -> None:
    export = tmp_path / "all.zip"
    with zipfile.ZipFile(export, "w") as zf:
        zf.writestr("osv/GHSA-broken.json", '{"id": "GHSA-broken", "affected": [')
    proc = af(tmp_path, "osv", "import", str(export), "--osv-db", str(working_db))
    assert proc.returncode == 2 and "no usable OSV record (1 skipped:" in proc.stderr, proc.stderr
    _still_works(tmp_path, working_db)


def test_allow_empty_empties_it_on_purpose_and_scans_then_fail(tmp_path: Path, working_db: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = af(tmp_path, "osv", "import", str(empty), "--osv-db", str(working_db), "--allow-empty", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["records"] == 0 and list(working_db.iterdir()) == []
    path = tmp_path / "htmlpage.cdx.json"
    path.write_text(json.dumps(htmlpage_sbom()))
    scanned = af(tmp_path, "scan", str(path), osv_db=working_db)
    assert scanned.returncode == 2, scanned.stdout + scanned.stderr
    assert f"the OSV database at {working_db} holds no usable advisory" in scanned.stderr
