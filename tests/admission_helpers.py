"""The webhook for tests: the real app on uvicorn over real TLS on loopback, and AdmissionReviews to send it."""

from __future__ import annotations

import contextlib
import copy
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from admission.certs import make_certs
from admission.cli import _server
from admission.decide import Admitter


@contextlib.contextmanager
def webhook(admitter: Admitter, tmp: Path, *, inline_decisions: bool = False) -> Iterator[tuple[str, httpx.Client]]:
    """Serve `admitter` over HTTPS; yield (base URL, a client that trusts the test CA). `inline_decisions`: as
    `admission serve` with its threads on one CPU (the default), admission.rego evaluated on the event loop."""
    make_certs(tmp, service="agentfactory-admission", namespace="agentfactory-system", days=1)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = _server(admitter, tmp / "tls.crt", tmp / "tls.key", inline_decisions)  # as `admission serve` has it
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the webhook did not start")
        time.sleep(0.01)
    url = f"https://127.0.0.1:{port}"
    try:
        trust = ssl.create_default_context(cafile=str(tmp / "ca.crt"))
        with httpx.Client(base_url=url, verify=trust, timeout=30) as client:
            yield url, client
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def review(obj: dict[str, Any] | None, *, group: str = "", version: str = "v1", kind: str = "Pod",
           namespace: str = "team-a", operation: str = "CREATE", dry_run: bool = False,
           old: dict[str, Any] | None = None, sub_resource: str | None = None,
           resource: str | None = None) -> dict[str, Any]:
    """An AdmissionReview request as the API server sends it (`sub_resource`: request.subResource)."""
    resource = resource or {"Pod": "pods", "WasmAgent": "wasmagents"}.get(kind, kind.lower() + "s")
    request: dict[str, Any] = {
        "uid": str(uuid.uuid4()), "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": group, "version": version, "resource": resource},
        "name": (obj or {}).get("metadata", {}).get("name", "x"), "namespace": namespace, "operation": operation,
        "userInfo": {"username": "alice"}, "object": obj, "oldObject": old, "dryRun": dry_run}
    if sub_resource is not None:
        request["subResource"] = request["requestSubResource"] = sub_resource
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def wasm_agent(ref: str, name: str = "agent", stage: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"agent": ref}
    if stage:
        spec["stage"] = stage
    return {"apiVersion": "agentfactory.dev/v1alpha1", "kind": "WasmAgent", "metadata": {"name": name}, "spec": spec}


def wasm_pod(*images: str, runtime_class: str = "wasmtime",
             annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "annotations": annotations or {}},
            "spec": {"runtimeClassName": runtime_class,
                     "containers": [{"name": f"c{i}", "image": image} for i, image in enumerate(images)]}}


def in_template(pod: dict[str, Any], kind: str) -> dict[str, Any]:
    """`pod` as the pod template of a workload of `kind`."""
    template = {"metadata": copy.deepcopy(pod["metadata"]), "spec": copy.deepcopy(pod["spec"])}
    if kind == "PodTemplate":
        return {"kind": kind, "metadata": {"name": "w"}, "template": template}
    if kind == "CronJob":
        return {"kind": kind, "metadata": {"name": "w"},
                "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template}}}}
    return {"kind": kind, "metadata": {"name": "w"}, "spec": {"template": template}}
