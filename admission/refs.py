"""Where agents hide in Kubernetes objects, and what a reference names.

An object carries agent references when it is
- a `WasmAgent` (agentfactory.dev/v1alpha1): `spec.agent`;
- a Pod, a PodTemplate, or the pod template of a ReplicationController, Deployment, ReplicaSet,
  StatefulSet, DaemonSet, Job or CronJob (POD_TEMPLATES: every Kubernetes kind that carries a pod
  spec), that either runs on a wasm RuntimeClass (`spec.runtimeClassName` in the configured
  `runtimeClasses`: then every container, init container and ephemeral container image is an agent,
  and none may override its entrypoint with `command`)
  or carries the annotation `agentfactory.dev/agent` (one reference, or several separated by commas).

An object may *ask* for a stage (`spec.stage` of a WasmAgent, the annotation `agentfactory.dev/stage`
of the pod template or the workload): that request is reported, never used to verify. The stage an
agent is judged at is its namespace's (admission/stages.py).

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
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")  # used with fullmatch: `$` also takes a trailing newline
NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}")
TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")  # the OCI distribution spec's tag grammar
MAX_REFERENCE = 4096  # a reference longer than this is no reference a registry serves

# kind → path to the pod template spec's parent (the object holding `metadata` and `spec`)
POD_TEMPLATES: dict[tuple[str, str], tuple[str, ...]] = {
    ("", "Pod"): (),
    ("", "PodTemplate"): ("template",),
    ("", "ReplicationController"): ("spec", "template"),
    ("apps", "Deployment"): ("spec", "template"),
    ("apps", "ReplicaSet"): ("spec", "template"),
    ("apps", "StatefulSet"): ("spec", "template"),
    ("apps", "DaemonSet"): ("spec", "template"),
    ("batch", "Job"): ("spec", "template"),
    ("batch", "CronJob"): ("spec", "jobTemplate", "spec", "template"),
}


# A wasm shim runs the file its entrypoint names: a `command` could name another module (one mounted from a
# volume) than the verified image's, so on a wasm runtime class it is refused.
WASM_COMMAND = ("a wasm container runs the module of its image, verified by digest; a command could run another "
                "file (from a volume) instead: remove it (arguments go in args)")

# every pod spec list that names images: kubectl debug adds to the last one through pods/ephemeralcontainers
CONTAINER_SECTIONS = ("initContainers", "containers", "ephemeralContainers")


@dataclass(frozen=True)
class Reference:
    ref: str  # as written
    field: str  # where, e.g. spec.template.spec.containers[0].image
    requested_stage: str | None = None  # what the object asks for (never what it is judged at)
    requested_stage_field: str | None = None  # where it asks, e.g. spec.stage


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
    if len(ref) > MAX_REFERENCE:
        raise InputError(where, f"{ref[:80]!r}…: {len(ref)} characters, more than any image reference "
                                f"({MAX_REFERENCE})")
    body = ref.strip().removeprefix("oci://")
    body, at, digest = body.partition("@")
    if at and not DIGEST_RE.fullmatch(digest):
        raise InputError(where, f"{ref!r}: the digest must be sha256: and 64 lower-case hex digits")
    prefix, _, last = body.rpartition("/")
    name, colon, tag = last.partition(":")
    if not NAME_RE.fullmatch(name):
        raise InputError(where, f"{ref!r}: {name!r} is not an agent name (lower-case letters, digits, . _ -)")
    if colon and not TAG_RE.fullmatch(tag):
        raise InputError(where, f"{ref[:200]!r}: the tag is not a tag (letters, digits, . _ -, at most 128, as OCI "
                                "registries take them)")
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
                    max_references: int) -> list[Reference] | None:
    """The agent references in `obj`, or None when it is not an agent workload at all."""
    if group == CRD_GROUP and kind == "WasmAgent":
        spec = obj.get("spec")
        if not isinstance(spec, dict) or not isinstance(spec.get("agent"), str):
            raise InputError("spec.agent", "a WasmAgent needs spec.agent: the agent reference, pinned by digest")
        stage = spec.get("stage")
        if stage is not None and not isinstance(stage, str):
            raise InputError("spec.stage", f"must be a string naming a stage, not {type(stage).__name__}")
        return [Reference(spec["agent"], "spec.agent", stage, "spec.stage" if stage is not None else None)]
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
    stage, stage_field = _requested_stage(obj, template, prefix)
    annotations = {**_annotations(obj), **_annotations(template)}
    refs: list[Reference] = []
    annotated = annotations.get(AGENT_ANNOTATION)
    if annotated is not None:
        if not isinstance(annotated, str):
            raise InputError(f"metadata.annotations[{AGENT_ANNOTATION!r}]", "must be a string")
        field = f"{prefix}metadata.annotations[{AGENT_ANNOTATION!r}]"
        refs.extend(Reference(r.strip(), field, stage, stage_field) for r in annotated.split(",") if r.strip())
    if pod_spec.get("runtimeClassName") in runtime_classes:
        for section in CONTAINER_SECTIONS:
            containers = pod_spec.get(section) or []
            if not isinstance(containers, list):
                raise InputError(f"{prefix}spec.{section}", "must be a list")
            for i, c in enumerate(containers):
                if len(refs) > max_references:
                    break
                image = c.get("image") if isinstance(c, dict) else None
                if not isinstance(image, str) or not image:
                    raise InputError(f"{prefix}spec.{section}[{i}].image", "missing: a wasm container names its agent")
                if c.get("command"):
                    raise InputError(f"{prefix}spec.{section}[{i}].command", WASM_COMMAND)
                refs.append(Reference(image, f"{prefix}spec.{section}[{i}].image", stage, stage_field))
    if not refs:
        return None
    if len(refs) > max_references:
        raise InputError(f"{prefix}spec", f"more than {max_references} agent references in one object "
                                          "(config maxReferences); split the workload")
    return refs


def _requested_stage(obj: dict[str, Any], template: dict[str, Any], prefix: str) -> tuple[str | None, str | None]:
    """The stage annotation of the pod template, else of the workload, and where it was found."""
    for holder, where in ((template, prefix), (obj, "")):
        annotations = _annotations(holder)
        if STAGE_ANNOTATION in annotations:
            field = f"{where}metadata.annotations[{STAGE_ANNOTATION!r}]"
            stage = annotations[STAGE_ANNOTATION]
            if not isinstance(stage, str):
                raise InputError(field, f"must be a string naming a stage, not {type(stage).__name__}")
            return stage, field
    return None, None
