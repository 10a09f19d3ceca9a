"""Semantic Versioning 2.0.0 precedence, for "the latest version" of an agent."""

from __future__ import annotations

import re

SEMVER_RE = re.compile(
    # ASCII digits only (`\d` also matches Unicode digits such as U+0661) and `\Z`, not `$` (which
    # accepts a trailing newline): a version string is an identifier, compared and stored as written.
    r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)"
    r"(?:-((?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?\Z"
)
MAX_VERSION_CHARS = 128


def is_semver(value: str) -> bool:
    """A Semantic Versioning 2.0.0 string of at most MAX_VERSION_CHARS ASCII characters."""
    return isinstance(value, str) and len(value) <= MAX_VERSION_CHARS and bool(SEMVER_RE.match(value))


def sort_key(value: str) -> tuple[object, ...]:
    """A key ordering versions by semver precedence; build metadata is ignored, as the spec says.

    Non-semver strings sort before every semver version, so they are never "the latest".
    """
    m = SEMVER_RE.match(value)
    if not m:
        return (0,)
    major, minor, patch, pre = int(m[1]), int(m[2]), int(m[3]), m[4]
    if pre is None:
        return (1, major, minor, patch, 1, ())
    ids = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
    return (1, major, minor, patch, 0, ids)
