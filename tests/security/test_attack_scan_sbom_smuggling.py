"""Attack: smuggle a vulnerable component past `agentfactory scan FILE` with an SBOM the pipeline refuses.

The attacker writes the SBOM file handed to `agentfactory scan` (a workstation or CI check). A JSON
parser keeps the last of two duplicate keys, so `"components": [lodash 4.17.20], "components": []`
scans as an SBOM with no components and passes, while a person or another tool reads lodash. The
fix: `scan FILE` validates with the pipeline's own function (`agentfactory.sbom.load_sbom`, strict
CycloneDX 1.6, duplicate keys refused naming the key), so every document the pipeline refuses is
refused here with the same message, exit 2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import EXAMPLE_OSV, EXAMPLES_SCANNING, ROOT

from agentfactory.errors import InputError
from agentfactory.sbom import validate_sbom
from agentfactory.template import load_template
from pipelines.sbom import build_sbom

DIGEST = "sha256:" + "12" * 32
CONFORMANCE = [ROOT / "tests" / "fixtures" / "cyclonedx", Path("/work/shared/testdata/cyclonedx")]
INVALID = sorted({p.name: p for folder in CONFORMANCE if folder.is_dir()
                  for p in folder.glob("invalid-*.json")}.values())


def af(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("agentfactory")
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "AGENTFACTORY_OSV_DB": str(EXAMPLE_OSV)})


def pipeline_message(data: bytes, where: str) -> str:
    """What the pipeline's SBOM validation says about `data` (it must refuse it)."""
    with pytest.raises(InputError) as refused:
        validate_sbom(data, where)
    return str(refused.value)


@pytest.fixture
def sbom_text(tmp_path: Path) -> str:
    """The pipeline's SBOM of the example agent htmlpage: it lists lodash 4.17.20 (a known High)."""
    t = load_template(EXAMPLES_SCANNING / "templates" / "htmlpage", "htmlpage/agent.yaml")
    toolchain = {"name": "zig", "version": "0.13.0", "package": "ziglang==0.13.0", "target": "wasm32-wasi"}
    return build_sbom(t, digest=DIGEST, toolchain=toolchain, epoch=0, commit=None).decode()


def test_the_honest_sbom_blocks(tmp_path: Path, sbom_text: str) -> None:
    path = tmp_path / "htmlpage.cdx.json"
    path.write_text(sbom_text)
    proc = af(tmp_path, "scan", str(path))
    assert proc.returncode == 1 and "GHSA-35jh-r3h4-6jhm" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.parametrize("key", ["components", "metadata", "dependencies"])
def test_a_duplicate_key_is_refused_naming_it(tmp_path: Path, sbom_text: str, key: str) -> None:
    """A second key after the real one (empty), at the top level: exit 2, never a pass."""
    doc = json.loads(sbom_text)
    empty = {"components": "[]", "metadata": "{}", "dependencies": "[]"}[key]
    smuggled = sbom_text.rstrip().removesuffix("}") + f',\n  "{key}": {empty}\n}}\n'
    assert json.loads(smuggled)[key] != doc[key]  # what a last-key-wins parser would scan
    path = tmp_path / "smuggled.cdx.json"
    path.write_text(smuggled)
    proc = af(tmp_path, "scan", str(path))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"duplicate key '{key}'" in proc.stderr and str(path) in proc.stderr
    assert proc.stdout == ""  # no report for a document that was not scanned
    assert pipeline_message(smuggled.encode(), str(path)) in proc.stderr


def test_a_duplicate_key_deep_inside_is_refused(tmp_path: Path, sbom_text: str) -> None:
    """The same trick one level down: a component whose purl is given twice."""
    smuggled = sbom_text.replace('"purl": "pkg:npm/lodash@4.17.20"',
                                 '"purl": "pkg:npm/lodash@4.17.20", "purl": "pkg:npm/lodash@4.17.21"', 1)
    assert smuggled != sbom_text
    path = tmp_path / "deep.cdx.json"
    path.write_text(smuggled)
    proc = af(tmp_path, "scan", str(path))
    assert proc.returncode == 2 and "duplicate key 'purl'" in proc.stderr, proc.stdout + proc.stderr


def test_the_conformance_suite_has_invalid_documents() -> None:
    assert len(INVALID) >= 2, INVALID


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_conformance_documents_are_refused_as_the_pipeline_refuses_them(tmp_path: Path, path: Path) -> None:
    proc = af(tmp_path, "scan", str(path))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip() == f"error: {pipeline_message(path.read_bytes(), str(path))}"


@pytest.mark.parametrize(("mutation", "message"), [
    (lambda d: {**d, "specVersion": "1.4"}, "'1.4' is not supported"),
    (lambda d: {**d, "bomFormat": "SPDX"}, "not a CycloneDX SBOM"),
    (lambda d: {**d, "componentz": d["components"], "components": []}, "componentz"),  # a typo hides nothing
])
def test_documents_the_pipeline_refuses_are_refused(tmp_path: Path, sbom_text: str, mutation: object,
                                                    message: str) -> None:
    assert callable(mutation)
    data = json.dumps(mutation(json.loads(sbom_text))).encode()
    path = tmp_path / "bad.cdx.json"
    path.write_bytes(data)
    proc = af(tmp_path, "scan", str(path))
    assert proc.returncode == 2 and message in proc.stderr, proc.stdout + proc.stderr
    assert proc.stderr.strip() == f"error: {pipeline_message(data, str(path))}"


def test_valid_conformance_documents_are_scanned_not_refused(tmp_path: Path) -> None:
    """The minimal valid document is read (not exit 2); its one component has no purl, so nothing
    could be scanned and the gate fails on coverage (exit 1), not on a finding."""
    path = ROOT / "tests" / "fixtures" / "cyclonedx" / "valid-minimal-viable-1.6.json"
    proc = af(tmp_path, "scan", str(path), "--json")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    gate = json.loads(proc.stdout)["gate"]
    assert gate["blocking"] == [] and gate["coverage"][0].startswith("nothing was scanned")
