"""A proxy in front of a real registry that lies: it forwards every request and lets a test
rewrite the answer (flip blob bytes, change a media type, inflate a manifest, stall)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


Lie = Callable[[str, str, Answer], Answer]  # (method, path, honest answer) -> what to send


@dataclass
class LyingRegistry:
    host: str
    lies: list[Lie] = field(default_factory=list)
    delay_s: float = 0.0


@contextlib.contextmanager
def lying_proxy(upstream: str) -> Iterator[LyingRegistry]:
    """Serve on 127.0.0.1:<free port>, forwarding to `upstream` (http://127.0.0.1:PORT)."""
    client = httpx.Client(base_url=upstream, trust_env=False, timeout=30)
    state = LyingRegistry(host="")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # quiet
            pass

        def _forward(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
            r = client.request(self.command, self.path, content=body, headers=headers)
            answer = Answer(r.status_code, {k: v for k, v in r.headers.items()
                                            if k.lower() not in ("content-length", "transfer-encoding",
                                                                 "connection", "content-encoding")}, r.content)
            for lie in state.lies:
                answer = lie(self.command, self.path, answer)
            if state.delay_s:
                time.sleep(state.delay_s)
            self.send_response(answer.status)
            for k, v in answer.headers.items():
                if k.lower() == "location" and v.startswith(upstream):
                    v = v.replace(upstream, f"http://{state.host}")
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(answer.body)

        do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _forward

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.host = f"127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        client.close()
