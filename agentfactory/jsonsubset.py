"""A validator for the small subset of JSON Schema (draft 2020-12) that the run contract's schema uses.

Every `agentfactory verify` and every node start reads run contracts; importing the jsonschema package
for them costs a CLI about 45 ms, more than the check. The contract's schema is fragments of the
template schema (agentfactory/schemas) using only the keywords below, so this checks them directly,
with jsonschema's semantics (a bool is not a number, 1.0 is an integer, `pattern` is a search, `enum`
and `uniqueItems` tell `true` from `1`). A schema with any other keyword is refused when the validator
is made: it can never be ignored silently. tests/unit/test_jsonsubset.py runs it beside jsonschema over
mutations of real contracts and requires the same verdict for each.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from typing import Any

CHECKED = frozenset(("type", "properties", "required", "additionalProperties", "items", "enum", "pattern",
                     "minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems", "uniqueItems"))
ANNOTATIONS = frozenset(("description", "default", "title", "$comment", "examples", "$defs"))
Path = tuple[str | int, ...]


class UnsupportedSchema(ValueError):
    """The schema uses a keyword this validator does not check."""


def check_schema(schema: Any, where: str = "#") -> None:
    """UnsupportedSchema naming the first keyword outside CHECKED and ANNOTATIONS."""
    if not isinstance(schema, dict):
        raise UnsupportedSchema(f"{where}: a schema is an object here")
    for key, value in schema.items():
        if key not in CHECKED and key not in ANNOTATIONS:
            raise UnsupportedSchema(f"{where}: keyword {key!r} is not supported")
        if key == "properties":
            for name, sub in value.items():
                check_schema(sub, f"{where}/properties/{name}")
        elif key == "items" or (key == "additionalProperties" and isinstance(value, dict)):
            check_schema(value, f"{where}/{key}")
        elif key == "$defs":
            for name, sub in value.items():
                check_schema(sub, f"{where}/$defs/{name}")


def iter_errors(schema: dict[str, Any], instance: Any, path: Path = ()) -> Iterator[tuple[Path, str]]:
    """(path, message) of each way `instance` breaks `schema`, in the schema's keyword order."""
    for key, want in schema.items():
        if key in ANNOTATIONS:
            continue
        if key == "type":
            if not any(_is_type(instance, t) for t in ([want] if isinstance(want, str) else want)):
                yield path, f"{instance!r} is not of type {', '.join(repr(t) for t in _as_list(want))}"
                return  # jsonschema goes on, but every other keyword would only restate this one
        elif key == "enum":
            if not any(_equal(instance, v) for v in want):
                yield path, f"{instance!r} is not one of {want!r}"
        elif isinstance(instance, str) and key in ("pattern", "minLength", "maxLength"):
            if key == "pattern" and _regex(want).search(instance) is None:
                yield path, f"{instance!r} does not match {want!r}"
            elif key == "minLength" and len(instance) < want:
                yield path, f"{instance!r} is too short"
            elif key == "maxLength" and len(instance) > want:
                yield path, f"{instance!r} is too long"
        elif _is_type(instance, "number") and key in ("minimum", "maximum"):
            if key == "minimum" and instance < want:
                yield path, f"{instance!r} is less than the minimum of {want!r}"
            elif key == "maximum" and instance > want:
                yield path, f"{instance!r} is greater than the maximum of {want!r}"
        elif isinstance(instance, list) and key in ("items", "minItems", "maxItems", "uniqueItems"):
            yield from _array(key, want, instance, path)
        elif isinstance(instance, dict) and key in ("properties", "required", "additionalProperties"):
            yield from _object(key, want, schema, instance, path)


def _array(key: str, want: Any, instance: list[Any], path: Path) -> Iterator[tuple[Path, str]]:
    if key == "items":
        for i, item in enumerate(instance):
            yield from iter_errors(want, item, (*path, i))
    elif key == "minItems" and len(instance) < want:
        yield path, f"{instance!r} should be non-empty" if want == 1 else f"{instance!r} is too short"
    elif key == "maxItems" and len(instance) > want:
        yield path, f"{instance!r} is too long"
    elif key == "uniqueItems" and want and any(_equal(a, b) for i, a in enumerate(instance)
                                               for b in instance[i + 1:]):
        yield path, f"{instance!r} has non-unique elements"


def _object(key: str, want: Any, schema: dict[str, Any], instance: dict[str, Any],
            path: Path) -> Iterator[tuple[Path, str]]:
    if key == "properties":
        for name, sub in want.items():
            if name in instance:
                yield from iter_errors(sub, instance[name], (*path, name))
    elif key == "required":
        for name in want:
            if name not in instance:
                yield path, f"{name!r} is a required property"
    elif key == "additionalProperties":
        extra = [name for name in instance if name not in schema.get("properties", {})]
        if want is False and extra:
            shown = ", ".join(repr(name) for name in extra)
            yield path, f"Additional properties are not allowed ({shown} {'was' if len(extra) == 1 else 'were'} " \
                        "unexpected)"
        elif isinstance(want, dict):
            for name in extra:
                yield from iter_errors(want, instance[name], (*path, name))


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
