"""The signed world and the webhook process, made as `make demo` makes them, with the real command line.

`agentfactory pipeline run` builds, signs and logs the four example agents (templates/) into a fresh store; the
same pipeline publishes `hello-unsigned` (tests/fixtures/runtime-templates, --no-sign) and `victim`
(tests/fixtures/admission-templates, signed) into it, and then one byte-range of victim's blob is
rewritten, so its evidence no longer matches (the tampered agent). `agentfactory admission certs` makes
the webhook's CA and serving certificate, and `agentfactory admission serve` serves that store over TLS.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from kube_cluster import Process, free_port, spawn

ROOT = Path(__file__).resolve().parents[2]
AGENTFACTORY = str(Path(sys.executable).with_name("agentfactory"))
SIGNED = ("wordstats", "jsonfmt", "sha256sum", "base64")


@dataclass(frozen=True)
class World:
    """A store with signed, unsigned and tampered agents: {name: name@digest}, and the env to reach its keys."""

    store: str
    refs: dict[str, str]
    env: dict[str, str]


def agentfactory(env: dict[str, str], *args: str) -> str:
    """Run the CLI in the checkout; its stdout, or AssertionError with both streams."""
    done = subprocess.run([AGENTFACTORY, *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise AssertionError(f"agentfactory {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def make_world(base: Path) -> World:
    home = base / "af-home"
    store = f"oci-layout:{base / 'store'}"
    env = {**os.environ, "AGENTFACTORY_HOME": str(home)}
    # zig's wasi-libc, shared with the test suite's cache (`make` exports it) so the C examples build fast
    env["AGENTFACTORY_TOOLCHAIN_CACHE"] = os.environ.get("AGENTFACTORY_TEST_TOOLCHAIN_CACHE") or str(
        ROOT / ".agentfactory" / "cache" / "toolchain-tests")
    # the example agents deploy/admission/examples names, copied so a template being added to templates/
    # meanwhile does not change what is built here
    examples = base / "templates"
    for name in SIGNED:
        shutil.copytree(ROOT / "templates" / name, examples / name, symlinks=True)
    agentfactory(env, "pipeline", "run", "--templates", str(examples), "--store", store)
    agentfactory(env, "pipeline", "run", "--templates", "tests/fixtures/runtime-templates", "--no-sign",
                 "--store", store)
    agentfactory(env, "pipeline", "run", "--templates", "tests/fixtures/admission-templates", "--store", store)
    listed = json.loads(agentfactory(env, "store", "ls", "--json", "--store", store))["agents"]
    refs = {a["name"]: f"{a['name']}@{a['digest']}" for a in listed if a.get("tag")}
    missing = {*SIGNED, "hello-unsigned", "victim"} - refs.keys()
    assert not missing, f"the pipeline did not publish {missing}: {listed}"
    # The tampered agent: victim's bytes changed after signing (as `make demo` does), its digest unchanged.
    blob = base / "store" / "blobs" / "sha256" / refs["victim"].split("@sha256:")[1]
    blob.chmod(0o644)
    data = blob.read_bytes()
    assert b"victim" in data
    blob.write_bytes(data.replace(b"victim", b"attack"))
    return World(store, refs, env)


@dataclass
class Webhook:
    """`agentfactory admission serve` on a fixed loopback port (the webhook configuration's URL names it),
    so that it can be stopped and started again at the same address."""

    world: World
    base: Path
    port: int = field(default_factory=free_port)
    process: Process | None = None
    starts: int = 0
    workers: int = 1  # `--workers N` when above 1: a supervisor and N worker processes

    @property
    def tls(self) -> Path:
        return self.base / "tls"

    @property
    def audit(self) -> Path:
        return self.base / "audit.jsonl"

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def certs(self, folder: Path) -> str:
        """`agentfactory admission certs --out folder`: a new CA and serving certificate; the caBundle."""
        return agentfactory(self.world.env, "admission", "certs", "--out", str(folder)).strip()

    def config(self) -> Path:
        path = self.base / "admission.yaml"
        path.write_text(json.dumps({"store": self.world.store, "policies": str(ROOT / "policies"),
                                    "auditLog": str(self.audit)}))
        return path

    def start(self) -> None:
        assert self.process is None or self.process.proc.poll() is not None, "already running"
        self.starts += 1
        argv = [AGENTFACTORY, "admission", "serve", "--listen", f"127.0.0.1:{self.port}",
                "--tls-cert", str(self.tls / "tls.crt"), "--tls-key", str(self.tls / "tls.key"),
                "--config", str(self.config())]
        if self.workers > 1:
            argv += ["--workers", str(self.workers)]
        self.process = spawn("agentfactory admission serve", argv, self.base / f"webhook-{self.starts}.log",
                             env=self.world.env, cwd=ROOT)
        self.wait_healthy()

    def wait_healthy(self, seconds: float = 60.0) -> None:
        assert self.process is not None
        context = ssl.create_default_context(cafile=str(self.tls / "ca.crt"))
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.proc.poll() is not None:
                raise AssertionError(f"the webhook exited with {self.process.proc.returncode}:\n{self.process.tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", context=context, timeout=5) as reply:
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise AssertionError(f"the webhook was not ready within {seconds:.0f} s:\n{self.process.tail()}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def log(self) -> str:
        return self.process.log.read_text(errors="replace") if self.process else ""

    def worker_pids(self) -> list[int]:
        """The worker processes' pids, from the `listening` line (empty for one process)."""
        for line in self.log().splitlines():
            if line.startswith("{") and '"listening"' in line:
                return [int(w["pid"]) for w in json.loads(line).get("workers", [])]
        return []

    def metrics(self) -> dict[str, float]:
        """The webhook's own /metrics: {"name{labels}": value} (counters reset when it restarts)."""
        context = ssl.create_default_context(cafile=str(self.tls / "ca.crt"))
        with urllib.request.urlopen(f"{self.url}/metrics", context=context, timeout=10) as reply:
            text = reply.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    def audit_records(self) -> list[dict[str, object]]:
        if not self.audit.exists():
            return []
        records = [json.loads(line) for line in self.audit.read_text().splitlines() if line.strip()]
        return [r for r in records if r.get("event") == "admission"]
