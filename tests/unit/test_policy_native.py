"""The Rego engine's own binding of rego-cpp (agentfactory/policy.py `_Native`): every JSON value reaches the
policy as itself, a value that is not JSON is refused before anything is judged, and the config the engine
hands rego-cpp (its keys ordered for the policy that reads them) is the same config."""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest

from agentfactory.policy import RegoCallError, RegoEngine, _native, config_read_first

ROOT = Path(__file__).resolve().parents[2]

# Each rule denies when one value of the input is not what the test passed: the input builder must pass
# every JSON type as itself (a bool is not a number, the 64-bit bounds are kept, a tuple is an array).
ROUND_TRIP = """package agentfactory.template
import rego.v1
default allow := false
allow if deny == set()
deny contains "max int" if not input.max == 9223372036854775807
deny contains "min int" if not input.min == -9223372036854775808
deny contains "true" if not input.yes == true
deny contains "a bool is a number" if is_number(input.yes)
deny contains "false" if not input.no == false
deny contains "null" if not input.nothing == null
deny contains "float" if not input.half == 1.5
deny contains "nested" if not input.nested.list[1].name == "é ü ✓"
deny contains "tuple" if not input.pair == [1, "two"]
deny contains "empty object" if not input.empty == {}
deny contains "empty array" if not input.none == []
deny contains "ordered dict" if not input.ordered.b == 2
"""

VALUES: dict[str, Any] = {
    "max": 2**63 - 1, "min": -(2**63), "yes": True, "no": False, "nothing": None, "half": 1.5,
    "nested": {"list": [0, {"name": "é ü ✓"}]}, "pair": (1, "two"), "empty": {}, "none": [],
    "ordered": OrderedDict([("a", 1), ("b", 2)]),
}


def engine_with(tmp_path: Path, policy: str) -> RegoEngine:
    (tmp_path / "template.rego").write_text(policy)
    (tmp_path / "data.json").write_text(json.dumps({"agentfactory": {"config": {}}}))
    engine = RegoEngine(tmp_path, workers=1)
    assert engine.broken is None, engine.broken
    return engine


def test_every_json_value_reaches_the_policy_as_itself(tmp_path: Path) -> None:
    decision = engine_with(tmp_path, ROUND_TRIP).decide("template", VALUES)
    assert decision.allow and decision.deny == ()


@pytest.mark.parametrize("changed", [{"yes": 1}, {"max": 2**63 - 2}, {"half": 2.5}, {"pair": [1]}, {"none": None}])
def test_a_changed_value_is_seen(tmp_path: Path, changed: dict[str, Any]) -> None:
    """The round trip above can fail: each changed value is denied (the rules read values, not just types)."""
    decision = engine_with(tmp_path, ROUND_TRIP).decide("template", {**VALUES, **changed})
    assert not decision.allow and len(decision.deny) >= 1


def test_a_value_that_is_not_json_is_refused_by_the_builder() -> None:
    with pytest.raises(RegoCallError, match="not JSON"):
        _native().input({"a": [1, object()]})


def test_the_config_handed_to_rego_cpp_is_the_same_config_reordered() -> None:
    data = json.loads((ROOT / "policies" / "data.json").read_text())
    module = {"a.rego": "x := data.agentfactory.config.admission\ny := cfg.max_timeout_ms\nz := cfg.admission.stages"}
    ordered = config_read_first(data, module)
    config, reordered = data["agentfactory"]["config"], ordered["agentfactory"]["config"]
    assert reordered == config
    assert list(reordered)[:2] == ["admission", "max_timeout_ms"]
    unread = [k for k in config if k not in ("admission", "max_timeout_ms")]
    assert list(reordered)[2:] == unread  # the keys the module does not name keep their order
    assert config_read_first([1], module) == [1] and config_read_first({"agentfactory": 3}, module) == {
        "agentfactory": 3}


@pytest.mark.parametrize("policy", ["template", "artifact", "admission"])
def test_each_policy_reads_the_config_it_names_first(policy: str) -> None:
    """The engine's bundles hold the config in their own order; the decisions are the differential tests'."""
    engine = RegoEngine(ROOT / "policies", workers=1)
    ordered = config_read_first(engine.data, engine._modules_for(policy))["agentfactory"]["config"]
    assert ordered == engine.data["agentfactory"]["config"]
    first = next(iter(ordered))
    assert any(first in text for text in engine._modules_for(policy).values())
