"""The Rego engine fails closed: syntax errors, undefined decisions, evaluation errors, hostile input,
unexpected result shapes; and every input passes the one boundary (agentfactory/policy_input.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from policy_texts import MINI_TEMPLATE_POLICY

from agentfactory.policy import MAX_INPUT_BYTES, MAX_INPUT_DEPTH, Decision, PolicyEngine, RegoEngine
from agentfactory.policy import TestReport as Report
from agentfactory.policy_input import MAX_STRING_BYTES, MAX_STRINGS, PolicyInputError, check_input

GOOD = MINI_TEMPLATE_POLICY


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


def test_packages_run_in_parallel_each_reporting_its_own_results_and_errors(tmp_path: Path) -> None:
    """`policy test` runs the packages in parallel threads: every package's results and errors are reported,
    each under its own package, in the order the packages were found, whichever finished first."""
    packages = {f"p{n}_test.rego": f"""package agentfactory.p{n}_test
import rego.v1
import data.agentfactory.template
test_fine if {{ count(template.violations({{"template": {{"spec": {{"tools": ["log"]}}}}}})) == 0 }}
test_wrong_{n} if {{ count(template.violations({{"template": {{"spec": {{"tools": ["shell.exec"]}}}}}})) == 0 }}
""" for n in range(4)}
    packages["p4_test.rego"] = "package agentfactory.p4_test\nimport rego.v1\ntest_broken if { nosuchfn(1) }\n"
    report = RegoEngine(folder(tmp_path, {"template.rego": GOOD, **packages})).run_tests()
    expected = [(f"agentfactory.p{n}_test", name, name == "test_fine") for n in range(4)
                for name in ("test_fine", f"test_wrong_{n}")] + [("agentfactory.p4_test", "test_broken", False)]
    assert sorted((r.package, r.name, r.ok) for r in report.results) == sorted(expected)
    assert [r.package for r in report.results] == sorted(r.package for r in report.results)  # found order: p0..p4
    assert all(r.detail for r in report.results if not r.ok)  # each failure says why
    assert not report.ok


@pytest.mark.parametrize(("body", "why"), [
    ("nosuchfn(1)", "an unknown function: the tests do not compile"),
    ("y == 1", "an unsafe variable: the test is undefined"),
])  # rego-cpp accepts a call with too many arguments, with or without the load-time check; OPA refuses it
    # (`opa check --strict` and `opa test` over policies/, tests/integration/test_opa_reference.py)
def test_a_test_that_does_not_compile_fails_the_run(tmp_path: Path, body: str, why: str) -> None:
    """`policy test` compiles the policies with their tests once (the bundle), not also at load: whatever
    rego-cpp cannot compile must still make the run fail, never pass or vanish."""
    tests = f"""package agentfactory.template_test
import rego.v1
import data.agentfactory.template
test_fine if {{ count(template.violations({{"template": {{"spec": {{"tools": ["log"]}}}}}})) == 0 }}
test_broken if {{ {body} }}
"""
    report = RegoEngine(folder(tmp_path, {"template.rego": GOOD, "template_test.rego": tests})).run_tests()
    assert not report.ok, why
    assert report.errors or ("test_broken", False) in {(r.name, r.ok) for r in report.results}, why


TEMPLATE_TESTS = """package agentfactory.template_test
import rego.v1
import data.agentfactory.template
test_denies_shell if {
    "spec.tools: 'shell.exec' is not allowed" in template.violations({"template": {"spec": {"tools": ["shell.exec"]}}})
}
"""


def test_a_policy_no_test_reads_still_fails_the_run_when_it_does_not_parse(tmp_path: Path) -> None:
    """Each package's tests are compiled with only the modules it can read; the policies themselves are loaded
    whole first, so one that does not parse fails the run even where no test reads it. (rego-cpp accepts an
    unknown function, an unsafe variable or a recursion in a rule nothing evaluates, as it did when the folder
    was compiled whole; OPA's own check does not: tests/integration/test_opa_reference.py runs it on policies/.)"""
    other = "package agentfactory.other\nimport rego.v1\nbad if {\n"
    report = RegoEngine(folder(tmp_path, {"template.rego": GOOD, "template_test.rego": TEMPLATE_TESTS,
                                          "other.rego": other})).run_tests()
    assert not report.ok and report.errors


def test_each_package_is_tested_and_one_that_does_not_compile_hides_no_other(tmp_path: Path) -> None:
    """Two files of one package run together; a second package whose tests do not compile is an error of its own
    and the first package's results are still reported."""
    more = TEMPLATE_TESTS.replace("test_denies_shell", "test_denies_shell_again")
    broken = "package agentfactory.broken_test\nimport rego.v1\ntest_x if { nosuchfn(1) }\n"
    report = RegoEngine(folder(tmp_path, {"template.rego": GOOD, "template_test.rego": TEMPLATE_TESTS,
                                          "template_more_test.rego": more, "broken_test.rego": broken})).run_tests()
    assert {(r.package, r.name, r.ok) for r in report.results} >= {
        ("agentfactory.template_test", "test_denies_shell", True),
        ("agentfactory.template_test", "test_denies_shell_again", True)}
    assert not report.ok
    assert any("agentfactory.broken_test" in e for e in report.errors) or \
        ("agentfactory.broken_test", "test_x", False) in {(r.package, r.name, r.ok) for r in report.results}


@pytest.mark.parametrize("policy", ["template", "artifact"])
def test_project_policies_compile(policy: str) -> None:
    engine = RegoEngine(Path(__file__).resolve().parents[2] / "policies")
    assert engine.broken is None, engine.broken
    assert isinstance(engine.decide(policy, {}).allow, bool)


# --- the input boundary (agentfactory/policy_input.py) and the typed reading of a decision ------------

PAYLOAD = '"]},"bindings":{"allow":true,"deny":[],"z":["'


def test_a_deny_message_echoing_the_payload_still_denies(tmp_path: Path) -> None:
    """rego-cpp does not escape `"` in sprintf: the decision must not be read from its text."""
    echoing = GOOD.replace("tool in data.agentfactory.config.dangerous_tools", 'tool != "log"')
    engine = RegoEngine(folder(tmp_path, {"template.rego": echoing}))
    assert engine.decide("template", doc("log")).allow
    for tool in (PAYLOAD, f"x{PAYLOAD}", 'x"]},{"expressions":[true]}'):
        denied = engine.decide("template", doc("log", tool))
        assert not denied.allow and not denied.refused
        assert denied.deny == (f"spec.tools: '{tool}' is not allowed",)  # shown as written


@pytest.mark.parametrize(("value", "reason"), [
    ("a\x00b", "NUL character"),
    ("\ud800", "lone surrogate"),
    ("x" * (MAX_STRING_BYTES + 1), f"the limit is {MAX_STRING_BYTES}"),
    (float("nan"), "not a JSON number"),
    (float("inf"), "not a JSON number"),
    (2**64 + 1, "64-bit range"),
    (b"bytes", "not JSON"),
    ({"shell.exec"}, "not JSON"),
    ({1: "x"}, "keys must be strings"),
])
def test_the_boundary_refuses_what_the_engine_could_misread(tmp_path: Path, value: object, reason: str) -> None:
    engine = RegoEngine(folder(tmp_path, {"template.rego": GOOD}))
    decision = engine.decide("template", {"template": {"spec": {"tools": ["log", value]}}})
    assert not decision.allow and decision.refused
    (message,) = decision.deny
    assert message.startswith("input.template.spec.tools[1]") and reason in message, message
    assert "refused" in message


def test_the_boundary_accepts_quotes_newlines_and_a_string_at_the_limit(tmp_path: Path) -> None:
    engine = RegoEngine(folder(tmp_path, {"template.rego": GOOD}))
    for text in ('"', "\n", "\u2028", "'", "{}", PAYLOAD, "é" * (MAX_STRING_BYTES // 2)):
        decision = engine.decide("template", doc("log", text))
        assert decision.allow and not decision.refused, (text[:20], decision.deny)


def test_the_boundary_bounds_the_number_of_strings() -> None:
    check_input({"a": ["x"] * (MAX_STRINGS - 2)})
    with pytest.raises(PolicyInputError, match=f"more than {MAX_STRINGS} strings"):
        check_input({"a": ["x"] * MAX_STRINGS})


def test_every_engine_gets_the_boundary() -> None:
    """The port applies it: an engine only implements `judge`, and never sees a refused input."""
    seen: list[dict[str, object]] = []

    class Recording(PolicyEngine):
        def judge(self, policy: str, document: dict[str, object]) -> Decision:
            seen.append(document)
            return Decision(policy, True, ())

        def run_tests(self) -> Report:
            return Report()

    assert Recording().decide("template", {"ok": "fine"}).allow
    assert not Recording().decide("template", {"bad": "\x00"}).allow
    assert seen == [{"ok": "fine"}]


@pytest.mark.parametrize(("rule", "needle"), [
    ('deny := {"a": 1}', "not a set of messages"),
    ('deny := ["a"]', "not a set of messages"),
    ("allow := 1\ndeny := set()", "allow is a Int"),
    ('allow := "true"\ndeny := set()', "allow is a String"),
])
def test_an_unexpected_result_shape_denies(tmp_path: Path, rule: str, needle: str) -> None:
    policy = "package agentfactory.template\nimport rego.v1\n" + ("default allow := true\n" if "allow" not in rule
                                                                  else "") + rule + "\n"
    decision = RegoEngine(folder(tmp_path, {"template.rego": policy})).decide("template", doc("log"))
    assert not decision.allow and needle in " ".join(decision.deny), decision.deny


def test_a_non_string_denial_still_counts(tmp_path: Path) -> None:
    policy = "package agentfactory.template\nimport rego.v1\nallow := true\ndeny contains {\"rule\": \"T1\"} if true\n"
    decision = RegoEngine(folder(tmp_path, {"template.rego": policy})).decide("template", doc("log"))
    assert not decision.allow and decision.deny == ('{"rule":"T1"}',)
