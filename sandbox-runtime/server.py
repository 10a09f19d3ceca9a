"""The node service: `POST /v1/agents/{name}/invoke`, `GET /healthz`, `GET /readyz`, `GET /metrics`.

Invoke: the request body is the agent's stdin; `?arg=` (repeatable) its argv, `?env=NAME=VALUE`
(repeatable) its environment (names must be on the agent's allowlist), `?version=` (semver) or
`?digest=` (sha256:…) pin what runs. The response body is the agent's stdout; the exit code, outcome,
limits hit, digest and timings are headers (`X-Agent-*`). With `Accept: application/json` the
response is one JSON document with stdout and stderr (text, or base64 when not UTF-8 or when
escaping would make it longer than base64).

Status: 200 the agent exited (any exit code); 422 the sandbox stopped it (deadline, memory,
stack, output, fuel, trap); 403 refused before running (verification, policy, contract, over the
node's ceilings); 404 no such agent; 400 bad request; 408 the request did not arrive in time;
413 body too large; 503 no worker, the agent already holds its share of the workers
(worker_shares.py: one agent may not take every worker), no connection slot, no memory budget, no compile slot
(`compile-unavailable`), or the agent's module is still compiling in the background (`compiling`:
no request ever waits for a compile; warmpool.py) (`Retry-After`); 500 a bug. `/readyz` is 503 until
the warm pool's first set of agents is compiled (or refused), with counts; `/healthz` is always 200.

A bounded thread-per-connection HTTP/1.1 server with keep-alive, hardened against hostile clients
(server_limits.py): connection slots in all and per client address, a whole-request deadline for
headers and body, bodies read in chunks charged to a node-wide memory budget that also covers each
invocation and its response, responses streamed under a deadline, refusals paced per client
address, and an overflow lane that still answers /healthz and /readyz when every slot is taken.
Every header the service reads and the query are parsed strictly; anything malformed is a 400,
never a traceback. Header fields are read by server_io.read_headers (http.server's limits, no email
parser; a space before the colon or a folded line is a 400) and responses are written as one head
with cached metric children and Date: the per-request work outside the sandbox is what bounds the
node's throughput on few cores (benchmarks/results/runtime.md). docs/runtime.md says why this server
rather than uvicorn.
"""

from __future__ import annotations

import contextlib
import dataclasses
import email.utils
import io
import json
import re
import socket
import threading
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agentfactory.audit import AuditError
from agentfactory.errors import AgentFactoryError, InputError
from agentfactory.metrics import RUNTIME_REQUESTS, WASI_VIOLATIONS, LabelCache
from agentfactory.semver import SEMVER_RE

from .runtime import MAX_STDIN, Prepared, Refused, Result, Runtime
from .sandbox import Invocation
from .server_io import CHUNK, DeadlineReader, DeadlineWriter, HeaderError, json_document, read_headers, streams_json
from .server_limits import MIB, ClientSlots, MemoryBudget, RefusalPacer, ServerLimits
from .warmpool import RETRY_AFTER, WarmPool
from .worker_shares import NoWorker, WorkerPool

INVOKE = re.compile(r"/v1/agents/([^/]*)/invoke")
AGENT_NAME = re.compile(r"[a-z]([a-z0-9-]{0,61}[a-z0-9])?")  # the template schema's DNS label
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
CONTENT_LENGTH = re.compile(r"[0-9]{1,12}")  # ASCII digits only: int() would also take '²' or '٣'
MAX_QUERY_FIELDS = 600
STOPPED = {"timeout", "fuel", "memory", "stack", "output", "trap"}
TOOL_LOG_BYTES = 16 * 1024
INVOCATION_OVERHEAD = 1 * MIB  # a store, an instance and WASI state, beyond the guest's linear memory
SMALL_BODY = 64 * 1024  # head and body in one write below this (one segment: keep-alive throughput)
_REQUESTS = LabelCache(RUNTIME_REQUESTS)  # by endpoint and code: counted once per response
_DATE: tuple[int, str] = (0, "")  # the Date header of the current second: formatting it per response costs


def _http_date() -> str:
    """The Date header for now (RFC 9110 IMF-fixdate), formatted once per second."""
    global _DATE
    now = int(time.time())
    if _DATE[0] != now:
        _DATE = (now, email.utils.formatdate(now, usegmt=True))
    return _DATE[1]


def _http_version(version: str) -> tuple[int, int] | None:
    """(major, minor) of `HTTP/x.y` as http.server reads it (RFC 2145: digits, at most 10 each); None if not."""
    if not version.startswith("HTTP/"):
        return None
    numbers = version[5:].split(".")
    if len(numbers) != 2 or not all(n.isdigit() and n.isascii() and len(n) <= 10 for n in numbers):
        return None
    return int(numbers[0]), int(numbers[1])


def _streams(stdout: bytes, stderr: bytes) -> dict[str, str]:
    """stdout and stderr for a JSON document (kept for `agentfactory run --json`)."""
    return streams_json(stdout, stderr)


class _Answer(Exception):
    """Stop handling this request and answer `code` with `message`."""

    def __init__(self, code: int, message: str, *, retry_after: bool = False, close: bool = False) -> None:
        super().__init__(message)
        self.code, self.message, self.retry_after, self.close = code, message, retry_after, close


class RuntimeServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], runtime: Runtime, *, workers: int = 8,
                 max_connections: int | None = None, limits: ServerLimits | None = None,
                 warm: WarmPool | None = None) -> None:
        limits = limits or ServerLimits.from_env()
        if max_connections is not None:
            limits = dataclasses.replace(limits, max_connections=max_connections)
        self.runtime = runtime
        self.limits = limits
        self.workers = WorkerPool(workers, share=limits.agent_worker_share, queue_wait=limits.queue_wait,
                                  agent_wait=limits.agent_queue_wait, agent_queue=limits.agent_queue_length)
        self.slots = ClientSlots(limits)
        self.budget = MemoryBudget(limits.memory_budget, limits.client_memory_share)
        self.pacer = RefusalPacer(limits.refusals_per_client)
        self.ready = threading.Event()  # set once the service is up; with a warm pool, readiness also waits for it
        self.warm = warm
        super().__init__(address, _Handler)

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready to be routed traffic: serving, and (with a warm pool) its first set of agents compiled or refused."""
        if self.warm is None:
            ready = self.ready.is_set()
            return ready, {"ready": ready}
        status = self.warm.status()
        status["ready"] = ready = self.ready.is_set() and bool(status["ready"])
        return ready, status

    def process_request(self, request: Any, client_address: Any) -> None:
        client = str(client_address[0])
        admitted = self.slots.admit(client)
        if admitted is None:  # even the overflow lane is full: refuse rather than grow without bound
            self.shutdown_request(request)
            return
        lane, why = admitted
        thread = threading.Thread(target=self._serve, args=(request, client_address, client, lane, why), daemon=True)
        try:
            thread.start()
        except RuntimeError:  # no thread to be had: this connection is refused, its slot returned
            self.slots.release(client, lane)
            self.shutdown_request(request)

    def _serve(self, request: Any, client_address: Any, client: str, lane: str, why: str) -> None:
        try:
            handler = _Handler if lane == "main" else _OverflowHandler
            handler(request, client_address, self, overflow_reason=why)
        except Exception:  # a client that went away mid-request: nothing left to answer
            return
        finally:
            self.shutdown_request(request)
            self.slots.release(client, lane)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """No traceback on stderr for what a client did: every request path answers or closes."""


class _Handler(BaseHTTPRequestHandler):
    server: RuntimeServer
    protocol_version = "HTTP/1.1"
    server_version = "agentfactory-runtime"
    sys_version = ""
    overflow = False
    raw_requestline: bytes  # set by http.server's handle_one_request

    def __init__(self, request: Any, client_address: Any, server: RuntimeServer, overflow_reason: str = "") -> None:
        self.overflow_reason = overflow_reason
        super().__init__(request, client_address, server)

    def setup(self) -> None:
        self.connection = self.request
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = DeadlineReader(self.connection)
        self.writer = DeadlineWriter(self.connection)
        self.rfile = io.BufferedReader(self.reader, CHUNK)
        self.wfile = self.writer  # type: ignore[assignment]  # unbuffered: each write is one sendall
        self.reservation = self.server.budget.reservation(str(self.client_address[0]))
        self.started = time.monotonic()

    def finish(self) -> None:
        self.reservation.close()
        super().finish()

    def handle_one_request(self) -> None:
        limits = self.server.limits
        self.started = time.monotonic()
        first = limits.overflow_timeout if self.overflow else limits.header_timeout
        self.reader.deadline = self.started + first
        self.writer.deadline = self.started + first + limits.response_timeout
        try:
            super().handle_one_request()
        except TimeoutError:
            self.close_connection = True
        except OSError:  # the client went away
            self.close_connection = True
        except Exception as exc:  # a bug: say so if the connection still takes it, and stop
            self.close_connection = True
            with contextlib.suppress(Exception):
                self._error("other", 500, f"internal error: {type(exc).__name__}")
        finally:
            self.reservation.close()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the audit trail and the metrics are the record; no per-request stderr noise

    def parse_request(self) -> bool:
        """http.server's request-line rules, then the header fields by server_io.read_headers (its limits,
        stricter, without the email parser). False: answered (or nothing to answer), close."""
        self.command = None  # type: ignore[assignment]  # set in case of an error on the first line
        self.request_version = version = self.default_request_version
        self.close_connection = True
        self.requestline = requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        words = requestline.split()
        if not words:
            return False
        if len(words) >= 3:  # enough to determine the protocol version
            version = words[-1]
            number = _http_version(version)
            if number is None:
                self.send_error(400, f"Bad request version ({version!r})")
                return False
            if number >= (2, 0):
                self.send_error(505, f"Invalid HTTP version ({version[5:]})")
                return False
            self.close_connection = number < (1, 1)
            self.request_version = version
        if not 2 <= len(words) <= 3:
            self.send_error(400, f"Bad request syntax ({requestline!r})")
            return False
        command, path = words[:2]
        if len(words) == 2:
            self.close_connection = True
            if command != "GET":
                self.send_error(400, f"Bad HTTP/0.9 request type ({command!r})")
                return False
        self.command, self.path = command, ("/" + path.lstrip("/") if path.startswith("//") else path)  # gh-87389
        try:
            self.headers = read_headers(self.rfile)  # type: ignore[assignment]  # get and get_all, as used here
        except HeaderError as exc:
            self.send_error(exc.code, str(exc))
            return False
        connection = (self.headers.get("Connection") or "").lower()
        if connection == "close":
            self.close_connection = True
        elif connection == "keep-alive":
            self.close_connection = False
        expect = (self.headers.get("Expect") or "").lower()
        if expect == "100-continue" and self.request_version >= "HTTP/1.1":
            return self.handle_expect_100()
        return True

    # -- routing ---------------------------------------------------------------------------------
    def do_GET(self) -> None:
        if self.headers.get("Transfer-Encoding") is not None or \
                (self.headers.get("Content-Length") or "0").strip() != "0":
            # a body never read would be parsed as the next request on this connection (a CL.0 / TE.0 desync:
            # behind a proxy that reuses connections, someone else's request); so none is accepted, and the
            # connection, whose framing is now unknown, is closed
            self.close_connection = True
            self._error("other", 400, "a GET request carries no body (Content-Length or Transfer-Encoding): send none")
            return
        try:
            path = urlsplit(self.path).path
        except ValueError:
            self._error("other", 400, "the request target is not a valid URL")
            return
        if path == "/healthz":
            self._send("healthz", 200, b"ok\n", "text/plain")
        elif path == "/readyz":
            ready, status = self.server.readiness()
            self._send("readyz", 200 if ready else 503, json.dumps(status).encode() + b"\n", "application/json")
        elif path == "/metrics":
            self._send("metrics", 200, generate_latest(), CONTENT_TYPE_LATEST)
        else:
            self._error("other", 404, f"no such endpoint: GET {path[:200]}")

    def do_POST(self) -> None:
        self.reader.deadline = self.started + self.server.limits.request_timeout
        try:
            result = self._invoke()
        except _Answer as exc:
            if exc.close:
                self.close_connection = True
            if exc.code in (400, 404):
                self._pace()
            self._error("invoke", exc.code, exc.message, retry_after=exc.retry_after)
            return
        except Refused as exc:
            if exc.reason != "compiling":  # not refused, not yet: nothing written, nothing to pace
                self._pace()
            self._refused(exc)
            return
        self._result(result)

    def _pace(self) -> None:
        """A refusal: answered at once within the client's rate, later past it (see RefusalPacer)."""
        wait = self.server.pacer.delay(str(self.client_address[0]))
        if wait > 0:
            time.sleep(wait)

    # -- request ---------------------------------------------------------------------------------
    def _invoke(self) -> Result:
        try:
            url = urlsplit(self.path)
        except ValueError:
            raise _Answer(400, "the request target is not a valid URL", close=True) from None
        length = self._content_length()
        match = INVOKE.fullmatch(url.path)
        if not match:
            self._read_body(length)  # keep the connection usable; the body is charged and dropped
            raise _Answer(404, f"no such endpoint: POST {url.path[:200]} (POST /v1/agents/NAME/invoke)")
        try:
            args, env, ref = self._query(match.group(1), url.query)
        except _Answer as exc:
            exc.close = exc.close or length > 0  # the body is not read: the connection cannot go on
            raise
        stdin = self._read_body(length)
        invocation = Invocation(stdin=stdin, args=args, env=env)
        del stdin
        compiling = self.server.runtime.compiling(ref)  # a 503 that needs no worker: never queued behind others
        if compiling is not None:
            raise compiling
        name = match.group(1)
        self._worker(name)
        try:
            prepared = self.server.runtime.prepare(ref)
            self._admit(prepared, len(invocation.stdin))
            result = self.server.runtime.invoke(ref, invocation, prepared)
        except InputError as exc:
            raise _Answer(400, str(exc)) from None
        except AuditError as exc:  # nothing runs, or is answered, unrecorded
            raise _Answer(503, f"the audit trail cannot be written: {exc}") from None
        except Refused:
            raise
        except AgentFactoryError as exc:
            raise _Answer(502, f"the store could not be read: {exc}") from None
        except _Answer:
            raise
        except Exception as exc:  # a bug: say so, keep serving
            raise _Answer(500, f"internal error: {type(exc).__name__}: {exc}") from None
        finally:
            self.server.workers.release(name)
            del invocation
        ex = result.execution
        # From here on the node holds the outputs until they are sent, and nothing else of this request.
        self.reservation.set(len(ex.stdout) + len(ex.stderr) + len(ex.tool_log) + 2 * CHUNK)
        return result

    def _worker(self, name: str) -> None:
        """A worker for agent `name` within its share, or a 503 (a share refusal is audited and paced)."""
        try:
            self.server.workers.acquire(name)
        except NoWorker as exc:
            if exc.reason != "busy":  # the agent's own requests, not the node's load: a refusal like the others
                if self.server.runtime.audit is not None:
                    with contextlib.suppress(AuditError):  # refused either way; the audit trail bounds its volume
                        self.server.runtime.audit.record("decision", plane="runtime", agent=name, allowed=False,
                                                         reason="worker-share", message=str(exc),
                                                         stage=self.server.runtime.config.stage)
                self._pace()
            raise _Answer(503, str(exc), retry_after=True) from None

    def _content_length(self) -> int:
        if self.headers.get("Transfer-Encoding") is not None:
            raise _Answer(400, "chunked bodies are not accepted; send Content-Length", close=True)
        values = self.headers.get_all("Content-Length") or []
        if not values:
            return 0
        if len(values) > 1:
            raise _Answer(400, f"Content-Length sent {len(values)} times; send it once", close=True)
        value = values[0].strip()
        if not CONTENT_LENGTH.fullmatch(value):
            raise _Answer(400, f"Content-Length {value[:40]!r} is not a number of bytes (ASCII digits)", close=True)
        if int(value) > MAX_STDIN:
            raise _Answer(413, f"the body is larger than the {MAX_STDIN}-byte stdin limit ({value} bytes)",
                          close=True)
        return int(value)

    def _query(self, name: str, query: str) -> tuple[tuple[str, ...], dict[str, str], str]:
        """argv, environment and the reference to run; 400 for anything not well-formed, before any lookup."""
        if not AGENT_NAME.fullmatch(name):
            raise _Answer(400, f"{name[:80]!r} is not an agent name (a DNS label: a-z, 0-9 and '-', at most 63)")
        fields = query.count("&") + 1 if query else 0
        if fields > MAX_QUERY_FIELDS:
            raise _Answer(400, f"the query has {fields} fields; at most {MAX_QUERY_FIELDS}")
        try:
            params = parse_qs(query, keep_blank_values=True, max_num_fields=MAX_QUERY_FIELDS, errors="strict")
        except ValueError as exc:  # UnicodeDecodeError included: percent-escapes that are not UTF-8
            raise _Answer(400, f"the query cannot be parsed: {exc}") from None
        unknown = sorted(set(params) - {"arg", "env", "version", "digest"})
        if unknown:
            shown = ", ".join(repr(u[:40]) for u in unknown[:5])
            raise _Answer(400, f"unknown query parameter(s) {shown} (arg, env, version, digest)")
        env: dict[str, str] = {}
        for pair in params.get("env", []):
            key, sep, value = pair.partition("=")
            if not sep or not key:
                raise _Answer(400, f"env {pair[:80]!r}: write env=NAME=VALUE")
            env[key] = value
        for key in ("version", "digest"):
            if len(params.get(key, [])) > 1:
                raise _Answer(400, f"{key} given {len(params[key])} times; give it once")
        if params.get("digest"):
            digest = params["digest"][0]
            if not DIGEST.fullmatch(digest):
                raise _Answer(400, f"digest {digest[:80]!r}: write sha256:<64 lower-case hex digits>")
            return tuple(params.get("arg", [])), env, f"{name}@{digest}"
        if params.get("version"):
            version = params["version"][0]
            if len(version) > 128 or not version.isascii() or not SEMVER_RE.fullmatch(version):
                raise _Answer(400, f"version {version[:80]!r} is not a semantic version (e.g. 1.2.3)")
            return tuple(params.get("arg", [])), env, f"{name}:{version}"
        return tuple(params.get("arg", [])), env, name

    def _read_body(self, length: int) -> bytes:
        """The body, read in chunks as it arrives (nothing reserved ahead of data), each charged to the budget.

        Past the budget the rest is read and dropped (so that the client, still sending, reads the 503
        instead of a reset), under the same deadline.
        """
        chunks: list[bytes] = []
        got = 0
        over: _Answer | None = None
        try:
            while got < length:
                want = min(CHUNK, length - got)
                if over is None and not self.reservation.grow(want):
                    over = self._over_budget(length - got)
                    chunks.clear()
                    self.reservation.set(0)
                chunk = self.rfile.read1(want)
                if over is None:
                    self.reservation.set(self.reservation.held - want + len(chunk))
                if not chunk:
                    raise _Answer(400, f"the client closed the body after {got} of {length} bytes", close=True)
                if over is None:
                    chunks.append(chunk)
                got += len(chunk)
        except TimeoutError:
            limit = self.server.limits.request_timeout
            raise _Answer(408, f"the request did not arrive within {limit:g} s ({got} of {length} body bytes)",
                          close=True) from None
        if over is not None:
            raise over
        if len(chunks) <= 1:
            return chunks[0] if chunks else b""
        if not self.reservation.grow(length):  # the joined copy, while the chunks still exist
            raise self._over_budget(length)
        body = b"".join(chunks)
        chunks.clear()
        self.reservation.set(self.reservation.held - length)
        return body

    def _admit(self, prepared: Prepared, body: int) -> None:
        """Reserve what this invocation can make the host hold, or refuse: 403 never fits, 503 not now."""
        limits = self.server.limits
        spec = prepared.linked.runspec.limits
        cap = spec.max_output_kib * 1024
        # linear memory; stdout and stderr each up to the cap, twice while the sandbox joins its parts; the tool
        # log; stdin here and the sandbox's two copies of it (ctypes array, WASI's vector)
        need = spec.memory_mib * MIB + 4 * cap + TOOL_LOG_BYTES + 3 * body + INVOCATION_OVERHEAD
        a = prepared.agent
        problem = None
        if spec.max_output_kib > limits.max_output_kib:
            problem = (f"maxOutputKiB {spec.max_output_kib} is over this node's ceiling of {limits.max_output_kib} KiB "
                       "(AGENTFACTORY_RUNTIME_MAX_OUTPUT_KIB)")
        elif need > self.server.budget.total:
            problem = (f"memoryMiB {spec.memory_mib} and maxOutputKiB {spec.max_output_kib} need {need / MIB:.1f} MiB "
                       f"of host memory per invocation, more than this node's whole budget of "
                       f"{limits.memory_budget_mib} MiB (AGENTFACTORY_RUNTIME_MEMORY_BUDGET_MIB)")
        if problem is not None:
            message = f"{a.name}@{a.digest}: {problem}"
            WASI_VIOLATIONS.labels(reason="node-ceiling").inc()
            if self.server.runtime.audit is not None:
                self.server.runtime.audit.record("decision", plane="runtime", agent=a.name, version=a.version,
                                                 digest=a.digest, allowed=False, reason="node-ceiling",
                                                 message=message, stage=self.server.runtime.config.stage)
            raise Refused("node-ceiling", message, None, a)
        if not self.reservation.set(need):
            raise self._over_budget(need - self.reservation.held)

    def _over_budget(self, need: int, *, close: bool = False) -> _Answer:
        budget = self.server.budget
        if self.reservation.full == "client":
            mine = budget.by_client.get(self.reservation.client, 0)
            return _Answer(503, f"this client's share of the node's memory budget is in use ({mine / MIB:.1f} of "
                                f"{budget.client_total / MIB:.0f} MiB held by its requests in flight, "
                                "AGENTFACTORY_RUNTIME_CLIENT_MEMORY_SHARE; this one needs "
                                f"{need / MIB:.1f} MiB more); retry later", retry_after=True, close=close)
        return _Answer(503, f"the node's memory budget is in use ({budget.used / MIB:.1f} of {budget.total / MIB:.0f} "
                            f"MiB held by requests in flight; this one needs {need / MIB:.1f} MiB more); retry later",
                       retry_after=True, close=close)

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
            meta = result.to_json()
            if ex.tool_log:
                meta["toolLog"] = ex.tool_log.decode("utf-8", "replace")
            length, body = json_document(meta, [("stdout", ex.stdout), ("stderr", ex.stderr)])
            self._send("invoke", code, body, "application/json", headers, length=length)
        else:
            self._send("invoke", code, ex.stdout, "application/octet-stream", headers)

    def _refused(self, exc: Refused) -> None:
        # compiling: the module is compiling off the request path (warmpool.py); compile-unavailable: the
        # node could not start a compile now (not the agent's fault, not remembered). Both are transient
        # 503s the client may retry, unlike every other refusal (a remembered compile failure is a 403).
        code = {"not-found": 404, "compile-unavailable": 503, "compiling": 503}.get(exc.reason, 403)
        doc: dict[str, Any] = {"error": str(exc), "reason": exc.reason}
        if exc.verdict is not None and exc.reason != "compiling":
            doc["verdict"] = exc.verdict.to_json()
        headers = {"Retry-After": str(RETRY_AFTER if exc.reason == "compiling" else 5)} if code == 503 else {}
        self._send("invoke", code, json.dumps(doc).encode() + b"\n", "application/json", headers)

    def _error(self, endpoint: str, code: int, message: str, retry_after: bool = False) -> None:
        headers = {"Retry-After": "1"} if retry_after else {}
        self._send(endpoint, code, json.dumps({"error": message}).encode() + b"\n", "application/json", headers)

    def _send(self, endpoint: str, code: int, body: bytes | Iterable[bytes], content_type: str,
              headers: dict[str, str] | None = None, *, length: int | None = None) -> None:
        """Head, then the body (bytes, or chunks of `length` bytes in all), all within the response deadline."""
        _REQUESTS.get(endpoint, str(code)).inc()
        if isinstance(body, bytes):
            length = len(body)
        assert length is not None
        self.writer.deadline = time.monotonic() + (self.server.limits.overflow_timeout if self.overflow
                                                   else self.server.limits.response_timeout)
        lines = [f"{self.protocol_version} {code} {self.responses[code][0]}\r\nServer: {self.version_string()}\r\n"
                 f"Date: {_http_date()}\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\n"]
        lines += [f"{k}: {v}\r\n" for k, v in (headers or {}).items()]
        if self.close_connection:
            lines.append("Connection: close\r\n")
        lines.append("\r\n")
        head = "".join(lines).encode("latin-1")  # strict, as send_header: every value here is ASCII
        if self.request_version == "HTTP/0.9":  # no status line, no header fields (as send_response_only)
            head = b""
        if isinstance(body, bytes) and len(body) <= SMALL_BODY:
            self.wfile.write(head + body)  # one segment per small response (keep-alive throughput)
            return
        self.wfile.write(head)
        if isinstance(body, bytes):
            with memoryview(body) as view:  # no copy of a large body
                for start in range(0, len(body), 4 * CHUNK):
                    self.wfile.write(view[start:start + 4 * CHUNK])
            return
        for piece in body:
            self.wfile.write(piece)


class _OverflowHandler(_Handler):
    """A connection past the slot limits: one request, a short deadline; health answers, others get 503."""

    overflow = True

    def handle(self) -> None:
        self.close_connection = True
        self.handle_one_request()

    def do_GET(self) -> None:
        self.close_connection = True
        if self.path in ("/healthz", "/readyz"):
            super().do_GET()
            return
        self._busy()

    def do_POST(self) -> None:
        self.close_connection = True
        self._busy()

    def _busy(self) -> None:
        self._error("other", 503, f"no connection slot: {self.overflow_reason}; retry later", retry_after=True)
