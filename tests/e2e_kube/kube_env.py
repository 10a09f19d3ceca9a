"""What the e2e-kube conftest and tests share: the namespaces, the figures, registering the webhook."""

from __future__ import annotations

import json
import time
from typing import Any

from kube_kubectl import Kubectl, on_loopback
from kube_world import Webhook, World

ENFORCE, WARN, EXEMPT = "team-a", "team-warn", "team-exempt"
RUNTIME_CLASS = "wasmtime"
FIGURES: dict[str, Any] = {}  # what the run measured, printed in the terminal summary


def register(kubectl: Kubectl, rendered: dict[str, Any], webhook: Webhook, ca_pems: list[bytes]) -> None:
    """Apply the webhook configuration with the loopback URL and `ca_pems` as its caBundle."""
    kubectl.ok("apply", "-f", "-", stdin=json.dumps(on_loopback(rendered, webhook.url, ca_pems)))


def wait_enforced(kubectl: Kubectl, world: World, seconds: float = 60.0) -> None:
    """Until the API server's webhook informer has the configuration: a server-side dry run of the unsigned
    agent is refused by the webhook (not by anything else)."""
    probe = {"apiVersion": "agentfactory.dev/v1alpha1", "kind": "WasmAgent", "metadata": {"name": "probe"},
             "spec": {"agent": world.refs["hello-unsigned"]}}
    deadline = time.monotonic() + seconds
    while True:
        result = kubectl.create(probe, ENFORCE, "--dry-run=server")
        if 'admission webhook "enforce.admission.agentfactory.dev" denied the request' in result.err:
            return
        assert time.monotonic() < deadline, f"the API server never sent the webhook a review:\n{result}"
        time.sleep(0.5)
