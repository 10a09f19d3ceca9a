"""The policies pass the real OPA's own checks: `opa check --strict` and `opa test` (with data.json).

regopy runs the same unit tests (`agentfactory policy test`, tests/integration/test_policy_fixtures.py);
these run them in the reference implementation, the one operators who already run OPA use. Each
check is also shown to fail on a policy that breaks it, so that a pass means something.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from peer_tools import require

from agentfactory.peertools import pinned_version

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "policies"
TEST_RULE = re.compile(r"^(test_[A-Za-z0-9_]+)\b", re.M)
PACKAGE = re.compile(r"^package\s+(\S+)", re.M)


def package(path: Path) -> str:
    found = PACKAGE.search(path.read_text())
    assert found, f"{path}: no package"
    return found.group(1)


def opa(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(require("opa")), *args], capture_output=True, text=True, check=False, input=stdin)


def test_the_opa_binary_is_the_pinned_version() -> None:
    proc = opa("version")
    assert proc.returncode == 0, proc.stderr
    pin = pinned_version("opa")
    assert pin, "tools/versions.txt pins opa"
    assert f"Version: {pin.removeprefix('v')}" in proc.stdout, proc.stdout


def test_opa_check_strict_passes() -> None:
    proc = opa("check", "--strict", str(POLICIES))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_opa_check_strict_refuses_what_strict_mode_forbids(tmp_path: Path) -> None:
    folder = shutil.copytree(POLICIES, tmp_path / "policies")
    with open(folder / "template.rego", "a", encoding="utf-8") as f:
        f.write("\nunused_argument(x, y) := x\n")
    proc = opa("check", "--strict", str(folder))
    assert proc.returncode != 0
    assert "unused argument y" in proc.stdout + proc.stderr


def test_opa_test_runs_every_unit_test_and_all_pass() -> None:
    proc = opa("test", "--format=json", str(POLICIES))
    results = json.loads(proc.stdout or "null")
    assert isinstance(results, list), proc.stdout + proc.stderr
    failed = [f"{r['package']}.{r['name']}: {r.get('error') or 'failed'}" for r in results
              if r.get("fail") or r.get("error") or r.get("skip")]
    assert not failed, "\n".join(failed)
    assert proc.returncode == 0, proc.stderr
    written = {("data." + package(p), name)
               for p in POLICIES.glob("*_test.rego") for name in TEST_RULE.findall(p.read_text())}
    assert {(r["package"], r["name"]) for r in results} == written, "every test_ rule ran, once"
    assert len(written) >= 150


def test_opa_test_reads_data_json(tmp_path: Path) -> None:
    """The tests judge with policies/data.json: without it, the tests that read the config fail."""
    folder = shutil.copytree(POLICIES, tmp_path / "policies")
    (folder / "data.json").unlink()
    proc = opa("test", "--format=json", str(folder))
    results = json.loads(proc.stdout or "null")
    assert proc.returncode != 0 and isinstance(results, list)
    assert any(r.get("fail") for r in results)


def test_opa_test_fails_on_a_broken_rule(tmp_path: Path) -> None:
    folder = shutil.copytree(POLICIES, tmp_path / "policies")
    text = (folder / "template.rego").read_text()
    # T1 no longer denies dangerous tools: its unit tests must fail
    broken = text.replace("\ttool in cfg.dangerous_tools\n", "\ttool in cfg.dangerous_tools\n\tfalse\n", 1)
    assert broken != text
    (folder / "template.rego").write_text(broken)
    proc = opa("test", "--format=json", str(folder))
    results = json.loads(proc.stdout or "null")
    assert proc.returncode != 0
    assert "test_t1_dangerous_tool_denied" in {r["name"] for r in results if r.get("fail")}


def test_policy_test_command_runs_opa_test_with_the_opa_engine() -> None:
    """`agentfactory policy test --policy-engine opa` runs the unit tests in OPA (regopy: the default)."""
    exe = Path(sys.executable).with_name("agentfactory")
    proc = subprocess.run([str(exe), "policy", "test", "--policy-engine", "opa", "--policies", str(POLICIES),
                           "--json"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] and not report["errors"] and len(report["results"]) >= 150
    assert all(r["ok"] for r in report["results"])


@pytest.mark.parametrize("name", ["template", "artifact", "admission"])
def test_every_policy_answers_one_decision_document(name: str) -> None:
    """The document the OPA engine asks for (data.agentfactory.<policy>.decision) is defined for any input."""
    proc = opa("eval", "--format=json", "--stdin-input", "-d", str(POLICIES), f"data.agentfactory.{name}.decision",
               stdin="{}")
    value = json.loads(proc.stdout)["result"][0]["expressions"][0]["value"]
    assert value["allow"] is False and value["deny"], value
    assert set(value) == ({"allow", "deny", "warn"} if name == "admission" else {"allow", "deny"})
