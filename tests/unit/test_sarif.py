"""SARIF 2.1.0 logs (agentfactory/sarif.py, `ci check --format sarif`): valid against the OASIS schema, and
shaped as GitHub code scanning needs (a rule id, a level, a message and a file location on every result)."""

from __future__ import annotations

import json

import pytest
from sarif_helpers import github_problems, schema, validator

from agentfactory.sarif import Result, Rule, level_of_severity, sarif_log, vulnerability_result, vulnerability_rule
from pipelines.ci.check import CheckReport, TemplateCheck
from pipelines.ci.formats import junit, sarif

FINDING = {"id": "GHSA-35jh-r3h4-6jhm", "package": "pkg:npm/lodash", "version": "4.17.20", "severity": "high",
           "cvss": {"score": 7.2, "vector": "CVSS:3.1/AV:N"}, "fixedVersions": ["4.17.21"], "summary": "Command "
           "injection in lodash", "suppressed": False}


def sample_report() -> CheckReport:
    failed = TemplateCheck("templates/my agent", "myagent", "failed", version="1.1.0", errors=[
        "templates/my agent/agent.yaml:7: policy: owners must name a team",
        "templates/my agent/agent.yaml: metadata.version: bump metadata.version above 1.0.0",
        "build failed: no file named here\x1b[31m"], scan={"findings": [FINDING, {**FINDING, "id": "GHSA-x",
                                                                                   "suppressed": True}]})
    passed = TemplateCheck("templates/ok", "ok", "passed", version="1.0.0")
    removed = TemplateCheck("templates/gone", "gone", "removed")
    return CheckReport("origin/main", "a" * 40, "b" * 40, [failed, passed, removed])


def test_the_ci_check_sarif_is_valid_and_placed_on_files() -> None:
    log = sarif(sample_report())
    assert list(validator().iter_errors(log)) == []
    assert github_problems(log) == []
    results = log["runs"][0]["results"]
    by_rule = [(r["ruleId"], r["level"]) for r in results]
    assert by_rule == [("agentfactory/policy-denied", "error"), ("agentfactory/template-failed", "error"),
                       ("agentfactory/template-failed", "error"), ("GHSA-35jh-r3h4-6jhm", "error")]
    first = results[0]["locations"][0]["physicalLocation"]
    assert first == {"artifactLocation": {"uri": "templates/my%20agent/agent.yaml", "uriBaseId": "%SRCROOT%"},
                     "region": {"startLine": 7}}
    assert "region" not in results[1]["locations"][0]["physicalLocation"]  # no line known: the file only
    rule = next(r for r in log["runs"][0]["tool"]["driver"]["rules"] if r["id"] == "GHSA-35jh-r3h4-6jhm")
    assert rule["properties"]["security-severity"] == "7.2" and "4.17.21" in rule["help"]["text"]
    assert not any(r["ruleId"] == "GHSA-x" for r in results)  # suppressed by VEX: not an alert


def test_the_schema_and_the_github_checks_can_fail() -> None:
    log = sarif(sample_report())
    broken = json.loads(json.dumps(log))
    broken["runs"][0]["results"][0]["level"] = "fatal"
    assert list(validator().iter_errors(broken))
    broken = json.loads(json.dumps(log))
    del broken["runs"][0]["results"][0]["locations"]
    assert github_problems(broken) == ["result 0: no file location"]
    with pytest.raises(ValueError, match="SARIF level"):
        Result("x", "fatal", "m", "f")


def test_an_empty_run_and_a_scan_style_log_are_valid() -> None:
    assert list(validator().iter_errors(sarif_log("agentfactory scan", []))) == []
    log = sarif_log("agentfactory scan", [vulnerability_result(FINDING, "sbom/x/1.0.0.cdx.json")],
                    [vulnerability_rule(FINDING), Rule("unused", "a rule with no result")])
    assert list(validator().iter_errors(log)) == [] and github_problems(log) == []


@pytest.mark.parametrize(("severity", "level"), [("critical", "error"), ("HIGH", "error"), ("medium", "warning"),
                                                 ("low", "note"), ("unknown", "note")])
def test_levels(severity: str, level: str) -> None:
    assert level_of_severity(severity) == level


def test_junit_xml_one_case_per_template() -> None:
    import xml.etree.ElementTree as ET

    root = ET.fromstring(junit(sample_report()).encode())
    suite = root.find("testsuite")
    assert suite is not None and (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("3", "1", "1")
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    failure = cases["myagent"].find("failure")
    assert failure is not None
    assert failure.get("message") == "templates/my agent/agent.yaml:7: policy: owners must name a team"
    assert "\\x1b[31m" in (failure.text or "") and "GHSA-35jh-r3h4-6jhm (HIGH)" in (failure.text or "")
    assert cases["ok"].find("failure") is None and cases["gone"].find("skipped") is not None


def test_the_schema_is_the_sarif_2_1_0_one() -> None:
    doc = schema()
    assert doc["properties"]["version"]["enum"] == ["2.1.0"]
    assert {"version", "runs"} <= set(doc["required"])
