"""The real OPA server on loopback for tests and benchmarks, and the servers it must not be fooled by.

`running_opa` starts `opa run --server` (the binary `make tools` builds) on 127.0.0.1 with a bundle
and stops it; `silent_server` accepts connections and never answers (a hung OPA); `lying_opa` is a
proxy in front of a real OPA that forwards every request and lets a test rewrite or replace the
answer (garbage, another shape, a huge body, one byte at a time): what a real OPA cannot be made
to send, sent over a real socket.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

START_TIMEOUT_S = 30.0


class OPAStartError(RuntimeError):
    """The server did not start; the message carries the end of its log."""


@dataclass(frozen=True)
class OPAServer:
    url: str
    pid: int
    log: Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ready(url: str) -> bool:
    """OPA's health check with ?bundles: 200 only once every bundle is activated."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, never a proxy
    try:
        with opener.open(f"{url}/health?bundles=true", timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate the server (its own session), then reap it."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@contextlib.contextmanager
def running_opa(opa: Path, bundle: Path, home: Path, *extra: str) -> Iterator[OPAServer]:
    """`opa run --server --addr 127.0.0.1:<free port> BUNDLE` until the block ends."""
    home.mkdir(parents=True, exist_ok=True)
    log = home / "opa.log"
    for _attempt in range(3):  # a free port can be taken between the probe and OPA's bind: try another
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with open(log, "wb") as out:
            proc = subprocess.Popen([str(opa), "run", "--server", "--addr", f"127.0.0.1:{port}", "--log-level",
                                     "error", "--disable-telemetry", *extra, str(bundle)],
                                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=home,
                                    start_new_session=True)
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while not _ready(url):
                if proc.poll() is not None:
                    break
                if time.monotonic() > deadline:
                    raise OPAStartError(f"opa not ready after {START_TIMEOUT_S:.0f} s:\n{log.read_text()[-3000:]}")
                time.sleep(0.05)  # bounded polling for server start
            else:
                yield OPAServer(url, proc.pid, log)
                return
        finally:
            stop(proc)
        if "address already in use" not in log.read_text():
            break
    raise OPAStartError(f"opa exited with {proc.returncode}:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def silent_server() -> Iterator[str]:
    """A real listening socket that accepts every connection and never sends a byte (a hung server)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.05)  # the accept loop wakes up to see that the block has ended
    held: list[socket.socket] = []
    stopping = threading.Event()

    def accept() -> None:
        while not stopping.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)  # kept open, never read from or written to

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stopping.set()
        thread.join(timeout=5)
        listener.close()
        for conn in held:
            conn.close()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    raw: bytes | None = None  # sent as is instead of a well-formed response (then the connection closes)
    byte_delay_s: float = 0.0  # send the body one byte at a time, this long apart


Lie = Callable[[str, str, Answer], Answer]  # (method, path, honest answer) -> what to send


@dataclass
class LyingOPA:
    url: str = ""
    lies: list[Lie] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)


@contextlib.contextmanager
def lying_opa(upstream: str) -> Iterator[LyingOPA]:
    """Serve on 127.0.0.1:<free port>, forwarding to the real OPA at `upstream`; the lies rewrite answers."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    state = LyingOPA()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # quiet
            pass

        def _forward(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else None
            state.requests.append((self.command, self.path))
            request = urllib.request.Request(upstream + self.path, data=body, method=self.command,
                                             headers={"Content-Type": "application/json"})
            try:
                with opener.open(request, timeout=30) as r:
                    answer = Answer(r.status, {"Content-Type": r.headers.get("Content-Type", "")}, r.read())
            except urllib.error.HTTPError as e:
                answer = Answer(e.code, {"Content-Type": "application/json"}, e.read())
            for lie in state.lies:
                answer = lie(self.command, self.path, answer)
            if answer.raw is not None:
                self.wfile.write(answer.raw)
                self.wfile.flush()
                self.close_connection = True
                return
            self.send_response(answer.status)
            for k, v in answer.headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            if not answer.byte_delay_s:
                self.wfile.write(answer.body)
                return
            for i in range(len(answer.body)):
                self.wfile.write(answer.body[i:i + 1])
                self.wfile.flush()
                time.sleep(answer.byte_delay_s)  # a server that trickles its answer

        do_GET = do_POST = _forward

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
