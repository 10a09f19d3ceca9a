"""`http.fetch`: the one way out of an agent's sandbox, implemented by the host.

One implementation serves both kinds of agent: core modules call it through the `agentfactory`
import `http.fetch` (JSON in guest memory, `call_json`; tools.py does the memory), components
through the WIT function `http-fetch` (component_tools.py converts the records and calls `fetch`).

Every request, and every redirect hop (the host follows redirects itself), is judged again:

1. the URL parses under the one strict grammar (agentfactory.httpgrant) and matches an allow
   pattern of the agent's signed run contract, with one of its methods;
2. plain `http` only when the node allows it (`--http-allow-plain-http`);
3. the host is resolved once and every address of the answer is judged (http_resolve.py:
   loopback and private only when the node allows them, metadata and link-local never); the
   connection goes to the judged address (TLS is still verified for the host name), so a DNS answer
   that changes after the check cannot move the request;
4. secrets bound to the host (the contract's `secrets`, values from the node's source) are added as
   headers; the agent may not set those headers itself, never sees a value, and any copy of a value
   a server echoes back (raw, JSON-escaped, percent-encoded, base64) is replaced by `[REDACTED]`
   before the response reaches the guest; error messages are redacted too;
5. caps: requests per invocation (redirects count), request and response body sizes, and a
   per-request timeout, each the smaller of the contract's limit and the node's ceiling; the
   invocation's deadline (agentfactory.wasihost) bounds every step, a watchdog closes the socket
   when it passes.

Each hop is one audit record (`http`) and one count of
`agent_factory_wasi_http_requests_total{agent,host,code}`, where `host` is the matched allow
pattern's host (bounded by the contract, never the URL's) and `code` the status or the refusal reason.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import http
import http.client
import json
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentfactory import wasihost
from agentfactory.audit import AuditError
from agentfactory.errors import AgentFactoryError
from agentfactory.httpgrant import (
    HEADER_NAME,
    METHODS,
    RESERVED_HEADERS,
    HttpGrant,
    SecretBinding,
    Url,
    UrlError,
    grant_problems,
    parse_url,
)
from agentfactory.metrics import WASI_HTTP_REQUESTS
from agentfactory.secrets import Secret, SecretError, SecretSource

from .http_resolve import ResolveError, Resolver, SystemResolver, literal, refusal

REDIRECTS = (301, 302, 303, 307, 308)
MAX_HEADERS = 64
MAX_HEADER_BYTES = 32 * 1024
MAX_RESPONSE_HEADER_BYTES = 64 * 1024
REDACTED = b"[REDACTED]"
HOP_BY_HOP = frozenset(("connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
                        "proxy-connection"))
_KNOWN_STATUS = frozenset(int(s) for s in http.HTTPStatus)
AuditSink = Callable[..., Any]


class FetchError(AgentFactoryError):
    """A refused or failed request: `reason` is the metric code, the message says what and why (no secret)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class FetchRequest:
    """What the agent asks for (the WIT `request` record)."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None


@dataclass(frozen=True)
class FetchResponse:
    """What the agent gets (the WIT `response` record): the final hop's status, headers and body."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


@dataclass(frozen=True)
class HttpSettings:
    """The node's side: what it lets any agent reach, and its ceilings over every contract's limits."""

    allow_plain_http: bool = False
    allow_loopback: bool = False
    allow_private: bool = False
    max_requests: int = 32
    max_response_kib: int = 4096
    max_request_kib: int = 1024
    max_timeout_ms: int = 30_000
    max_redirects: int = 5
    ca_file: Path | None = None  # trust roots for outbound TLS (default: the system's)
    # (host, port) -> (address, port): connect there instead of resolving (curl's --connect-to); the
    # address is judged like any resolved one, and TLS is still verified for the URL's host name
    connect_to: tuple[tuple[str, int, str, int], ...] = ()

    def connect_target(self, host: str, port: int) -> tuple[str, int] | None:
        """The (address, port) the node's --http-connect-to sends `host:port` to, or None."""
        return next(((a, p) for h, hp, a, p in self.connect_to if (h, hp) == (host, port)), None)

    def policy_config(self) -> dict[str, Any]:
        """`config.node.http` for the template policy (policies/http.rego), so it judges by this node."""
        return {"allow_plain_http": self.allow_plain_http, "allow_loopback": self.allow_loopback,
                "allow_private": self.allow_private, "max_requests": self.max_requests,
                "max_response_kib": self.max_response_kib, "max_request_kib": self.max_request_kib,
                "max_timeout_ms": self.max_timeout_ms}


class HttpNode:
    """The node's http.fetch: settings, secret source, resolver, TLS trust and audit sink, shared by sessions."""

    def __init__(self, settings: HttpSettings | None = None, secrets: SecretSource | None = None, *,
                 resolver: Resolver | None = None, audit: AuditSink | None = None) -> None:
        self.settings = settings or HttpSettings()
        self.secrets = secrets
        self.resolver = resolver or SystemResolver()
        self.audit = audit
        tls = ssl.create_default_context(cafile=str(self.settings.ca_file) if self.settings.ca_file else None)
        tls.minimum_version = ssl.TLSVersion.TLSv1_2
        self.tls = tls

    def with_audit(self, audit: AuditSink) -> HttpNode:
        """This node (settings, secrets, resolver, TLS trust shared) recording into `audit`: a runtime given a
        node without a sink records into its own trail through a copy, never by changing a node that other
        runtimes share or that outlives it (their records would go to its trail, closed or not)."""
        node = copy.copy(self)
        node.audit = audit
        return node

    def check_grant(self, grant: HttpGrant) -> list[str]:
        """What this node refuses in a signed run contract before the agent runs (each names the field)."""
        s = self.settings
        problems = [f"{'.'.join(str(p) for p in path)}: {msg}" for path, msg in grant_problems(*_raw(grant))]
        for i, rule in enumerate(grant.rules):
            p = rule.pattern
            if p.scheme == "http" and not s.allow_plain_http:
                problems.append(f"spec.http.allow[{i}].url: {p.text!r} is plain http, which this node refuses "
                                "(runtime --http-allow-plain-http)")
            address = literal(p.host)
            why = refusal(address, allow_loopback=s.allow_loopback, allow_private=s.allow_private) if address \
                else None
            if why:
                problems.append(f"spec.http.allow[{i}].url: {p.text!r}: {why}")
        lim = grant.limits
        for name, value, ceiling, flag in (
                ("maxRequests", lim.max_requests, s.max_requests, "--http-max-requests"),
                ("maxResponseKiB", lim.max_response_kib, s.max_response_kib, "--http-max-response-kib"),
                ("maxRequestKiB", lim.max_request_kib, s.max_request_kib, "--http-max-request-kib"),
                ("timeoutMs", lim.timeout_ms, s.max_timeout_ms, "--http-max-timeout-ms")):
            if value > ceiling:
                problems.append(f"spec.http.limits.{name} is {value}, above this node's ceiling of {ceiling} "
                                f"(runtime {flag})")
        if grant.secrets and self.secrets is None:
            problems.append(f"spec.secrets: the agent needs secrets ({', '.join(b.name for b in grant.secrets)}) and "
                            "this node has no secret source (runtime --secrets vault|env)")
        return problems

    def session(self, agent: str, grant: HttpGrant) -> FetchSession:
        return FetchSession(self, agent, grant)


def _raw(grant: HttpGrant) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    doc = grant.to_json()
    return doc["http"], doc.get("secrets", [])


@dataclass
class _Hop:
    """What one request on the wire sent and got, for the audit record and the redirect decision."""

    url: Url | None
    method: str
    host: str = "-"
    recorded: bool = True
    address: str | None = None
    port: int = 0  # the port connected to: the URL's, unless the node's --http-connect-to says otherwise
    status: int | None = None
    sent: int = 0
    received: int = 0
    secrets: tuple[str, ...] = ()
    redacted: int = 0
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


class FetchSession:
    """http.fetch for one invocation of one agent: its grant, its counters, its secrets (read lazily)."""

    def __init__(self, node: HttpNode, agent: str, grant: HttpGrant) -> None:
        self.node = node
        self.agent = agent
        self.grant = grant
        s, lim = node.settings, grant.limits
        self.max_requests = min(lim.max_requests, s.max_requests)
        self.max_response = min(lim.max_response_kib, s.max_response_kib) * 1024
        self.max_request = min(lim.max_request_kib, s.max_request_kib) * 1024
        self.timeout = min(lim.timeout_ms, s.max_timeout_ms) / 1000
        self.requests = 0
        self._over = False
        self._values: dict[str, Secret] = {}
        self._lock = threading.Lock()  # a guest is one thread, but a component host may call from another

    # -- the call ---------------------------------------------------------------------------------
    def fetch(self, request: FetchRequest) -> FetchResponse:
        """Send `request` under the grant; FetchError (redacted) when it is refused or fails."""
        with self._lock:
            try:
                return self._fetch(request)
            except FetchError as exc:
                raise FetchError(exc.reason, self._redact_text(str(exc))) from None

    def _fetch(self, request: FetchRequest) -> FetchResponse:
        try:
            method, headers, body = _check_request(request, self.max_request)
            try:
                url = parse_url(request.url)
            except UrlError as exc:
                raise FetchError("bad-url", f"http.fetch: URL {_shown(request.url)}: {exc}") from None
        except FetchError as exc:
            _, audit = self._turn()
            raise self._refuse("-", exc.reason, str(exc), _shown(request.url), audit=audit) from None
        redirects = 0
        while True:
            hop = self._send(url, method, headers, body, redirects)
            location = dict((k.lower(), v) for k, v in hop.headers).get("location")
            if hop.status not in REDIRECTS or location is None:
                return FetchResponse(hop.status or 0, tuple(hop.headers), hop.body)
            redirects += 1
            if redirects > self.node.settings.max_redirects:
                raise self._refuse(hop.host, "redirect-limit", f"http.fetch: more than "
                                   f"{self.node.settings.max_redirects} redirects from {url.shown()}", url.shown())
            try:
                url = _follow(url, location)
            except UrlError as exc:
                raise self._refuse(hop.host, "redirect", f"http.fetch: {url.shown()} redirected to "
                                   f"{_shown(location)}, which is refused: {exc}", _shown(location)) from None
            if hop.status == 303 or (hop.status in (301, 302) and method == "POST"):
                method, body = ("HEAD" if method == "HEAD" else "GET"), None

    def _send(self, url: Url, method: str, headers: list[tuple[str, str]], body: bytes | None,
              redirects: int) -> _Hop:
        """One request on the wire, judged first; audited and counted whatever happens."""
        hop = _Hop(url=url, method=method)
        started = time.monotonic()
        code, error = "error", None
        try:
            self._judge(hop, url, method, headers, redirects)
            self._wire(hop, headers, body)
            code = _status_code(hop.status)
            return hop
        except FetchError as exc:
            code, error = exc.reason, exc
            raise
        finally:
            self._count(hop.host, code)
            if hop.recorded:
                self._audit(hop, code, error, time.monotonic() - started)

    def _judge(self, hop: _Hop, url: Url, method: str, headers: list[tuple[str, str]], redirects: int) -> None:
        via = f" (redirect {redirects})" if redirects else ""
        within, hop.recorded = self._turn()
        if not within:
            raise FetchError("request-limit", f"http.fetch: {url.shown()}{via}: the agent already made "
                             f"{self.max_requests} requests in this invocation, its limit "
                             "(spec.http.limits.maxRequests and the node's ceiling; redirects count)")
        rule = self.grant.rule_for(url)
        if rule is None:
            raise FetchError("not-allowed", f"http.fetch: {url.shown()}{via} matches none of the agent's allowed "
                             "URL patterns (spec.http.allow)")
        hop.host = rule.pattern.host_label
        if method not in rule.methods:
            raise FetchError("method", f"http.fetch: {method} {url.shown()}{via}: the pattern "
                             f"{rule.pattern.text!r} allows only {', '.join(rule.methods)}")
        if url.scheme == "http" and not self.node.settings.allow_plain_http:
            raise FetchError("plain-http", f"http.fetch: {url.shown()}{via} is plain http, which this node refuses "
                             "(runtime --http-allow-plain-http)")
        bindings = self.grant.secrets_for(url)
        for name, _ in headers:
            bound = next((b for b in bindings if b.header.lower() == name.lower()), None)
            if bound is not None:
                raise FetchError("header", f"http.fetch: header {name} is set by the node from secret "
                                 f"{bound.name!r} for {url.host}; remove it from the request")
        if bindings and url.scheme != "https":
            raise FetchError("secret", f"http.fetch: {url.shown()}{via}: secrets are sent over https only")
        hop.secrets = tuple(b.name for b in bindings)
        hop.address, hop.port = self._address(url, via)

    def _address(self, url: Url, via: str) -> tuple[str, int]:
        s = self.node.settings
        fixed, port = literal(url.host), url.port
        target = s.connect_target(url.host, url.port)
        if target is not None:
            fixed, port = literal(target[0]), target[1]
        if fixed is not None:
            addresses = [fixed]
        else:
            try:
                addresses = self.node.resolver.resolve(url.host, url.port, self._time_left(url), self.agent)
            except ResolveError as exc:
                raise FetchError("dns", f"http.fetch: {url.shown()}{via}: {exc}") from None
        for address in addresses:
            why = refusal(address, allow_loopback=s.allow_loopback, allow_private=s.allow_private)
            if why is not None:
                raise FetchError("address", f"http.fetch: {url.shown()}{via}: {url.host} resolves to {why}")
        return str(addresses[0]), port

    def _time_left(self, url: Url) -> float:
        left = min(self.timeout, wasihost.current().remaining())
        if left <= 0:
            raise FetchError("deadline", f"http.fetch: {url.shown()}: the invocation's deadline has passed")
        return left

    # -- the wire ---------------------------------------------------------------------------------
    def _wire(self, hop: _Hop, headers: list[tuple[str, str]], body: bytes | None) -> None:
        url = hop.url
        assert url is not None and hop.address is not None
        injected = self._inject(url)
        timeout = self._time_left(url)
        conn = _PinnedConnection(url.host, url.port, (hop.address, hop.port), timeout,
                                 self.node.tls if url.scheme == "https" else None)
        watchdog = threading.Timer(timeout, conn.abort)
        watchdog.daemon = True
        watchdog.start()
        try:
            conn.putrequest(hop.method, url.target, skip_accept_encoding=True)
            conn.putheader("Accept-Encoding", "identity")
            for name, value in [*headers, *injected]:
                conn.putheader(name, value)
            if body is not None or hop.method in ("POST", "PUT", "PATCH"):
                conn.putheader("Content-Length", str(len(body or b"")))
            conn.endheaders(body or None)
            hop.sent = len(body or b"")
            response = conn.getresponse()
            hop.status = response.status
            hop.headers = self._response_headers(response, url)
            hop.body = self._read_body(response, hop)
            if conn.aborted:  # a body read until close ends quietly when the watchdog shuts the socket
                raise TimeoutError("deadline")
        except FetchError:
            raise
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise _network_error(exc, url, timeout, conn.aborted) from None
        finally:
            watchdog.cancel()
            conn.close()
        if injected:
            hop.headers, hop.body, hop.redacted = self._redact(hop.headers, hop.body, injected)
            encoding = dict((k.lower(), v) for k, v in hop.headers).get("content-encoding", "identity")
            if encoding.lower() != "identity":
                raise FetchError("encoding", f"http.fetch: {url.shown()} answered with Content-Encoding {encoding!r} "
                                 "to a request that carried a secret; such a body cannot be checked for the secret, "
                                 "so it is withheld")

    def _inject(self, url: Url) -> list[tuple[str, str]]:
        bindings = self.grant.secrets_for(url)
        if not bindings:
            return []
        values = self._secret_values(bindings, url)
        return [(b.header, b.format.replace("{value}", values[b.name].reveal())) for b in bindings]

    def _secret_values(self, bindings: Iterable[SecretBinding], url: Url) -> dict[str, Secret]:
        names = [b.name for b in bindings if b.name not in self._values]
        if names:
            if self.node.secrets is None:
                raise FetchError("secret", f"http.fetch: {url.shown()} needs secret {names[0]!r}, and this node has "
                                 "no secret source (runtime --secrets vault|env)")
            try:
                self._values.update(self.node.secrets.read(self.agent, names, self._time_left(url)))
            except SecretError as exc:
                raise FetchError("secret", f"http.fetch: {url.shown()}: {exc}") from None
        return self._values

    def _response_headers(self, response: http.client.HTTPResponse, url: Url) -> list[tuple[str, str]]:
        out, size = [], 0
        for name, value in response.getheaders():
            size += len(name) + len(value) + 4
            if size > MAX_RESPONSE_HEADER_BYTES:
                raise FetchError("too-large", f"http.fetch: {url.shown()} answered with more than "
                                 f"{MAX_RESPONSE_HEADER_BYTES} bytes of headers")
            if name.lower() not in HOP_BY_HOP:
                out.append((name, value))
        return out

    def _read_body(self, response: http.client.HTTPResponse, hop: _Hop) -> bytes:
        if hop.method == "HEAD":
            return b""
        declared = response.getheader("Content-Length")
        cap = self.max_response
        shown = hop.url.shown() if hop.url else "-"
        if declared is not None and declared.isdigit() and int(declared) > cap:
            raise FetchError("too-large", f"http.fetch: {shown} declares a {declared}-byte body, more "
                             f"than the {cap // 1024} KiB cap (spec.http.limits.maxResponseKiB and the node's "
                             "ceiling)")
        data = response.read(cap + 1)
        hop.received = len(data)
        if len(data) > cap:
            raise FetchError("too-large", f"http.fetch: {shown} sent a body of more than the "
                             f"{cap // 1024} KiB cap (spec.http.limits.maxResponseKiB and the node's ceiling); "
                             "it was cut off there and withheld")
        return data

    # -- secrets out of everything the agent sees ------------------------------------------------
    def _forms(self, injected: list[tuple[str, str]] | None = None) -> list[bytes]:
        """Every secret value this session holds, and the header values made from them, as a server may echo them."""
        texts = {s.reveal() for s in self._values.values()} | {v for _, v in injected or []}
        forms: set[bytes] = set()
        for text in texts:
            raw = text.encode()
            forms |= {raw, json.dumps(text)[1:-1].encode(), urllib.parse.quote(text, safe="").encode(),
                      urllib.parse.quote_plus(text).encode(), base64.b64encode(raw),
                      base64.urlsafe_b64encode(raw).rstrip(b"=")}
        return sorted((f for f in forms if f), key=len, reverse=True)

    def _redact(self, headers: list[tuple[str, str]], body: bytes,
                injected: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], bytes, int]:
        count = 0
        forms = self._forms(injected)
        for form in forms:
            count += body.count(form)
            body = body.replace(form, REDACTED)
        clean = []
        for name, value in headers:
            raw = value.encode("latin-1", "replace")
            for form in forms:
                count += raw.count(form)
                raw = raw.replace(form, REDACTED)
            clean.append((name, raw.decode("latin-1")))
        return clean, body, count

    def _redact_text(self, text: str) -> str:
        raw = text.encode("utf-8", "replace")
        for form in self._forms():
            raw = raw.replace(form, REDACTED)
        return raw.decode("utf-8", "replace")

    # -- records ----------------------------------------------------------------------------------
    def _turn(self) -> tuple[bool, bool]:
        """Count one attempt (a call, or a redirect hop) against maxRequests: (within the limit, to be audited).

        Past the limit every attempt is refused and only the first refusal is audited, so a guest calling
        in a loop cannot flood the audit trail (the metric still counts each one).
        """
        self.requests += 1
        if self.requests <= self.max_requests:
            return True, True
        first = not self._over
        self._over = True
        return False, first

    def _refuse(self, host: str, reason: str, message: str, shown: str, *, audit: bool = True) -> FetchError:
        """A refusal outside a hop (a malformed request, a redirect that cannot be followed): counted, audited."""
        self._count(host, reason)
        if audit:
            self._audit(_Hop(url=None, method="-", host=host), reason, FetchError(reason, message), 0.0, shown=shown)
        return FetchError(reason, message)

    def _count(self, host: str, code: str) -> None:
        WASI_HTTP_REQUESTS.labels(agent=self.agent, host=host, code=code).inc()

    def _audit(self, hop: _Hop, code: str, error: FetchError | None, seconds: float, shown: str | None = None) -> None:
        if self.node.audit is None:
            return
        fields: dict[str, Any] = {
            "agent": self.agent, "method": hop.method, "url": shown or (hop.url.shown() if hop.url else "-"),
            "host": hop.host,
            "address": hop.address, "code": code, "status": hop.status, "bytesSent": hop.sent,
            "bytesReceived": hop.received, "ms": round(seconds * 1000, 3), "secrets": list(hop.secrets),
            "redacted": hop.redacted, "allowed": error is None,
        }
        if error is not None:
            fields["message"] = self._redact_text(str(error))
        try:
            self.node.audit("http", **fields)
        except AuditError:
            raise FetchError("audit", "http.fetch: the request could not be recorded in the audit trail; its "
                             "response is withheld") from None


class _PinnedConnection(http.client.HTTPConnection):
    """HTTP(S) to `host` over a connection to the already-judged `address`: no second DNS lookup, TLS
    verified (and SNI sent) for the host name. `abort` (the watchdog) shuts the socket down at the deadline."""

    def __init__(self, host: str, port: int, address: tuple[str, int], timeout: float,
                 tls: ssl.SSLContext | None) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address, self._tls = address, tls
        self._raw: socket.socket | None = None
        self.aborted = False

    def connect(self) -> None:
        raw = socket.create_connection(self._address, self.timeout)
        self._raw = raw
        if self.aborted:
            raw.close()
            raise TimeoutError("deadline")
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = self._tls.wrap_socket(raw, server_hostname=self.host) if self._tls else raw

    def abort(self) -> None:
        self.aborted = True
        raw = self._raw
        if raw is not None:
            with contextlib.suppress(OSError):
                raw.shutdown(socket.SHUT_RDWR)


def _network_error(exc: BaseException, url: Url, timeout: float, aborted: bool) -> FetchError:
    if aborted or isinstance(exc, TimeoutError):
        return FetchError("timeout", f"http.fetch: {url.shown()} did not answer within {timeout:.3g} s (the request's "
                          "timeout, bounded by the invocation's deadline)")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return FetchError("tls", f"http.fetch: {url.shown()}: the server's certificate is not trusted for {url.host} "
                          f"({exc.verify_message})")
    if isinstance(exc, ssl.SSLError):
        return FetchError("tls", f"http.fetch: {url.shown()}: TLS failed ({exc.reason or type(exc).__name__})")
    if isinstance(exc, ConnectionRefusedError):
        return FetchError("connect", f"http.fetch: {url.shown()}: connection refused")
    if isinstance(exc, http.client.HTTPException):
        return FetchError("bad-response", f"http.fetch: {url.shown()}: not a valid HTTP response "
                          f"({type(exc).__name__})")
    return FetchError("connect", f"http.fetch: {url.shown()}: {type(exc).__name__}")


def _status_code(status: int | None) -> str:
    if status is None:
        return "error"
    return str(status) if status in _KNOWN_STATUS else f"{status // 100}xx"


def _shown(text: Any) -> str:
    """An agent's or server's string in a message: printable, bounded, quoted."""
    s = str(text)
    s = "".join(c if c.isprintable() and ord(c) < 0x7F else "?" for c in s)
    return repr(s[:200] + ("…" if len(s) > 200 else ""))


def _follow(current: Url, location: str) -> Url:
    if len(location) > 2048 or not location.isascii() or not location.isprintable():
        raise UrlError("the Location header is not a printable ASCII URL")
    return parse_url(urllib.parse.urljoin(current.origin + current.target, location))


def _check_request(request: FetchRequest, max_body: int) -> tuple[str, list[tuple[str, str]], bytes | None]:
    method = request.method
    if method not in METHODS:
        raise FetchError("bad-request", f"http.fetch: method {_shown(method)} is not one of {', '.join(METHODS)}")
    headers = list(request.headers)
    if len(headers) > MAX_HEADERS:
        raise FetchError("bad-request", f"http.fetch: {len(headers)} headers; at most {MAX_HEADERS}")
    size = 0
    for name, value in headers:
        if not isinstance(name, str) or not HEADER_NAME.fullmatch(name):
            raise FetchError("bad-request", f"http.fetch: header name {_shown(name)} is not an HTTP token")
        if name.lower() in RESERVED_HEADERS:
            raise FetchError("header", f"http.fetch: header {name} is set by the host only; remove it")
        if not isinstance(value, str) or any(not (c == "\t" or " " <= c <= "~") for c in value):
            raise FetchError("bad-request", f"http.fetch: header {name}: the value must be printable ASCII "
                             "(no CR, LF or other controls)")
        size += len(name) + len(value)
    if size > MAX_HEADER_BYTES:
        raise FetchError("bad-request", f"http.fetch: {size} bytes of headers; at most {MAX_HEADER_BYTES}")
    body = request.body
    if body is not None and len(body) > max_body:
        raise FetchError("too-large", f"http.fetch: a {len(body)}-byte request body, more than the "
                         f"{max_body // 1024} KiB cap (spec.http.limits.maxRequestKiB and the node's ceiling)")
    if body is not None and method in ("GET", "HEAD"):
        raise FetchError("bad-request", f"http.fetch: a {method} request has no body")
    return method, headers, body


# -- the invocation's session, and the entry points of both kinds of agent ---------------------------
_current = threading.local()


def bind(session: FetchSession | None) -> None:
    """Make `session` the one http.fetch serves on this thread (None when the invocation ends)."""
    _current.session = session


def current() -> FetchSession | None:
    return getattr(_current, "session", None)


def fetch(request: FetchRequest) -> FetchResponse:
    """The component tool (WIT `http-fetch`): `request` under the current invocation's grant.

    FetchError when refused or failed (its message is the WIT error string: it never holds a secret).
    The caller checks the invocation's deadline before and after (as every tool does).
    """
    session = current()
    if session is None:
        raise FetchError("not-granted", "http.fetch: this agent's run contract grants no http (spec.http), or no "
                         "invocation is running")
    return session.fetch(request)


MAX_REQUEST_JSON = 2 * 1024 * 1024


def call_json(data: bytes) -> bytes:
    """The core-module tool: a JSON request in, a JSON response or error out (docs/runtime.md, http.fetch).

    In: `{"method": "GET", "url": "https://…", "headers": [["Name", "value"], …], "body": "text"}` (or
    `"bodyBase64"`). Out: `{"status": 200, "headers": [[…]], "body": "text"}` (`bodyBase64` when the body is
    not UTF-8), or `{"error": {"reason": "not-allowed", "message": "…"}}`.
    """
    try:
        request = _request_from_json(data)
        response = fetch(request)
    except FetchError as exc:
        return json.dumps({"error": {"reason": exc.reason, "message": str(exc)}}).encode()
    doc: dict[str, Any] = {"status": response.status, "headers": [list(h) for h in response.headers]}
    try:
        doc["body"] = response.body.decode("utf-8")
    except UnicodeDecodeError:
        doc["bodyBase64"] = base64.b64encode(response.body).decode("ascii")
    return json.dumps(doc, ensure_ascii=False).encode("utf-8")


def _request_from_json(data: bytes) -> FetchRequest:
    if len(data) > MAX_REQUEST_JSON:
        raise FetchError("bad-request", f"http.fetch: the request document is over {MAX_REQUEST_JSON} bytes")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise FetchError("bad-request", f"http.fetch: the request is not UTF-8 JSON ({type(exc).__name__})") from None
    if not isinstance(doc, dict) or set(doc) - {"method", "url", "headers", "body", "bodyBase64"}:
        raise FetchError("bad-request", "http.fetch: the request is an object with method, url, headers and body "
                         "(or bodyBase64), nothing else")
    headers = doc.get("headers", [])
    if not isinstance(headers, list) or not all(isinstance(h, list) and len(h) == 2 and all(isinstance(x, str)
                                                                                           for x in h)
                                                for h in headers):
        raise FetchError("bad-request", "http.fetch: headers is a list of [name, value] string pairs")
    if "body" in doc and "bodyBase64" in doc:
        raise FetchError("bad-request", "http.fetch: give body or bodyBase64, not both")
    body: bytes | None = None
    if isinstance(doc.get("body"), str):
        body = doc["body"].encode("utf-8")
    elif isinstance(doc.get("bodyBase64"), str):
        try:
            body = base64.b64decode(doc["bodyBase64"], validate=True)
        except ValueError:
            raise FetchError("bad-request", "http.fetch: bodyBase64 is not base64") from None
    elif doc.get("body", doc.get("bodyBase64")) is not None:
        raise FetchError("bad-request", "http.fetch: body is a string")
    method, url = doc.get("method", "GET"), doc.get("url")
    if not isinstance(method, str) or not isinstance(url, str):
        raise FetchError("bad-request", "http.fetch: method and url are strings")
    return FetchRequest(method=method, url=url, headers=tuple((h[0], h[1]) for h in headers), body=body)
