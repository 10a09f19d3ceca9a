"""Version ordering per ecosystem, and OSV's range evaluation on top of it.

An OSV range is a timeline of `introduced` / `fixed` / `last_affected` / `limit` events whose
versions are only meaningful in the package's own ecosystem ordering: `1.0rc1 < 1.0` in PyPI,
`1.0.0-rc.1 < 1.0.0` in SemVer, `1.0-SNAPSHOT < 1.0` in Maven. Comparing them as strings (or with
the wrong ordering) silently misses or invents vulnerabilities, so every parser here is strict and
raises `VersionError` rather than guess; the matcher reports such a component as unscanned.

Orderings implemented:

- PyPI: PEP 440 through `packaging.version` (legacy non-PEP 440 versions are refused).
- npm, crates.io: SemVer 2.0.0 precedence (section 11), build metadata ignored; strict parser.
- Go: SemVer with an optional leading ``v`` (module versions carry it, OSV's Go records do not).
- Maven: a subset of Maven's ComparableVersion, see `MavenVersion`.
- anything else ("generic"): no ordering at all; only exact matches against `versions` lists.

GIT ranges are not evaluated here: deciding whether a commit lies between two others needs the
repository's commit graph. A component pinned to a commit matches only when that exact hash is in
the record's `versions` list (which OSV.dev populates from the git ranges).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import total_ordering
from typing import Any

from packaging.version import InvalidVersion, Version

from ..errors import AgentFactoryError

ORDERED_ECOSYSTEMS = ("PyPI", "npm", "crates.io", "Go", "Maven")
EVENT_KINDS = ("introduced", "fixed", "last_affected", "limit")


class VersionError(AgentFactoryError, ValueError):
    """A version string that the ecosystem's ordering cannot place."""

    def __init__(self, value: str, ecosystem: str, detail: str = "") -> None:
        self.value = value
        self.ecosystem = ecosystem
        text = f"version {value!r} is not a valid {ecosystem} version"
        super().__init__(f"{text} ({detail})" if detail else text)


# --- SemVer 2.0.0 -----------------------------------------------------------------------------

_NUM = r"0|[1-9]\d*"
_PRE_ID = r"(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)"
_SEMVER = re.compile(
    rf"^(?P<major>{_NUM})\.(?P<minor>{_NUM})\.(?P<patch>{_NUM})"
    rf"(?:-(?P<pre>{_PRE_ID}(?:\.{_PRE_ID})*))?"
    r"(?:\+(?P<build>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$"
)

SemverKey = tuple[int, int, int, tuple[Any, ...]]


def semver_key(value: str, ecosystem: str = "SemVer") -> SemverKey:
    """A tuple whose ordering is SemVer 2.0.0 precedence (build metadata ignored).

    A release sorts after all its prereleases: the fourth element is ``(1,)`` for a release and
    ``(0, ids…)`` for a prerelease, numeric identifiers ranking below alphanumeric ones.
    """
    m = _SEMVER.match(value)
    if m is None:
        raise VersionError(value, ecosystem, "expected MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD]")
    pre = m.group("pre")
    if pre is None:
        tail: tuple[Any, ...] = (1,)
    else:
        ids = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
        tail = (0, ids)
    return int(m.group("major")), int(m.group("minor")), int(m.group("patch")), tail


def go_key(value: str) -> SemverKey:
    """Go module versions: SemVer, with the leading ``v`` optional (pseudo-versions are prereleases)."""
    return semver_key(value[1:] if value.startswith("v") else value, "Go")


# --- PEP 440 ----------------------------------------------------------------------------------

def pypi_key(value: str) -> Version:
    try:
        return Version(value)
    except InvalidVersion:
        raise VersionError(value, "PyPI", "not a PEP 440 version") from None


# --- Maven ------------------------------------------------------------------------------------

_MAVEN_ALIASES = {"a": "alpha", "b": "beta", "m": "milestone", "cr": "rc", "ga": "", "final": "", "release": ""}
_MAVEN_QUALIFIERS = {"alpha": 0, "beta": 1, "milestone": 2, "rc": 3, "snapshot": 4, "": 5, "sp": 6}
_MAVEN_TOKEN = re.compile(r"\d+|[a-z]+")
_MAVEN_CHARS = re.compile(r"^[0-9A-Za-z._+-]+$")

_MavenItem = tuple[int, int, str]  # (1, rank, text) for a qualifier, (2, number, "") for a number


def _maven_null(like: _MavenItem) -> _MavenItem:
    """The padding item compared against `like` when one version is shorter."""
    return (2, 0, "") if like[0] == 2 else (1, _MAVEN_QUALIFIERS[""], "")


@total_ordering
class MavenVersion:
    """A simplified Maven ComparableVersion.

    The version is lower-cased and cut into items at '.', '-', '+' and at every switch between
    digits and letters. Numbers compare numerically; qualifiers rank alpha < beta < milestone < rc
    < snapshot < "" (ga/final/release) < sp < any other word (then alphabetically); a number ranks
    above any qualifier, so ``1.0.1 > 1.0-sp``. The shorter version is padded with 0 or "" so
    ``1 == 1.0 == 1.0.0 == 1-ga`` and ``1-rc1 < 1 < 1-sp``. ``a1``/``b1``/``m1`` mean alpha/beta/
    milestone 1. Simplification: Maven nests a sub-list at every '-', which this flat list does
    not, so exotic mixes like ``1-1.foo`` vs ``1.1-foo`` may order differently from Maven.
    """

    def __init__(self, value: str) -> None:
        if not _MAVEN_CHARS.match(value):
            raise VersionError(value, "Maven", "empty or contains characters outside [0-9A-Za-z._+-]")
        tokens = _MAVEN_TOKEN.findall(value.lower())
        if not tokens:
            raise VersionError(value, "Maven", "no numbers or qualifiers")
        items: list[_MavenItem] = []
        for i, tok in enumerate(tokens):
            if tok.isdigit():
                items.append((2, int(tok), ""))
                continue
            if tok in ("a", "b", "m") and i + 1 < len(tokens) and tokens[i + 1].isdigit():
                tok = _MAVEN_ALIASES[tok]
            tok = _MAVEN_ALIASES.get(tok, tok)
            rank = _MAVEN_QUALIFIERS.get(tok, len(_MAVEN_QUALIFIERS))
            items.append((1, rank, tok if rank == len(_MAVEN_QUALIFIERS) else ""))
        while items and items[-1] == _maven_null(items[-1]):
            items.pop()  # 1.0.0 and 1-ga are 1
        self.value = value
        self.items = tuple(items)

    def _cmp(self, other: MavenVersion) -> int:
        a, b = self.items, other.items
        for i in range(max(len(a), len(b))):
            x = a[i] if i < len(a) else _maven_null(b[i])
            y = b[i] if i < len(b) else _maven_null(a[i])
            if x != y:
                return -1 if x < y else 1
        return 0

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MavenVersion) and self._cmp(other) == 0

    def __lt__(self, other: MavenVersion) -> bool:
        return self._cmp(other) < 0

    def __hash__(self) -> int:
        return hash(self.items)

    def __repr__(self) -> str:
        return f"MavenVersion({self.value!r})"


# --- dispatch ---------------------------------------------------------------------------------

_PARSERS: dict[str, Callable[[str], Any]] = {
    "PyPI": pypi_key,
    "npm": lambda v: semver_key(v, "npm"),
    "crates.io": lambda v: semver_key(v, "crates.io"),
    "Go": go_key,
    "Maven": MavenVersion,
}


def is_ordered(ecosystem: str) -> bool:
    """Whether versions of `ecosystem` can be placed in ranges (else only `versions` lists match)."""
    return ecosystem in _PARSERS


def parse_version(value: str, ecosystem: str) -> Any:
    """A key ordered like `ecosystem` orders versions; `VersionError` when there is no such key."""
    parser = _PARSERS.get(ecosystem)
    if parser is None:
        raise VersionError(value, ecosystem, "this ecosystem has no version ordering here (exact matches only)")
    if not isinstance(value, str) or not value:
        raise VersionError(str(value), ecosystem, "empty")
    return parser(value)


def compare(a: str, b: str, ecosystem: str) -> int:
    """-1, 0 or 1 as `a` sorts before, equal to or after `b` in `ecosystem`."""
    ka, kb = parse_version(a, ecosystem), parse_version(b, ecosystem)
    return -1 if ka < kb else (1 if kb < ka else 0)


def same_version(a: str, b: str, ecosystem: str) -> bool:
    """Equal in the ecosystem's ordering (PyPI ``2.0 == 2.0.0``); exact text otherwise or when unparsable."""
    if a == b:
        return True
    if not is_ordered(ecosystem):
        return False
    try:
        return compare(a, b, ecosystem) == 0
    except VersionError:
        return False


# --- OSV range evaluation -----------------------------------------------------------------------

@dataclass(frozen=True)
class _Point:
    """A version on the range's line: rank 0 is before every version ("0"), 2 after every one ("*")."""

    rank: int
    key: Any = None

    def __lt__(self, other: _Point) -> bool:
        if self.rank != other.rank:
            return self.rank < other.rank
        return self.rank == 1 and bool(self.key < other.key)


def _event(evt: Mapping[str, Any]) -> tuple[str, str]:
    kinds = [k for k in EVENT_KINDS if k in evt]
    if len(kinds) != 1 or not isinstance(evt[kinds[0]], str):
        raise ValueError(f"an OSV event must hold exactly one of {', '.join(EVENT_KINDS)} as a string: {evt!r}")
    return kinds[0], evt[kinds[0]]


def _point(kind: str, value: str, parse: Callable[[str], Any]) -> _Point:
    if kind == "introduced" and value == "0":
        return _Point(0)
    if kind == "limit" and "*" in value:
        return _Point(2)
    return _Point(1, parse(value))


def in_range(version: str, events: Sequence[Mapping[str, Any]], ecosystem: str, range_type: str = "ECOSYSTEM") -> bool:
    """Whether `version` is affected by one OSV range, per the schema's evaluation algorithm.

    https://ossf.github.io/osv-schema/#evaluation: outside every `limit` (none means an implicit
    "*") the version is not affected; otherwise walk the events sorted by version, where
    ``v >= introduced`` turns it affected, ``v >= fixed`` and ``v > last_affected`` turn it
    unaffected. Events at the same version keep the record's order (the sort is stable).

    `range_type` SEMVER orders by SemVer whatever the ecosystem (a Go ``v`` prefix tolerated);
    ECOSYSTEM by the ecosystem's ordering. GIT ranges are never evaluated (False): see the module
    docstring. Raises `VersionError` if `version` or an event's version cannot be parsed, and
    `ValueError` for a malformed event.
    """
    if range_type == "GIT":
        return False
    if range_type == "SEMVER":
        def parse(v: str) -> Any:
            return go_key(v) if ecosystem == "Go" else semver_key(v, "SemVer")
    elif range_type == "ECOSYSTEM":
        def parse(v: str) -> Any:
            return parse_version(v, ecosystem)
    else:
        raise ValueError(f"unknown OSV range type {range_type!r}")
    v = _Point(1, parse(version))
    parsed = [_event(e) for e in events]
    points = [(kind, _point(kind, value, parse)) for kind, value in parsed]
    limits = [p for kind, p in points if kind == "limit"]
    if limits and not any(v < p for p in limits):
        return False
    affected = False
    for kind, p in sorted((x for x in points if x[0] != "limit"), key=lambda x: x[1]):
        if kind == "introduced" and not v < p:
            affected = True
        elif (kind == "fixed" and not v < p) or (kind == "last_affected" and p < v):
            affected = False
    return affected


__all__ = ["EVENT_KINDS", "ORDERED_ECOSYSTEMS", "MavenVersion", "VersionError", "compare", "go_key", "in_range",
           "is_ordered", "parse_version", "pypi_key", "same_version", "semver_key"]
