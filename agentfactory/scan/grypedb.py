"""A Grype vulnerability database (schema v6) built offline from the project's OSV folder.

Why: Grype downloads its database from Anchore's CDN, which air-gapped sites (and this project's
machines) cannot reach; `grype db import FILE.db` accepts a database file instead. This writes one
from the same OSV records the embedded matcher uses, so Grype runs for real, offline, and its
findings can be compared with ours.

What Grype reads (grype v0.121.3, `grype/db/v6`): a SQLite file `vulnerability.db` whose
`db_metadata` row says model 6 and when it was built, with JSON blobs referenced from search
tables. Only the tables language-package matching needs are written, in the DDL gorm gives them;
`grype db import` then "hydrates" the file (gorm's AutoMigrate creates the remaining tables and
every index) and records its digest. Rows are written as grype-db's GitHub and OSV transformers
write them:

- `providers`: one, `agentfactory-osv`.
- `vulnerability_handles` + a blob per record: `{"id", "description", "refs", "aliases",
  "severities"}`, the CVSS vector the embedded matcher rated first (Grype takes its severity from
  the first entry), then the database's own word (GHSA's "moderate" …) as a CHML severity.
- `packages` (`ecosystem` is Syft's package type: python, npm, rust-crate, go-module,
  java-archive; names as Grype normalizes them) and `affected_package_handles` + a blob
  `{"cves", "ranges": [{"version": {"type", "constraint"}, "fix": {"version", "state"}}]}`, one
  range per OSV window (`>=A,<B`), and `=V` for each listed version no window covers.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .osvexport import Advisory, Window, export

# The schema version written (grype/db/v6/db.go: ModelVersion.Revision.Addition). Grype refuses any
# model but 6; the revision and addition say which optional columns exist, and v0.121.3 writes 6.1.10.
MODEL, REVISION, ADDITION = 6, 1, 10
PROVIDER = "agentfactory-osv"
DB_FILE = "vulnerability.db"
# OSV ecosystem -> (Syft package type, Grype version format)
ECOSYSTEMS = {"PyPI": ("python", "python"), "npm": ("npm", "semver"), "crates.io": ("rust-crate", "semver"),
              "Go": ("go-module", "go"), "Maven": ("java-archive", "maven")}

# The DDL gorm (AutoMigrate, SQLite dialect) gives these models in grype v0.121.3; checked against a
# hydrated database by tests/integration/test_real_grype.py.
SCHEMA = (
    "CREATE TABLE `blobs` (`id` integer,`value` text NOT NULL,PRIMARY KEY (`id`));\n"
    "CREATE TABLE `db_metadata` (`build_timestamp` datetime NOT NULL,`model` integer NOT NULL,"
    "`revision` integer NOT NULL,`addition` integer NOT NULL);\n"
    "CREATE TABLE `providers` (`id` text,`version` text,`processor` text,`date_captured` datetime,"
    "`input_digest` text,PRIMARY KEY (`id`));\n"
    "CREATE TABLE `vulnerability_handles` (`id` integer,`name` text NOT NULL,`status` text NOT NULL,"
    "`published_date` datetime,`modified_date` datetime,`withdrawn_date` datetime,"
    "`provider_id` text NOT NULL,`blob_id` integer,PRIMARY KEY (`id`),"
    "CONSTRAINT `fk_vulnerability_handles_provider` FOREIGN KEY (`provider_id`) REFERENCES `providers`(`id`));\n"
    "CREATE TABLE `packages` (`id` integer,`ecosystem` text,`name` text,PRIMARY KEY (`id`));\n"
    "CREATE TABLE `affected_package_handles` (`id` integer,`vulnerability_id` integer NOT NULL,"
    "`operating_system_id` integer,`package_id` integer,`blob_id` integer,PRIMARY KEY (`id`),"
    "CONSTRAINT `fk_affected_package_handles_vulnerability` FOREIGN KEY (`vulnerability_id`) "
    "REFERENCES `vulnerability_handles`(`id`),"
    "CONSTRAINT `fk_affected_package_handles_operating_system` FOREIGN KEY (`operating_system_id`) "
    "REFERENCES `operating_systems`(`id`),"
    "CONSTRAINT `fk_affected_package_handles_package` FOREIGN KEY (`package_id`) REFERENCES `packages`(`id`));\n"
)


def package_name(package_type: str, name: str) -> str:
    """Grype's name.Normalize: Python names with runs of `-_.` as one `-`; Maven `group:artifact` as is."""
    if package_type == "python":
        out, run = [], False
        for ch in name:
            if ch in "-_.":
                if not run:
                    out.append("-")
                run = True
            else:
                out.append(ch)
                run = False
        return "".join(out)
    return name


def _constraint(window: Window) -> str:
    """grype-db's OSV transformer (eventsToRanges + EnforceSemVerConstraint), comma-joined, no spaces."""
    parts = []
    if window.introduced != "0":
        parts.append(f">={window.introduced}")
    if window.end_kind == "fixed":
        parts.append(f"<{window.end}")
    elif window.end_kind == "last_affected":
        parts.append(f"<={window.end}")
    return ",".join(parts) or ">=0"


def _ranges(adv: Advisory, version_format: str) -> list[dict[str, Any]]:
    ranges: list[dict[str, Any]] = []
    for window in adv.windows:
        entry: dict[str, Any] = {"version": {"type": version_format, "constraint": _constraint(window)}}
        if window.end_kind == "fixed":
            entry["fix"] = {"version": window.end, "state": "fixed"}
        ranges.append(entry)
    ranges += [{"version": {"type": version_format, "constraint": f"={v}"}} for v in adv.exact_versions]
    return ranges


def _severities(adv: Advisory) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if adv.vector.startswith("CVSS:"):
        out.append({"scheme": "CVSS", "value": {"vector": adv.vector, "version": adv.vector[5:8]}, "rank": 1})
    elif adv.vector:  # CVSS v2 vectors carry no prefix
        out.append({"scheme": "CVSS", "value": {"vector": adv.vector, "version": "2.0"}, "rank": 1})
    if adv.label:
        out.append({"scheme": "CHML", "value": adv.label, "rank": 2})
    return out


def _sql_time(moment: datetime) -> str:
    """How gorm stores a time.Time in SQLite (the driver parses it back in UTC)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S+00:00")


def _time(value: str) -> str | None:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return _sql_time(moment if moment.tzinfo else moment.replace(tzinfo=UTC))


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def write_rows(db: sqlite3.Connection, advisories: Iterable[Advisory], *, built: datetime, digest: str) -> int:
    """Insert the provider, vulnerabilities, packages and affected-package rows; the vulnerabilities written."""
    stamp = _sql_time(built)
    db.execute("INSERT INTO db_metadata VALUES (?, ?, ?, ?)", (stamp, MODEL, REVISION, ADDITION))
    db.execute("INSERT INTO providers VALUES (?, ?, ?, ?, ?)", (PROVIDER, "1", "agentfactory", stamp, digest))
    blob_id = 0

    def blob(value: Any) -> int:
        nonlocal blob_id
        blob_id += 1
        db.execute("INSERT INTO blobs VALUES (?, ?)", (blob_id, _dump(value)))
        return blob_id

    vulns: dict[str, int] = {}
    packages: dict[tuple[str, str], int] = {}
    for adv in advisories:
        package_type, version_format = ECOSYSTEMS[adv.ecosystem]
        if adv.id not in vulns:
            refs = [{"url": u} for u in adv.references]
            vblob = {"id": adv.id, "description": adv.summary, "refs": refs, "aliases": adv.aliases,
                     "severities": _severities(adv)}
            vulns[adv.id] = len(vulns) + 1
            db.execute("INSERT INTO vulnerability_handles VALUES (?, ?, 'active', ?, ?, NULL, ?, ?)",
                       (vulns[adv.id], adv.id, _time(adv.published), _time(adv.modified), PROVIDER,
                        blob({k: v for k, v in vblob.items() if v})))
        key = (package_type, package_name(package_type, adv.name))
        if key not in packages:
            packages[key] = len(packages) + 1
            db.execute("INSERT INTO packages VALUES (?, ?, ?)", (packages[key], *key))
        pblob = {"cves": [a for a in adv.aliases if a.startswith("CVE-")], "ranges": _ranges(adv, version_format)}
        db.execute("INSERT INTO affected_package_handles VALUES (NULL, ?, NULL, ?, ?)",
                   (vulns[adv.id], packages[key], blob({k: v for k, v in pblob.items() if v})))
    return len(vulns)


def build_grype_db(osv_folder: Path, out: Path, *, now: datetime | None = None) -> dict[str, Any]:
    """Write a Grype v6 database file `out` (load it with `grype db import OUT`); what was written.

    `out` must end in `.db` (that is how `grype db import` tells a database file from an archive).
    Raises `InputError` for a folder with no usable advisory.
    """
    if out.suffix != ".db":
        raise ValueError(f"{out}: a Grype database file must end in .db, or `grype db import` reads it as an archive")
    data = export(Path(osv_folder))
    built = now or datetime.now(UTC)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}-", suffix=".tmp")
    os.close(fd)
    try:
        db = sqlite3.connect(tmp)
        try:
            db.executescript(SCHEMA)
            with db:
                count = write_rows(db, data.advisories, built=built, digest=data.digest)
        finally:
            db.close()
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return {"generator": "agentfactory.scan.grypedb", "schema": f"v{MODEL}.{REVISION}.{ADDITION}",
            "osv": str(Path(osv_folder).resolve()), "osvDigest": data.digest, "records": data.records,
            "vulnerabilities": count, "advisories": len(data.advisories), "bytes": out.stat().st_size,
            "built": built.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "warnings": data.warnings}


def main(argv: list[str] | None = None) -> int:
    """`python -m agentfactory.scan.grypedb OSV_FOLDER OUT.db`: build, print what was written (JSON); 2 on bad input."""
    from .osvexport import builder_main

    return builder_main("python -m agentfactory.scan.grypedb", "Build a Grype v6 database file from an OSV folder; "
                        "load it with `grype db import OUT.db`.", "out", build_grype_db, argv)


if __name__ == "__main__":
    raise SystemExit(main())
