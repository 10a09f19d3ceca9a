"""Promotion test helpers: agents published with logged evidence, and the trust policy that proves
promotions (build keys, the separate promoter key, the embedded transparency log)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from child_process import first_line
from helpers import ROOT, git, write_template
from runtime_helpers import OK_WAT, Signed, signed_store, wait_until_ready, wat_manifest

from agentfactory.promotion import promoter_keyring
from agentfactory.tlog.log import EmbeddedLog
from agentfactory.trust import TrustPolicy, from_public_keys, to_yaml
from pipelines.run import Signing, run_pipeline

if TYPE_CHECKING:
    from pipelines.promote.promote import Context


def publish_logged(signed: Signed, root: Path, agents: dict[str, tuple[str, dict[str, str]]]) -> None:
    """Build, sign, log (embedded log) and publish {name: (agent.yaml, {path: source})} with the real pipeline,
    from a committed Git tree (prod refuses dirty builds)."""
    for name, (manifest, files) in agents.items():
        write_template(root, name, manifest=manifest, files=dict(files))
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "templates")
    log = EmbeddedLog()
    report = run_pipeline(root, signed.store, run_tests=False,
                          signing=Signing(signed.keyring, tlog=log, tlog_key_pem=log.public_key_pem()))
    problems = [e for t in report.templates for e in t.errors]
    assert not problems, problems


REPOSITORIES = ("file:///*",)  # the test repositories (local Git folders): not "*", which prod refuses


def promotion_trust(signed: Signed) -> TrustPolicy:
    """What a production-like policy trusts: the build keys, the promoter keyring's keys (a separate
    keyring), the embedded log, and named source repositories."""
    return from_public_keys(signed.keyring.public_keys(), promoters=promoter_keyring(create=True).public_keys(),
                            log_keys=[EmbeddedLog().public_key_pem()], repositories=REPOSITORIES)


@contextlib.contextmanager
def serving_stage(signed: Signed, trust: TrustPolicy, audit: Path, *, stage: str) -> Iterator[str]:
    """The node service over HTTP on loopback (a thread) for `stage`, under `trust`: its base URL."""
    from sandbox_runtime.runtime import Runtime, RuntimeConfig
    from sandbox_runtime.server import RuntimeServer

    rt = Runtime(signed.store, trust, signed.engine, RuntimeConfig(audit_log=audit, stage=stage))
    srv = RuntimeServer(("127.0.0.1", 0), rt, workers=4)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    srv.ready.set()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()
        rt.close()


STAGES = """apiVersion: agentfactory.dev/v1alpha1
kind: StageGraph
stages:
  - name: dev
    namespace: agents-dev
  - name: canary
    from: dev
    namespace: canary-agents
  - name: prod
    from: canary
    namespace: prod-agents
"""

V2_WAT = OK_WAT.replace("ok\\n", "v2\\n")


@dataclass
class Flow:
    """After make demo's promotion flow: greeter 1.0.0 in dev, canary and prod; 1.1.0 promoted to dev and
    canary, then withdrawn from canary (rolled back)."""

    ctx: Context
    signed: Signed
    trust_file: Path
    v1: str  # digest of greeter 1.0.0
    v2: str  # digest of greeter 1.1.0


def promotion_flow(home: Path, tmp: Path) -> Flow:
    """Publish greeter 1.0.0 and 1.1.0 (logged evidence, committed trees) and run the demo's promotions
    with the real promote and rollback (signed, logged promotion attestations)."""
    from pipelines.promote.envrepo import EnvRepo
    from pipelines.promote.promote import Context, promote, rollback
    from pipelines.promote.stages import load_stages

    s = signed_store(home)
    v1_manifest = wat_manifest("greeter")
    publish_logged(s, tmp / "v1", {"greeter": (v1_manifest, {"src/main.wat": OK_WAT})})
    publish_logged(s, tmp / "v2", {"greeter": (v1_manifest.replace("version: 1.0.0", "version: 1.1.0"),
                                               {"src/main.wat": V2_WAT})})
    env = tmp / "env"
    env.mkdir()
    git(env, "init", "-q", "-b", "main")
    git(env, "commit", "-q", "--allow-empty", "-m", "environments")
    stages = tmp / "stages.yaml"
    stages.write_text(STAGES)
    graph = load_stages(stages)
    trust = promotion_trust(s)
    ctx = Context(graph, EnvRepo(env, graph), s.store, trust, s.engine)
    for args in (("greeter:1.0.0", "dev"), ("greeter", "canary"), ("greeter", "prod"),
                 ("greeter:1.1.0", "dev"), ("greeter", "canary")):
        outcome = promote(ctx, args[0], args[1])
        assert outcome.action == "promoted", outcome.to_json()
    back = rollback(ctx, "greeter", "canary", reason="canary analysis failed")
    assert back.action == "rolled-back"
    trust_file = tmp / "trust.yaml"
    trust_file.write_text(to_yaml(s.keyring.public_keys(), repositories=REPOSITORIES,
                                  log_keys=[EmbeddedLog().public_key_pem()],
                                  promoters=promoter_keyring().public_keys()))
    return Flow(ctx, s, trust_file, s.store.resolve("greeter:1.0.0").digest, s.store.resolve("greeter:1.1.0").digest)


def agentfactory(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """The real CLI in a child process (the environment, AGENTFACTORY_HOME included, is inherited)."""
    exe = str(Path(sys.executable).with_name("agentfactory"))
    return subprocess.run([exe, *args], input=stdin, capture_output=True, timeout=120)


@contextlib.contextmanager
def serve_stage_process(flow: Flow, stage: str) -> Iterator[str]:
    """The real `agentfactory runtime serve --stage STAGE` on loopback (port 0): its base URL."""
    with runtime_process(flow.signed.store.url, flow.trust_file, stage) as url:
        yield url


def write_trust(signed: Signed, path: Path) -> Path:
    """The promotion trust policy as a file, for child processes (build keys, promoters, the embedded log)."""
    path.write_text(to_yaml(signed.keyring.public_keys(), repositories=REPOSITORIES,
                            log_keys=[EmbeddedLog().public_key_pem()],
                            promoters=promoter_keyring(create=True).public_keys()))
    return path


@contextlib.contextmanager
def runtime_process(store_url: str, trust_file: Path, stage: str, *,
                    env: dict[str, str] | None = None) -> Iterator[str]:
    """The real `agentfactory runtime serve --stage STAGE` on loopback (port 0), with extra environment
    variables: its base URL."""
    exe = str(Path(sys.executable).with_name("agentfactory"))
    cmd = [exe, "runtime", "serve", "--listen", "127.0.0.1:0", "--store", store_url,
           "--policies", str(ROOT / "policies"), "--policy", str(trust_file), "--stage", stage]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, **(env or {})})
    assert proc.stderr is not None
    try:
        first = first_line(proc)
        if not first.startswith(b"{"):
            raise AssertionError(f"the runtime did not start: {first!r} {proc.stderr.read()!r}")
        url = json.loads(first)["listening"]
        wait_until_ready(url, proc)  # the warm pool compiled what the node may run (503 `compiling` before)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
