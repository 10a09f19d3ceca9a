"""Bounded JSON: one place that turns untrusted bytes into a JSON object or a clear error."""

from __future__ import annotations

import json
from typing import Any

from .errors import InputError


def no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """`json.loads(..., object_pairs_hook=no_duplicate_keys)`: a key twice in one object is a ValueError, so
    two readers of one document cannot see two different values."""
    doc: dict[str, Any] = {}
    for key, value in pairs:
        if key in doc:
            raise ValueError(f"the key {key!r} appears twice in one object")
        doc[key] = value
    return doc


def load_json_object(data: bytes, where: str, *, max_bytes: int, what: str) -> dict[str, Any]:
    """Parse `data` as a JSON object of at most `max_bytes`; errors name `where` and `what`."""
    if len(data) > max_bytes:
        raise InputError(where, f"{what} is {len(data)} bytes; the limit is {max_bytes}")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InputError(where, f"{what} is not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise InputError(where, f"{what} is not a JSON object")
    return doc
