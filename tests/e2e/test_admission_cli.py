"""`agentfactory admission certs|serve|review` as an operator runs them: real TLS, a signal to stop."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from admission_helpers import review, wasm_agent
from child_process import first_line

pytestmark = pytest.mark.toolchain
EXE = str(Path(sys.executable).with_name("agentfactory"))
CRD = {"group": "agentfactory.dev", "version": "v1alpha1", "kind": "WasmAgent"}


def af(cwd: Path, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([EXE, *args], cwd=cwd, input=stdin, capture_output=True, env=os.environ.copy(), timeout=300)


def test_certs_serve_review(repo: Path) -> None:
    assert af(repo, "pipeline", "run", "--no-tests").returncode == 0
    digest = json.loads(af(repo, "store", "ls", "--json").stdout)["agents"]
    wordstats = next(a for a in digest if a["name"] == "wordstats")
    ref = f"wordstats@{wordstats['digest']}"

    certs = af(repo, "admission", "certs", "--out", "tls")
    assert certs.returncode == 0 and len(certs.stdout.strip()) > 100  # the caBundle, base64
    config = repo / "admission.yaml"
    config.write_text("exemptNamespaces: [kube-system]\ndeadlineMs: 2000\nauditLog: audit.jsonl\n")

    good, bad = review(wasm_agent(ref), **CRD), review(wasm_agent("wordstats:1.0.0"), **CRD)
    proc = af(repo, "admission", "review", "-", "--config", str(config), stdin=json.dumps(good).encode())
    assert proc.returncode == 0 and json.loads(proc.stdout)["response"]["allowed"] is True
    proc = af(repo, "admission", "review", "-", "--config", str(config), stdin=json.dumps(bad).encode())
    assert proc.returncode == 1
    assert "is not pinned by digest" in json.loads(proc.stdout)["response"]["status"]["message"]
    config.write_text("deadlineMs: 1\n")
    proc = af(repo, "admission", "review", "-", "--config", str(config), stdin=b"{}")
    assert proc.returncode == 2 and b"admission.yaml:1" in proc.stderr and b"minimum of 10" in proc.stderr
    config.write_text("auditLog: audit.jsonl\n")

    server = subprocess.Popen([EXE, "admission", "serve", "--listen", "127.0.0.1:0", "--tls-cert", "tls/tls.crt",
                               "--tls-key", "tls/tls.key", "--config", str(config)], cwd=repo,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ.copy())
    try:
        assert server.stderr is not None
        url = json.loads(first_line(server))["listening"]
        trust = ssl.create_default_context(cafile=str(repo / "tls" / "ca.crt"))
        with httpx.Client(base_url=url, verify=trust, timeout=30) as client:
            for _ in range(200):
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
            assert client.post("/validate", json=good).json()["response"]["allowed"] is True
            assert client.post("/validate", json=bad).json()["response"]["allowed"] is False
            warned = client.post("/validate/warn", json=bad).json()["response"]
            assert warned["allowed"] is True and warned["warnings"]
            with pytest.raises(httpx.ConnectError):  # HTTPS only; a client that does not trust the CA fails
                httpx.get(url + "/healthz", verify=True)
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    proc = af(repo, "runtime", "audit", "audit.jsonl", "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["records"] == 5  # 2 from `review`, 3 served
