"""A control plane on loopback: etcd (Debian's etcd-server) and kube-apiserver (tools/build-kube.sh), both
over TLS with client certificates, and a kubeconfig for an admin user (O=system:masters) that kubectl uses.

No kubelet, scheduler or controller manager: pods stay Pending and no ReplicaSet is made from a
Deployment, which is all admission needs. What the controller manager would have done for the tests
(the `default` ServiceAccount of a namespace) is done with kubectl.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from kube_pki import CA, Pair, service_account_keys

START_S = 120.0  # kube-apiserver's first start on a loaded 2-core machine (it installs its bootstrap objects)


class ClusterStartError(RuntimeError):
    """etcd or kube-apiserver did not start; the message names the command and the end of its log."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Process:
    """A program in its own process session, its log in a file."""

    name: str
    argv: list[str]
    log: Path
    proc: subprocess.Popen[bytes]

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def spawn(name: str, argv: Sequence[str], log: Path, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> Process:
    with log.open("ab") as out:
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, env=env, cwd=cwd)
    return Process(name, list(argv), log, proc)


def wait_https(process: Process, url: str, context: ssl.SSLContext, seconds: float = START_S) -> None:
    """Poll `url` until it answers 200 ok; ClusterStartError with the log's end if the program exits or never does."""
    deadline = time.monotonic() + seconds
    last = ""
    while time.monotonic() < deadline:
        if process.proc.poll() is not None:
            raise ClusterStartError(f"{process.name} exited with {process.proc.returncode}: "
                                    f"{' '.join(process.argv)}\n{process.tail()}")
        try:
            with urllib.request.urlopen(url, context=context, timeout=5) as reply:
                if reply.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.2)
    raise ClusterStartError(f"{process.name} did not answer {url} within {seconds:.0f} s ({last}):\n{process.tail()}")


def client_context(ca: Path, pair: Pair) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    context.load_cert_chain(str(pair.cert), str(pair.key))
    return context


@dataclass
class Cluster:
    """A running etcd + kube-apiserver: where it listens, its admin kubeconfig, and the processes."""

    url: str
    kubeconfig: Path
    ca: Path
    admin: Pair
    etcd: Process
    apiserver: Process

    def stop(self) -> None:
        self.apiserver.stop()
        self.etcd.stop()


def start_etcd(etcd: Path, base: Path, ca: CA) -> tuple[Process, str, Pair]:
    """etcd on loopback, TLS with client-certificate authentication; returns it, its URL and kube-apiserver's
    client certificate."""
    server = ca.issue("etcd-server", "etcd", server=True, client=True, dns=("localhost",), ips=("127.0.0.1",))
    client = ca.issue("apiserver-etcd-client", "kube-apiserver-etcd-client", client=True)
    client_port, peer_port = free_port(), free_port()
    url = f"https://127.0.0.1:{client_port}"
    peer = f"http://127.0.0.1:{peer_port}"
    argv = [str(etcd), "--name", "e2e", "--data-dir", str(base / "etcd-data"),
            "--listen-client-urls", url, "--advertise-client-urls", url,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"e2e={peer}", "--initial-cluster-state", "new",
            "--cert-file", str(server.cert), "--key-file", str(server.key),
            "--trusted-ca-file", str(ca.cert), "--client-cert-auth",
            "--listen-metrics-urls", f"http://127.0.0.1:{free_port()}", "--logger=zap", "--log-level", "warn"]
    process = spawn("etcd", argv, base / "etcd.log")
    wait_https(process, f"{url}/health", client_context(ca.cert, client), seconds=60)
    return process, url, client


def apiserver_argv(kube_apiserver: Path, base: Path, ca: CA, etcd_url: str, etcd_client: Pair, port: int) -> list[str]:
    serving = ca.issue("apiserver", "kube-apiserver", server=True,
                       dns=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"),
                       ips=("127.0.0.1", "10.96.0.1"))
    sa = service_account_keys(base)
    return [str(kube_apiserver),
            "--bind-address=127.0.0.1", f"--secure-port={port}", "--advertise-address=127.0.0.1",
            f"--etcd-servers={etcd_url}", f"--etcd-cafile={ca.cert}",
            f"--etcd-certfile={etcd_client.cert}", f"--etcd-keyfile={etcd_client.key}",
            f"--tls-cert-file={serving.cert}", f"--tls-private-key-file={serving.key}",
            f"--client-ca-file={ca.cert}", "--authorization-mode=Node,RBAC", "--anonymous-auth=false",
            f"--service-account-key-file={sa.cert}", f"--service-account-signing-key-file={sa.key}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--service-cluster-ip-range=10.96.0.0/16",
            # a loopback address cannot be the `kubernetes` Service's endpoint: do not try to publish it
            "--endpoint-reconciler-type=none",
            f"--cert-dir={base / 'apiserver-certs'}", "--profiling=false", "--v=1"]


def write_kubeconfig(path: Path, url: str, ca: Path, admin: Pair) -> None:
    """A kubeconfig (JSON is YAML) for the admin user, with the files inlined as kubectl expects."""
    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    config = {"apiVersion": "v1", "kind": "Config", "current-context": "e2e",
              "clusters": [{"name": "e2e", "cluster": {"server": url, "certificate-authority-data": b64(ca)}}],
              "users": [{"name": "admin", "user": {"client-certificate-data": b64(admin.cert),
                                                   "client-key-data": b64(admin.key)}}],
              "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "admin"}}]}
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)


@contextlib.contextmanager
def running_cluster(etcd: Path, kube_apiserver: Path, base: Path) -> Iterator[Cluster]:
    """etcd and kube-apiserver for as long as the block runs; both stopped (and their logs kept) after."""
    base.mkdir(parents=True, exist_ok=True)
    ca = CA(base / "pki")
    admin = ca.issue("admin", "e2e-admin", client=True, organizations=("system:masters",))
    etcd_process, etcd_url, etcd_client = start_etcd(etcd, base, ca)
    apiserver: Process | None = None
    try:
        port = free_port()
        apiserver = spawn("kube-apiserver", apiserver_argv(kube_apiserver, base, ca, etcd_url, etcd_client, port),
                          base / "kube-apiserver.log")
        url = f"https://127.0.0.1:{port}"
        wait_https(apiserver, f"{url}/readyz", client_context(ca.cert, admin))
        kubeconfig = base / "kubeconfig"
        write_kubeconfig(kubeconfig, url, ca.cert, admin)
        yield Cluster(url, kubeconfig, ca.cert, admin, etcd_process, apiserver)
    finally:
        if apiserver is not None:
            apiserver.stop()
        etcd_process.stop()
