"""The artifact policy's times, parsed once by the input builder (policy_input.rfc3339_ns, `input.times`), and the
input boundary's one walk (check_input's CheckedInput). The policy looks each time string up in input.times and
denies one that is not there; these tests hold the parser to the rules the policy used to apply itself."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agentfactory.policy import RegoEngine, quoted_string
from agentfactory.policy_input import check_input, rfc3339_ns, times_input
from agentfactory.verifier import Check, artifact_input

ROOT = Path(__file__).resolve().parents[2]
CHECKS = ["digest", "signature", "key-status", "sbom", "provenance", "scan", "builder", "source"]
PROVENANCE = {"dirty": False, "repository": "https://github.com/example/agents",
              "builder": "https://agentfactory.dev/builders/pipeline@v1"}
TRUST = {"repositories": ["https://github.com/example/*"]}


def expected_ns(text: str) -> int:
    """The nanoseconds by another road: datetime's own ISO parser, the fraction added as written."""
    fraction = re.search(r"\.([0-9]+)", text)
    whole = re.sub(r"\.[0-9]+", "", text).replace("z", "Z").replace("t", "T")
    seconds = int(datetime.fromisoformat(whole).timestamp())
    return seconds * 1_000_000_000 + int((fraction.group(1) if fraction else "").ljust(9, "0"))


@pytest.mark.parametrize("text", [
    "2026-12-06T08:00:00Z", "2026-12-05T08:00:01.500Z", "2026-12-05T09:30:00+02:00", "2026-12-05T09:30:00-11:45",
    "2024-02-29T00:00:00z", "2000-02-29t12:00:00Z", "1970-01-01T00:00:00Z", "1970-01-01T00:00:00+01:00",
    "2261-12-31T23:59:59.999999999Z", "2026-12-06T07:00:00.123456789+00:00", "2026-01-31T23:59:59+23:59",
])
def test_a_valid_time_has_its_nanoseconds(text: str) -> None:
    assert rfc3339_ns(text) == expected_ns(text)
    assert times_input(text) == {text: expected_ns(text)}


@pytest.mark.parametrize("text", [
    "", "yesterday", "2026-13-05T08:00:00Z", "2026-00-05T08:00:00Z", "2026-12-00T08:00:00Z", "2026-12-05 08:00:00Z",
    "2026-12-05T08:00:00", "2026-02-29T08:00:00Z", "2100-02-29T08:00:00Z", "2026-04-31T08:00:00Z",
    "2026-12-05T08:00:00+24:00", "2026-12-05T08:00:00+02:60", "02026-12-05T08:00:00Z", "9999-12-31T23:59:59.999Z",
    "1969-12-31T23:59:59Z", "2262-01-01T00:00:00Z", "2026-12-05T24:00:00Z", "2026-12-05T08:60:00Z",
    "2026-12-05T08:00:60Z", "2026-12-05T08:00:00.1234567890Z", "2026-12-05T08:00:00.Z", "2026-12-05T08:00:00Z\n",
    " 2026-12-05T08:00:00Z", "2026-12-05T08:00:00ZZ", "\uff12\uff10\uff12\uff16-12-05T08:00:00Z",  # full-width digits
    1765000000, None, ["2026-12-05T08:00:00Z"],
])
def test_anything_else_is_not_a_time(text: Any) -> None:
    assert rfc3339_ns(text) is None
    assert times_input(text) == {}


def test_the_rego_tests_use_the_builders_values() -> None:
    """policies/artifact_test.rego hard-codes input.times for its strings: they must be what the builder gives."""
    text = (ROOT / "policies/artifact_test.rego").read_text()
    block = text[text.index("fixture_times := {"):]
    table = dict(re.findall(r'"([^"]+)": (-?[0-9]+)', block[:block.index("\n}\n")]))
    assert len(table) >= 10
    assert {k: int(v) for k, v in table.items()} == {k: rfc3339_ns(k) for k in table}


def prod_document(now: datetime, scanned_on: str) -> dict[str, Any]:
    return artifact_input("hello", "1.0.0", "sha256:" + "34" * 32, "prod", [Check(n, True, "verified") for n in CHECKS],
                          10.0, {"components": []}, None,
                          {"findings": [], "unscanned": [], "scanners": ["agentfactory-osv"], "scannedOn": scanned_on},
                          now=now, provenance=PROVENANCE, trust=TRUST)


@pytest.fixture(scope="module")
def engine() -> RegoEngine:
    e = RegoEngine(ROOT / "policies")
    assert e.broken is None, e.broken
    return e


def test_the_builder_passes_both_times_and_the_policy_judges_them(engine: RegoEngine) -> None:
    now = datetime(2026, 12, 6, 8, 0, tzinfo=UTC)
    fresh = prod_document(now, "2026-12-06T07:00:00.5Z")
    assert fresh["times"] == {"2026-12-06T08:00:00Z": expected_ns("2026-12-06T08:00:00Z"),
                              "2026-12-06T07:00:00.5Z": expected_ns("2026-12-06T07:00:00.5Z")}
    assert engine.decide("artifact", fresh).allow
    stale = engine.decide("artifact", prod_document(now, (now - timedelta(hours=25)).strftime("%Y-%m-%dT%H:%M:%SZ")))
    assert not stale.allow and stale.deny[0].startswith("scan.scannedOn: the newest verified scan finished at")


@pytest.mark.parametrize("scanned_on", ["2026-02-30T07:00:00Z", "2026-12-06T07:00:00", "never"])
def test_a_malformed_scan_time_is_left_out_and_denied(engine: RegoEngine, scanned_on: str) -> None:
    document = prod_document(datetime(2026, 12, 6, 8, 0, tzinfo=UTC), scanned_on)
    assert scanned_on not in document["times"]
    decision = engine.decide("artifact", document)
    assert not decision.allow and not decision.refused
    assert any(m.startswith(f"scan.scannedOn: the scan's finish time {scanned_on} is missing or not an RFC 3339 time")
               for m in decision.deny), decision.deny


def test_a_string_edited_after_the_build_is_not_judged_by_a_stale_value(engine: RegoEngine) -> None:
    """The values are keyed by the strings: a scannedOn changed after artifact_input finds no value and denies."""
    document = prod_document(datetime(2026, 12, 6, 8, 0, tzinfo=UTC), "2026-12-06T07:00:00Z")
    document["scan"]["scannedOn"] = "2026-12-06T07:30:00Z"
    decision = engine.decide("artifact", document)
    assert not decision.allow
    assert any("scannedOn: the scan's finish time 2026-12-06T07:30:00Z is missing" in m for m in decision.deny)
    document["times"] = {"2026-12-06T08:00:00Z": "1796544000000000000", "2026-12-06T07:30:00Z": 1.5}
    decision = engine.decide("artifact", document)
    assert not decision.allow and len(decision.deny) == 2, decision.deny  # neither wrong-typed value is a time


@pytest.mark.parametrize(("document", "maybe"), [
    ({"a": "x", "b": ["y", {"c": 1}]}, False), ({"a": '"CREATE"'}, True), ({'"k"': 1}, True),
    ({"a": ['x"', '"']}, False), ({"a": '"]},"z":["'}, True),
])
def test_the_boundary_notes_a_possibly_quoted_string_in_its_one_walk(document: dict[str, Any], maybe: bool) -> None:
    checked = check_input(document)
    assert checked.maybe_quoted is maybe
    if not maybe:
        assert quoted_string(document) == ""  # no candidate: nothing the engine would refuse for quotes


def test_decide_refuses_a_quoted_string_exactly_as_judge_does(engine: RegoEngine) -> None:
    document = {"request": {"operation": '"CREATE"', "namespace": "a"}, "agent": None, "verdict": None}
    decided, judged = engine.decide("admission", document), engine.judge("admission", document)
    assert decided == judged and decided.refused and "JSON string literal" in decided.deny[0]
