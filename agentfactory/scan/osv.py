"""The embedded OSV matcher: an offline OSV database folder, indexed, matched against an SBOM.

Why embedded: the gate must judge an SBOM without network access and without a scanner binary,
from a database the operator imported (`import_osv`) and can pin. Records are untrusted input:
each is size-bounded, parsed with the bounded JSON/YAML readers and checked for the few fields
matching relies on; a bad record is skipped with a warning naming it, never a crash and never
silently. Components the matcher cannot judge (no purl, unknown purl type, unparsable version) are
returned as `Unscanned`, so "no findings" never hides "not looked at".

The index (ecosystem, normalized name) → compact affected entries is cached as JSON (no pickle:
the cache dir may be shared) under a fingerprint of the folder's listing, sizes and mtimes, so an
unchanged database opens without re-reading a record and any change rebuilds it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cvss import CVSS2, CVSS3, CVSS4, CVSSError  # type: ignore[import-untyped]
from packageurl import PackageURL

from ..errors import InputError
from ..jsonsafe import load_json_object
from ..yamlsafe import load_yaml
from .model import Finding, Unscanned, severity_of_score
from .versions import VersionError, in_range, is_ordered, parse_version, same_version

MAX_RECORD_BYTES = 1024 * 1024
MAX_ZIP_ENTRY_BYTES = 4 * 1024 * 1024
MAX_ZIP_TOTAL_BYTES = 2 * 1024 * 1024 * 1024  # OSV's largest all.zip (Debian, ~1.2 GiB) fits
MAX_ZIP_ENTRIES = 2_000_000
INDEX_FORMAT = 1
RECORD_SUFFIXES = (".json", ".yaml", ".yml")

PURL_ECOSYSTEMS = {"pypi": "PyPI", "npm": "npm", "cargo": "crates.io", "golang": "Go", "maven": "Maven"}
GIT = "GIT"  # index "ecosystem" for GIT-range repositories (github purls, generic purls with vcs_url)
_GHSA_SEVERITY = {"LOW": "low", "MODERATE": "medium", "MEDIUM": "medium", "HIGH": "high", "CRITICAL": "critical"}
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$")


# --- records ----------------------------------------------------------------------------------

def normalize_name(ecosystem: str, name: str) -> str:
    """The index key's name: PEP 503 for PyPI; npm, Go, Maven and crates.io names are compared as written."""
    if ecosystem == "PyPI":
        return re.sub(r"[-_.]+", "-", name).lower()
    return name


def normalize_repo(url: str) -> str:
    """``https://github.com/Owner/Repo.git/`` → ``github.com/owner/repo`` (host and path, case-folded)."""
    parts = urlsplit(url if "://" in url else f"https://{url}")
    path = parts.path.rstrip("/").removesuffix(".git")
    host = (parts.hostname or "").lower()
    return f"{host}{path}".lower()


def _check_record(doc: dict[str, Any]) -> str | None:
    """What is wrong with a parsed record, or None: only the fields matching relies on are checked."""
    if not isinstance(doc.get("id"), str) or not doc["id"]:
        return "no 'id' string"
    affected = doc.get("affected", [])
    if not isinstance(affected, list):
        return "'affected' is not a list"
    for i, aff in enumerate(affected):
        if not isinstance(aff, dict):
            return f"affected[{i}] is not an object"
        pkg = aff.get("package", {})
        if not isinstance(pkg, dict) or not all(isinstance(pkg.get(k, ""), str) for k in ("ecosystem", "name")):
            return f"affected[{i}].package is not an object of strings"
        versions = aff.get("versions", [])
        if not isinstance(versions, list) or not all(isinstance(v, str) for v in versions):
            return f"affected[{i}].versions is not a list of strings"
        ranges = aff.get("ranges", [])
        if not isinstance(ranges, list):
            return f"affected[{i}].ranges is not a list"
        for j, rng in enumerate(ranges):
            if not isinstance(rng, dict) or not isinstance(rng.get("type"), str) \
                    or not isinstance(rng.get("events"), list):
                return f"affected[{i}].ranges[{j}] needs a 'type' string and an 'events' list"
            for evt in rng["events"]:
                if not isinstance(evt, dict) or len(evt) != 1 or not isinstance(next(iter(evt.values())), str):
                    return f"affected[{i}].ranges[{j}] has an event that is not one key with a string value"
    for key in ("aliases", "severity"):
        if not isinstance(doc.get(key, []), list):
            return f"'{key}' is not a list"
    return None


def parse_record(data: bytes, where: str, warnings: list[str]) -> dict[str, Any] | None:
    """One OSV record from bytes (JSON, or YAML when `where` ends .yaml/.yml); None when skipped.

    Skipped: over `MAX_RECORD_BYTES`, unparsable or failing the minimal checks (a warning naming
    `where` is appended), and withdrawn records (silently: withdrawal is the record's own verdict).
    """
    if len(data) > MAX_RECORD_BYTES:
        warnings.append(f"{where}: skipped: {len(data)} bytes; the limit for a record is {MAX_RECORD_BYTES}")
        return None
    try:
        if where.endswith((".yaml", ".yml")):
            doc = load_yaml(data, where).data
            if not isinstance(doc, dict):
                raise InputError(where, "record is not a mapping")
        else:
            doc = load_json_object(data, where, max_bytes=MAX_RECORD_BYTES, what="OSV record")
    except InputError as exc:
        warnings.append(f"skipped: {exc}")
        return None
    problem = _check_record(doc)
    if problem is not None:
        warnings.append(f"{where}: skipped: not an OSV record: {problem}")
        return None
    if doc.get("withdrawn"):
        return None
    record: dict[str, Any] = doc
    return record


def load_record(path: Path, warnings: list[str]) -> dict[str, Any] | None:
    """`parse_record` on a file, refusing an oversized one before reading it."""
    try:
        size = path.stat().st_size
        if size > MAX_RECORD_BYTES:
            warnings.append(f"{path}: skipped: {size} bytes; the limit for a record is {MAX_RECORD_BYTES}")
            return None
        data = path.read_bytes()
    except OSError as exc:
        warnings.append(f"{path}: skipped: unreadable ({exc.strerror})")
        return None
    return parse_record(data, str(path), warnings)


def _zip_records(path: Path, warnings: list[str]) -> Iterator[tuple[str, bytes]]:
    """(where, bytes) of each record file in an OSV zip export, bounded against zip bombs.

    Declared sizes are checked first (total and per entry) and reads are capped too, since a
    crafted zip may declare less than it inflates to. A total over the limit refuses the whole zip
    (`InputError`); one oversized entry is skipped with a warning.
    """
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise InputError(str(path), f"not a readable zip file ({exc})") from None
    with zf:
        infos = [i for i in zf.infolist() if not i.is_dir() and i.filename.endswith(RECORD_SUFFIXES)]
        if len(infos) > MAX_ZIP_ENTRIES:
            raise InputError(str(path), f"zip holds {len(infos)} records; the limit is {MAX_ZIP_ENTRIES}")
        declared = sum(i.file_size for i in infos)
        if declared > MAX_ZIP_TOTAL_BYTES:
            raise InputError(str(path), f"zip would inflate to {declared} bytes; the limit is {MAX_ZIP_TOTAL_BYTES} "
                                        "(zip bomb?); refusing it")
        total = 0
        for info in infos:
            where = f"{path}!{info.filename}"
            if info.file_size > MAX_ZIP_ENTRY_BYTES:
                warnings.append(f"{where}: skipped: inflates to {info.file_size} bytes; the limit for a zip entry "
                                f"is {MAX_ZIP_ENTRY_BYTES}")
                continue
            try:
                with zf.open(info) as fh:
                    data = fh.read(MAX_ZIP_ENTRY_BYTES + 1)
            except (OSError, zipfile.BadZipFile, EOFError, ValueError) as exc:
                warnings.append(f"{where}: skipped: unreadable ({exc})")
                continue
            if len(data) > MAX_ZIP_ENTRY_BYTES:
                warnings.append(f"{where}: skipped: inflates past {MAX_ZIP_ENTRY_BYTES} bytes (declared "
                                f"{info.file_size}); refusing it")
                continue
            total += len(data)
            if total > MAX_ZIP_TOTAL_BYTES:
                raise InputError(str(path), f"zip inflates past {MAX_ZIP_TOTAL_BYTES} bytes (zip bomb?); refusing it")
            yield where, data


def iter_records(folder: Path, warnings: list[str]) -> Iterator[dict[str, Any]]:
    """Every valid record under `folder`, recursively, including those inside `*.zip` files."""
    for rel, _, _ in _listing(folder):
        path = folder / rel
        if path.suffix in RECORD_SUFFIXES:
            doc = load_record(path, warnings)
            if doc is not None:
                yield doc
        elif path.suffix == ".zip":
            try:
                for where, data in _zip_records(path, warnings):
                    doc = parse_record(data, where, warnings)
                    if doc is not None:
                        yield doc
            except InputError as exc:
                warnings.append(f"skipped: {exc}")


# --- severity ---------------------------------------------------------------------------------

def _cvss(severities: list[Any]) -> tuple[float, str] | None:
    """(base score, vector) from an OSV `severity` list: CVSS v3 preferred, then v4, then v2."""
    by_type = {s.get("type"): s.get("score") for s in severities if isinstance(s, dict)}
    for kind, cls in (("CVSS_V3", CVSS3), ("CVSS_V4", CVSS4), ("CVSS_V2", CVSS2)):
        vector = by_type.get(kind)
        if not isinstance(vector, str):
            continue
        try:
            score = Decimal(cls(vector).base_score)
        except (CVSSError, ValueError, KeyError, IndexError):
            continue
        return float(score), vector
    return None


def record_severity(doc: dict[str, Any], aff: dict[str, Any]) -> dict[str, Any]:
    """The severity of one affected entry: its own CVSS, the record's, GHSA's label, else unknown."""
    sev = aff.get("severity") if isinstance(aff.get("severity"), list) else doc.get("severity", [])
    scored = _cvss(sev or [])
    if scored is not None:
        score, vector = scored
        rating = severity_of_score(score)
        if vector.startswith("AV:") and rating == "critical":
            rating = "high"  # CVSS v2 has no critical rating
        return {"severity": rating, "score": score, "vector": vector}
    label = doc.get("database_specific", {}).get("severity") if isinstance(doc.get("database_specific"), dict) \
        else None
    rating = _GHSA_SEVERITY.get(label.upper(), "unknown") if isinstance(label, str) else "unknown"
    return {"severity": rating, "score": None, "vector": ""}


# --- the index --------------------------------------------------------------------------------

def _entries(doc: dict[str, Any]) -> Iterator[tuple[tuple[str, str], dict[str, Any]]]:
    """(index key, compact entry) for each affected package of a record, and each GIT repo in it."""
    base = {"id": doc["id"], "aliases": [a for a in doc.get("aliases", []) if isinstance(a, str)],
            "summary": doc.get("summary") if isinstance(doc.get("summary"), str) else ""}
    for aff in doc.get("affected", []):
        pkg = aff.get("package", {})
        entry = {**base, **record_severity(doc, aff), "ranges": [{"type": r["type"], "events": r["events"]}
                                                           for r in aff.get("ranges", [])],
                 "versions": aff.get("versions", [])}
        eco, name = pkg.get("ecosystem", ""), pkg.get("name", "")
        if eco and name:
            yield (eco, normalize_name(eco, name)), entry
        for repo in {normalize_repo(r["repo"]) for r in aff.get("ranges", [])
                     if r["type"] == GIT and isinstance(r.get("repo"), str)}:
            yield (GIT, repo), {**entry, "ranges": []}


def _fingerprint(folder: Path) -> str:
    """A digest of the folder's listing with sizes and mtimes: any added, removed or touched file changes it."""
    h = hashlib.sha256(f"osv-index/{INDEX_FORMAT}\n".encode())
    for rel, size, mtime_ns in _listing(folder):
        h.update(f"{rel}\0{size}\0{mtime_ns}\n".encode())
    return h.hexdigest()


def _listing(folder: Path) -> list[tuple[str, int, int]]:
    """(relative path, size, mtime_ns) of every file under `folder`, sorted; one stat per file (scandir)."""
    out: list[tuple[str, int, int]] = []
    stack = [(folder, "")]
    while stack:
        directory, prefix = stack.pop()
        with os.scandir(directory) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    stack.append((Path(entry.path), f"{prefix}{entry.name}/"))
                elif entry.is_file():
                    st = entry.stat()
                    out.append((f"{prefix}{entry.name}", st.st_size, st.st_mtime_ns))
    out.sort()
    return out


class OsvDatabase:
    """An OSV database folder (records and/or OSV `all.zip` exports), indexed for matching.

    `cache_dir` holds one ``osv-index-<folder hash>.json``; when its fingerprint matches the folder
    the index is read from it (`rebuilt` is False), otherwise every record is re-read and the cache
    rewritten atomically. `warnings` lists the records skipped (from the cached build, too).
    """

    def __init__(self, folder: Path, cache_dir: Path | None = None) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise InputError(str(folder), "the OSV database is not a folder")
        self.warnings: list[str] = []
        self.index: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.rebuilt = False
        fingerprint = _fingerprint(self.folder)
        cache = None
        if cache_dir is not None:
            tag = hashlib.sha256(str(self.folder.resolve()).encode()).hexdigest()[:16]
            cache = Path(cache_dir) / f"osv-index-{tag}.json"
            if self._load_cache(cache, fingerprint):
                return
        self._build()
        if cache is not None:
            self._save_cache(cache, fingerprint)

    def _build(self) -> None:
        self.rebuilt = True
        for doc in iter_records(self.folder, self.warnings):
            for key, entry in _entries(doc):
                self.index.setdefault(key, []).append(entry)

    def _load_cache(self, cache: Path, fingerprint: str) -> bool:
        try:
            doc = json.loads(cache.read_bytes())
        except (OSError, ValueError):
            return False  # absent or damaged: rebuild
        if not isinstance(doc, dict) or doc.get("format") != INDEX_FORMAT or doc.get("fingerprint") != fingerprint:
            return False
        self.warnings = list(doc["warnings"])
        self.index = {(eco, name): entries for eco, name, entries in doc["index"]}
        return True

    def _save_cache(self, cache: Path, fingerprint: str) -> None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        doc = {"format": INDEX_FORMAT, "fingerprint": fingerprint, "warnings": self.warnings,
               "index": [[eco, name, entries] for (eco, name), entries in self.index.items()]}
        fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=".osv-index-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(doc, fh, separators=(",", ":"))
            os.replace(tmp, cache)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def __len__(self) -> int:
        return len({e["id"] for entries in self.index.values() for e in entries})

    def listing_digest(self) -> str:
        """A digest of the folder's file names and sizes: which database a scan was matched against."""
        h = hashlib.sha256()
        for rel, size, _mtime in _listing(self.folder):
            h.update(f"{rel}\0{size}\n".encode())
        return "sha256:" + h.hexdigest()

    # --- matching -----------------------------------------------------------------------------

    def match(self, purl: str, version: str | None = None) -> list[Finding]:
        """The findings for one package version. `version` defaults to the purl's.

        Raises `InputError` for a purl that cannot be looked up (malformed, unknown type, generic
        without `vcs_url`) and `VersionError` for a version the ecosystem cannot order.
        """
        try:
            parsed = PackageURL.from_string(purl)
        except ValueError as exc:
            raise InputError(purl, f"not a purl ({exc})") from None
        version = version or parsed.version
        if not version:
            raise InputError(purl, "no version to match")
        ecosystem, key = _lookup_key(parsed)
        if is_ordered(ecosystem):
            parse_version(version, ecosystem)  # an unparsable version is reported even when no record names it
        package = PackageURL(type=parsed.type, namespace=parsed.namespace, name=parsed.name,
                             version=parsed.version or version).to_string()
        findings: dict[str, Finding] = {}
        for entry in self.index.get(key, []):
            if entry["id"] in findings or not self._affects(entry, version, ecosystem):
                continue
            fixed = [e["fixed"] for r in entry["ranges"] if r["type"] != GIT for e in r["events"] if "fixed" in e]
            findings[entry["id"]] = Finding(
                id=entry["id"], package=package, version=version, severity=entry["severity"],
                aliases=tuple(entry["aliases"]), cvss_score=entry["score"], cvss_vector=entry["vector"],
                fixed_versions=tuple(dict.fromkeys(fixed)), source="osv", summary=entry["summary"])
        return list(findings.values())

    def _affects(self, entry: dict[str, Any], version: str, ecosystem: str) -> bool:
        """OSV's IsVulnerable for one affected entry: listed in `versions`, or inside a range."""
        if any(same_version(version, v, ecosystem) for v in entry["versions"]):
            return True
        for rng in entry["ranges"]:
            if rng["type"] == GIT or not is_ordered(ecosystem):
                continue
            try:
                if in_range(version, rng["events"], ecosystem, rng["type"]):
                    return True
            except (VersionError, ValueError) as exc:
                # The component's version parsed, so the record's range is at fault: say so, fail open on it only.
                message = f"{entry['id']}: a {rng['type']} range could not be evaluated ({exc})"
                if message not in self.warnings:
                    self.warnings.append(message)
        return False

    def scan_sbom(self, bom: dict[str, Any]) -> tuple[list[Finding], list[Unscanned]]:
        """Findings for every component (nested ones too) of a CycloneDX BOM, and those not judged."""
        findings: list[Finding] = []
        unscanned: list[Unscanned] = []
        for comp in _components(bom.get("components", [])):
            label = _label(comp)
            purl = comp.get("purl")
            if not isinstance(purl, str) or not purl:
                unscanned.append(Unscanned(label, "no purl: the ecosystem and package name are unknown"))
                continue
            version = comp.get("version") if isinstance(comp.get("version"), str) else None
            try:
                findings.extend(self.match(purl, version))
            except VersionError as exc:
                unscanned.append(Unscanned(purl, f"unparsable version: {exc}"))
            except InputError as exc:
                unscanned.append(Unscanned(purl, exc.message))
        return findings, unscanned


def _lookup_key(purl: PackageURL) -> tuple[str, tuple[str, str]]:
    """(ecosystem for version ordering, index key) of a purl; `InputError` when OSV has no place for it."""
    ecosystem = PURL_ECOSYSTEMS.get(purl.type)
    if ecosystem == "Maven":
        return ecosystem, (ecosystem, f"{purl.namespace}:{purl.name}")
    if ecosystem in ("npm", "Go"):
        name = f"{purl.namespace}/{purl.name}" if purl.namespace else purl.name
        return ecosystem, (ecosystem, name)
    if ecosystem is not None:
        return ecosystem, (ecosystem, normalize_name(ecosystem, purl.name))
    if purl.type == "github" and purl.namespace:
        return GIT, (GIT, normalize_repo(f"github.com/{purl.namespace}/{purl.name}"))
    if purl.type == "generic":
        vcs = (purl.qualifiers or {}).get("vcs_url") if isinstance(purl.qualifiers, dict) else None
        if not vcs:
            raise InputError(purl.to_string(), "generic purl without a vcs_url qualifier: no OSV package to look up")
        return GIT, (GIT, normalize_repo(vcs.split("+", 1)[-1].split("@", 1)[0]))
    raise InputError(purl.to_string(), f"purl type {purl.type!r} has no OSV ecosystem here")


def _components(components: Any) -> Iterator[dict[str, Any]]:
    if not isinstance(components, list):
        return
    for comp in components:
        if isinstance(comp, dict):
            yield comp
            yield from _components(comp.get("components", []))


def _label(comp: dict[str, Any]) -> str:
    name = comp.get("name") if isinstance(comp.get("name"), str) else comp.get("bom-ref", "<unnamed>")
    version = comp.get("version")
    return f"{name}@{version}" if isinstance(version, str) else str(name)


# --- import -----------------------------------------------------------------------------------

def import_osv(src: Path, dest: Path, *, allow_empty: bool = False) -> tuple[int, list[str]]:
    """Copy an OSV export (a folder or a zip) into `dest`, replacing it atomically.

    Each record is validated as the database reads it and written as ``<id>.json``; the new folder
    is built next to `dest` and renamed over it, so a reader sees the old database or the new one,
    never half of it. Raises `InputError` for a zip bomb or an unreadable source, and for an export
    with no usable record unless `allow_empty`: an empty database matches nothing, so replacing a
    working one with it would make every later scan pass (and `dest` is left as it was).
    """
    src, dest = Path(src), Path(dest)
    warnings: list[str] = []
    if src.is_dir():
        docs: Iterator[dict[str, Any]] = iter_records(src, warnings)
    elif src.is_file():
        docs = (d for where, data in _zip_records(src, warnings)
                if (d := parse_record(data, where, warnings)) is not None)
    else:
        raise InputError(str(src), "no such OSV export (expected a folder or a zip)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.import-"))
    count = 0
    try:
        seen: set[str] = set()
        for doc in docs:
            rid = doc["id"]
            if not _SAFE_ID.match(rid):
                warnings.append(f"{rid!r}: skipped: id is not a safe file name")
                continue
            if rid in seen:
                warnings.append(f"{rid}: a second record with this id replaced the first")
            seen.add(rid)
            (tmp / f"{rid.replace(':', '_')}.json").write_text(json.dumps(doc, indent=1) + "\n")
            count = len(seen)
        if count == 0 and not allow_empty:
            more = " …" if len(warnings) > 1 else ""
            skipped = f" ({len(warnings)} skipped: {warnings[0]}{more})" if warnings else ""
            raise InputError(str(src), f"the export holds no usable OSV record{skipped}: importing it would replace "
                                       f"the database at {dest} with an empty one, which matches nothing; the "
                                       "database is unchanged (give --allow-empty to empty it on purpose)")
        old = None
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
            os.rename(dest, old)
        os.rename(tmp, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return count, warnings


__all__ = ["MAX_RECORD_BYTES", "MAX_ZIP_ENTRY_BYTES", "MAX_ZIP_TOTAL_BYTES", "OsvDatabase", "import_osv",
           "load_record", "normalize_name", "normalize_repo", "parse_record"]
