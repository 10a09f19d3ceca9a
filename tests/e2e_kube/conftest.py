"""A real Kubernetes API server calling the admission webhook (issue 21): `make e2e-kube`.

Session fixtures start etcd and kube-apiserver on loopback (kube_cluster.py), build the signed world with
the pipeline and serve it with `agentfactory admission serve` over TLS (kube_world.py), apply deploy/crds
and register deploy/admission's ValidatingWebhookConfiguration with a loopback URL (kube_kubectl.py).
The tests then use kubectl alone.

Not part of the normal `pytest` run: the items here carry the marker `e2e_kube` and are deselected unless
the marker expression names it (`pytest -m e2e_kube tests/e2e_kube`). kube-apiserver comes from
tools/build-kube.sh; a missing one fails the run (require), never skips it.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kube_cluster import Cluster, running_cluster
from kube_env import ENFORCE, EXEMPT, FIGURES, RUNTIME_CLASS, WARN, register, wait_enforced
from kube_kubectl import Kubectl, rendered_webhooks
from kube_world import Webhook, World, make_world
from peer_tools import require

HERE = Path(__file__).resolve().parent
MARKER = "e2e_kube"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{MARKER}: needs etcd and kube-apiserver (make e2e-kube); "
                                       f"deselected unless -m names it")
    if MARKER in (config.option.markexpr or ""):
        # etcd, kube-apiserver and the webhook run in their own sessions: a SIGTERM (a CI timeout) must
        # unwind the fixtures that stop them, as Ctrl-C does, instead of leaving them running
        signal.signal(signal.SIGTERM, _terminated)


def _terminated(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if MARKER in (config.option.markexpr or ""):
        return
    mine = [i for i in items if HERE in Path(str(i.path)).parents]
    if mine:
        config.hook.pytest_deselected(items=mine)
        items[:] = [i for i in items if i not in mine]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if FIGURES:
        terminalreporter.section("e2e-kube figures")
        terminalreporter.write_line(json.dumps(FIGURES, indent=2, sort_keys=True))


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    apiserver, etcd = require("kube-apiserver"), require("etcd")
    started = time.monotonic()
    with running_cluster(etcd, apiserver, tmp_path_factory.mktemp("kube")) as running:
        FIGURES["control_plane_start_s"] = round(time.monotonic() - started, 1)
        yield running


@pytest.fixture(scope="session")
def kubectl(cluster: Cluster) -> Kubectl:
    return Kubectl(require("kubectl"), cluster.kubeconfig)


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return make_world(tmp_path_factory.mktemp("world"))


@pytest.fixture(scope="session")
def webhook(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webhook]:
    hook = Webhook(world, tmp_path_factory.mktemp("webhook"))
    hook.certs(hook.tls)
    hook.start()
    try:
        yield hook
    finally:
        hook.stop()


@pytest.fixture(scope="session")
def rendered(kubectl: Kubectl) -> dict[str, Any]:
    """deploy/admission/no-cert-manager's ValidatingWebhookConfiguration, as kustomize renders it."""
    return rendered_webhooks(kubectl)


@pytest.fixture(scope="session")
def admission(cluster: Cluster, kubectl: Kubectl, webhook: Webhook, rendered: dict[str, Any],
              world: World) -> Webhook:
    """The cluster as the tests need it: the CRD, a wasm RuntimeClass, an enforce, a warn and an exempt
    namespace (each with the `default` ServiceAccount the controller manager would make), and the webhook
    registered; returns once the API server sends reviews to it."""
    kubectl.ok("apply", "-k", "deploy/crds")
    kubectl.ok("wait", "--for=condition=Established", "--timeout=60s", "crd/wasmagents.agentfactory.dev")
    kubectl.ok("apply", "-f", "-", stdin=json.dumps({"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
                                                     "metadata": {"name": RUNTIME_CLASS}, "handler": RUNTIME_CLASS}))
    for namespace, mode in ((ENFORCE, None), (WARN, "warn"), (EXEMPT, "exempt")):
        labels = {"agentfactory.dev/admission": mode} if mode else {}
        kubectl.ok("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "Namespace",
                                                         "metadata": {"name": namespace, "labels": labels}}))
        kubectl.ok("apply", "-n", namespace, "-f", "-", stdin=json.dumps(
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}}))
    register(kubectl, rendered, webhook, [(webhook.tls / "ca.crt").read_bytes()])
    wait_enforced(kubectl, world)
    return webhook
