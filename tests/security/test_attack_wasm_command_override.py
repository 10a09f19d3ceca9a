"""A signed image, another module run: `command` on a wasm container names a file the evidence never covered.

The attacker writes a pod (or any workload) on a wasm RuntimeClass whose image is a signed, verified agent,
mounts an unsigned module from a volume (a ConfigMap's binaryData, an image volume, a hostPath) and sets the
container's `command` to it: a wasm shim (runwasi) runs the file its entrypoint names. Before: the webhook
judged only the image, so the pod was admitted. Now `command` on a container of a wasm runtime class is
refused, in every container list and every kind that carries a pod spec; arguments still go in `args`.
"""

from __future__ import annotations

import copy
from pathlib import Path

import httpx
import pytest
from admission_attack_fixtures import ask
from admission_helpers import in_template, review, wasm_pod
from runtime_helpers import Signed

pytestmark = pytest.mark.toolchain


@pytest.mark.parametrize("section", ["containers", "initContainers", "ephemeralContainers"])
@pytest.mark.parametrize("kind, group, prefix", [("Pod", "", ""), ("Deployment", "apps", "spec.template."),
                                                 ("PodTemplate", "", "template.")])
def test_a_command_on_a_wasm_container_is_refused(server: tuple[httpx.Client, Path],
                                                  world: tuple[Signed, dict[str, str]], section: str, kind: str,
                                                  group: str, prefix: str) -> None:
    client, _ = server
    _, refs = world
    pod = wasm_pod(refs["helper"])
    pod["spec"]["volumes"] = [{"name": "m", "configMap": {"name": "miner"}}]
    pod["spec"].setdefault(section, []).append({"name": "x", "image": refs["helper"],
                                                "command": ["/mnt/miner/miner.wasm"],
                                                "volumeMounts": [{"name": "m", "mountPath": "/mnt/miner"}]})
    obj = pod if kind == "Pod" else in_template(pod, kind)
    resp = ask(client, review(obj, group=group, kind=kind))
    assert resp["allowed"] is False, resp
    index = 1 if section == "containers" else 0
    assert f"{prefix}spec.{section}[{index}].command: a wasm container runs the module of its image" in \
        resp["status"]["message"]


def test_args_and_other_runtimes_are_untouched(server: tuple[httpx.Client, Path],
                                               world: tuple[Signed, dict[str, str]]) -> None:
    client, _ = server
    _, refs = world
    pod = wasm_pod(refs["helper"])
    pod["spec"]["containers"][0]["args"] = ["--verbose"]
    assert ask(client, review(pod))["allowed"] is True  # arguments are the agent's, not another module
    plain = wasm_pod("nginx:1.25", runtime_class="runc", annotations={"agentfactory.dev/agent": refs["helper"]})
    plain["spec"]["containers"][0]["command"] = ["nginx", "-g", "daemon off;"]
    assert ask(client, review(plain))["allowed"] is True  # not a wasm container: its command is its own business
    empty = copy.deepcopy(pod)
    empty["spec"]["containers"][0]["command"] = []
    assert ask(client, review(empty))["allowed"] is True  # an empty command keeps the image's entrypoint
