"""SARIF 2.1.0 logs: the format GitHub code scanning (and most review tools) ingest.

One writer for every command that reports problems (`ci check`, `scan`): each problem is a `Result`
with a rule id, a level, a message and, when known, the file and line it is about. GitHub refuses a
result without a location, so the caller always names a file (the template's agent.yaml, the SBOM).
Vulnerabilities carry `security-severity` on their rule, which GitHub maps to its severity scale.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from . import __version__

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
INFORMATION_URI = "https://agentfactory.dev"
LEVELS = ("error", "warning", "note", "none")
# GitHub's thresholds for `security-severity`: > 9.0 critical, >= 7.0 high, >= 4.0 medium, else low.
_SECURITY_SEVERITY = {"critical": "9.5", "high": "8.0", "medium": "5.5", "low": "2.0"}
_LEVEL_OF_SEVERITY = {"critical": "error", "high": "error", "medium": "warning", "low": "note"}


@dataclass(frozen=True)
class Rule:
    """What kind of problem a result is: shown by GitHub as the alert's title and help."""

    id: str
    description: str
    help: str = ""
    properties: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"id": self.id, "name": self.id, "shortDescription": {"text": self.description},
                               "fullDescription": {"text": self.help or self.description}}
        if self.help:
            doc["help"] = {"text": self.help}
        if self.properties:
            doc["properties"] = self.properties
        return doc


@dataclass(frozen=True)
class Result:
    """One problem, about `file` (a path relative to the repository root) and `line` when known."""

    rule_id: str
    level: str
    message: str
    file: str
    line: int | None = None
    properties: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"SARIF level {self.level!r}: use one of {', '.join(LEVELS)}")

    def to_json(self, rule_index: int) -> dict[str, Any]:
        region = {"startLine": self.line} if self.line and self.line > 0 else None
        physical: dict[str, Any] = {"artifactLocation": {"uri": _uri(self.file), "uriBaseId": "%SRCROOT%"}}
        if region:
            physical["region"] = region
        doc: dict[str, Any] = {"ruleId": self.rule_id, "ruleIndex": rule_index, "level": self.level,
                               "message": {"text": self.message or self.rule_id},
                               "locations": [{"physicalLocation": physical}]}
        if self.properties:
            doc["properties"] = self.properties
        return doc


def _uri(path: str) -> str:
    """A relative URI reference: forward slashes, no leading './', spaces and '%' escaped."""
    text = path.replace("\\", "/").removeprefix("./")
    return text.replace("%", "%25").replace(" ", "%20")


def level_of_severity(severity: str) -> str:
    """The SARIF level of a vulnerability severity (critical/high → error, medium → warning, else note)."""
    return _LEVEL_OF_SEVERITY.get(severity.lower(), "note")


def vulnerability_rule(finding: dict[str, Any]) -> Rule:
    """The rule of a vulnerability finding (`Finding.to_json()`): its advisory id, summary and severity."""
    severity = str(finding.get("severity", "unknown")).lower()
    properties: dict[str, Any] = {"tags": ["security", "vulnerability"], "problem.severity": level_of_severity(
        severity)}
    score = (finding.get("cvss") or {}).get("score")
    if isinstance(score, (int, float)) and not isinstance(score, bool):
        properties["security-severity"] = f"{float(score):.1f}"
    elif severity in _SECURITY_SEVERITY:
        properties["security-severity"] = _SECURITY_SEVERITY[severity]
    fixed = finding.get("fixedVersions") or []
    help_text = f"fix: upgrade to {' or '.join(fixed)}" if fixed else "no fixed version is published"
    return Rule(str(finding.get("id", "vulnerability")), str(finding.get("summary") or finding.get("id")),
                help=help_text, properties=properties)


def vulnerability_result(finding: dict[str, Any], file: str, line: int | None = None) -> Result:
    """A result for an open vulnerability finding, placed on `file` (the SBOM or the template's agent.yaml)."""
    fixed = finding.get("fixedVersions") or []
    fix = f"; fix: upgrade to {' or '.join(fixed)}" if fixed else "; no fix published"
    package = str(finding.get("package"))
    # a purl already names its version (pkg:npm/lodash@4.17.20): say it once
    what = package if package.startswith("pkg:") and "@" in package else f"{package} {finding.get('version')}"
    message = f"{finding.get('id')} ({str(finding.get('severity', 'unknown')).upper()}) in {what}{fix}"
    return Result(str(finding.get("id", "vulnerability")), level_of_severity(str(finding.get("severity", ""))),
                  message, file, line, properties={"package": finding.get("package"),
                                                   "version": finding.get("version")})


def sarif_log(tool: str, results: Iterable[Result], rules: Iterable[Rule] = (), *,
              version: str = __version__) -> dict[str, Any]:
    """One run of `tool` as a SARIF 2.1.0 log. A result whose rule is not in `rules` gets a plain rule of
    its own id, so that every `ruleIndex` points at a rule."""
    results = list(results)
    by_id: dict[str, Rule] = {}
    for rule in rules:
        by_id.setdefault(rule.id, rule)
    for result in results:
        by_id.setdefault(result.rule_id, Rule(result.rule_id, result.rule_id))
    order = {rule_id: i for i, rule_id in enumerate(by_id)}
    return {
        "$schema": SARIF_SCHEMA,
        "version": SARIF_VERSION,
        "runs": [{
            "tool": {"driver": {"name": tool, "version": version, "semanticVersion": version,
                                "informationUri": INFORMATION_URI,
                                "rules": [r.to_json() for r in by_id.values()]}},
            "originalUriBaseIds": {"%SRCROOT%": {"description": {"text": "the repository root"}}},
            "results": [r.to_json(order[r.rule_id]) for r in results],
        }],
    }


def dumps(log: dict[str, Any]) -> str:
    return json.dumps(log, indent=2, ensure_ascii=False) + "\n"
