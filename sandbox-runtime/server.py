"""The node service: `POST /v1/agents/{name}/invoke`, `GET /healthz`, `GET /readyz`, `GET /metrics`.

Invoke: the request body is the agent's stdin; `?arg=` (repeatable) its argv, `?env=NAME=VALUE`
(repeatable) its environment (names must be on the agent's allowlist), `?version=` or `?digest=`
pin what runs. The response body is the agent's stdout; the exit code, outcome, limits hit, digest
and timings are headers (`X-Agent-*`). With `Accept: application/json` the response is one JSON
document with stdout and stderr (text, or base64 when not UTF-8).

Status: 200 the agent exited (any exit code); 422 the sandbox stopped it (deadline, memory,
stack, output, fuel, trap); 403 refused before running (verification, policy, contract);
404 no such agent; 400 bad request; 413 body too large; 503 every worker busy; 500 a bug.

The server is a bounded thread-per-connection HTTP/1.1 server with keep-alive: at most
`max_connections` connections, `workers` invocations at once, and a socket timeout so a slow
client cannot hold a thread forever.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agentfactory.audit import AuditError
from agentfactory.errors import AgentFactoryError, InputError
from agentfactory.metrics import RUNTIME_REQUESTS

from .runtime import MAX_STDIN, Refused, Result, Runtime
from .sandbox import Invocation

INVOKE = re.compile(r"^/v1/agents/([a-z0-9][a-z0-9._-]{0,127})/invoke$")
STOPPED = {"timeout", "fuel", "memory", "stack", "output", "trap"}
QUEUE_WAIT_SECONDS = 5.0


class RuntimeServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], runtime: Runtime, *, workers: int = 8,
                 max_connections: int = 256, socket_timeout: float = 30.0) -> None:
        self.runtime = runtime
        self.workers = threading.BoundedSemaphore(workers)
        self.connections = threading.BoundedSemaphore(max_connections)
        self.socket_timeout = socket_timeout
        self.ready = threading.Event()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.connections.acquire(blocking=False):  # full: refuse rather than grow without bound
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.connections.release()


class _Handler(BaseHTTPRequestHandler):
    server: RuntimeServer
    protocol_version = "HTTP/1.1"
    server_version = "agentfactory-runtime"
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.socket_timeout)
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the audit trail and the metrics are the record; no per-request stderr noise

    # -- routing ---------------------------------------------------------------------------------
    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/healthz":
            self._send("healthz", 200, b"ok\n", "text/plain")
        elif path == "/readyz":
            ready = self.server.ready.is_set()
            self._send("readyz", 200 if ready else 503, b"ready\n" if ready else b"starting\n", "text/plain")
        elif path == "/metrics":
            self._send("metrics", 200, generate_latest(), CONTENT_TYPE_LATEST)
        else:
            self._error("other", 404, f"no such endpoint: GET {path}")

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        match = INVOKE.match(url.path)
        if not match:
            self._drain()
            self._error("other", 404, f"no such endpoint: POST {url.path} (POST /v1/agents/NAME/invoke)")
            return
        try:
            invocation, ref = self._invocation(match.group(1), url.query)
        except InputError as exc:
            self._error("invoke", 413 if exc.where == "body" and "larger" in exc.message else 400, str(exc))
            return
        if not self.server.workers.acquire(timeout=QUEUE_WAIT_SECONDS):
            self._error("invoke", 503, "every worker is busy; retry later", retry_after=True)
            return
        try:
            result = self.server.runtime.invoke(ref, invocation)
        except Refused as exc:
            self._refused(exc)
            return
        except InputError as exc:
            self._error("invoke", 400, str(exc))
            return
        except AuditError as exc:  # nothing runs, or is answered, unrecorded
            self._error("invoke", 503, f"the audit trail cannot be written: {exc}")
            return
        except AgentFactoryError as exc:
            self._error("invoke", 502, f"the store could not be read: {exc}")
            return
        except Exception as exc:  # a bug: say so, keep serving
            self._error("invoke", 500, f"internal error: {type(exc).__name__}: {exc}")
            return
        finally:
            self.server.workers.release()
        self._result(result)

    # -- request ---------------------------------------------------------------------------------
    def _drain(self) -> None:
        length = self.headers.get("Content-Length")
        if length and length.isdigit() and int(length) <= MAX_STDIN:
            self.rfile.read(int(length))
        else:
            self.close_connection = True

    def _invocation(self, name: str, query: str) -> tuple[Invocation, str]:
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise InputError("body", "chunked bodies are not accepted; send Content-Length")
        length = self.headers.get("Content-Length", "0")
        if not length.isdigit():
            self.close_connection = True
            raise InputError("body", f"Content-Length {length!r} is not a number")
        if int(length) > MAX_STDIN:
            self.close_connection = True
            raise InputError("body", f"larger than the {MAX_STDIN}-byte stdin limit ({length} bytes)")
        stdin = self.rfile.read(int(length))
        params = parse_qs(query, keep_blank_values=True, max_num_fields=600)
        unknown = sorted(set(params) - {"arg", "env", "version", "digest"})
        if unknown:
            raise InputError("query", f"unknown parameter(s) {', '.join(unknown)} (arg, env, version, digest)")
        env: dict[str, str] = {}
        for pair in params.get("env", []):
            key, sep, value = pair.partition("=")
            if not sep or not key:
                raise InputError("query", f"env {pair!r}: write env=NAME=VALUE")
            env[key] = value
        ref = unquote(name)
        if params.get("digest"):
            ref = f"{name}@{params['digest'][-1]}"
        elif params.get("version"):
            ref = f"{name}:{params['version'][-1]}"
        return Invocation(stdin=stdin, args=tuple(params.get("arg", [])), env=env), ref

    # -- responses -------------------------------------------------------------------------------
    def _wants_json(self) -> bool:
        return "application/json" in (self.headers.get("Accept") or "")

    def _result(self, result: Result) -> None:
        ex = result.execution
        code = 422 if ex.outcome in STOPPED else 200
        a = result.prepared.agent
        headers = {"X-Agent-Name": a.name, "X-Agent-Version": a.version, "X-Agent-Digest": a.digest,
                   "X-Agent-Outcome": ex.outcome,
                   "X-Agent-Exit-Code": "" if ex.exit_code is None else str(ex.exit_code),
                   "X-Agent-Limits-Hit": ",".join(ex.limits_hit),
                   "X-Agent-Duration-Ms": f"{result.seconds * 1000:.3f}"}
        if self._wants_json() or code != 200:
            doc = {**result.to_json(), **_streams(ex.stdout, ex.stderr)}
            if ex.tool_log:
                doc["toolLog"] = ex.tool_log.decode("utf-8", "replace")
            self._send("invoke", code, json.dumps(doc).encode() + b"\n", "application/json", headers)
        else:
            self._send("invoke", code, ex.stdout, "application/octet-stream", headers)

    def _refused(self, exc: Refused) -> None:
        code = 404 if exc.reason == "not-found" else 403
        doc: dict[str, Any] = {"error": str(exc), "reason": exc.reason}
        if exc.verdict is not None:
            doc["verdict"] = exc.verdict.to_json()
        self._send("invoke", code, json.dumps(doc).encode() + b"\n", "application/json")

    def _error(self, endpoint: str, code: int, message: str, retry_after: bool = False) -> None:
        headers = {"Retry-After": "1"} if retry_after else {}
        self._send(endpoint, code, json.dumps({"error": message}).encode() + b"\n", "application/json", headers)

    def _send(self, endpoint: str, code: int, body: bytes, content_type: str,
              headers: dict[str, str] | None = None) -> None:
        RUNTIME_REQUESTS.labels(endpoint=endpoint, code=str(code)).inc()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        # Head and body in one write (end_headers would flush the head on its own): one segment per
        # small response, which matters for keep-alive throughput.
        head: list[bytes] = self._headers_buffer  # type: ignore[attr-defined]  # filled by send_header
        self.wfile.write(b"".join(head) + b"\r\n" + body)
        head.clear()


def _streams(stdout: bytes, stderr: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, data in (("stdout", stdout), ("stderr", stderr)):
        try:
            out[name] = data.decode("utf-8")
        except UnicodeDecodeError:
            out[name + "Base64"] = base64.b64encode(data).decode()
    return out
