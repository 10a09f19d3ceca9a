"""Helpers for the transparency-log and audit tests: the real `tlog serve` in a subprocess, the real `audit`
CLI, a trust policy pinning the log's key, and the pipeline's signing record for agents published in a test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from child_process import first_line
from click.testing import CliRunner, Result
from helpers import write_template
from runtime_helpers import OK_WAT, Signed, signed_store, wat_manifest

from agentfactory.cli import cli
from agentfactory.dsse import parse_envelope
from agentfactory.evidence import collect, parse_artifact_signature
from agentfactory.keys.base import PublicKey
from agentfactory.store import ArtifactStore
from agentfactory.tlog.log import EmbeddedLog
from agentfactory.tlog.signing_record import record_signing
from agentfactory.trust import to_yaml
from pipelines.run import Signing, run_pipeline


def audit(*args: str) -> Result:
    """`agentfactory audit ARGS`, in-process, as an auditor runs it."""
    return CliRunner().invoke(cli, ["audit", *args], catch_exceptions=False)


def pin_log(folder: Path, keys: list[PublicKey], policy: Path) -> Path:
    """Write a trust policy pinning the key of the log in `folder` (created if missing); returns its path."""
    with EmbeddedLog(folder) as log:
        pem = log.public_key_pem()
    policy.write_text(to_yaml(keys, log_keys=[pem]))
    return policy


def record_published(store: ArtifactStore, names: list[str], path: Path | None = None) -> None:
    """What the pipeline's call to `record_signing` writes, for agents published in a test (see the report:
    pipelines/run.py makes this call itself once integrated; a line recorded twice is harmless)."""
    for name in names:
        agent = store.resolve(name)
        ev = collect(store, agent)
        sig = parse_artifact_signature(ev.signatures[0][1], "signature")
        envelopes = [parse_envelope(e, "attestation") for _, e in ev.attestations]
        record_signing(store.url, agent.name, agent.version, agent.digest, sig.keyid, envelopes, path)


def publish_logged(home: Path, root: Path, names: list[str]) -> Signed:
    """Publish one small agent per name through the real pipeline, logged in `home`/tlog, and recorded."""
    s = signed_store(home)
    for name in names:
        write_template(root, name, manifest=wat_manifest(name), files={"src/main.wat": OK_WAT.replace("ok", name[:2])})
    with EmbeddedLog(home / "tlog") as log:
        signing = Signing(s.keyring, tlog=log, tlog_key_pem=log.public_key_pem())
        report = run_pipeline(root, s.store, run_tests=False, signing=signing)
    assert report.ok, [t.errors for t in report.templates]
    return s


def keys_report(*args: str) -> tuple[int, dict[str, Any]]:
    """`audit keys --json ARGS`: the exit code and the report."""
    result = audit("keys", "--json", *args)
    return result.exit_code, json.loads(result.output)


@contextmanager
def tlog_server(folder: Path) -> Iterator[str]:
    """`agentfactory tlog serve --dir folder` on a free loopback port; yields its URL, stops it after."""
    exe = Path(sys.executable).with_name("agentfactory")
    proc = subprocess.Popen([str(exe), "tlog", "serve", "--listen", "127.0.0.1:0", "--dir", str(folder)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ.copy())
    try:
        assert proc.stderr is not None
        line = first_line(proc)
        if not line:
            raise RuntimeError("tlog serve exited before listening: " + proc.stderr.read().decode())
        url = json.loads(line)["listening"]
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("tlog serve did not answer /healthz")
            time.sleep(0.02)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def serving_in_process(log: EmbeddedLog) -> Iterator[httpx.Client]:
    """The real app on uvicorn in this process (so a test can lower a bound), on a loopback port of its own."""
    import socket
    import threading

    import uvicorn

    from agentfactory.tlog.server import create_app

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(log), log_level="error", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the log server did not start")
        time.sleep(0.01)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(timeout=10)
