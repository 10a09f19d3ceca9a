"""A Trivy vulnerability database (trivy-db schema 2) built offline from the project's OSV folder.

Why: Trivy downloads its database from an OCI registry, which air-gapped sites (and this project's
machines) cannot reach; `trivy --skip-db-update --cache-dir DIR` scans against whatever database is
in DIR/db. This writes that database from the same OSV records the embedded matcher uses, so Trivy
runs for real, offline, and its findings can be compared with ours.

What Trivy reads (trivy-db `pkg/db`, Trivy 0.74 `pkg/detector/library`), written here as trivy-db's
own OSV importer (`pkg/vulnsrc/osv`) would:

- `DIR/db/metadata.json`: `{"Version": 2, ...}`; Trivy refuses any other schema version with
  `--skip-db-update` ("Expected: 2"), which the real-binary tests pin.
- `DIR/db/trivy.db`, a bbolt file (`boltdb.write_bolt`) with the buckets
  `"<ecosystem>::<source name>"` → package (trivy-db's normalized name) → vulnerability id →
  advisory JSON (`VulnerableVersions`, `PatchedVersions`, `VendorIDs`), `"data-source"` → bucket
  name → source JSON, and `"vulnerability"` → id → details (title, CVSS, per-source severity).
- The id is the record's CVE alias when it has one (several CVEs: one advisory each), else the
  record's id; the other ids become `VendorIDs`, so PYSEC-2023-74 and GHSA-j8r2-6x86-q33q both land
  on CVE-2023-32681 for `requests` and are merged (ranges and ids united, the more severe rating kept).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .boltdb import write_bolt
from .model import severity_rank
from .osvexport import Advisory, Window, export

SCHEMA_VERSION = 2  # trivy-db's db.SchemaVersion, the only one Trivy 0.74 accepts
SOURCE_ID = "agentfactory-osv"
SOURCE_NAME = "Agent Factory OSV mirror"
MANIFEST = "agentfactory.json"  # beside trivy.db: what the database was built from (Trivy ignores it)
# OSV ecosystem -> trivy-db ecosystem (the bucket prefix Trivy's library driver looks under)
ECOSYSTEMS = {"PyPI": "pip", "npm": "npm", "crates.io": "cargo", "Go": "go", "Maven": "maven"}
_SEVERITY_NUMBER = {"unknown": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}  # trivy-db's Severity


def package_name(ecosystem: str, name: str) -> str:
    """trivy-db's NormalizePkgName: pip lower-cased with `_` as `-`; Go kept; the others lower-cased."""
    if ecosystem == "pip":
        return name.lower().replace("_", "-")
    return name if ecosystem == "go" else name.lower()


def _constraint(window: Window) -> str:
    """trivy-db's versionRange.String()."""
    if window.end_kind == "last_affected" and window.introduced == window.end:
        return f"={window.end}"
    upper = ""
    if window.end:
        upper = f"<={window.end}" if window.end_kind == "last_affected" else f"<{window.end}"
    if not upper:
        return f">={window.introduced}"
    return upper if window.introduced == "0" else f">={window.introduced}, {upper}"


def _ids(adv: Advisory) -> tuple[list[str], list[str]]:
    """(keys, vendor ids): trivy-db's groupVulnIDs."""
    every = [*adv.aliases, adv.id]
    cves = [i for i in every if i.startswith("CVE-")]
    if not cves:
        return [adv.id], adv.aliases
    return cves, [i for i in every if not i.startswith("CVE-")]


def _cvss(adv: Advisory) -> dict[str, Any]:
    if not adv.vector or adv.score is None:
        return {}
    if adv.vector.startswith("CVSS:3."):
        return {"V3Vector": adv.vector, "V3Score": adv.score}
    if adv.vector.startswith("CVSS:4."):
        return {"V40Vector": adv.vector, "V40Score": adv.score}
    return {"V2Vector": adv.vector, "V2Score": adv.score}


def _detail(adv: Advisory) -> dict[str, Any]:
    detail: dict[str, Any] = {"Title": adv.summary, "Description": adv.details,
                              "Severity": adv.severity.upper(),
                              "VendorSeverity": {SOURCE_ID: _SEVERITY_NUMBER[adv.severity]},
                              "References": adv.references}
    if _cvss(adv):
        detail["CVSS"] = {SOURCE_ID: _cvss(adv)}
    for key, value in (("PublishedDate", adv.published), ("LastModifiedDate", adv.modified)):
        moment = _parse_time(value)
        if moment is not None:  # Go's time.Time reads RFC 3339 only: anything else would lose the whole entry
            detail[key] = _go_time(moment)
    return {k: v for k, v in detail.items() if v not in ("", [], None)}


def _rank(adv: Advisory) -> tuple[int, float]:
    return severity_rank(adv.severity), adv.score or 0.0


def build_tree(advisories: Iterable[Advisory]) -> dict[bytes, Any]:
    """The bbolt buckets for `advisories` (see the module docstring)."""
    advice: dict[str, dict[str, dict[str, dict[str, list[str]]]]] = {}
    details: dict[str, Advisory] = {}
    for adv in advisories:
        eco = ECOSYSTEMS[adv.ecosystem]
        bucket = advice.setdefault(f"{eco}::{SOURCE_NAME}", {})
        keys, vendor_ids = _ids(adv)
        for key in keys:
            entry = bucket.setdefault(package_name(eco, adv.name), {}).setdefault(
                key, {"VendorIDs": [], "VulnerableVersions": [], "PatchedVersions": []})
            for field, values in (("VendorIDs", vendor_ids),
                                  ("VulnerableVersions", [_constraint(w) for w in adv.windows]
                                   + [f"={v}" for v in adv.exact_versions]),
                                  ("PatchedVersions", adv.fixed_versions)):
                entry[field] += [v for v in values if v not in entry[field]]
            if key not in details or _rank(adv) > _rank(details[key]):
                details[key] = adv

    def dump(value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()

    tree: dict[bytes, Any] = {
        b"data-source": {name.encode(): dump({"ID": SOURCE_ID, "Name": SOURCE_NAME}) for name in advice},
        b"vulnerability": {key.encode(): dump(_detail(adv)) for key, adv in details.items()},
    }
    for name, packages in advice.items():
        tree[name.encode()] = {pkg.encode(): {vid.encode(): dump({k: v for k, v in entry.items() if v})
                                              for vid, entry in vulns.items()}
                               for pkg, vulns in packages.items()}
    return tree


def _parse_time(value: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _go_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_trivy_db(osv_folder: Path, cache_dir: Path, *, now: datetime | None = None) -> dict[str, Any]:
    """Write `cache_dir/db/{trivy.db,metadata.json}` from the OSV folder; what was written (the manifest).

    The new `db` folder is complete before it replaces the old one, so a concurrent Trivy sees one
    database or the other. Raises `InputError` for a folder with no usable advisory.
    """
    data = export(Path(osv_folder))
    now = now or datetime.now(UTC)
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".db-"))
    try:
        size = write_bolt(staging / "trivy.db", build_tree(data.advisories))
        meta = {"Version": SCHEMA_VERSION, "NextUpdate": _go_time(now + timedelta(days=1)),
                "UpdatedAt": _go_time(now), "DownloadedAt": _go_time(now)}
        (staging / "metadata.json").write_text(json.dumps(meta) + "\n")
        manifest = {"generator": "agentfactory.scan.trivydb", "schemaVersion": SCHEMA_VERSION,
                    "osv": str(Path(osv_folder).resolve()), "osvDigest": data.digest, "records": data.records,
                    "advisories": len(data.advisories), "bytes": size, "built": _go_time(now),
                    "warnings": data.warnings}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        _swap(staging, cache_dir / "db")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def _swap(new: Path, target: Path) -> None:
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}-old-{os.getpid()}")
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """`python -m agentfactory.scan.trivydb OSV_FOLDER CACHE_DIR`: build, print the manifest (JSON); 2 on bad input."""
    from .osvexport import builder_main

    return builder_main("python -m agentfactory.scan.trivydb", "Build a Trivy database (CACHE_DIR/db) from an OSV "
                        "folder; scan with `trivy --cache-dir CACHE_DIR --skip-db-update`.", "cache_dir",
                        build_trivy_db, argv)


if __name__ == "__main__":
    raise SystemExit(main())
