"""Did the scan look at anything? The coverage half of the gate, beside the findings half.

A scanner that cannot judge a component (no purl, an unknown ecosystem, an unparsable version)
lists it as unscanned; a scan in which every component that needs scanning is unscanned found
nothing because it looked at nothing, and must not pass like a clean one. The artifact policy
(rule A7) applies the same rule to the attested scan; this module is the CLI's copy of the facts,
read from the SBOM itself, so `agentfactory scan` exits as the policy decides.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from .model import Unscanned

# The project's own vendored code (config first_party_purl_prefixes in policies/data.json): no
# advisory database knows it and the source validator judges it, so it needs no scan, but it does
# not count as scanned either.
FIRST_PARTY_PURL_PREFIXES = ("pkg:generic/agentfactory/",)


def _components(components: Any) -> Iterator[dict[str, Any]]:
    if isinstance(components, list):
        for comp in components:
            if isinstance(comp, dict):
                yield comp
                yield from _components(comp.get("components"))


def coverage_problems(bom: dict[str, Any], unscanned: Sequence[Unscanned], *, fail_on_unscanned: bool = False,
                      first_party: Sequence[str] = FIRST_PARTY_PURL_PREFIXES) -> list[str]:
    """Why the scan's coverage fails the gate (empty: it does not).

    Always: components need scanning and none was scanned. With `fail_on_unscanned`: any unscanned
    component at all.
    """
    missed = {u.component for u in unscanned}
    need = [c.get("purl") for c in _components(bom.get("components"))
            if not (isinstance(c.get("purl"), str) and c["purl"].startswith(tuple(first_party)))]
    scanned = [p for p in need if isinstance(p, str) and p and p not in missed]
    problems: list[str] = []
    if need and not scanned:
        problems.append(f"nothing was scanned: all {len(need)} component(s) that need scanning are unscanned, so "
                        "no finding means nothing was looked at; give each dependency a purl an advisory database "
                        "knows (pkg:pypi/…, pkg:npm/…, or a generic purl with a vcs_url)")
    if fail_on_unscanned:
        problems.extend(f"{u.component} was not scanned ({u.reason}) and --fail-on-unscanned refuses unscanned "
                        "components" for u in unscanned)
    return problems
