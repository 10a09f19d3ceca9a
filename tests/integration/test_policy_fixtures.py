"""Every template rule has a fixture template that the pipeline refuses with that rule's message,
and the project's Rego unit tests pass through `agentfactory policy test`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, TEMPLATES

from agentfactory.keys import open_provider
from agentfactory.policy import RegoEngine, template_input
from agentfactory.store import OCILayoutStore
from agentfactory.template import load_template
from pipelines.run import Signing, run_pipeline

FIXTURES = ROOT / "tests" / "fixtures" / "policy-templates"
BAD = sorted(p for p in FIXTURES.iterdir() if (p / "expected.txt").exists()) if FIXTURES.exists() else []

pytestmark = pytest.mark.toolchain


def test_there_is_a_fixture_per_template_rule() -> None:
    rules = {p.name.split("-")[0] for p in BAD}
    assert {f"t{i}" for i in range(1, 13)} <= rules


@pytest.mark.parametrize("fixture", BAD, ids=lambda p: p.name)
def test_pipeline_refuses_fixture_with_its_message(tmp_path: Path, fixture: Path) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(fixture, templates / fixture.name)
    expected = (fixture / "expected.txt").read_text().strip()
    engine = RegoEngine(ROOT / "policies")
    store = OCILayoutStore(tmp_path / "store")
    if (fixture / "base.json").exists():  # "version must increase" needs the base branch's version
        base = json.loads((fixture / "base.json").read_text())
        t = load_template(templates / fixture.name)
        decision = engine.decide("template", template_input(t, [], None, base))
        assert not decision.allow and any(expected in m for m in decision.deny), decision.deny
        return
    report = run_pipeline(templates, store, signing=Signing(open_provider("local")), engine=engine, jobs=1)
    (result,) = report.templates
    assert result.status == "failed"
    assert any(expected in e for e in result.errors), result.errors
    assert store.list_agents() == [], "a refused template must not be published"


def test_good_fixture_and_examples_pass(tmp_path: Path) -> None:
    engine = RegoEngine(ROOT / "policies")
    templates = tmp_path / "templates"
    for src in [FIXTURES / "good", *(TEMPLATES / n for n in ("wordstats", "base64"))]:
        shutil.copytree(src, templates / src.name)
    report = run_pipeline(templates, OCILayoutStore(tmp_path / "store"), signing=Signing(open_provider("local")),
                          engine=engine, jobs=1)
    assert report.ok, [t.errors for t in report.templates]
    assert all(t.evidence.get("score") == 10.0 for t in report.templates)


def test_cli_policy_test_passes() -> None:
    exe = Path(sys.executable).with_name("agentfactory")
    proc = subprocess.run([str(exe), "policy", "test", "--policies", str(ROOT / "policies")], capture_output=True,
                          text=True, env=os.environ.copy(), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " 0 failed" in proc.stdout


def test_cli_policy_eval(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("agentfactory")
    bad = tmp_path / "input.json"
    bad.write_text(json.dumps({"template": {"apiVersion": "agentfactory.dev/v1alpha1", "kind": "AgentTemplate",
                                            "metadata": {"name": "x", "version": "1.0.0", "owners": ["@a"]},
                                            "spec": {"tools": ["shell.exec"], "limits": {"memoryMiB": 4,
                                                                                        "timeoutMs": 100}}},
                               "findings": [], "module": None, "base": None}))
    proc = subprocess.run([str(exe), "policy", "eval", "--input", str(bad), "--policy", "template", "--json",
                           "--policies", str(ROOT / "policies")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    decision = json.loads(proc.stdout)
    assert not decision["allow"] and any("shell.exec" in m for m in decision["deny"])
