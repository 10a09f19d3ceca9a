"""kubectl, the only client the e2e cases use, and the webhook configuration as deploy/admission renders it.

`kubectl kustomize deploy/admission/no-cert-manager` renders the ValidatingWebhookConfiguration an operator
applies without cert-manager; the only change made here is the one a cluster-external webhook needs:
each webhook's `clientConfig.service` becomes a `url` on loopback (same path) with the caBundle. Rules,
matchPolicy, namespaceSelector, failurePolicy, sideEffects, timeoutSeconds, admissionReviewVersions
are sent to the API server as rendered.
"""

from __future__ import annotations

import base64
import copy
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Result:
    args: list[str]
    code: int
    out: str
    err: str

    @property
    def ok(self) -> bool:
        return self.code == 0

    def __str__(self) -> str:
        return f"kubectl {' '.join(self.args)} -> {self.code}\nstdout: {self.out}\nstderr: {self.err}"


@dataclass(frozen=True)
class Kubectl:
    binary: Path
    kubeconfig: Path

    def __call__(self, *args: str, stdin: str | None = None) -> Result:
        argv = [str(self.binary), f"--kubeconfig={self.kubeconfig}", "--request-timeout=30s", *args]
        done = subprocess.run(argv, input=stdin, capture_output=True, text=True, cwd=ROOT)
        return Result(list(args), done.returncode, done.stdout, done.stderr)

    def ok(self, *args: str, stdin: str | None = None) -> Result:
        result = self(*args, stdin=stdin)
        assert result.ok, str(result)
        return result

    def apply(self, obj: dict[str, Any], namespace: str, *extra: str) -> Result:
        return self("apply", "-n", namespace, "-f", "-", *extra, stdin=json.dumps(obj))

    def create(self, obj: dict[str, Any], namespace: str, *extra: str) -> Result:
        return self("create", "-n", namespace, "-f", "-", *extra, stdin=json.dumps(obj))

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        result = self("get", kind, name, "-n", namespace, "-o", "json", "--ignore-not-found")
        assert result.ok, str(result)
        return json.loads(result.out) if result.out.strip() else None

    def must_get(self, kind: str, name: str, namespace: str) -> dict[str, Any]:
        found = self.get(kind, name, namespace)
        assert found is not None, f"{kind} {namespace}/{name} does not exist"
        return found


def rendered_webhooks(kubectl: Kubectl) -> dict[str, Any]:
    """The ValidatingWebhookConfiguration of deploy/admission/no-cert-manager, as kustomize renders it."""
    docs = list(yaml.safe_load_all(kubectl.ok("kustomize", "deploy/admission/no-cert-manager").out))
    found = [d for d in docs if d and d.get("kind") == "ValidatingWebhookConfiguration"]
    assert len(found) == 1, [d.get("kind") for d in docs if d]
    vwc: dict[str, Any] = found[0]
    return vwc


def on_loopback(vwc: dict[str, Any], url: str, ca_pems: list[bytes]) -> dict[str, Any]:
    """`vwc` calling `url` + each webhook's service path, trusting `ca_pems` (the caBundle may hold several)."""
    out = copy.deepcopy(vwc)
    bundle = base64.b64encode(b"".join(ca_pems)).decode()
    for hook in out["webhooks"]:
        service = hook["clientConfig"]["service"]
        hook["clientConfig"] = {"url": url + service.get("path", "/"), "caBundle": bundle}
    return out
