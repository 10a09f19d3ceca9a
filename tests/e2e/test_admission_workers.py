"""`agentfactory admission serve --workers 2` as an operator runs it: the real command, real TLS on loopback.

What the workers must not change is the webhook's contract: every review answered as one process answers it,
one audit trail whose hash chain holds across the workers, /metrics counting every worker's reviews whichever
worker the scrape reaches, and a stop or a crash that leaves no stray process. What they add is the balance:
the API server's few long-lived connections shared out evenly (the kernel's own accept split 4 connections 3:1
about half the time), the least busy worker taking the next one.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from admission_helpers import review, wasm_agent
from child_process import finish, first_line
from runtime_helpers import OK_WAT, publish, signed_store, wat_manifest

from agentfactory.audit import verify_chain
from agentfactory.provenance import DEFAULT_BUILDER_ID
from agentfactory.trust import to_yaml

pytestmark = pytest.mark.toolchain
EXE = str(Path(sys.executable).with_name("agentfactory"))
CRD = {"group": "agentfactory.dev", "version": "v1alpha1", "kind": "WasmAgent"}


@dataclass
class Webhook:
    proc: subprocess.Popen[bytes]
    started: dict[str, Any]
    host: str
    port: int
    context: ssl.SSLContext
    audit: Path

    @property
    def worker_pids(self) -> list[int]:
        return [int(w["pid"]) for w in self.started["workers"]]

    def connect(self) -> http.client.HTTPSConnection:
        conn = http.client.HTTPSConnection(self.host, self.port, timeout=30, context=self.context)
        conn.connect()
        return conn


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A store holding one signed agent, the trust policy for it, TLS files and a webhook config."""
    base = tmp_path_factory.mktemp("workers")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AGENTFACTORY_HOME", str(base / "home"))
        signed = signed_store(base / "home")
        publish(signed, base / "templates", {"ok": (wat_manifest("ok"), {"src/main.wat": OK_WAT})})
        ref = f"ok@{signed.store.resolve('ok').digest}"
        (base / "trust.yaml").write_text(to_yaml(signed.keyring.public_keys(), (DEFAULT_BUILDER_ID,), ("*",)))
        subprocess.run([EXE, "admission", "certs", "--out", str(base / "tls")], check=True, capture_output=True,
                       timeout=120)
        yield base, ref


def config_for(base: Path, audit: Path) -> Path:
    path = audit.with_suffix(".yaml")
    path.write_text(f"store: {signed_store_url(base)}\ntrustPolicy: {base / 'trust.yaml'}\nauditLog: {audit}\n")
    return path


def signed_store_url(base: Path) -> str:
    return f"oci-layout:{base / 'home' / 'store'}"


def start(base: Path, name: str, *extra: str, config: Path | None = None) -> Webhook:
    audit = base / f"{name}.jsonl"
    argv = [EXE, "admission", "serve", "--listen", "127.0.0.1:0", "--tls-cert", str(base / "tls/tls.crt"),
            "--tls-key", str(base / "tls/tls.key"), "--config", str(config or config_for(base, audit)),
            "--workers", "2", *extra]
    env = {**os.environ, "AGENTFACTORY_HOME": str(base / "home")}
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=env)
    started = json.loads(first_line(proc, timeout=120))
    host, port = started["listening"].removeprefix("https://").rsplit(":", 1)
    return Webhook(proc, started, host, int(port), ssl.create_default_context(cafile=str(base / "tls/ca.crt")),
                   audit)


@pytest.fixture
def webhook(world: tuple[Path, str], request: pytest.FixtureRequest) -> Iterator[Webhook]:
    base, _ = world
    served = start(base, request.node.name[:40])
    try:
        yield served
    finally:
        stop(served, signal.SIGTERM)


def stop(webhook: Webhook, signum: int) -> int:
    if webhook.proc.poll() is None:
        webhook.proc.send_signal(signum)
    return finish(webhook.proc, timeout=60)[0]


def ask(conn: http.client.HTTPSConnection, body: dict[str, Any]) -> dict[str, Any]:
    conn.request("POST", "/validate", body=json.dumps(body).encode(), headers={"content-type": "application/json"})
    answer = conn.getresponse()
    assert answer.status == 200
    doc: dict[str, Any] = json.loads(answer.read())["response"]
    return doc


def new_namespace(ref: str) -> dict[str, Any]:
    """A review admission.rego must judge afresh (the namespace is part of its input)."""
    return review(wasm_agent(ref), namespace=f"ns-{uuid.uuid4().hex[:12]}", **CRD)


def serving_pid(webhook: Webhook, conn: http.client.HTTPSConnection) -> int:
    """The worker holding the server side of `conn`: its socket's inode, found among the workers' descriptors."""
    assert conn.sock is not None
    client_port = conn.sock.getsockname()[1]
    inode = None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, remote = int(fields[1].rsplit(":", 1)[1], 16), int(fields[2].rsplit(":", 1)[1], 16)
            if local == webhook.port and remote == client_port:
                inode = fields[9]
    assert inode, f"no server socket for client port {client_port}"
    for pid in webhook.worker_pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) == f"socket:[{inode}]":
                    return pid
            except OSError:
                continue
    raise AssertionError(f"no worker holds the connection from port {client_port}")


def eventually(check: Callable[[], bool], what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {seconds} s")
        time.sleep(0.05)


def metric(webhook: Webhook, conn: http.client.HTTPSConnection, name: str) -> float:
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def test_connections_are_shared_evenly_and_the_next_goes_to_the_least_busy_worker(
        webhook: Webhook, world: tuple[Path, str]) -> None:
    _, ref = world
    first, second = webhook.worker_pids
    assert first != second and webhook.started["store"] == signed_store_url(world[0])
    if len(os.sched_getaffinity(0)) >= 2:  # one CPU each
        assert webhook.started["workers"][0]["hostCpu"] != webhook.started["workers"][1]["hostCpu"]
    conns = [webhook.connect() for _ in range(4)]
    try:
        for conn in conns:
            assert ask(conn, new_namespace(ref))["allowed"] is True
        owners = [serving_pid(webhook, c) for c in conns]
        assert sorted(owners.count(pid) for pid in (first, second)) == [2, 2], owners
        # both of one worker's connections end: the next two are that worker's, as it now holds none
        quiet = owners[0]
        for conn, owner in zip(conns, owners, strict=True):
            if owner == quiet:
                conn.close()
        time.sleep(0.5)  # the worker reports each end to the supervisor
        more = [webhook.connect() for _ in range(2)]
        conns += more
        for conn in more:
            assert ask(conn, new_namespace(ref))["allowed"] is True
        assert [serving_pid(webhook, c) for c in more] == [quiet, quiet]
    finally:
        for conn in conns:
            conn.close()
    assert stop(webhook, signal.SIGTERM) == 0


def test_every_worker_writes_one_audit_chain_and_metrics_count_them_all(webhook: Webhook,
                                                                       world: tuple[Path, str]) -> None:
    _, ref = world
    conns = [webhook.connect() for _ in range(4)]
    try:
        assert len({serving_pid(webhook, c) for c in conns}) == 2
        for _ in range(40):
            for conn in conns:
                assert ask(conn, new_namespace(ref))["allowed"] is True
        # a scrape reaches one worker and reports both workers' reviews
        for conn in conns:
            assert metric(webhook, conn, 'agent_factory_control_plane_requests_total{decision="allowed"}') == 160
    finally:
        for conn in conns:
            conn.close()
    assert stop(webhook, signal.SIGTERM) == 0
    assert verify_chain(webhook.audit) == 160  # one chain: every record links to the one before, across workers
    records = [json.loads(line) for line in webhook.audit.read_text().splitlines()]
    assert {r["event"] for r in records} == {"admission"} and all(r["allowed"] for r in records)


def test_a_killed_worker_is_replaced_and_a_stop_leaves_no_process(webhook: Webhook, world: tuple[Path, str]) -> None:
    _, ref = world
    victim, survivor = webhook.worker_pids
    os.kill(victim, signal.SIGKILL)
    assert webhook.proc.stderr is not None
    replaced = json.loads(first_line(webhook.proc, timeout=60))
    assert replaced["pid"] == victim and replaced["exited"] == 128 + signal.SIGKILL and replaced["replacing"]
    serving = json.loads(first_line(webhook.proc, timeout=120))
    assert serving["serving"] is True and serving["pid"] not in (victim, survivor)
    webhook.started["workers"][0]["pid"] = serving["pid"]
    conns = [webhook.connect() for _ in range(4)]
    try:
        for conn in conns:
            assert ask(conn, new_namespace(ref))["allowed"] is True
        assert sorted(serving_pid(webhook, c) for c in conns) == sorted([serving["pid"]] * 2 + [survivor] * 2)
    finally:
        for conn in conns:
            conn.close()
    assert stop(webhook, signal.SIGINT) == 130  # Ctrl-C: 130, as one process
    for pid in (serving["pid"], survivor):
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    assert verify_chain(webhook.audit) >= 4


def test_a_worker_that_cannot_start_stops_the_webhook_with_its_reason(world: tuple[Path, str],
                                                                      tmp_path: Path) -> None:
    base, _ = world
    audit = tmp_path / "audit.jsonl"
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"store: {signed_store_url(base)}\ntrustPolicy: {tmp_path / 'missing.yaml'}\nauditLog: {audit}\n")
    argv = [EXE, "admission", "serve", "--listen", "127.0.0.1:0", "--tls-cert", str(base / "tls/tls.crt"),
            "--tls-key", str(base / "tls/tls.key"), "--workers", "2"]
    proc = subprocess.run([*argv, "--config", str(bad)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "missing.yaml" in proc.stderr and "before it served; stopped" in proc.stderr
    assert "listening" not in proc.stderr
    stdout_audit = tmp_path / "stdout.yaml"
    stdout_audit.write_text(f"store: {signed_store_url(base)}\ntrustPolicy: {base / 'trust.yaml'}\nauditLog: '-'\n")
    proc = subprocess.run([*argv, "--config", str(stdout_audit)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("cannot be shared by several worker processes") == 1, \
        proc.stderr
    proc = subprocess.run([*argv, "--config", str(stdout_audit), "--host-cpu", "0"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "each worker takes its own CPU" in proc.stderr, proc.stderr


def test_a_connection_that_fails_its_handshake_is_counted_as_finished(webhook: Webhook,
                                                                    world: tuple[Path, str]) -> None:
    """A client that is not TLS (a port scanner, a misconfigured probe) never reaches the HTTP protocol; its
    worker must still report it finished, or the supervisor would count it open for ever and starve that worker."""
    import socket

    _, ref = world
    held = webhook.connect()
    try:
        assert ask(held, new_namespace(ref))["allowed"] is True
        busy = serving_pid(webhook, held)
        idle = next(pid for pid in webhook.worker_pids if pid != busy)
        with socket.create_connection((webhook.host, webhook.port), timeout=10) as plain:
            plain.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # to the idle worker: it holds none
            assert plain.recv(4096) == b""  # the handshake fails and the worker closes the connection
        time.sleep(0.5)  # the worker reports the end to the supervisor
        after = webhook.connect()
        try:
            assert ask(after, new_namespace(ref))["allowed"] is True
            assert serving_pid(webhook, after) == idle  # it holds none again, so it takes the next
        finally:
            after.close()
    finally:
        held.close()


def test_a_replacement_that_cannot_start_stops_the_webhook_with_its_reason(world: tuple[Path, str],
                                                                           tmp_path: Path) -> None:
    """The trust policy was deleted after the start (a broken ConfigMap); then a worker dies. Its replacement
    cannot load the trust policy: the webhook stops with the replacement's reason and status, rather than
    restarting it for ever."""
    base, _ = world
    trust = tmp_path / "trust.yaml"
    trust.write_bytes((base / "trust.yaml").read_bytes())
    config = tmp_path / "webhook.yaml"
    config.write_text(f"store: {signed_store_url(base)}\ntrustPolicy: {trust}\nauditLog: {tmp_path / 'a.jsonl'}\n")
    webhook = start(base, "replacement", config=config)
    try:
        trust.unlink()
        os.kill(webhook.worker_pids[0], signal.SIGKILL)
        code, _, stderr = finish(webhook.proc, timeout=120)
    finally:
        stop(webhook, signal.SIGTERM)
    assert code == 2, stderr
    text = stderr.decode()
    assert '"replacing": true' in text and "trust.yaml" in text and "before it served; stopped" in text, text
    assert not Path(f"/proc/{webhook.worker_pids[1]}").exists()  # the survivor was stopped too
