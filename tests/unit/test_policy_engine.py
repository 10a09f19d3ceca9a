"""The Rego engine fails closed: syntax errors, undefined decisions, evaluation errors, hostile input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentfactory.policy import MAX_INPUT_BYTES, MAX_INPUT_DEPTH, RegoEngine

GOOD = """package agentfactory.template
import rego.v1
default allow := false
allow if count(deny) == 0
deny := violations(input)
violations(inp) := {msg |
    some tool in inp.template.spec.tools
    tool in data.agentfactory.config.dangerous_tools
    msg := sprintf("spec.tools: '%s' is not allowed", [tool])
}
"""


def folder(tmp_path: Path, files: dict[str, str], data: object | None = None) -> Path:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    default = {"agentfactory": {"config": {"dangerous_tools": ["shell.exec"]}}}
    (tmp_path / "data.json").write_text(json.dumps(data or default))
    return tmp_path


def doc(*tools: str) -> dict[str, object]:
    return {"template": {"spec": {"tools": list(tools)}}}


def test_allow_and_deny(tmp_path: Path) -> None:
    engine = RegoEngine(folder(tmp_path, {"template.rego": GOOD}))
    assert engine.decide("template", doc("log")).allow
    denied = engine.decide("template", doc("shell.exec", "log"))
    assert not denied.allow and denied.deny == ("spec.tools: 'shell.exec' is not allowed",)


def test_syntax_error_names_file_and_line_and_refuses_everything(tmp_path: Path) -> None:
    broken = GOOD.replace("allow if count(deny) == 0", "allow if {\n    count(deny) ==\n}")
    engine = RegoEngine(folder(tmp_path, {"template.rego": broken}))
    decision = engine.decide("template", doc("log"))
    assert not decision.allow
    (reason,) = decision.deny
    assert f"{tmp_path / 'template.rego'}:5: " in reason and "refused until it is fixed" in reason
    assert not engine.run_tests().ok


def test_compile_error_refuses_everything(tmp_path: Path) -> None:
    cycle = GOOD.replace("allow if count(deny) == 0", "allow if count(deny) ==\nx := 1")
    decision = RegoEngine(folder(tmp_path, {"template.rego": cycle})).decide("template", doc("log"))
    assert not decision.allow and "refused until it is fixed" in decision.deny[0]


def test_undefined_decision_denies(tmp_path: Path) -> None:
    no_default = GOOD.replace("default allow := false\n", "").replace("allow if count(deny) == 0", "allow if false")
    decision = RegoEngine(folder(tmp_path, {"template.rego": no_default})).decide("template", doc("log"))
    assert not decision.allow and "undefined" in decision.deny[0]


def test_error_inside_evaluation_denies(tmp_path: Path) -> None:
    failing = GOOD.replace("deny := violations(input)", """deny := violations(input) | {msg |
    x := 1 / count(input.template.spec.tools)
    msg := sprintf("never %v", [x])
}""")
    decision = RegoEngine(folder(tmp_path, {"template.rego": failing})).decide("template", doc())
    assert not decision.allow  # 1/0 is an error: the rule that divides cannot silently not deny
    assert "evaluation" in decision.deny[0]


def test_unknown_policy_and_missing_folder(tmp_path: Path) -> None:
    engine = RegoEngine(folder(tmp_path, {"template.rego": GOOD}))
    assert "unknown policy" in engine.decide("nope", {}).deny[0]
    missing = RegoEngine(tmp_path / "nowhere").decide("template", doc())
    assert not missing.allow and "policies folder not found" in missing.deny[0]


def test_huge_and_deep_inputs_are_refused(tmp_path: Path) -> None:
    engine = RegoEngine(folder(tmp_path, {"template.rego": GOOD}))
    huge = engine.decide("template", {"template": {"spec": {"tools": ["x" * 1000] * (MAX_INPUT_BYTES // 1000)}}})
    assert not huge.allow and "the limit is" in huge.deny[0]
    deep: dict[str, object] = {}
    cursor = deep
    for _ in range(MAX_INPUT_DEPTH + 10):
        cursor["a"] = {}
        cursor = cursor["a"]  # type: ignore[assignment]
    refused = engine.decide("template", {"template": deep})
    assert not refused.allow and "nests deeper than" in refused.deny[0]
    assert engine.decide("template", doc("log")).allow  # and the engine still works afterwards


def test_bad_data_json(tmp_path: Path) -> None:
    f = folder(tmp_path, {"template.rego": GOOD})
    (f / "data.json").write_text("{not json")
    assert "data.json: not valid JSON" in RegoEngine(f).decide("template", doc()).deny[0]


def test_rego_unit_tests_run(tmp_path: Path) -> None:
    tests = """package agentfactory.template_test
import rego.v1
import data.agentfactory.template
test_denies_shell if {
    "spec.tools: 'shell.exec' is not allowed" in template.violations({"template": {"spec": {"tools": ["shell.exec"]}}})
}
test_wrong if { count(template.violations({"template": {"spec": {"tools": ["shell.exec"]}}})) == 0 }
"""
    report = RegoEngine(folder(tmp_path, {"template.rego": GOOD, "template_test.rego": tests})).run_tests()
    assert {(r.name, r.ok) for r in report.results} == {("test_denies_shell", True), ("test_wrong", False)}
    assert not report.ok


@pytest.mark.parametrize("policy", ["template", "artifact"])
def test_project_policies_compile(policy: str) -> None:
    engine = RegoEngine(Path(__file__).resolve().parents[2] / "policies")
    assert engine.broken is None, engine.broken
    assert isinstance(engine.decide(policy, {}).allow, bool)
