"""What the scanner adapters and the VEX reader share: strict field readers, purl and severity
normalisation, and running a scanner binary with a timeout and an output cap."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from typing import Any

from packageurl import PackageURL

from ..errors import InputError
from .errors import ScannerFailed, ScannerUnavailable
from .model import SEVERITIES, severity_of_score

MAX_REPORT_BYTES = 64 * 1024 * 1024  # a large image's report is a few MiB; this leaves room without being unbounded
MAX_ITEMS = 100_000  # matches / results / vulnerabilities per document
SCANNER_TIMEOUT_S = 600.0  # a first run may download the vulnerability database

# Words scanners use for a rating besides the CVSS ones (Grype: Negligible, Unknown).
_SEVERITY_WORDS = {"negligible": "low", "unknown": "unknown", "": "unknown"}


def field_obj(doc: dict[str, Any], key: str, where: str, *, required: bool = True) -> dict[str, Any]:
    """`doc[key]` as an object; absent (or null) is `{}` only when not required."""
    value = doc.get(key)
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise InputError(where, f"{key} must be an object")
    return value


def field_list(doc: dict[str, Any], key: str, where: str, *, required: bool = True) -> list[Any]:
    """`doc[key]` as a bounded list; absent (or null) is `[]` only when not required."""
    value = doc.get(key)
    if value is None and not required:
        return []
    if not isinstance(value, list):
        raise InputError(where, f"{key} must be a list")
    if len(value) > MAX_ITEMS:
        raise InputError(where, f"{key} has {len(value)} items; the limit is {MAX_ITEMS}")
    return value


def field_str(doc: dict[str, Any], key: str, where: str, *, required: bool = True) -> str:
    """`doc[key]` as a string; absent (or null) is "" only when not required, and required means non-empty."""
    value = doc.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise InputError(where, f"{key} must be a non-empty string" if required else f"{key} must be a string")
    return value


def item_obj(items: list[Any], index: int, where: str) -> dict[str, Any]:
    value = items[index]
    if not isinstance(value, dict):
        raise InputError(where, "must be an object")
    return value


def normalize_purl(purl: str, where: str) -> str:
    """The purl without qualifiers and subpath, in canonical spelling, so purls compare equal across tools.

    Qualifiers (arch, repository_url, …) describe where a package came from, not which package and
    version it is; VEX products are matched ignoring them.
    """
    try:
        parsed = PackageURL.from_string(purl)
    except ValueError as exc:
        raise InputError(where, f"{purl!r} is not a package URL ({exc})") from None
    return str(PackageURL(type=parsed.type, namespace=parsed.namespace, name=parsed.name,
                          version=parsed.version).to_string())


def package_of(purl: str, name: str, where: str) -> str:
    """The finding's package: the normalized purl, or the bare name when the tool gave no purl."""
    return normalize_purl(purl, where) if purl else name


def normalize_severity(raw: str, score: float | None) -> str:
    """The scanner's own rating, lower-cased; when it has none, the CVSS score's rating."""
    severity = raw.strip().lower()
    severity = _SEVERITY_WORDS.get(severity, severity)
    if severity not in SEVERITIES:
        severity = "unknown"
    if severity == "unknown":
        return severity_of_score(score)
    return severity


def score_of(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 10.0:
        raise InputError(where, "a CVSS score must be a number from 0 to 10")
    return float(value)


def run_scanner(argv: list[str], program: str, *, timeout: float = SCANNER_TIMEOUT_S,
                max_bytes: int = MAX_REPORT_BYTES) -> bytes:
    """Run a scanner (found on PATH) and return its stdout; raise with what it said when it fails.

    Output goes to a temporary file rather than a pipe so an oversized report is measured on disk,
    never held whole in memory before the cap applies.
    """
    binary = shutil.which(program)
    if binary is None:
        raise ScannerUnavailable(f"{program} is not on PATH; install it, or scan with the embedded OSV matcher")
    with tempfile.TemporaryFile() as out:
        try:
            done = subprocess.run([binary, *argv], stdout=out, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                  timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise ScannerFailed(f"{program} did not finish within {timeout:.0f} s") from exc
        except OSError as exc:
            raise ScannerFailed(f"cannot run {program}: {exc.strerror or exc}") from exc
        if done.returncode != 0:
            message = done.stderr.decode("utf-8", "replace").strip()[-1000:]
            raise ScannerFailed(f"{program} {' '.join(argv)} failed (exit {done.returncode}): {message}")
        size = out.tell()
        if size > max_bytes:
            raise ScannerFailed(f"{program} answered {size} bytes; the limit is {max_bytes}")
        out.seek(0)
        return out.read()
