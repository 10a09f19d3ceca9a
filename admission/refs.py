"""Where agents hide in Kubernetes objects, and what a reference names.

An object carries agent references when it is
- a `WasmAgent` (agentfactory.dev/v1alpha1): `spec.agent`, stage `spec.stage`;
- a Pod, or the pod template of a Deployment, ReplicaSet, StatefulSet, DaemonSet, Job or CronJob, that
  either runs on a wasm RuntimeClass (`spec.runtimeClassName` in the configured `runtimeClasses`:
  then every container and init container image is an agent) or carries the annotation
  `agentfactory.dev/agent` (one reference, or several separated by commas). The stage is the
  annotation `agentfactory.dev/stage` of the pod template (or of the workload), else the default.

Anything else is not an agent workload and passes untouched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from agentfactory.errors import InputError

AGENT_ANNOTATION = "agentfactory.dev/agent"
STAGE_ANNOTATION = "agentfactory.dev/stage"
CRD_GROUP = "agentfactory.dev"
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")

# kind → path to the pod template spec's parent (the object holding `metadata` and `spec`)
POD_TEMPLATES: dict[tuple[str, str], tuple[str, ...]] = {
    ("", "Pod"): (),
    ("apps", "Deployment"): ("spec", "template"),
    ("apps", "ReplicaSet"): ("spec", "template"),
    ("apps", "StatefulSet"): ("spec", "template"),
    ("apps", "DaemonSet"): ("spec", "template"),
    ("batch", "Job"): ("spec", "template"),
    ("batch", "CronJob"): ("spec", "jobTemplate", "spec", "template"),
}


@dataclass(frozen=True)
class Reference:
    ref: str  # as written
    field: str  # where, e.g. spec.template.spec.containers[0].image
    stage: str


@dataclass(frozen=True)
class Parsed:
    """A reference taken apart: registry/repository prefix (or ""), agent name, digest or None."""

    prefix: str
    name: str
    digest: str | None
    tag: str | None

    @property
    def pinned(self) -> bool:
        return self.digest is not None


def parse_reference(ref: str, where: str) -> Parsed:
    """`name@sha256:…`, `host[:port]/path/name@sha256:…`, `oci://…`; tags parse too (and are refused later)."""
    body = ref.strip().removeprefix("oci://")
    body, at, digest = body.partition("@")
    if at and not DIGEST_RE.match(digest):
        raise InputError(where, f"{ref!r}: the digest must be sha256: and 64 lower-case hex digits")
    prefix, _, last = body.rpartition("/")
    name, colon, tag = last.partition(":")
    if not NAME_RE.match(name):
        raise InputError(where, f"{ref!r}: {name!r} is not an agent name (lower-case letters, digits, . _ -)")
    return Parsed(prefix=prefix, name=name, digest=digest if at else None, tag=tag if colon else None)


def _get(obj: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _annotations(obj: Any) -> dict[str, Any]:
    ann = _get(obj, ("metadata", "annotations"))
    return ann if isinstance(ann, dict) else {}


def find_references(group: str, kind: str, obj: dict[str, Any], *, runtime_classes: tuple[str, ...],
                    default_stage: str, max_references: int) -> list[Reference] | None:
    """The agent references in `obj`, or None when it is not an agent workload at all."""
    if group == CRD_GROUP and kind == "WasmAgent":
        spec = obj.get("spec")
        if not isinstance(spec, dict) or not isinstance(spec.get("agent"), str):
            raise InputError("spec.agent", "a WasmAgent needs spec.agent: the agent reference, pinned by digest")
        stage = spec.get("stage", default_stage)
        if not isinstance(stage, str):
            raise InputError("spec.stage", "must be a string")
        return [Reference(spec["agent"], "spec.agent", stage)]
    path = POD_TEMPLATES.get((group, kind))
    if path is None:
        return None
    template = _get(obj, path) if path else obj
    if not isinstance(template, dict):
        return None
    prefix = ".".join(path) + "." if path else ""
    pod_spec = template.get("spec")
    if not isinstance(pod_spec, dict):
        return None
    annotations = {**_annotations(obj), **_annotations(template)}
    stage = annotations.get(STAGE_ANNOTATION, default_stage)
    if not isinstance(stage, str):
        raise InputError(f"metadata.annotations[{STAGE_ANNOTATION!r}]", "must be a string")
    refs: list[Reference] = []
    annotated = annotations.get(AGENT_ANNOTATION)
    if annotated is not None:
        if not isinstance(annotated, str):
            raise InputError(f"metadata.annotations[{AGENT_ANNOTATION!r}]", "must be a string")
        field = f"{prefix}metadata.annotations[{AGENT_ANNOTATION!r}]"
        refs.extend(Reference(r.strip(), field, stage) for r in annotated.split(",") if r.strip())
    if pod_spec.get("runtimeClassName") in runtime_classes:
        for section in ("initContainers", "containers"):
            containers = pod_spec.get(section) or []
            if not isinstance(containers, list):
                raise InputError(f"{prefix}spec.{section}", "must be a list")
            for i, c in enumerate(containers):
                if len(refs) > max_references:
                    break
                image = c.get("image") if isinstance(c, dict) else None
                if not isinstance(image, str) or not image:
                    raise InputError(f"{prefix}spec.{section}[{i}].image", "missing: a wasm container names its agent")
                refs.append(Reference(image, f"{prefix}spec.{section}[{i}].image", stage))
    if not refs:
        return None
    if len(refs) > max_references:
        raise InputError(f"{prefix}spec", f"more than {max_references} agent references in one object "
                                          "(config maxReferences); split the workload")
    return refs
