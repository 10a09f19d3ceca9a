"""Real servers for the http.fetch tests, on loopback: HTTPS with its own CA, plain HTTP, and a DNS server.

- `make_ca` writes a CA and a server certificate (for `api.test`, `other.test`, `localhost`, 127.0.0.1);
- `serving` runs `http.server` (TLS with that certificate, or plain) with the routes below, and records
  every request it gets (path, headers, body);
- `dns_serving` runs a UDP DNS server answering A queries from a script: each name maps to a list of
  answers, one per query (the last repeats), so a test can change the answer between two lookups.

Routes: `/v1/json` (what was asked, as JSON), `/v1/echo` (the request headers, raw and encoded, in the
body and in an `X-Echo` header: what a careless API does with an Authorization header), `/v1/redirect?to=URL&code=N`,
`/v1/big?n=N` (N bytes, with Content-Length), `/v1/stream?n=N` (N bytes, no length, until close),
`/v1/slow?ms=N`, `/v1/gzip`, anything else 404.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import gzip
import ipaddress
import json
import socket
import ssl
import struct
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

NAMES = ("api.test", "other.test", "localhost")


@dataclass(frozen=True)
class Ca:
    ca_file: Path
    cert_file: Path
    key_file: Path


def make_ca(folder: Path, names: tuple[str, ...] = NAMES) -> Ca:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "agentfactory test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    sans.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    out = Ca(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    out.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    out.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    out.key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    return out


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Server:
    port: int
    scheme: str
    seen: list[Seen] = field(default_factory=list)

    def url(self, host: str, path: str) -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_record: Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None, *,
                length: bool = True) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if length:
            self.send_header("Content-Length", str(len(body)))
        else:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        if not length:
            self.close_connection = True

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server_record.seen.append(Seen(self.command, self.path, dict(self.headers.items()), body))
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        if url.path == "/v1/json":
            doc = {"method": self.command, "path": self.path, "body": body.decode("utf-8", "replace"),
                   "host": self.headers.get("Host")}
            self._answer(200, json.dumps(doc).encode(), {"Content-Type": "application/json"})
        elif url.path == "/v1/echo":
            raw = "\n".join(f"{k}: {v}" for k, v in self.headers.items())
            doc = {"headers": dict(self.headers.items()), "raw": raw,
                   "b64": base64.b64encode(raw.encode()).decode(),
                   "quoted": urllib.parse.quote(raw, safe="")}
            auth = self.headers.get("Authorization", "")
            self._answer(200, json.dumps(doc).encode(), {"X-Echo": auth, "Content-Type": "application/json"})
        elif url.path == "/v1/redirect":
            self._answer(int(query.get("code", "302")), b"", {"Location": query.get("to", "/")})
        elif url.path == "/v1/big":
            self._answer(200, b"x" * int(query.get("n", "0")))
        elif url.path == "/v1/stream":
            self._answer(200, b"y" * int(query.get("n", "0")), length=False)
        elif url.path == "/v1/slow":
            time.sleep(int(query.get("ms", "1000")) / 1000)  # a slow API: the client's deadline must cut it
            self._answer(200, b"late")
        elif url.path == "/v1/gzip":
            self._answer(200, gzip.compress(json.dumps(dict(self.headers.items())).encode()),
                         {"Content-Encoding": "gzip"})
        else:
            self._answer(404, b"not found")

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle


@contextlib.contextmanager
def serving(ca: Ca | None) -> Iterator[Server]:
    """An HTTPS server (or plain HTTP when `ca` is None) on 127.0.0.1, stopped on exit."""
    record = Server(port=0, scheme="https" if ca else "http")
    handler = type("Handler", (_Handler,), {"server_record": record})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    if ca is not None:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(ca.cert_file, ca.key_file)
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    record.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield record
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@dataclass
class DnsServer:
    port: int
    answers: dict[str, list[list[str]]]
    queries: list[tuple[str, int]] = field(default_factory=list)


def _dns_reply(query: bytes, server: DnsServer) -> bytes:
    ident, _flags, _qd = struct.unpack_from(">HHH", query)
    at, labels = 12, []
    while query[at]:
        labels.append(query[at + 1:at + 1 + query[at]].decode())
        at += 1 + query[at]
    qtype = struct.unpack_from(">H", query, at + 1)[0]
    question = query[12:at + 5]
    name = ".".join(labels).lower()
    server.queries.append((name, qtype))
    script = server.answers.get(name)
    if script is None:
        return struct.pack(">HHHHHH", ident, 0x8183, 1, 0, 0, 0) + question  # NXDOMAIN
    count = sum(1 for n, t in server.queries if n == name and t == 1) if qtype == 1 else 0
    addresses = script[min(max(count - 1, 0), len(script) - 1)] if qtype == 1 else []
    records = b"".join(b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 0, 4) + ipaddress.IPv4Address(a).packed
                       for a in addresses)
    return struct.pack(">HHHHHH", ident, 0x8180, 1, len(addresses), 0, 0) + question + records


@contextlib.contextmanager
def dns_serving(answers: dict[str, list[list[str]]]) -> Iterator[DnsServer]:
    """A DNS server on 127.0.0.1 (UDP, A records from `answers`; AAAA: none), stopped on exit."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.05)
    server = DnsServer(port=sock.getsockname()[1], answers=answers)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(512)
            except TimeoutError:
                continue
            with contextlib.suppress(Exception):
                sock.sendto(_dns_reply(data, server), peer)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        stop.set()
        thread.join(timeout=5)
        sock.close()


# -- the host side, as the runtime sets it up for one invocation -------------------------------------

def grant_of(allow: list[dict[str, Any]], secrets: list[dict[str, Any]] | None = None,
             limits: dict[str, int] | None = None) -> Any:
    """An HttpGrant from template-shaped fields (checked as the loader and the node check them)."""
    from agentfactory.httpgrant import from_spec, grant_problems

    http: dict[str, Any] = {"allow": allow, **({"limits": limits} if limits else {})}
    problems = grant_problems(http, secrets)
    assert not problems, problems
    return from_spec(http, secrets)


@contextlib.contextmanager
def invocation(seconds: float = 10.0) -> Iterator[None]:
    """An invocation's deadline bound on this thread, as the sandbox binds it."""
    from agentfactory import wasihost

    wasihost.bind(wasihost.Deadline(seconds))
    try:
        yield
    finally:
        wasihost.bind(None)


def audit_sink(path: Path) -> Any:
    """The runtime's audit trail (a real AuditLog file) as http.fetch's sink."""
    from agentfactory.audit import AuditLog

    log = AuditLog(path)

    def record(event: str, **fields: Any) -> None:
        log.record(event, plane="runtime", **fields)
    record.log = log  # type: ignore[attr-defined]
    return record


def audit_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# -- the build side: a template with spec.http, its loader and its policy ------------------------------

GUEST_WAT = '(module (memory (export "memory") 1) (func (export "_start")))'


def http_manifest(http_and_secrets: str, name: str = "triage") -> str:
    """agent.yaml of a small wat agent using http.fetch; `http_and_secrets` is YAML under spec (indented 2)."""
    return f"""apiVersion: agentfactory.dev/v1alpha1
kind: AgentTemplate
metadata:
  name: {name}
  version: 1.0.0
  description: Calls an API.
  owners: ["@example/team"]
spec:
  language: wat
  sources: [src/main.wat]
  tools: [http.fetch]
  limits: {{memoryMiB: 1, timeoutMs: 2000}}
  tests: {{none: "http.fetch attack tests: the agent is never built"}}
{http_and_secrets}"""


def load_http_template(root: Path, http_and_secrets: str) -> Any:
    """load_template of a template with these fields: the Template, or the ValidationFailed raised."""
    from agentfactory.errors import ValidationFailed
    from agentfactory.template import load_template

    folder = root / "triage"
    (folder / "src").mkdir(parents=True, exist_ok=True)
    (folder / "src" / "main.wat").write_text(GUEST_WAT)
    (folder / "agent.yaml").write_text(http_manifest(http_and_secrets))
    try:
        return load_template(folder)
    except ValidationFailed as exc:
        return exc


def policy_denials(template_doc: dict[str, Any], settings: Any) -> tuple[str, ...]:
    """The template policy's deny messages for `template_doc`, judged with this node's http settings."""
    from agentfactory.policy import RegoEngine

    data = json.loads((Path(__file__).resolve().parents[1] / "policies" / "data.json").read_text())
    node = {**data["agentfactory"]["config"]["node"], "http": settings.policy_config()}
    engine = RegoEngine(config={"node": node})
    decision = engine.decide("template", {"template": template_doc, "path": "templates/triage", "findings": [],
                                          "module": None, "base": None})
    assert decision.allow == (not decision.deny)
    return decision.deny


# -- a real wasm guest calling the core-module tool ---------------------------------------------------

def fetch_guest_wat(request: bytes, out_cap: int = 65536) -> str:
    """A core module that calls agentfactory.http.fetch once with `request` (JSON) and writes the answer to stdout."""
    escaped = "".join(f"\\{b:02x}" for b in request)
    return f"""(module
  (import "agentfactory" "http.fetch" (func $fetch (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 1024) "{escaped}")
  (func (export "_start")
    (local $n i32)
    (local.set $n (call $fetch (i32.const 1024) (i32.const {len(request)}) (i32.const 8192) (i32.const {out_cap})))
    (i32.store (i32.const 0) (i32.const 8192))
    (i32.store (i32.const 4) (local.get $n))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16)))))
"""


def run_fetch_guest(session: Any, request: dict[str, Any], seconds: float = 10.0) -> tuple[bytes, bytes]:
    """Run the guest under the node's WASI host and tools, with `session` as its http.fetch grant:
    (stdout, the guest's whole linear memory after the call)."""
    import wasmtime

    from agentfactory import wasihost
    from sandbox_runtime import tools
    from sandbox_runtime.engine import Engines

    engines = Engines()
    try:
        engine = engines.get(False)
        module = wasmtime.Module(engine, fetch_guest_wat(json.dumps(request).encode()))
        linker = wasmtime.Linker(engine)
        wasihost.define_wasi(linker)
        tools.define(linker, ["http.fetch"])
        out = wasihost.CappedOutput(1 << 20)
        wasi = wasmtime.WasiConfig()
        wasi.stdout_custom = out
        store = wasmtime.Store(engine)
        store.set_wasi(wasi)
        store.set_epoch_deadline(engines.deadline_ticks(int(seconds * 1000)))
        tools.bind(tools.ToolContext(http=session))
        wasihost.bind(wasihost.Deadline(seconds), (out, wasihost.CappedOutput(1 << 20)))
        try:
            instance = linker.instantiate(store, module)
            start = instance.exports(store)["_start"]
            assert isinstance(start, wasmtime.Func)
            start(store)
            memory = instance.exports(store)["memory"]
            assert isinstance(memory, wasmtime.Memory)
            image = bytes(memory.read(store, 0, memory.data_len(store)))
        finally:
            tools.bind(None)
            wasihost.bind(None)
        return out.value(), image
    finally:
        engines.close()


def secret_forms(value: str, header_value: str) -> list[bytes]:
    """How a secret could show up in bytes: raw, in its header, JSON-escaped, percent-encoded, base64."""
    import urllib.parse as up

    forms = []
    for text in (value, header_value):
        raw = text.encode()
        forms += [raw, json.dumps(text)[1:-1].encode(), up.quote(text, safe="").encode(), base64.b64encode(raw),
                  base64.urlsafe_b64encode(raw).rstrip(b"=")]
    return forms
