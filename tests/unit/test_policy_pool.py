"""The Rego engine's pool of interpreters (agentfactory/policy.py): decisions from many threads at once are
the decisions one thread makes, each policy's bundle holds only the modules it can depend on, and a bad
worker count fails closed."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from policy_texts import MINI_TEMPLATE_POLICY

from agentfactory.policy import WORKERS_ENV, RegoEngine, policy_modules

ROOT = Path(__file__).resolve().parents[2]

TEMPLATE = MINI_TEMPLATE_POLICY
ADMISSION = """package agentfactory.admission
import rego.v1
default allow := false
allow if count(deny) == 0
deny := {m | some n in input.names; n in data.lib.banned.names; m := sprintf("%s is banned", [n])}
warn := {m | input.dry; m := "dry run"}
"""
LIB = """package lib.banned
import rego.v1
names := {"mallory", "eve"}
"""
UNRELATED = """package agentfactory.artifact
import rego.v1
default allow := false
allow if input.ok == true
deny := set()
"""


def folder(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "data.json").write_text(json.dumps({"agentfactory": {"config": {"dangerous_tools": ["shell.exec"]}}}))
    return tmp_path


def tools(*names: str) -> dict[str, object]:
    return {"template": {"spec": {"tools": list(names)}}}


def test_modules_of_a_policy_follow_its_data_references() -> None:
    sources = {"t.rego": TEMPLATE, "a.rego": ADMISSION, "lib.rego": LIB, "u.rego": UNRELATED}
    assert sorted(policy_modules(sources, "agentfactory.template")) == ["t.rego"]
    assert sorted(policy_modules(sources, "agentfactory.admission")) == ["a.rego", "lib.rego"]
    assert sorted(policy_modules(sources, "agentfactory.artifact")) == ["u.rego"]


def test_a_parent_package_or_a_computed_data_key_takes_every_module_it_may_need() -> None:
    parent = "package agentfactory\nimport rego.v1\ntemplate.extra := 1\n"
    sources = {"t.rego": TEMPLATE, "p.rego": parent, "u.rego": UNRELATED}
    assert sorted(policy_modules(sources, "agentfactory.template")) == ["p.rego", "t.rego"]
    whole = TEMPLATE + 'x := data.agentfactory\n'
    assert sorted(policy_modules({"t.rego": whole, "u.rego": UNRELATED}, "agentfactory.template")) == ["t.rego",
                                                                                                       "u.rego"]
    computed = TEMPLATE + 'y := data["agentfactory"]\n'
    assert sorted(policy_modules({"t.rego": computed, "u.rego": UNRELATED}, "agentfactory.template")) == ["t.rego",
                                                                                                          "u.rego"]


def test_a_policy_that_reads_another_package_still_decides_with_it(tmp_path: Path) -> None:
    engine = RegoEngine(folder(tmp_path, {"t.rego": TEMPLATE, "a.rego": ADMISSION, "lib.rego": LIB}), workers=2)
    denied = engine.decide("admission", {"names": ["alice", "eve"], "dry": True})
    assert not denied.allow and denied.deny == ("eve is banned",) and denied.warn == ("dry run",)
    assert engine.decide("admission", {"names": ["alice"], "dry": False}).allow


def test_threads_get_the_decisions_one_thread_gets(tmp_path: Path) -> None:
    engine = RegoEngine(folder(tmp_path, {"t.rego": TEMPLATE}), workers=3)
    engine.warm_up("template")
    cases = [tools("log"), tools("shell.exec", "log"), tools('q"q', "shell.exec"), tools()]
    expected = [engine.decide("template", c) for c in cases]
    assert [d.allow for d in expected] == [True, False, False, True]
    results: list[list[object]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append([engine.decide("template", c) for _ in range(40) for c in cases])
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 6 and all(r == expected * 40 for r in results)


def test_the_real_policies_decide_the_same_with_one_worker_or_several(tmp_path: Path) -> None:
    one, two = RegoEngine(ROOT / "policies", workers=1), RegoEngine(ROOT / "policies", workers=2)
    document = {"request": {"operation": "CREATE", "namespace": "x", "kind": "WasmAgent", "dryRun": False,
                            "mode": "enforce"},
                "agent": {"ref": "a:latest", "field": "spec.agent", "pinned": False, "name": "a", "digest": None,
                          "stage": "dev", "requested_stage": None, "requested_stage_field": None},
                "verdict": None}
    first = one.decide("admission", document)
    assert not first.allow and first.deny
    assert two.decide("admission", document) == first
    assert one.workers == 1 and two.workers == 2


@pytest.mark.parametrize("value", ["0", "-1", "two", "65", "1.5"])
def test_a_bad_worker_count_refuses_every_decision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   value: str) -> None:
    monkeypatch.setenv(WORKERS_ENV, value)
    engine = RegoEngine(folder(tmp_path, {"t.rego": TEMPLATE}))
    decision = engine.decide("template", tools("log"))
    assert not decision.allow and decision.refused and WORKERS_ENV in decision.deny[0]


def test_the_worker_count_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(WORKERS_ENV, "3")
    engine = RegoEngine(folder(tmp_path, {"t.rego": TEMPLATE}))
    assert engine.workers == 3 and engine.decide("template", tools("log")).allow
