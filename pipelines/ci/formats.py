"""`ci check` reports for other tools: SARIF 2.1.0 (GitHub code scanning) and JUnit XML (test dashboards).

SARIF: one result per problem of a failed template (policy denial, invalid manifest, build or test
failure), placed on the file and line the message names (else the template's agent.yaml), and one per
open vulnerability of any checked template. JUnit: one test case per template; a failed template is a
failure listing every reason, a removed one is skipped.
"""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from pathlib import PurePosixPath
from typing import Any

from agentfactory.sarif import Result, Rule, sarif_log, vulnerability_result, vulnerability_rule

from .check import CheckReport
from .github import annotations_of, scrub

TOOL = "agentfactory ci check"
POLICY_RULE = Rule("agentfactory/policy-denied", "A Rego policy denied the template",
                   help="The template or artifact policy (policies/*.rego) refused it: the message says why.",
                   properties={"tags": ["security", "policy"]})
TEMPLATE_RULE = Rule("agentfactory/template-failed", "The template does not build, validate or pass its tests",
                     help="See the message: the manifest field, source, build or test case that failed.")


def _rule_of(message: str) -> Rule:
    return POLICY_RULE if "policy: " in message or message.startswith("policy") else TEMPLATE_RULE


def _open_findings(scan: dict[str, Any] | None) -> list[dict[str, Any]]:
    return [f for f in (scan or {}).get("findings", []) if not f.get("suppressed")]


def _vulnerability_line(finding: dict[str, Any]) -> str:
    return f"{finding.get('id')} ({str(finding.get('severity', '')).upper()}) in {finding.get('package')}"


def sarif(report: CheckReport) -> dict[str, Any]:
    """The report as one SARIF run."""
    results: list[Result] = []
    rules: list[Rule] = [POLICY_RULE, TEMPLATE_RULE]
    for t in report.failed:
        manifest = f"{t.path}/agent.yaml"
        for a in annotations_of(dataclasses.replace(report, templates=[t])):
            inside = not PurePosixPath(a.file).is_absolute() and ".." not in PurePosixPath(a.file).parts
            results.append(Result(_rule_of(a.message).id, "error", a.message if inside else f"{a.file}: {a.message}",
                                  a.file if inside else manifest, a.line if inside else None))
    for t in report.templates:
        if t.status == "removed":
            continue
        for finding in _open_findings(t.scan):
            rules.append(vulnerability_rule(finding))
            results.append(vulnerability_result(finding, f"{t.path}/agent.yaml"))
    return sarif_log(TOOL, results, rules)


def junit(report: CheckReport) -> str:
    """The report as JUnit XML: a <testsuite> of one <testcase> per template."""
    checked = list(report.templates)  # text from the pull request: control characters are not XML 1.0
    suite = ET.Element("testsuite", {
        "name": TOOL, "tests": str(len(checked)), "failures": str(len(report.failed)),
        "errors": "0", "skipped": str(sum(t.status == "removed" for t in checked))})
    ET.SubElement(ET.SubElement(suite, "properties"), "property", {"name": "base", "value": scrub(report.base)})
    for t in checked:
        case = ET.SubElement(suite, "testcase", {"classname": "templates", "name": scrub(t.name),
                                                 "file": scrub(f"{t.path}/agent.yaml")})
        if t.status == "removed":
            ET.SubElement(case, "skipped", {"message": "removed"})
        elif t.status == "failed":
            reasons = [scrub(e) for e in t.errors] + [scrub(_vulnerability_line(f)) for f in _open_findings(t.scan)]
            failure = ET.SubElement(case, "failure", {"message": reasons[0] if reasons else "failed",
                                                      "type": "agentfactory.failed"})
            failure.text = "\n".join(reasons)
    root = ET.Element("testsuites", {"name": TOOL, "tests": suite.get("tests", "0"),
                                     "failures": suite.get("failures", "0")})
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
