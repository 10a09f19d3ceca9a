"""A validator for the subset of JSON Schema (draft 2020-12) that the template schema uses.

Every `agentfactory verify`, every node start and every `pipeline run` reads a schema-checked document;
importing the jsonschema package costs a CLI about 45-55 ms, more than the check. The template schema
(agentfactory/schemas) and the run contract cut from it use only the keywords below, so this checks them
directly with jsonschema's semantics (a bool is not a number, 1.0 is an integer, `pattern` is a search,
`enum`, `const` and `uniqueItems` tell `true` from `1`) and its messages, in its order. A schema with any
other keyword, or a `$ref` that is not to its own `$defs`, is refused when checked: it can never be
ignored silently. tests/unit/test_jsonsubset.py runs it beside jsonschema over mutations of real contracts
and templates and requires the same errors, field by field.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from typing import Any, NamedTuple

CHECKED = frozenset(("type", "properties", "required", "additionalProperties", "items", "enum", "const",
                     "pattern", "minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems",
                     "uniqueItems", "maxProperties", "propertyNames", "$ref"))
ANNOTATIONS = frozenset(("description", "default", "title", "$comment", "examples", "$defs", "$id", "$schema"))
SUBSCHEMA_MAPS = frozenset(("properties", "$defs"))
SUBSCHEMA_ONE = frozenset(("items", "additionalProperties", "propertyNames"))
Path = tuple[str | int, ...]


class UnsupportedSchema(ValueError):
    """The schema uses a keyword this validator does not check."""


class Problem(NamedTuple):
    """One way an instance breaks a schema: jsonschema's ValidationError fields the callers read."""

    path: Path  # absolute_path
    message: str
    keyword: str  # validator
    value: Any  # validator_value
    instance: Any
    schema: Any  # the (sub)schema holding the keyword


def check_schema(schema: Any, where: str = "#", root: Any = None) -> None:
    """UnsupportedSchema naming the first keyword outside CHECKED and ANNOTATIONS, or a $ref we cannot follow."""
    root = schema if root is None else root
    if not isinstance(schema, dict):  # a boolean subschema too: jsonschema 4.26 reports its errors at the parent
        raise UnsupportedSchema(f"{where}: a schema is an object here")
    for key, value in schema.items():
        if key not in CHECKED and key not in ANNOTATIONS:
            raise UnsupportedSchema(f"{where}: keyword {key!r} is not supported")
        if key in SUBSCHEMA_MAPS:
            for name, sub in value.items():
                check_schema(sub, f"{where}/{key}/{name}", root)
        elif key in SUBSCHEMA_ONE and not (key == "additionalProperties" and isinstance(value, bool)):
            check_schema(value, f"{where}/{key}", root)
        elif key == "$ref":
            _resolve(root, value, where)


def iter_errors(schema: dict[str, Any], instance: Any, path: Path = ()) -> Iterator[tuple[Path, str]]:
    """(path, message) of each way `instance` breaks `schema`, in jsonschema's order."""
    for problem in iter_problems(schema, instance, path):
        yield problem.path, problem.message


def iter_problems(schema: Any, instance: Any, path: Path = (), root: Any = None) -> Iterator[Problem]:
    """Each way `instance` breaks `schema`, as jsonschema's Draft202012Validator.iter_errors yields them."""
    root = schema if root is None else root
    for key, want in schema.items():
        if key in ANNOTATIONS:
            continue
        for message in _messages(key, want, instance, schema):
            yield Problem(path, message, key, want, instance, schema)
        if key == "$ref":
            yield from iter_problems(_resolve(root, want, "#"), instance, path, root)
        elif key == "items" and isinstance(instance, list):
            for i, item in enumerate(instance):
                yield from iter_problems(want, item, (*path, i), root)
        elif key == "properties" and isinstance(instance, dict):
            for name, sub in want.items():
                if name in instance:
                    yield from iter_problems(sub, instance[name], (*path, name), root)
        elif key == "additionalProperties" and isinstance(instance, dict) and isinstance(want, dict):
            for name in _extra(instance, schema):
                yield from iter_problems(want, instance[name], (*path, name), root)
        elif key == "propertyNames" and isinstance(instance, dict):
            for name in instance:
                yield from iter_problems(want, name, path, root)


def _messages(key: str, want: Any, instance: Any, schema: dict[str, Any]) -> Iterator[str]:
    """The messages of one keyword that judges `instance` itself (not its members)."""
    if key == "type":
        if not any(_is_type(instance, t) for t in _as_list(want)):
            yield f"{instance!r} is not of type {', '.join(repr(t) for t in _as_list(want))}"
    elif key == "enum":
        if not any(_equal(instance, v) for v in want):
            yield f"{instance!r} is not one of {want!r}"
    elif key == "const":
        if not _equal(instance, want):
            yield f"{want!r} was expected"
    elif isinstance(instance, str):
        yield from _string(key, want, instance)
    elif _is_type(instance, "number"):
        if key == "minimum" and instance < want:
            yield f"{instance!r} is less than the minimum of {want!r}"
        elif key == "maximum" and instance > want:
            yield f"{instance!r} is greater than the maximum of {want!r}"
    elif isinstance(instance, list):
        yield from _array(key, want, instance)
    elif isinstance(instance, dict):
        yield from _object(key, want, instance, schema)


def _string(key: str, want: Any, instance: str) -> Iterator[str]:
    if key == "pattern" and _regex(want).search(instance) is None:
        yield f"{instance!r} does not match {want!r}"
    elif key == "minLength" and len(instance) < want:
        yield f"{instance!r} should be non-empty" if want == 1 else f"{instance!r} is too short"
    elif key == "maxLength" and len(instance) > want:
        yield f"{instance!r} is expected to be empty" if want == 0 else f"{instance!r} is too long"


def _array(key: str, want: Any, instance: list[Any]) -> Iterator[str]:
    if key == "minItems" and len(instance) < want:
        yield f"{instance!r} should be non-empty" if want == 1 else f"{instance!r} is too short"
    elif key == "maxItems" and len(instance) > want:
        yield f"{instance!r} is expected to be empty" if want == 0 else f"{instance!r} is too long"
    elif key == "uniqueItems" and want and any(_equal(a, b) for i, a in enumerate(instance)
                                               for b in instance[i + 1:]):
        yield f"{instance!r} has non-unique elements"


def _object(key: str, want: Any, instance: dict[str, Any], schema: dict[str, Any]) -> Iterator[str]:
    if key == "required":
        for name in want:
            if name not in instance:
                yield f"{name!r} is a required property"
    elif key == "maxProperties" and len(instance) > want:
        yield f"{instance!r} is expected to be empty" if want == 0 else f"{instance!r} has too many properties"
    elif key == "additionalProperties" and want is False:
        extra = _extra(instance, schema)
        if extra:
            shown = ", ".join(repr(name) for name in sorted(extra, key=str))
            yield f"Additional properties are not allowed ({shown} {'was' if len(extra) == 1 else 'were'} unexpected)"


def _extra(instance: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    known = schema.get("properties", {})
    return [name for name in instance if name not in known]


def _resolve(root: Any, ref: Any, where: str) -> Any:
    """The schema a `#/$defs/<name>` reference names; UnsupportedSchema for any other reference."""
    prefix = "#/$defs/"
    name = ref[len(prefix):] if isinstance(ref, str) and ref.startswith(prefix) else None
    defs = root.get("$defs", {}) if isinstance(root, dict) else {}
    if name is None or "/" in name or "~" in name or name not in defs:
        raise UnsupportedSchema(f"{where}: $ref {ref!r} is not one of this schema's own $defs")
    return defs[name]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _is_type(value: Any, name: str) -> bool:
    if name == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, float)
                                                                            and value.is_integer())
    if name == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    kinds: dict[str, type | tuple[type, ...]] = {"string": str, "object": dict, "array": list, "boolean": bool,
                                                 "null": type(None)}
    if name not in kinds:
        raise UnsupportedSchema(f"type {name!r} is not a JSON Schema type")
    return isinstance(value, kinds[name])


def _equal(a: Any, b: Any) -> bool:
    """JSON equality: true is not 1, 1 is 1.0, containers compare by content."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict | list) or isinstance(b, dict | list):
        return False
    return bool(a == b)


@functools.cache
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)
