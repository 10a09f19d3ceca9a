"""Ephemeral containers and subresources: every way into a pod is judged (DESIGN.md invariant 9).

The attacker may `kubectl debug` (create on pods/ephemeralcontainers) or write a Pod, and controls the
image of the container they add. Before: refs.py read only `containers` and `initContainers`, the webhook
never read `request.subResource`, and the rules did not send `pods/ephemeralcontainers`, so an UPDATE of
that subresource adding an unsigned agent to a wasm pod was answered `allowed: true`. Now the whole pod,
ephemeral containers included, is judged on every path, and each subresource has an explicit decision
(admission/subresources.py, the same table as docs/admission.md).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from admission_attack_fixtures import ask, audit_records
from admission_helpers import review, wasm_pod
from helpers import ROOT
from runtime_helpers import Signed

from admission.subresources import ALLOW, JUDGE, REFUSE, SUBRESOURCES

pytestmark = pytest.mark.toolchain


def debugged(pod: dict[str, Any], image: str, *, target: str = "c0") -> dict[str, Any]:
    """`pod` after `kubectl debug -it POD --image=IMAGE --target=c0`: what the API server sends for
    pods/ephemeralcontainers (the whole Pod, with the new ephemeral container appended)."""
    new = copy.deepcopy(pod)
    new["spec"].setdefault("ephemeralContainers", []).append({
        "name": "debugger-x7k2p", "image": image, "imagePullPolicy": "IfNotPresent", "stdin": True, "tty": True,
        "targetContainerName": target, "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File", "resources": {}})
    return new


def debug_review(pod: dict[str, Any], image: str, namespace: str = "team-a") -> dict[str, Any]:
    return review(debugged(pod, image), operation="UPDATE", old=pod, sub_resource="ephemeralcontainers",
                  namespace=namespace)


def test_kubectl_debug_with_an_unsigned_agent_is_refused(server: tuple[httpx.Client, Path],
                                                         world: tuple[Signed, dict[str, str]]) -> None:
    client, audit = server
    _, refs = world
    pod = wasm_pod(refs["helper"])
    assert ask(client, review(pod))["allowed"] is True  # the pod itself is fine
    resp = ask(client, debug_review(pod, refs["debugger"]))
    assert resp["allowed"] is False and resp["status"]["code"] == 403
    message = resp["status"]["message"]
    assert "spec.ephemeralContainers[0].image" in message and "signature" in message, message
    record = audit_records(audit)[-1]
    assert record["allowed"] is False and record["operation"] == "UPDATE"
    assert [a["field"] for a in record["agents"]] == ["spec.containers[0].image", "spec.ephemeralContainers[0].image"]


@pytest.mark.parametrize("image, reason", [
    ("busybox:1.36", "is not pinned by digest"),
    ("busybox", "is not pinned by digest"),
    ("docker.io/library/busybox@sha256:" + "1" * 64, "is not in oci-layout:"),
    ("Not An Image", "is not an agent name"),
])
def test_kubectl_debug_shapes_are_refused(server: tuple[httpx.Client, Path], world: tuple[Signed, dict[str, str]],
                                          image: str, reason: str) -> None:
    client, _ = server
    _, refs = world
    resp = ask(client, debug_review(wasm_pod(refs["helper"]), image))
    assert resp["allowed"] is False and reason in resp["status"]["message"], resp
    assert "spec.ephemeralContainers[0].image" in resp["status"]["message"]


def test_a_debug_container_without_an_image_is_refused(server: tuple[httpx.Client, Path],
                                                       world: tuple[Signed, dict[str, str]]) -> None:
    client, _ = server
    _, refs = world
    pod = wasm_pod(refs["helper"])
    new = copy.deepcopy(pod)
    new["spec"]["ephemeralContainers"] = [{"name": "d"}]
    resp = ask(client, review(new, operation="UPDATE", old=pod, sub_resource="ephemeralcontainers"))
    assert resp["allowed"] is False and "spec.ephemeralContainers[0].image: missing" in resp["status"]["message"]
    new["spec"]["ephemeralContainers"] = {"image": refs["debugger"]}
    resp = ask(client, review(new, operation="UPDATE", old=pod, sub_resource="ephemeralcontainers"))
    assert resp["allowed"] is False and "spec.ephemeralContainers: must be a list" in resp["status"]["message"]


def test_the_pre_1_22_ephemeral_containers_shape_is_refused(server: tuple[httpx.Client, Path],
                                                             world: tuple[Signed, dict[str, str]]) -> None:
    """Before Kubernetes 1.22 the subresource carried an `EphemeralContainers` object, not the Pod: no pod spec to
    find agents in, so it would pass as "not an agent workload". Refused instead: it cannot be judged."""
    client, _ = server
    _, refs = world
    legacy = {"apiVersion": "v1", "kind": "EphemeralContainers", "metadata": {"name": "p"},
              "ephemeralContainers": [{"name": "d", "image": refs["debugger"]}]}
    resp = ask(client, review(legacy, kind="EphemeralContainers", operation="UPDATE",
                              sub_resource="ephemeralcontainers"))
    assert resp["allowed"] is False and "request.kind 'EphemeralContainers'" in resp["status"]["message"]


def test_a_signed_debug_agent_is_judged_and_admitted(server: tuple[httpx.Client, Path],
                                                     world: tuple[Signed, dict[str, str]]) -> None:
    """Judged, not refused wholesale: a signed agent may be added (the decision is the verifier's)."""
    client, _ = server
    _, refs = world
    assert ask(client, debug_review(wasm_pod(refs["helper"]), refs["helper"]))["allowed"] is True


def test_ephemeral_containers_in_a_pod_create_are_judged(server: tuple[httpx.Client, Path],
                                                         world: tuple[Signed, dict[str, str]]) -> None:
    """Every pod spec, not only on the subresource: a Pod written with ephemeralContainers already in it."""
    client, _ = server
    _, refs = world
    pod = debugged(wasm_pod(refs["helper"]), refs["debugger"])
    for operation in ("CREATE", "UPDATE"):
        resp = ask(client, review(pod, operation=operation, old=wasm_pod(refs["helper"])))
        assert resp["allowed"] is False and "spec.ephemeralContainers[0].image" in resp["status"]["message"]
    warned = ask(client, review(pod), path="/validate/warn")
    assert warned["allowed"] is True and any("spec.ephemeralContainers[0].image" in w for w in warned["warnings"])


def test_debugging_a_pod_that_runs_no_agent_is_not_judged(server: tuple[httpx.Client, Path]) -> None:
    client, _ = server
    pod = wasm_pod("nginx:1.25", runtime_class="runc")
    assert ask(client, debug_review(pod, "busybox:1.36"))["allowed"] is True


# --- every subresource, decided as documented -------------------------------------------------------------------

def test_the_subresource_table_is_the_documented_one() -> None:
    """docs/admission.md lists every subresource with the same decision as the code (and nothing else)."""
    text = (ROOT / "docs" / "admission.md").read_text()
    section = text.split("## Subresources", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `([a-z]+)` \| \*\*(judged|allowed|refused)\*\* \|", section, re.MULTILINE))
    expected = {name: rule.decision for name, rule in SUBRESOURCES.items() if name}
    assert rows == expected
    assert {"ephemeralcontainers", "status", "resize", "scale", "binding", "eviction", "exec", "attach"} <= set(rows)
    assert SUBRESOURCES["ephemeralcontainers"].decision == JUDGE
    assert {SUBRESOURCES[s].decision for s in ("exec", "attach")} == {REFUSE}
    assert {SUBRESOURCES[s].decision for s in ("status", "resize", "scale", "binding", "eviction")} == {ALLOW}


def test_each_subresource_is_decided_as_documented(server: tuple[httpx.Client, Path],
                                                   world: tuple[Signed, dict[str, str]]) -> None:
    client, _ = server
    _, refs = world
    bad = wasm_pod(refs["debugger"])  # an agent pod whose agent does not verify (admitted before a key was revoked)
    good = wasm_pod(refs["helper"])
    # status and resize of a pod whose references do not change: nothing new can run
    for sub in ("status", "resize"):
        changed = copy.deepcopy(bad)
        changed["status"] = {"phase": "Running"}
        resp = ask(client, review(changed, operation="UPDATE", old=bad, sub_resource=sub))
        assert resp["allowed"] is True, (sub, resp)
    # ... but a status write that adds an agent reference (a pod's annotations can change through it) is judged
    sneaky = copy.deepcopy(good)
    sneaky["metadata"]["annotations"] = {"agentfactory.dev/agent": refs["debugger"]}
    resp = ask(client, review(sneaky, operation="UPDATE", old=good, sub_resource="status"))
    assert resp["allowed"] is False and "agentfactory.dev/agent" in resp["status"]["message"]
    assert "signature" in resp["status"]["message"]
    # scale, binding, eviction: their objects carry no pod spec
    scale = {"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "w"}, "spec": {"replicas": 30}}
    assert ask(client, review(scale, group="autoscaling", kind="Scale", operation="UPDATE", old=scale,
                              sub_resource="scale", resource="deployments"))["allowed"] is True
    binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"},
               "target": {"apiVersion": "v1", "kind": "Node", "name": "node-1"}}
    assert ask(client, review(binding, kind="Binding", sub_resource="binding", resource="pods"))["allowed"] is True
    eviction = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "p"}}
    assert ask(client, review(eviction, group="policy", kind="Eviction", sub_resource="eviction",
                              resource="pods"))["allowed"] is True
    # exec and attach: refused whenever they are sent, with the reason
    for sub, kind in (("exec", "PodExecOptions"), ("attach", "PodAttachOptions")):
        options = {"kind": kind, "apiVersion": "v1", "stdin": True, "tty": True, "container": "c0",
                   "command": ["/bin/sh"]}
        resp = ask(client, review(options, kind=kind, operation="CONNECT", sub_resource=sub, resource="pods"))
        assert resp["allowed"] is False and resp["status"]["code"] == 403, resp
        assert f"request.subResource '{sub}': refused: " in resp["status"]["message"]
        assert ask(client, review(options, kind=kind, operation="CONNECT", sub_resource=sub, resource="pods"),
                   path="/validate/warn")["allowed"] is True  # warn mode warns
    # another CONNECT (port-forward) cannot change what runs
    forward = {"kind": "PodPortForwardOptions", "apiVersion": "v1", "ports": [8080]}
    assert ask(client, review(forward, kind="PodPortForwardOptions", operation="CONNECT", sub_resource="portforward",
                              resource="pods"))["allowed"] is True


def test_an_unknown_subresource_of_an_agent_workload_fails_closed(server: tuple[httpx.Client, Path],
                                                                  world: tuple[Signed, dict[str, str]]) -> None:
    client, _ = server
    _, refs = world
    good = wasm_pod(refs["helper"])
    for sub in ("frobnicate", "Status", "ephemeralcontainers/x"):
        resp = ask(client, review(good, operation="UPDATE", old=good, sub_resource=sub))
        assert resp["allowed"] is False and f"request.subResource {sub!r} of an agent workload" in \
            resp["status"]["message"], resp
    config_map = {"kind": "ConfigMap", "metadata": {"name": "c"}, "data": {}}
    assert ask(client, review(config_map, kind="ConfigMap", operation="UPDATE", sub_resource="frobnicate"))["allowed"]
    for bad in (7, ["status"], "x" * 65):
        body = review(good, operation="UPDATE", sub_resource="status")
        body["request"]["subResource"] = bad
        resp = ask(client, body)
        assert resp["allowed"] is False and resp["status"]["code"] == 400
        assert "request.subResource" in resp["status"]["message"]
