"""OSV records flattened into per-package advisories: what a scanner database generator writes.

Why: Grype and Trivy cannot download their databases here (or at an air-gapped site), and the
project already holds an offline, validated OSV folder for the embedded matcher. `grypedb` and
`trivydb` turn that same folder into each scanner's own database, so all three judge an SBOM
against the same advisories and their findings can be compared. Both read these advisories, so the
records are read, validated and rated once, exactly as the embedded matcher reads them
(osv.py's record reader and rating: same skipped records, same CVSS-derived severity).

Ranges are read the way both scanners' own OSV importers read them (grype-db's OSV transformer,
trivy-db's vulnsrc/osv): events in the order written, each `introduced` opening a window that the
next `fixed` or `last_affected` closes; GIT ranges are dropped (neither scanner evaluates them).
A `versions` entry that no window covers (by the project's own ordering) is kept as an exact
version, as trivy-db does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError

# The embedded matcher's own record reader and rating, so the three scanners see the same advisories
# (osv.py keeps them private; they are used here unchanged rather than copied).
from .osv import iter_records, record_severity
from .versions import ORDERED_ECOSYSTEMS, VersionError, in_range


@dataclass(frozen=True)
class Window:
    """An affected interval: from `introduced` ("0": the start) to `end` (fixed: excluded, last_affected: included)."""

    introduced: str
    end: str = ""
    end_kind: str = ""  # "fixed" | "last_affected" | "" (open-ended)


@dataclass
class Advisory:
    """One OSV record's statement about one package."""

    id: str
    aliases: list[str]
    ecosystem: str  # OSV's spelling: PyPI, npm, crates.io, Go, Maven
    name: str  # as the record writes it
    windows: list[Window]
    exact_versions: list[str]  # `versions` entries no window covers
    severity: str  # unknown | low | medium | high | critical (the embedded matcher's rating)
    score: float | None
    vector: str
    label: str  # the database's own rating word (GHSA's database_specific.severity), "" if none
    summary: str
    details: str
    references: list[str]
    published: str
    modified: str

    @property
    def fixed_versions(self) -> list[str]:
        return list(dict.fromkeys(w.end for w in self.windows if w.end_kind == "fixed"))


@dataclass
class Export:
    """Every advisory of an OSV folder, with what was skipped and a digest of the input."""

    advisories: list[Advisory]
    records: int
    warnings: list[str] = field(default_factory=list)
    skipped_ecosystems: dict[str, int] = field(default_factory=dict)
    digest: str = ""


def _windows(ranges: list[dict[str, Any]]) -> list[Window]:
    windows: list[Window] = []
    start: str | None = None
    for rng in ranges:
        if rng["type"] == "GIT":
            continue
        for event in rng["events"]:
            kind, value = next(iter(event.items()))
            if kind == "introduced":
                if start is not None:
                    windows.append(Window(start))
                start = value
            elif kind in ("fixed", "last_affected") and start is not None:
                windows.append(Window(start, value, kind))
                start = None
        if start is not None:  # an introduced with nothing after it: affected from there on
            windows.append(Window(start))
            start = None
    return windows


def _covered(version: str, ranges: list[dict[str, Any]], ecosystem: str) -> bool:
    for rng in ranges:
        if rng["type"] == "GIT":
            continue
        try:
            if in_range(version, rng["events"], ecosystem, rng["type"]):
                return True
        except (VersionError, ValueError):
            continue
    return False


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def advisories_of(doc: dict[str, Any]) -> Iterator[Advisory]:
    """The advisories of one validated record: one per affected package in a supported ecosystem."""
    aliases = [a for a in doc.get("aliases", []) if isinstance(a, str) and a != doc["id"]]
    refs = [r["url"] for r in doc.get("references", []) if isinstance(r, dict) and isinstance(r.get("url"), str)]
    db_specific = doc.get("database_specific")
    label = _str(db_specific.get("severity")) if isinstance(db_specific, dict) else ""
    for aff in doc.get("affected", []):
        pkg = aff.get("package", {})
        ecosystem, name = pkg.get("ecosystem", ""), pkg.get("name", "")
        if ecosystem not in ORDERED_ECOSYSTEMS or not name:
            continue
        ranges = aff.get("ranges", [])
        rating = record_severity(doc, aff)
        yield Advisory(
            id=doc["id"], aliases=aliases, ecosystem=ecosystem, name=name, windows=_windows(ranges),
            exact_versions=[v for v in aff.get("versions", []) if not _covered(v, ranges, ecosystem)],
            severity=rating["severity"], score=rating["score"], vector=rating["vector"], label=label.lower(),
            summary=_str(doc.get("summary")), details=_str(doc.get("details")), references=refs,
            published=_str(doc.get("published")), modified=_str(doc.get("modified")))


def export(folder: Path) -> Export:
    """Read an OSV database folder (as `agentfactory osv import` writes it, or any folder of records).

    A folder that is missing, or holds no advisory for a supported ecosystem, is refused: a scanner
    database built from it would match nothing, and every scan against it would pass.
    """
    if not folder.is_dir():
        raise InputError(str(folder), "the OSV database is not a folder")
    out = Export([], 0)
    digest = hashlib.sha256()
    for doc in iter_records(folder, out.warnings):
        out.records += 1
        digest.update(doc["id"].encode() + b"\0")
        found = list(advisories_of(doc))
        out.advisories.extend(found)
        if not found:
            for aff in doc.get("affected", []):
                eco = aff.get("package", {}).get("ecosystem", "") or "(none)"
                out.skipped_ecosystems[eco] = out.skipped_ecosystems.get(eco, 0) + 1
    if not out.advisories:
        raise InputError(str(folder), f"no advisory for a supported ecosystem ({', '.join(ORDERED_ECOSYSTEMS)}) "
                                      f"among {out.records} record(s): a scanner database built from it would "
                                      "match nothing")
    out.digest = "sha256:" + digest.hexdigest()
    return out


def builder_main(prog: str, description: str, out_name: str, build: Callable[[Path, Path], dict[str, Any]],
                 argv: list[str] | None) -> int:
    """The `python -m` entry of a scanner-database builder: OSV_FOLDER OUT; prints what was written (JSON);
    2 on bad input."""
    import argparse
    import json
    import sys

    from ..errors import AgentFactoryError

    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("osv_folder", type=Path)
    parser.add_argument(out_name, type=Path)
    args = parser.parse_args(argv)
    try:
        print(json.dumps(build(args.osv_folder, getattr(args, out_name)), indent=1))
    except (AgentFactoryError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
