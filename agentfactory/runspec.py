"""The run contract of an agent: what its template declared for the sandbox, carried in signed provenance.

A node holds only the artifact and its evidence, not the template. The pipeline therefore records
the template's entrypoint, tools, WASI capabilities and limits in the SLSA provenance
(`buildDefinition.externalParameters.agent`), which is signed with the rest of the evidence; the
runtime reads them back only from provenance the verifier accepted. The attested document is
checked against the same JSON Schema fragments as the template, so it cannot ask for more than a
template could (by agentfactory.jsonsubset: the fragments use a handful of keywords, and importing
jsonschema would cost every verify more than the check).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from . import jsonsubset
from .errors import InputError
from .httpgrant import HttpGrant, from_spec, grant_problems
from .template import Limits, Preopen, Template, schema

DEFAULT_OUTPUT_KIB = 1024


@dataclass(frozen=True)
class RunSpec:
    """Entrypoint, tools, WASI capabilities and limits, exactly as the template declared them."""

    entrypoint: str
    tools: tuple[str, ...]
    preopens: tuple[Preopen, ...]
    env: tuple[str, ...]
    limits: Limits
    http: HttpGrant | None = None  # spec.http and spec.secrets: what http.fetch may reach (absent: nothing)

    def to_json(self) -> dict[str, Any]:
        limits: dict[str, Any] = {"memoryMiB": self.limits.memory_mib, "timeoutMs": self.limits.timeout_ms,
                                  "maxOutputKiB": self.limits.max_output_kib}
        if self.limits.fuel is not None:
            limits["fuel"] = self.limits.fuel
        doc: dict[str, Any] = {
            "entrypoint": self.entrypoint,
            "tools": list(self.tools),
            "capabilities": {"wasi": {
                "preopens": [{"guestPath": p.guest_path, "hostPath": p.host_path, "readOnly": p.read_only}
                             for p in self.preopens],
                "env": list(self.env)}},
            "limits": limits,
        }
        if self.http is not None:  # absent for agents without http: their contracts (and digests) are unchanged
            doc.update(self.http.to_json())
        return doc


def from_template(t: Template) -> RunSpec:
    return RunSpec(entrypoint=t.entrypoint, tools=t.tools, preopens=t.preopens, env=t.env, limits=t.limits,
                   http=t.http)


@functools.cache
def contract_schema() -> dict[str, Any]:
    """The run contract's JSON Schema: the template schema's fragments for the fields it carries."""
    spec = schema()["properties"]["spec"]["properties"]
    found: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["entrypoint", "tools", "capabilities", "limits"],
        "properties": {k: spec[k] for k in ("entrypoint", "tools", "capabilities", "limits", "http", "secrets")},
    }
    jsonsubset.check_schema(found)  # a keyword the subset does not check is refused, never skipped
    return found


def parse_runspec(doc: Any, where: str) -> RunSpec:
    """A RunSpec from its JSON form; InputError naming the field when it is malformed."""
    for path, message in jsonsubset.iter_errors(contract_schema(), doc):
        field = ".".join(str(p) for p in path) or "(document)"
        raise InputError(where, f"{field}: {message}")
    for path, message in grant_problems(doc.get("http"), doc.get("secrets")):
        raise InputError(where, f"{'.'.join(str(p) for p in path[1:])}: {message}")
    wasi = doc["capabilities"].get("wasi", {})
    lim = doc["limits"]
    return RunSpec(
        entrypoint=doc["entrypoint"],
        tools=tuple(doc["tools"]),
        preopens=tuple(Preopen(p["guestPath"], p["hostPath"], p.get("readOnly", True))
                       for p in wasi.get("preopens", [])),
        env=tuple(wasi.get("env", [])),
        limits=Limits(memory_mib=lim["memoryMiB"], timeout_ms=lim["timeoutMs"], fuel=lim.get("fuel"),
                      max_output_kib=lim.get("maxOutputKiB", DEFAULT_OUTPUT_KIB)),
        http=from_spec(doc.get("http"), doc.get("secrets")),
    )


def from_provenance(predicate: Any, where: str = "provenance") -> RunSpec:
    """The run contract recorded in a SLSA v1 predicate (`externalParameters.agent`)."""
    try:
        doc = predicate["buildDefinition"]["externalParameters"]["agent"]
        if doc is None:
            raise KeyError("agent")
    except (KeyError, TypeError):
        raise InputError(where, "buildDefinition.externalParameters.agent is missing: the provenance does not "
                                "record the agent's tools, capabilities and limits (built before they were "
                                "attested?); rebuild and sign the agent") from None
    return parse_runspec(doc, f"{where}: buildDefinition.externalParameters.agent")
