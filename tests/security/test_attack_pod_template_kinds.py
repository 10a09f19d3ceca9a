"""Pod template kinds: an unsigned agent in any kind that carries a pod spec is refused at the edge.

The attacker can write any namespaced workload and picks the kind the webhook forgets. Before: a
ReplicationController or a PodTemplate carrying an unsigned agent was "not an agent workload" (and the
rules did not even send them). Now every Kubernetes kind that carries a pod spec is judged, the list is
derived from the Kubernetes API schemas themselves (so a kind added upstream fails this test), and the
webhook rules send each one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml
from admission_attack_fixtures import ask
from admission_helpers import in_template, review, wasm_pod
from helpers import ROOT
from runtime_helpers import Signed

from admission.refs import CONTAINER_SECTIONS, POD_TEMPLATES

POD_SPEC = "io.k8s.api.core.v1.PodSpec"
KINDS = {"Pod": "", "PodTemplate": "", "ReplicationController": "", "Deployment": "apps", "ReplicaSet": "apps",
         "StatefulSet": "apps", "DaemonSet": "apps", "Job": "batch", "CronJob": "batch"}


def definitions(version: str) -> dict[str, Any]:
    folder = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / f"v{version}-local"
    defs: dict[str, Any] = json.loads((folder / "_definitions.json").read_text())["$defs"]
    return defs


def refs_of(schema: Any) -> set[str]:
    if isinstance(schema, dict):
        out = {schema["$ref"].rsplit("/", 1)[-1]} if isinstance(schema.get("$ref"), str) else set()
        for value in schema.values():
            out |= refs_of(value)
        return out
    if isinstance(schema, list):
        return set().union(*(refs_of(v) for v in schema)) if schema else set()
    return set()


def kinds_with_a_pod_spec(version: str) -> set[tuple[str, str]]:
    """Every (group, kind) of the Kubernetes API whose objects contain a PodSpec (lists excluded)."""
    defs = definitions(version)
    memo: dict[str, bool] = {}

    def reaches(name: str, seen: frozenset[str]) -> bool:
        if name == POD_SPEC:
            return True
        if name in memo:
            return memo[name]
        if name in seen:
            return False
        found = any(reaches(r, seen | {name}) for r in refs_of(defs.get(name, {})))
        memo[name] = found
        return found

    out = set()
    for name, schema in defs.items():
        for gvk in schema.get("x-kubernetes-group-version-kind", []):
            if not gvk["kind"].endswith("List") and reaches(name, frozenset()):
                out.add((gvk["group"], gvk["kind"]))
    return out


@pytest.mark.parametrize("version", ["1.30.0", kubernetes_validate.latest_version()])
def test_every_kind_that_carries_a_pod_spec_is_judged(version: str) -> None:
    found = kinds_with_a_pod_spec(version)
    assert found == {(g, k) for k, g in KINDS.items()}, "a kind carrying a pod spec is missing or extra"
    assert set(POD_TEMPLATES) == found


@pytest.mark.parametrize("version", ["1.30.0", kubernetes_validate.latest_version()])
def test_each_pod_template_path_leads_to_a_pod_spec(version: str) -> None:
    """The path refs.py follows for each kind is the one the Kubernetes schema has, down to the PodSpec."""
    defs = definitions(version)
    by_kind = {(gvk["group"], gvk["kind"]): name for name, s in defs.items()
               for gvk in s.get("x-kubernetes-group-version-kind", [])}
    for key, path in POD_TEMPLATES.items():
        name = by_kind[key]
        for step in (*path, "spec"):
            prop = defs[name]["properties"][step]
            name = (prop.get("$ref") or prop["allOf"][0]["$ref"]).rsplit("/", 1)[-1]
        assert name == POD_SPEC, key


@pytest.mark.parametrize("version", ["1.30.0", kubernetes_validate.latest_version()])
def test_every_container_list_of_a_pod_spec_is_read(version: str) -> None:
    """containers, initContainers, ephemeralContainers: every PodSpec list of things that run an image (a string
    `image`). Image volumes (`volumes[].image`, an object) are data, never run: a wasm container may not point its
    `command` at one (tests/security/test_attack_wasm_command_override.py)."""
    defs = definitions(version)

    def runs_an_image(definition: str) -> bool:
        image = defs.get(definition, {}).get("properties", {}).get("image")
        return isinstance(image, dict) and "$ref" not in image and "string" in str(image.get("type"))

    lists = {name for name, prop in defs[POD_SPEC]["properties"].items()
             if "items" in prop and any(runs_an_image(r) for r in refs_of(prop["items"]))}
    assert lists == set(CONTAINER_SECTIONS)


def test_the_webhook_rules_send_every_kind() -> None:
    vwc = yaml.safe_load((ROOT / "deploy/admission/base/validatingwebhookconfiguration.yaml").read_text())
    for hook in vwc["webhooks"]:
        sent = {(g, r) for rule in hook["rules"] for g in rule["apiGroups"] for r in rule["resources"]
                if {"CREATE", "UPDATE"} <= set(rule["operations"])}
        for group, kind in POD_TEMPLATES:
            assert (group, kind.lower() + "s") in sent, (hook["name"], kind)
        assert ("", "pods/ephemeralcontainers") in sent and ("agentfactory.dev", "wasmagents") in sent


# --- through the real webhook over TLS --------------------------------------------------------------------------

def workload(kind: str, pod: dict[str, Any]) -> dict[str, Any]:
    return pod if kind == "Pod" else in_template(pod, kind)


def prefix(kind: str) -> str:
    return {"Pod": "", "PodTemplate": "template.", "CronJob": "spec.jobTemplate.spec.template."}.get(
        kind, "spec.template.")


@pytest.mark.toolchain
@pytest.mark.parametrize("kind", list(KINDS))
def test_an_unsigned_agent_is_refused_in_every_kind(server: tuple[httpx.Client, Path],
                                                    world: tuple[Signed, dict[str, str]], kind: str) -> None:
    client, _ = server
    _, refs = world
    group = KINDS[kind]
    for pod, field in ((wasm_pod(refs["debugger"]), "spec.containers[0].image"),
                       (wasm_pod("nginx:1.25", runtime_class="runc",
                                 annotations={"agentfactory.dev/agent": refs["debugger"]}),
                        "metadata.annotations['agentfactory.dev/agent']")):
        for operation in ("CREATE", "UPDATE"):
            resp = ask(client, review(workload(kind, pod), group=group, kind=kind, operation=operation))
            assert resp["allowed"] is False, (kind, operation, resp)
            message = resp["status"]["message"]
            assert f"{prefix(kind)}{field}" in message and "signature" in message, message
    assert ask(client, review(workload(kind, wasm_pod(refs["helper"])), group=group, kind=kind))["allowed"] is True
    assert ask(client, review(workload(kind, wasm_pod("nginx:1.25", runtime_class="runc")), group=group,
                              kind=kind))["allowed"] is True


@pytest.mark.toolchain
def test_replication_controller_and_pod_template_as_the_api_server_sends_them(
        server: tuple[httpx.Client, Path], world: tuple[Signed, dict[str, str]]) -> None:
    client, _ = server
    _, refs = world
    rc = {"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "miner", "namespace": "team-a"},
          "spec": {"replicas": 3, "selector": {"app": "miner"}, "template": {
              "metadata": {"labels": {"app": "miner"}},
              "spec": {"runtimeClassName": "wasmtime", "initContainers": [{"name": "i", "image": refs["helper"]}],
                       "containers": [{"name": "m", "image": refs["debugger"]}]}}}}
    resp = ask(client, review(rc, kind="ReplicationController"))
    assert resp["allowed"] is False and "spec.template.spec.containers[0].image" in resp["status"]["message"]
    assert "spec.template.spec.initContainers[0].image" not in resp["status"]["message"]  # the signed one passes
    template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "miner"},
                "template": {"metadata": {}, "spec": {"runtimeClassName": "spin",
                                                       "containers": [{"name": "m", "image": "miner:latest"}]}}}
    resp = ask(client, review(template, kind="PodTemplate"))
    assert resp["allowed"] is False and "template.spec.containers[0].image" in resp["status"]["message"]
    assert "is not pinned by digest" in resp["status"]["message"]
