"""A pull request writes text that lands in the reports other tools read: `ci check --format junit` (CI test
dashboards parse it as XML) and `--format sarif` (GitHub code scanning). Its author controls template
folder names (within DNS labels), agent.yaml values that error messages quote, and source files whose
findings are quoted. Attack: XML markup or control characters in that text forge or hide test cases, or
break the file so the dashboard shows nothing; a path that escapes the repository in a SARIF location.
Defence: JUnit is built with ElementTree (markup escaped) and every value scrubbed of control characters
(not XML 1.0); SARIF is JSON (escaped) with relative URIs under %SRCROOT%."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from sarif_helpers import github_problems, validator

from pipelines.ci.check import CheckReport, TemplateCheck
from pipelines.ci.formats import junit, sarif

FORGED = '</failure></testcase><testcase classname="templates" name="forged"/><testcase name="x"><failure>'


def hostile_report() -> CheckReport:
    t = TemplateCheck("templates/evil", "evil", "failed", errors=[
        f"templates/evil/agent.yaml:3: metadata.description: {FORGED}",
        "templates/evil/src/main.c:1: quoting \x00\x07\x1b[2J\ufeff and ]]> <!DOCTYPE x [<!ENTITY e 'boom'>]>",
        "../../../etc/passwd.yaml:1: a message that names a file outside the repository",
        "::error ::a workflow command smuggled into a message"])
    return CheckReport("main\x1b[31m", "a" * 40, "b" * 40, [t, TemplateCheck("templates/ok", "ok", "passed")])


def test_junit_cannot_be_forged_or_broken_by_the_pull_requests_text() -> None:
    text = junit(hostile_report())
    root = ET.fromstring(text.encode())  # well-formed XML 1.0: no raw control characters
    names = [c.get("name") for c in root.iter("testcase")]
    assert names == ["evil", "ok"]  # no forged test case
    failure = next(root.iter("failure"))
    assert FORGED in (failure.text or "") and "\\x1b[2J" in (failure.text or "")
    assert "<!DOCTYPE" not in text and "\x00" not in text and "\x1b" not in text


def test_sarif_keeps_the_text_as_data_and_locations_inside_the_repository() -> None:
    log = sarif(hostile_report())
    assert list(validator().iter_errors(log)) == [] and github_problems(log) == []
    again = json.loads(json.dumps(log))
    messages = [r["message"]["text"] for r in again["runs"][0]["results"]]
    assert any(FORGED in m for m in messages)
    for r in again["runs"][0]["results"]:
        location = r["locations"][0]["physicalLocation"]["artifactLocation"]
        assert location["uriBaseId"] == "%SRCROOT%" and not location["uri"].startswith(("/", "..", "file:"))
