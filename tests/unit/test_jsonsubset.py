"""agentfactory.jsonsubset must judge run contracts and templates exactly as jsonschema does: the same verdict for
every mutation of real contracts, the same errors (field, keyword, message, in order) for every mutation of real
template manifests (each field removed, set to a value of every JSON type and to values at and past its bounds,
an extra field added), and a schema keyword or reference it does not check refused, never skipped."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
from helpers import ROOT

from agentfactory import jsonsubset
from agentfactory.runspec import contract_schema, from_template
from agentfactory.template import MANIFEST, discover, load_template, schema
from agentfactory.yamlsafe import load_yaml

VALUES: list[Any] = [None, True, False, 0, 1, -1, 1.0, 1.5, 2**40, "", "x", "X Y", "a" * 300, "log.write",
                     "/data", "data", "https://api.example.com/v1/*", [], [1], ["log.write", "log.write"], ["x"] * 40,
                     {}, {"x": 1}]
HTTP = {"http": {"allow": [{"url": "https://api.example.com/v1/*", "methods": ["GET", "POST"]}],
                 "limits": {"maxRequests": 8, "maxResponseKiB": 256, "maxRequestKiB": 64, "timeoutMs": 5000}},
        "secrets": [{"name": "api-key", "header": "Authorization", "format": "Bearer {value}",
                     "hosts": ["api.example.com"]}]}


def contracts() -> list[dict[str, Any]]:
    """The run contracts of the shipped templates and examples, and one with http and secrets."""
    found = []
    for root in (ROOT / "templates", ROOT / "examples" / "python", ROOT / "examples" / "promotion" / "v1"):
        for folder in discover(root):
            found.append(from_template(load_template(folder)).to_json())
    found.append({**found[0], **HTTP})
    return found


def paths(doc: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from paths(value, (*path, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            yield from paths(value, (*path, i))


def mutations(doc: dict[str, Any]) -> Iterator[Any]:
    for path in paths(doc):
        for value in [*VALUES, "extra"] + (["delete"] if path else []):
            mutated = copy.deepcopy(doc)
            if not path:
                yield value
                continue
            parent = mutated
            for step in path[:-1]:
                parent = parent[step]
            if value == "delete":
                del parent[path[-1]]
            elif value == "extra":
                target = parent[path[-1]]
                if isinstance(target, dict):
                    target["unexpected"] = 1
                elif isinstance(target, list):
                    target.append(copy.deepcopy(target[0]) if target else "x")
                else:
                    continue
            else:
                parent[path[-1]] = value
            yield mutated


def test_the_same_verdict_as_jsonschema_for_every_mutation() -> None:
    schema = contract_schema()
    reference = jsonschema.Draft202012Validator(schema)
    checked = 0
    for doc in contracts():
        for mutated in mutations(doc):
            want = [".".join(map(str, e.absolute_path)) for e in reference.iter_errors(mutated)]
            got = [".".join(map(str, p)) for p, _ in jsonsubset.iter_errors(schema, mutated)]
            assert bool(want) == bool(got), (mutated, want, got)
            if got:
                assert got[0] in want, (mutated, want, got)  # the field named is one jsonschema names too
            checked += 1
    assert checked > 2000


def test_json_equality_and_types_follow_jsonschema() -> None:
    schema = {"type": "array", "uniqueItems": True, "items": {"type": "integer", "enum": [1, 2]}}
    for instance in ([1, 1.0], [True], [1, True], [2.0], [1.5], [1, 2], [[1]]):
        want = not jsonschema.Draft202012Validator(schema).is_valid(instance)
        assert bool(list(jsonsubset.iter_errors(schema, instance))) == want, instance
    unanchored = {"type": "string", "pattern": "b", "minLength": 2}
    for text in ("ab", "ba", "aa", "b", "😀b"):
        want = not jsonschema.Draft202012Validator(unanchored).is_valid(text)
        assert bool(list(jsonsubset.iter_errors(unanchored, text))) == want, text


def manifests() -> list[dict[str, Any]]:
    """The agent.yaml of every shipped template and example, as YAML reads it."""
    found = []
    for root in (ROOT / "templates", ROOT / "examples" / "python", ROOT / "examples" / "promotion" / "v1"):
        for folder in discover(root):
            found.append(load_yaml((folder / MANIFEST).read_bytes(), str(folder)).data)
    return found


def test_the_same_errors_as_jsonschema_for_every_mutation_of_a_template() -> None:
    """Template validation (agentfactory.template) reads each error's path, keyword, value, instance and message."""
    template_schema = schema()
    jsonsubset.check_schema(template_schema)
    reference = jsonschema.Draft202012Validator(template_schema)
    checked = failing = 0
    for doc in manifests():
        for mutated in mutations(doc):
            want = [(tuple(e.absolute_path), e.validator, e.message, repr(e.instance)) for e in
                    reference.iter_errors(mutated)]
            got = [(p.path, p.keyword, p.message, repr(p.instance)) for p in
                   jsonsubset.iter_problems(template_schema, mutated)]
            assert got == want, mutated
            checked += 1
            failing += bool(want)
    assert checked > 3000 and failing > 1000, (checked, failing)


def test_references_and_property_names_are_followed_as_jsonschema_does() -> None:
    doc = {"$defs": {"name": {"type": "string", "maxLength": 0}},
           "properties": {"a": {"$ref": "#/$defs/name"}, "b": {"const": None}}, "propertyNames": {"pattern": "^[ab]$"},
           "maxProperties": 1}
    for instance in ({"a": "x"}, {"a": ""}, {"b": 1}, {"c": 1, "a": 2}, {}, {"a": "", "b": None}):
        want = [(tuple(e.absolute_path), e.validator, e.message) for e in
                jsonschema.Draft202012Validator(doc).iter_errors(instance)]
        got = [(p.path, p.keyword, p.message) for p in jsonsubset.iter_problems(doc, instance)]
        assert got == want, instance


@pytest.mark.parametrize("schema", [{"type": "string", "format": "email"}, {"anyOf": [{"type": "string"}]},
                                    {"properties": {"a": {"$ref": "#/$defs/x"}}},
                                    {"$defs": {"x": {}}, "items": {"$ref": "https://example.com/x.json"}},
                                    {"$defs": {"x": {}}, "items": {"$ref": "#/properties/a"}},
                                    {"items": {"type": "string", "contains": {"const": "x"}}},
                                    {"properties": {"a": {"dependentRequired": {"b": ["c"]}}}},
                                    {"properties": {"a": False}}, {"items": True}])
def test_a_keyword_it_does_not_check_is_refused(schema: dict[str, Any]) -> None:
    with pytest.raises(jsonsubset.UnsupportedSchema):
        jsonsubset.check_schema(schema)
