"""Reading CycloneDX SBOMs: strict, bounded validation, and what artifact a document describes.

Generation lives in the pipeline (`pipelines/sbom.py`); reading is here, in the trust core,
because the verifier asks "is this SBOM about this artifact?" in every plane.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cyclonedx.schema import SchemaVersion
from packageurl import PackageURL

from .digest import parse_digest
from .errors import InputError

if TYPE_CHECKING:
    from cyclonedx.validation.json import JsonStrictValidator

SPEC_VERSION = "1.6"
MAX_SBOM_BYTES = 16 * 1024 * 1024
MAX_REPORTED_ERRORS = 5
MAX_MESSAGE_CHARS = 240
# The schema's uniqueItems makes jsonschema compare the objects of an array pairwise (they do not
# sort): 4000 tiny components, 150 KB, take 11 s, and 16 MiB of them would take days. Validation
# is refused above this many comparisons, summed over the arrays: one array of 2000 objects.
MAX_ARRAY_ITEMS = 2000
MAX_PAIRWISE = MAX_ARRAY_ITEMS**2


@cache
def _validator() -> JsonStrictValidator:
    """One validator per process: the library loads and compiles the schema on first use.

    Imported here, not at the top: importing jsonschema with its format extras costs about a
    second (see benchmarks/results/sbom.md), which building an SBOM does not need.
    """
    from cyclonedx.validation.json import JsonStrictValidator

    return JsonStrictValidator(SchemaVersion.V1_6)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _load(data: bytes, where: str) -> tuple[str, dict[str, Any]]:
    """Parse an SBOM strictly and within bounds: size first, then UTF-8, then JSON, then shape."""
    if len(data) > MAX_SBOM_BYTES:
        raise InputError(where, f"SBOM is {len(data)} bytes; the limit is {MAX_SBOM_BYTES}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(where, f"SBOM is not UTF-8 (byte {exc.start})") from None
    try:
        doc = json.loads(text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}:{exc.lineno}", f"SBOM is not JSON: {exc.msg} (line {exc.lineno}, "
                                                  f"column {exc.colno})") from None
    except ValueError as exc:
        raise InputError(where, f"SBOM is not JSON: {exc}") from None
    except RecursionError:
        raise InputError(where, "SBOM is nested too deeply to be JSON we accept") from None
    if not isinstance(doc, dict):
        raise InputError(where, f"SBOM is a JSON {type(doc).__name__}, not an object (a CycloneDX document)")
    return text, doc


def _describe(error: Any) -> str:
    """`$.json.path: message`, descending into anyOf/oneOf to the branch that nearly matched."""
    from jsonschema.exceptions import best_match

    if error.context:
        error = best_match(error.context)
    message = error.message
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[:MAX_MESSAGE_CHARS] + "…"
    return f"{error.json_path}: {message}"


def _check_validation_cost(doc: dict[str, Any], where: str) -> None:
    """Refuse documents whose arrays would make schema validation run for unbounded time."""
    cost, largest, largest_path = 0, 0, "$"
    stack: list[tuple[str, Any]] = [("$", doc)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            stack.extend((f"{path}.{key}", item) for key, item in value.items())
        elif isinstance(value, list):
            sortable = all(isinstance(i, str) for i in value) or \
                all(isinstance(i, int | float) and not isinstance(i, bool) for i in value)
            if not sortable:
                cost += len(value) ** 2
                if len(value) > largest:
                    largest, largest_path = len(value), path
            stack.extend((f"{path}[{i}]", item) for i, item in enumerate(value))
    if cost > MAX_PAIRWISE:
        raise InputError(where, f"{largest_path} has {largest} items: too many to validate in bounded time "
                                f"(at most {MAX_ARRAY_ITEMS} objects in one array, fewer when several arrays "
                                "are large)")


def validate_sbom(data: bytes, where: str) -> None:
    """Refuse anything but a CycloneDX 1.6 JSON document valid under the strict schema (`load_sbom`)."""
    load_sbom(data, where)


def load_sbom(data: bytes, where: str) -> dict[str, Any]:
    """The SBOM document, only when it is CycloneDX 1.6 JSON valid under the strict schema.

    The one validation every reader uses (the pipeline's sbom stage, `agentfactory scan FILE`).
    Strict = no unknown properties and no duplicate keys, so a typo or a second `components` key
    cannot hide a component from scanners. The message names the JSON path of each problem (the
    first few of them), or the duplicated key. Size and array lengths are bounded first, so a
    hostile document cannot make validation run for hours.
    """
    text, doc = _load(data, where)
    if doc.get("bomFormat") != "CycloneDX":
        raise InputError(where, f"$.bomFormat: {doc.get('bomFormat')!r} is not 'CycloneDX': not a CycloneDX SBOM")
    if doc.get("specVersion") != SPEC_VERSION:
        raise InputError(where, f"$.specVersion: {doc.get('specVersion')!r} is not supported; "
                                f"expected {SPEC_VERSION!r} (CycloneDX {SPEC_VERSION})")
    _check_validation_cost(doc, where)
    errors = _validator().validate_str(text, all_errors=True)
    if errors is None:
        return doc
    found: list[str] = []
    for error in errors:
        if len(found) == MAX_REPORTED_ERRORS:
            found.append("… (more problems not shown)")
            break
        found.append(_describe(error.data))
    raise InputError(where, "not a valid CycloneDX 1.6 SBOM: " + "; ".join(found))


def sbom_subject(data: bytes, where: str = "SBOM") -> tuple[str, str, str]:
    """(name, version, "sha256:<hex>") of the artifact an SBOM describes (metadata.component).

    The verifier compares this with the artifact the SBOM accompanies; an SBOM that does not say
    what it is about, or names it ambiguously, is refused.
    """
    _, doc = _load(data, where)
    meta = doc.get("metadata")
    component = meta.get("component") if isinstance(meta, dict) else None
    if not isinstance(component, dict):
        raise InputError(where, "$.metadata.component is missing: the SBOM does not say which artifact it describes")
    name, version = component.get("name"), component.get("version")
    if not isinstance(name, str) or not name:
        raise InputError(where, "$.metadata.component.name is missing")
    if not isinstance(version, str) or not version:
        raise InputError(where, "$.metadata.component.version is missing")
    hashes = component.get("hashes")
    found = {h["content"] for h in hashes if isinstance(h, dict) and h.get("alg") == "SHA-256"
             and isinstance(h.get("content"), str)} if isinstance(hashes, list) else set()
    if len(found) != 1:
        raise InputError(where, "$.metadata.component.hashes: expected exactly one SHA-256 hash of the artifact, "
                                f"found {len(found)}")
    digest = parse_digest(f"sha256:{found.pop()}", f"{where}: $.metadata.component.hashes")
    purl = component.get("purl")
    if purl is not None:
        try:
            parsed = PackageURL.from_string(purl) if isinstance(purl, str) else None
        except ValueError:
            parsed = None
        if parsed is None:
            raise InputError(where, f"$.metadata.component.purl: {purl!r} is not a purl")
        if parsed.type == "oci" and parsed.version and parsed.version.lower() != digest:
            raise InputError(where, f"$.metadata.component.purl names {parsed.version}, but its SHA-256 hash "
                                    f"is {digest}: which artifact the SBOM describes is ambiguous")
    return name, version, digest


def release_path(root: Path, name: str, version: str) -> Path:
    """Where a released version's SBOM is committed for review: `sbom/<name>/<version>.cdx.json`.

    Name and version may come from a document (`sbom_subject`): neither may leave the folder.
    """
    for what, value in (("name", name), ("version", version)):
        if not value or "/" in value or "\\" in value or value.startswith(".") or "\0" in value:
            raise InputError(f"SBOM {what}", f"{value!r} cannot be used in a file name")
    return root / "sbom" / name / f"{version}.cdx.json"
