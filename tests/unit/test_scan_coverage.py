"""The coverage half of `agentfactory scan`'s gate (agentfactory/scan/coverage.py): a scan that looked at
nothing fails; first-party components need no scan; --fail-on-unscanned fails on any unscanned one."""

from __future__ import annotations

from typing import Any

from agentfactory.scan.coverage import coverage_problems
from agentfactory.scan.model import Unscanned


def bom(*purls: str | None, nested: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    comps: list[dict[str, Any]] = [{"name": f"c{i}", **({"purl": p} if p else {})} for i, p in enumerate(purls)]
    if nested:
        comps[0]["components"] = nested
    return {"components": comps}


def missed(*components: str) -> list[Unscanned]:
    return [Unscanned(c, "unknown purl type") for c in components]


def test_nothing_scanned_fails() -> None:
    [problem] = coverage_problems(bom("pkg:x/a@1", "pkg:x/b@1"), missed("pkg:x/a@1", "pkg:x/b@1"))
    assert problem.startswith("nothing was scanned: all 2 component(s) that need scanning are unscanned")


def test_one_scanned_component_is_enough_by_default() -> None:
    assert coverage_problems(bom("pkg:npm/a@1", "pkg:x/b@1"), missed("pkg:x/b@1")) == []


def test_a_component_without_purl_is_never_scanned() -> None:
    assert coverage_problems(bom(None), missed("c0")) != []
    assert coverage_problems(bom(None, "pkg:npm/a@1"), missed("c0")) == []


def test_nested_components_count() -> None:
    nested = bom("pkg:x/a@1", nested=[{"name": "n", "purl": "pkg:npm/n@1"}])
    assert coverage_problems(nested, missed("pkg:x/a@1")) == []
    assert coverage_problems(nested, missed("pkg:x/a@1", "pkg:npm/n@1")) != []


def test_first_party_components_need_no_scan_and_do_not_count_as_scanned() -> None:
    first = "pkg:generic/agentfactory/utf8@1.0.0"
    assert coverage_problems(bom(first), missed(first)) == []
    assert coverage_problems(bom(first, "pkg:x/a@1"), missed(first, "pkg:x/a@1")) != []
    assert coverage_problems(bom(first), missed(first), first_party=()) != []


def test_no_components_is_not_a_failure() -> None:
    assert coverage_problems({"components": []}, []) == []
    assert coverage_problems({}, []) == []


def test_fail_on_unscanned_names_each_one() -> None:
    problems = coverage_problems(bom("pkg:npm/a@1", "pkg:x/b@1"), missed("pkg:x/b@1"), fail_on_unscanned=True)
    assert problems == ["pkg:x/b@1 was not scanned (unknown purl type) and --fail-on-unscanned refuses unscanned "
                        "components"]
