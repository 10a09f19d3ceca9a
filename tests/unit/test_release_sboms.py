"""The SBOMs committed under sbom/ stay valid and agree with the templates they describe."""

from __future__ import annotations

import json

import pytest
from helpers import EXAMPLES, ROOT, TEMPLATES

from agentfactory.sbom import sbom_subject, validate_sbom
from agentfactory.template import load_template

RELEASED = sorted((ROOT / "sbom").glob("*/*.cdx.json"))


def test_every_example_has_a_released_sbom() -> None:
    assert sorted(p.parent.name for p in RELEASED) == EXAMPLES


@pytest.mark.parametrize("path", RELEASED, ids=lambda p: p.parent.name)
def test_released_sbom_matches_its_template(path) -> None:  # type: ignore[no-untyped-def]
    data = path.read_bytes()
    validate_sbom(data, str(path))
    name, version, digest = sbom_subject(data, str(path))
    template = load_template(TEMPLATES / name)
    assert (name, f"{version}.cdx.json") == (path.parent.name, path.name)
    assert version == template.version
    doc = json.loads(data)
    declared = {d.purl: d.sha256 for d in template.dependencies}
    found = {c["purl"]: c["hashes"][0]["content"] for c in doc.get("components", [])}
    assert found == declared
    assert digest.startswith("sha256:")
