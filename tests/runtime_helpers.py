"""Agents for the runtime tests: signed by a real local keyring into a real OCI layout store.

`publish` runs the real pipeline on small templates written on the fly, without the template
policy (the runtime must hold even when the build-time checks were bypassed); `sign_raw` signs
arbitrary bytes as an insider with the key would, to prove the runtime does not trust signed
garbage either.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import wasmtime
from child_process import first_line
from helpers import ROOT, write_template

from agentfactory import evidence
from agentfactory.artifact import build_agent_artifact
from agentfactory.digest import digest_of
from agentfactory.dsse import INTOTO_PAYLOAD_TYPE, sign_envelope
from agentfactory.evidence import ArtifactSignature
from agentfactory.intoto import CYCLONEDX_BOM, SCAN_V1, SLSA_PROVENANCE_V1, make_statement
from agentfactory.keys.local import LocalKeyring
from agentfactory.policy import RegoEngine
from agentfactory.provenance import DEFAULT_BUILDER_ID, predicate
from agentfactory.runspec import from_template
from agentfactory.scan.base import OsvScanner
from agentfactory.scan.report import scan, subject_of
from agentfactory.store import ArtifactStore, open_store
from agentfactory.template import load_template
from agentfactory.trust import TrustPolicy, from_public_keys
from pipelines.run import Signing, run_pipeline
from pipelines.sbom import build_sbom
from sandbox_runtime.server_limits import ServerLimits


def wat_manifest(name: str, *, memory_mib: int = 1, timeout_ms: int = 1000, output_kib: int = 64,
                 tools: str = "[]", fuel: int | None = None, preopens: str = "[]", env: str = "[]",
                 language: str = "wat", sources: str = "[src/main.wat]") -> str:
    fuel_line = f"\n    fuel: {fuel}" if fuel is not None else ""
    return f"""apiVersion: agentfactory.dev/v1alpha1
kind: AgentTemplate
metadata:
  name: {name}
  version: 1.0.0
  description: A runtime test agent.
  owners: ["@example/team"]
spec:
  language: {language}
  sources: {sources}
  tools: {tools}
  capabilities:
    wasi:
      preopens: {preopens}
      env: {env}
  limits:
    memoryMiB: {memory_mib}
    timeoutMs: {timeout_ms}
    maxOutputKiB: {output_kib}{fuel_line}
  tests:
    none: "a test agent: the test suite runs it"
"""


# A WAT prelude: fd_write and a helper that writes `len` bytes at `ptr` to stdout.
WASI_WRITE = """
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (func $print (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
"""

OK_WAT = f"""(module {WASI_WRITE}
  (memory (export "memory") 1)
  (data (i32.const 64) "ok\\n")
  (func (export "_start") (call $print (i32.const 64) (i32.const 3))))
"""


def slow_to_compile(locals_: int = 1200, depth: int = 100) -> bytes:
    """About 13 KB that Cranelift takes about 3 s to compile (one core): `locals_` i64 locals live across
    `depth` nested loops. Compiles in well under the 60 s budget; the pipeline would sign it."""
    body = "".join(f"(local.set {i} (i64.add (local.get {i}) (local.get {(i + 1) % locals_})))"
                   for i in range(locals_))
    for j in range(depth):
        body = f"(loop $l{j} {body} (br_if $l{j} (i64.eqz (local.get {j % locals_}))))"
    return wasmtime.wat2wasm(f'(module (memory (export "memory") 1) (func $f (local {" ".join(["i64"] * locals_)}) '
                             f'{body}) (func (export "_start")))')



TWENTY_S = 20_000_000_000


def sleeper(clock: int = 1, absolute: bool = False, ns: int = TWENTY_S) -> str:
    """A guest that sleeps `ns` in poll_oneoff on `clock`, then checks the event and prints `woke`."""
    timeout = f"(i64.add (i64.load (i32.const 1300)) (i64.const {ns}))" if absolute else f"(i64.const {ns})"
    return f"""(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $now (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  {WASI_WRITE}
  (memory (export "memory") 1)
  (data (i32.const 256) "woke\\n")
  (func (export "_start") (local $r i32)
    (if (call $now (i32.const {clock}) (i64.const 1) (i32.const 1300)) (then (call $exit (i32.const 9))))
    (i64.store (i32.const 1024) (i64.const 42))
    (i32.store8 (i32.const 1032) (i32.const 0))
    (i32.store (i32.const 1040) (i32.const {clock}))
    (i64.store (i32.const 1048) {timeout})
    (i64.store (i32.const 1056) (i64.const 0))
    (i32.store16 (i32.const 1064) (i32.const {1 if absolute else 0}))
    (local.set $r (call $poll (i32.const 1024) (i32.const 1100) (i32.const 1) (i32.const 1200)))
    (if (local.get $r) (then (call $exit (i32.add (i32.const 10) (local.get $r)))))
    (if (i32.ne (i32.load (i32.const 1200)) (i32.const 1)) (then (call $exit (i32.const 2))))
    (if (i64.ne (i64.load (i32.const 1100)) (i64.const 42)) (then (call $exit (i32.const 3))))
    (call $print (i32.const 256) (i32.const 5))))"""


@dataclass
class Signed:
    """A store, the keyring that signed into it, the trust policy and the artifact policy."""

    store: ArtifactStore
    keyring: LocalKeyring
    engine: RegoEngine

    @property
    def trust(self) -> TrustPolicy:
        return from_public_keys(self.keyring.public_keys())


def signed_store(home: Path) -> Signed:
    """A store and a keyring with its first key already made (so a trust policy can be taken now)."""
    keyring = LocalKeyring(home / "keys")
    if not keyring.public_keys():
        keyring.create()
    return Signed(open_store(f"oci-layout:{home}/store"), keyring, RegoEngine(ROOT / "policies"))


def publish(signed: Signed, root: Path, agents: dict[str, tuple[str, dict[str, str]]], *, sign: bool = True) -> None:
    """Build and publish {name: (agent.yaml, {path: source})} with the real pipeline."""
    for name, (manifest, files) in agents.items():
        write_template(root, name, manifest=manifest, files=files)
    report = run_pipeline(root, signed.store, run_tests=False, signing=Signing(signed.keyring) if sign else None)
    problems = [e for t in report.templates for e in t.errors]
    assert not problems, problems


def sign_raw(signed: Signed, root: Path, name: str, data: bytes, manifest: str, *, contract: bool = True) -> str:
    """Publish `data` as agent `name` with complete, validly signed evidence (an insider's forgery)."""
    folder = write_template(root, name, manifest=manifest, files={"src/main.wat": "(module)"})
    t = load_template(folder, f"{name}/agent.yaml")
    digest = digest_of(data)
    stored = signed.store.push_agent(build_agent_artifact(data, name=name, version=t.version, created_epoch=0),
                                     name=name, version=t.version)
    toolchain = {"name": "wat2wasm", "version": "1", "package": "wasmtime==50.0.1", "target": "wasm32"}
    sbom = build_sbom(t, digest=digest, toolchain=toolchain, epoch=0, commit=None)
    build = {"toolchain": toolchain, "sourceDateEpoch": 0,
             "agent": from_template(t).to_json() if contract else None}
    kr = signed.keyring
    bom = json.loads(sbom)
    statements = [(CYCLONEDX_BOM, bom),
                  (SLSA_PROVENANCE_V1, predicate(build, builder_id=DEFAULT_BUILDER_ID)),
                  (SCAN_V1, scan(bom, [OsvScanner()], subject=subject_of(bom, name)).to_predicate())]
    attestations = [(p, sign_envelope(INTOTO_PAYLOAD_TYPE, make_statement(name, digest, p, pred), kr))
                    for p, pred in statements]
    signature = ArtifactSignature.from_signature(digest, kr.sign_digest(bytes.fromhex(digest.split(":", 1)[1])))
    evidence.attach(signed.store, stored, signature, attestations)
    return digest


@contextlib.contextmanager
def serving(signed: Signed, audit: Path, *, stage: str = "dev", workers: int = 4,
            limits: ServerLimits | None = None) -> Iterator[str]:
    """The node service over HTTP on loopback (a thread), for as long as the block runs: its base URL."""
    from sandbox_runtime.runtime import Runtime, RuntimeConfig
    from sandbox_runtime.server import RuntimeServer

    rt = Runtime(signed.store, signed.trust, signed.engine, RuntimeConfig(audit_log=audit, stage=stage))
    srv = RuntimeServer(("127.0.0.1", 0), rt, workers=workers, limits=limits)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    srv.ready.set()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()
        rt.close()


@dataclass
class Served:
    """`agentfactory runtime serve` in its own process: its URL, the process, and what it wrote on stderr."""

    url: str
    proc: subprocess.Popen[bytes]
    stderr: list[bytes]

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def rss_bytes(self) -> int:
        """The server's resident memory now (Linux /proc)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")


@contextlib.contextmanager
def serve_process(signed: Signed, base: Path, *, audit: Path | None = None, workers: int = 4,
                  env: dict[str, str] | None = None, wait_ready: bool = True) -> Iterator[Served]:
    """The real `agentfactory runtime serve` on loopback (port 0) with `env` (AGENTFACTORY_RUNTIME_* limits).

    With `wait_ready`, the block starts once /readyz says the warm pool compiled the agents already published
    (what Kubernetes waits for before routing traffic to the node)."""
    from agentfactory.provenance import DEFAULT_BUILDER_ID
    from agentfactory.trust import to_yaml

    trust = base / "trust.yaml"
    trust.write_text(to_yaml(signed.keyring.public_keys(), (DEFAULT_BUILDER_ID,), ("*",)))
    exe = str(Path(sys.executable).with_name("agentfactory"))
    cmd = [exe, "runtime", "serve", "--listen", "127.0.0.1:0", "--store", signed.store.url,
           "--policies", str(ROOT / "policies"), "--policy", str(trust), "--workers", str(workers)]
    if audit is not None:
        cmd += ["--audit-log", str(audit)]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, **(env or {})})
    assert proc.stderr is not None
    first = first_line(proc)
    seen = [first]
    try:
        if not first.startswith(b"{"):
            raise AssertionError(f"the runtime did not start: {first!r} {proc.stderr.read()!r}")
        url = json.loads(first)["listening"]
        pump = threading.Thread(target=lambda: seen.extend(iter(proc.stderr.readline, b"")), daemon=True)  # type: ignore[union-attr]
        pump.start()
        if wait_ready:
            wait_until_ready(url, proc)
        yield Served(url, proc, seen)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def readyz(url: str) -> tuple[int, dict[str, object]]:
    """GET /readyz: the status code and the JSON document (the warm pool's counts)."""
    conn = http.client.HTTPConnection(urlsplit(url).netloc, timeout=10)
    try:
        conn.request("GET", "/readyz")
        reply = conn.getresponse()
        return reply.status, json.loads(reply.read())
    finally:
        conn.close()


def wait_until_ready(url: str, proc: subprocess.Popen[bytes] | None = None, seconds: float = 300) -> dict[str, object]:
    """Poll /readyz until it is 200 (the node's first warm set is compiled or refused): its document."""
    deadline = time.monotonic() + seconds
    status: dict[str, object] = {}
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the runtime exited with {proc.returncode} before it was ready")
        code, status = readyz(url)
        if code == 200:
            return status
        time.sleep(0.05)
    raise AssertionError(f"the runtime was not ready within {seconds} s: {status}")


def connect_from(source: str, port: int, timeout: float = 5.0) -> socket.socket:
    """A TCP connection to 127.0.0.1:port from loopback address `source` (another client, as the server sees it)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def read_reply(sock: socket.socket, limit: int = 1 << 20) -> bytes:
    """Everything the server sends until it closes (or `limit` bytes, or the socket's timeout)."""
    data = b""
    try:
        while len(data) < limit and (chunk := sock.recv(65536)):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data
