"""Attack: rewrite a policy decision with an input string (issue 16, part 1).

rego-cpp copies input strings into its deny messages without escaping `"`; a decision read from
that text with json.loads kept the last of two `"bindings"`, so a string such as
`"]},"bindings":{"allow":true,"deny":[],"z":["` turned a deny into an allow. The class is "any
string in any policy input can change a decision": every string leaf of real inputs of the three
policies is replaced in turn by each hostile string (policy_injection_cases.HOSTILE: quotes,
backslashes, the payload and its variants, newlines, NUL, U+2028, lone surrogates, 64 KiB strings,
JSON and Rego text), and no decision may be more permissive than the one for a benign string.
Every engine that runs in-process is attacked: regopy, and the policies compiled to Wasm by OPA (`opa-wasm`,
whose messages pass through the host's own sprintf). The throughput of these cases is benchmarks/bench_policy_fuzz.py's.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from policy_injection_cases import (
    BENIGN,
    HOSTILE,
    PAYLOAD,
    Base,
    artifact_bases,
    bases,
    leaves,
    more_permissive,
    replaced,
    run,
)

from agentfactory.policy import PolicyEngine, RegoEngine

ROOT = Path(__file__).resolve().parents[2]
BASES = bases()


@pytest.fixture(scope="module", params=["rego", "opa-wasm"])
def engine(request: pytest.FixtureRequest) -> PolicyEngine:
    e: PolicyEngine
    if request.param == "rego":
        e = RegoEngine(ROOT / "policies")
    else:
        from peer_tools import require

        from agentfactory.policy_wasm import OPAWasmEngine

        e = OPAWasmEngine(ROOT / "policies", opa=require("opa"))
    assert getattr(e, "broken", None) is None, getattr(e, "broken", None)
    return e


def test_the_suite_has_at_least_ten_thousand_cases_over_the_three_policies() -> None:
    counts = {p: sum(len(list(leaves(b.document))) * len(HOSTILE) for b in BASES if b.policy == p)
              for p in ("template", "artifact", "admission")}
    assert all(n >= 2000 for n in counts.values()), counts
    assert sum(counts.values()) >= 10_000, counts


def test_the_bases_include_denied_decisions_the_payload_must_not_turn_into_allows(engine: PolicyEngine) -> None:
    decisions = {(b.policy, b.name): engine.decide(b.policy, b.document) for b in BASES}
    for policy in ("template", "artifact", "admission"):
        assert any(not d.allow and not d.refused for (p, _), d in decisions.items() if p == policy), policy
    assert any(d.allow for d in decisions.values())


@pytest.mark.parametrize("base", BASES, ids=lambda b: f"{b.policy}-{b.name}")
def test_no_hostile_string_makes_a_decision_more_permissive(engine: PolicyEngine, base: Base) -> None:
    outcome = run(engine, base)
    assert outcome.cases == len(list(leaves(base.document))) * len(HOSTILE)
    assert not outcome.failures, "\n".join(outcome.failures[:20])


def test_the_payload_in_a_denied_finding_is_still_denied_and_quoted_back(engine: PolicyEngine) -> None:
    """The reported attack on the template policy, as a unit: T11 echoes a finding's file name."""
    base = next(b for b in BASES if b.name == "t11-static-finding")
    path = next(p for p in leaves(base.document) if p[:1] == ("findings",) and p[-1] == "file")
    decision = engine.decide("template", replaced(base.document, path, "src/a" + PAYLOAD + ".c"))
    assert not decision.allow and not decision.refused
    assert any(PAYLOAD in m for m in decision.deny), decision.deny  # read as a value, shown as written


def test_comparison_flags_a_flipped_allow_and_a_lost_denial(engine: PolicyEngine) -> None:
    """The property's own check must be able to fail (a test that cannot fail proves nothing)."""
    base = next(b for b in BASES if b.name == "t1-dangerous-tool")
    tools = next(p for p in leaves(base.document) if p[:3] == ("template", "spec", "tools"))
    denied = engine.decide("template", base.document)
    without_tool = engine.decide("template", replaced(base.document, tools, BENIGN))
    assert more_permissive(without_tool, denied)  # dropping shell.exec is "more permissive": it is seen


def test_a_licence_entry_naming_no_id_is_not_ignored(engine: PolicyEngine) -> None:
    """Found by the property: A3 ignored a licence entry naming no SPDX id (" ", "()", a newline) when the
    component had another, allowed licence, where an unknown id is refused."""
    base = artifact_bases()[0]
    components = [dict(c) for c in base.document["sbom"]["components"]]
    for text in (BENIGN, " ", "()", "\n"):
        components[0]["licenses"] = ["Apache-2.0", text]
        decision = engine.decide("artifact", {**base.document, "sbom": {"components": components}})
        assert not decision.allow, text
