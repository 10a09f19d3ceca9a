"""The webhook's configuration file (`--config`, YAML), checked field by field before anything starts.

Every key is optional; the defaults are what docs/admission.md documents. Unknown keys are refused
(a typo must not silently fall back to a default in a security component).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema

from agentfactory.errors import InputError, ValidationFailed
from agentfactory.yamlsafe import load_yaml

MAX_CONFIG_BYTES = 256 * 1024

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "store": {"type": "string", "minLength": 1},
        "trustPolicy": {"type": "string", "minLength": 1},
        "keyProvider": {"enum": ["local", "vault"]},
        "policies": {"type": "string", "minLength": 1},
        "defaultStage": {"type": "string", "pattern": "^[a-z][a-z0-9-]{0,31}$"},
        "exemptNamespaces": {"type": "array", "items": {"type": "string"}, "maxItems": 1000},
        "runtimeClasses": {"type": "array", "items": {"type": "string"}, "maxItems": 100},
        "deadlineMs": {"type": "integer", "minimum": 10, "maximum": 29000},
        "cacheTtlSeconds": {"type": "number", "minimum": 0, "maximum": 86400},
        "negativeCacheTtlSeconds": {"type": "number", "minimum": 0, "maximum": 3600},
        "cacheMaxEntries": {"type": "integer", "minimum": 1, "maximum": 1_000_000},
        "maxRequestBytes": {"type": "integer", "minimum": 1024, "maximum": 64 * 1024 * 1024},
        "maxReferences": {"type": "integer", "minimum": 1, "maximum": 10_000},
        "auditLog": {"type": "string"},
    },
}


@dataclass(frozen=True)
class AdmissionConfig:
    store: str | None = None  # None: $AGENTFACTORY_STORE or the local layout
    trust_policy: Path | None = None  # None: trust the key provider's keys
    key_provider: str | None = None
    policies: Path | None = None
    default_stage: str = "dev"
    exempt_namespaces: tuple[str, ...] = ("kube-system", "agentfactory-system")
    runtime_classes: tuple[str, ...] = ("wasmtime", "spin", "wasmedge", "wasm")
    deadline_ms: int = 2500  # below the webhook's timeoutSeconds (5 s in deploy/admission)
    cache_ttl: float = 60.0
    negative_cache_ttl: float = 10.0
    cache_max_entries: int = 10_000
    max_request_bytes: int = 3 * 1024 * 1024  # what the API server sends at most
    max_references: int = 256
    audit_log: Path | None = None
    source: str = field(default="defaults", compare=False)


_KEYS = {"store": "store", "trustPolicy": "trust_policy", "keyProvider": "key_provider", "policies": "policies",
         "defaultStage": "default_stage", "exemptNamespaces": "exempt_namespaces",
         "runtimeClasses": "runtime_classes", "deadlineMs": "deadline_ms", "cacheTtlSeconds": "cache_ttl",
         "negativeCacheTtlSeconds": "negative_cache_ttl", "cacheMaxEntries": "cache_max_entries",
         "maxRequestBytes": "max_request_bytes", "maxReferences": "max_references", "auditLog": "audit_log"}
_PATHS = {"trust_policy", "policies", "audit_log"}


def load_config(path: Path) -> AdmissionConfig:
    """Read and check a config file; ValidationFailed names the file, line and field of each problem."""
    where = str(path)
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ValidationFailed([InputError(where, f"larger than {MAX_CONFIG_BYTES} bytes")])
        raw = path.read_bytes()
    except OSError as exc:
        raise ValidationFailed([InputError(where, f"cannot read the config: {exc.strerror}")]) from None
    doc = load_yaml(raw, where)
    data = doc.data if doc.data is not None else {}
    problems = []
    for err in jsonschema.Draft202012Validator(SCHEMA).iter_errors(data):
        line = doc.line_of(tuple(err.absolute_path)) or 0
        field_name = ".".join(str(p) for p in err.absolute_path) or "(document)"
        problems.append(InputError(f"{where}:{line}", f"{field_name}: {err.message}"))
    if problems:
        raise ValidationFailed(problems)
    values: dict[str, Any] = {}
    for key, value in data.items():
        name = _KEYS[key]
        if name in _PATHS:
            value = Path(value) if (name != "audit_log" or value != "-") else Path("-")
        elif isinstance(value, list):
            value = tuple(value)
        elif name in ("cache_ttl", "negative_cache_ttl"):
            value = float(value)
        values[name] = value
    return AdmissionConfig(**values, source=where)
