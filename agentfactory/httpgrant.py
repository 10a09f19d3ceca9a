"""What an agent may ask the host's `http.fetch` tool for: URL patterns, methods, limits, secret bindings.

One model for every plane: the template declares it (`spec.http`, `spec.secrets`), the pipeline
records it in the signed run contract, and the node enforces it at every request. URLs are parsed
here by one strict grammar, for patterns and for the URLs agents send alike, so that what is
checked is exactly what is sent (no second parser with other ideas about `\\`, `%2f`, `@` or `127.1`):

- `scheme://host[:port]/path`, scheme `https` or `http`, ASCII only, no user info, no fragment;
- host: a lower-case DNS name, or a dotted-quad IPv4 literal in canonical form; numeric hosts in
  any other form (`127.1`, `2130706433`, `0x7f.0.0.1`) and IPv6 literals are refused, because
  resolvers read them as addresses the patterns never named;
- path: no `.`/`..` segments (also `%2e`), no encoded `/` or `\\` (`%2f`, `%5c`), no NUL;
- a pattern may start its host with `*.` (one or more labels under that domain, not the domain
  itself) and end its path with `*` (any path with that prefix, and any query); elsewhere `*` is
  refused. Without `*` a pattern's path must equal the URL's path (any query).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
DEFAULT_PORTS = {"https": 443, "http": 80}
MAX_URL_CHARS = 2048
# Defaults for spec.http.limits (the template may lower or raise them up to the node's ceilings).
DEFAULT_MAX_REQUESTS = 8
DEFAULT_MAX_RESPONSE_KIB = 256
DEFAULT_MAX_REQUEST_KIB = 64
DEFAULT_TIMEOUT_MS = 5000
# Headers that only the host sets: framing, routing and hop-by-hop headers, and the encoding
# (the host asks for `identity` so that a response can be scanned for secrets and is never a
# decompression bomb).
RESERVED_HEADERS = frozenset((
    "host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te", "trailer",
    "proxy-authorization", "proxy-authenticate", "proxy-connection", "expect", "accept-encoding",
))
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}")
SECRET_NAME = re.compile(r"[a-z][a-z0-9-]{0,62}")
_URL_CHARS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*")
_URL = re.compile(r"(?P<scheme>[a-z]+)://(?P<authority>[^/?#]*)(?P<path>/[^?#]*)?(?P<query>\?[^#]*)?(?:#.*)?")
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")
_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


class UrlError(ValueError):
    """A URL or pattern outside the grammar; the message says what is wrong with it."""


@dataclass(frozen=True)
class Url:
    """A URL that passed the grammar: what the host connects to and sends, component by component."""

    scheme: str
    host: str  # lower-case, no trailing dot
    port: int
    path: str  # starts with "/"
    query: str  # "" or "?…"

    @property
    def target(self) -> str:
        """The request target sent on the wire."""
        return self.path + self.query

    @property
    def origin(self) -> str:
        default = DEFAULT_PORTS[self.scheme] == self.port
        return f"{self.scheme}://{self.host}" + ("" if default else f":{self.port}")

    def shown(self) -> str:
        """The URL without its query, for audit records and messages (a query may carry data)."""
        return self.origin + self.path + ("?…" if self.query else "")


@dataclass(frozen=True)
class UrlPattern:
    text: str
    scheme: str
    host: str  # a DNS name, "*.<name>", or an IPv4 literal
    port: int
    path: str
    prefix: bool  # the path ended with "*"

    @property
    def host_label(self) -> str:
        """The pattern's host (and port when not the default): a bounded metric label, never the URL's."""
        return self.host + ("" if DEFAULT_PORTS[self.scheme] == self.port else f":{self.port}")

    def matches_host(self, host: str, port: int) -> bool:
        if port != self.port:
            return False
        if self.host.startswith("*."):
            return host.endswith(self.host[1:]) and host != self.host[2:]
        return host == self.host

    def matches(self, url: Url) -> bool:
        if url.scheme != self.scheme or not self.matches_host(url.host, url.port):
            return False
        return url.path.startswith(self.path) if self.prefix else url.path == self.path


@dataclass(frozen=True)
class HttpRule:
    pattern: UrlPattern
    methods: tuple[str, ...]


@dataclass(frozen=True)
class HttpLimits:
    max_requests: int = DEFAULT_MAX_REQUESTS  # per invocation, redirects included
    max_response_kib: int = DEFAULT_MAX_RESPONSE_KIB  # per response body
    max_request_kib: int = DEFAULT_MAX_REQUEST_KIB  # per request body
    timeout_ms: int = DEFAULT_TIMEOUT_MS  # per request (always within the invocation's deadline)


@dataclass(frozen=True)
class SecretBinding:
    """A secret the node injects as `header: format.replace("{value}", value)` into requests to `hosts`."""

    name: str
    header: str
    format: str
    hosts: tuple[str, ...]  # each equal to the host (and port) of an allow rule: "api.example.com", "*.x.com"

    def applies_to(self, url: Url) -> bool:
        return any(_binding_host_matches(h, url) for h in self.hosts)


@dataclass(frozen=True)
class HttpGrant:
    rules: tuple[HttpRule, ...]
    limits: HttpLimits
    secrets: tuple[SecretBinding, ...] = ()

    def rule_for(self, url: Url) -> HttpRule | None:
        return next((r for r in self.rules if r.pattern.matches(url)), None)

    def secrets_for(self, url: Url) -> tuple[SecretBinding, ...]:
        return tuple(s for s in self.secrets if s.applies_to(url))

    def to_json(self) -> dict[str, Any]:
        """`{"http": …, "secrets": […]}`: the template's fields, as the run contract carries them."""
        doc: dict[str, Any] = {"http": {
            "allow": [{"url": r.pattern.text, "methods": list(r.methods)} for r in self.rules],
            "limits": {"maxRequests": self.limits.max_requests, "maxResponseKiB": self.limits.max_response_kib,
                       "maxRequestKiB": self.limits.max_request_kib, "timeoutMs": self.limits.timeout_ms}}}
        if self.secrets:
            doc["secrets"] = [{"name": s.name, "header": s.header, "format": s.format, "hosts": list(s.hosts)}
                              for s in self.secrets]
        return doc


def _binding_host_matches(binding: str, url: Url) -> bool:
    host, _, port = binding.partition(":")
    if port and url.port != int(port):  # without a port: any port of that host the allowlist reaches
        return False
    if host.startswith("*."):
        return url.host.endswith(host[1:]) and url.host != host[2:]
    return url.host == host


def _host(text: str, *, wildcard: bool) -> str:
    host = text.lower()
    if host.endswith("."):
        host = host[:-1]
    if host.startswith("["):
        raise UrlError("IPv6 literals are not accepted; use a host name (the node checks every address it resolves "
                       "to)")
    name = host[2:] if wildcard and host.startswith("*.") else host
    if "*" in name:
        raise UrlError(f"host {text!r}: '*' is only allowed as the first label of a pattern ('*.example.com')")
    labels = name.split(".")
    if not name or len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise UrlError(f"host {text!r} is not a DNS name (lower-case letters, digits, '-' and '.')")
    if re.fullmatch(r"[0-9.]+", name) or _NUMERIC_LABEL.fullmatch(labels[-1]):
        parts = labels
        if host.startswith("*.") or len(parts) != 4 or not all(p.isdigit() and str(int(p)) == p and int(p) < 256
                                                                for p in parts):
            raise UrlError(f"host {text!r} is a numeric address in a non-canonical form; write a dotted-quad IPv4 "
                           "address (a.b.c.d, no leading zeros) or a host name")
    return host


def _authority(text: str, scheme: str, *, wildcard: bool) -> tuple[str, int]:
    if "@" in text:
        raise UrlError("user info ('user@host') is not allowed in a URL")
    host, colon, port = text.rpartition(":") if not text.endswith("]") else (text, "", "")
    if not colon:
        host, port = text, ""
    if colon and not (port.isdigit() and 0 < int(port) < 65536 and len(port) <= 5):
        raise UrlError(f"port {port!r} is not a number from 1 to 65535")
    return _host(host, wildcard=wildcard), int(port) if port else DEFAULT_PORTS[scheme]


def _check_path(path: str) -> None:
    if _PERCENT.search(path):
        raise UrlError("a '%' in the path is not followed by two hex digits")
    lowered = path.lower()
    for encoded, what in (("%2f", "an encoded '/'"), ("%5c", "an encoded '\\'"), ("%00", "an encoded NUL")):
        if encoded in lowered:
            raise UrlError(f"the path holds {what} ({encoded}), which servers may decode into another path")
    for segment in lowered.replace("%2e", ".").split("/"):
        if segment in (".", ".."):
            raise UrlError("the path holds a '.' or '..' segment, which servers resolve into another path")


def _split(text: str, what: str) -> re.Match[str]:
    if not isinstance(text, str) or not text:
        raise UrlError(f"the {what} is empty")
    if len(text) > MAX_URL_CHARS:
        raise UrlError(f"the {what} is {len(text)} characters; the limit is {MAX_URL_CHARS}")
    if not _URL_CHARS.fullmatch(text):
        raise UrlError(f"the {what} holds characters outside RFC 3986 (spaces, controls, non-ASCII, '\\', quotes): "
                       "percent-encode them")
    found = _URL.fullmatch(text)
    if found is None:
        raise UrlError(f"the {what} is not scheme://host/path")
    if found["scheme"] not in DEFAULT_PORTS:
        raise UrlError(f"scheme {found['scheme']!r}: only https (and http where the node allows it)")
    return found


def parse_url(text: str) -> Url:
    """An agent's URL, or UrlError naming what is wrong with it."""
    found = _split(text, "URL")
    host, port = _authority(found["authority"], found["scheme"], wildcard=False)
    path = found["path"] or "/"
    _check_path(path)
    query = found["query"] or ""
    if "*" in host:
        raise UrlError("'*' is not allowed in a URL's host")
    return Url(found["scheme"], host, port, path, query)


def parse_pattern(text: str) -> UrlPattern:
    """A template's URL pattern, or UrlError naming what is wrong with it."""
    found = _split(text, "URL pattern")
    if found["query"] or "#" in text:
        raise UrlError("a URL pattern has no query or fragment (a pattern matches any query)")
    host, port = _authority(found["authority"], found["scheme"], wildcard=True)
    path = found["path"] or "/"
    prefix = path.endswith("*")
    if prefix:
        path = path[:-1]
    if "*" in path:
        raise UrlError("'*' is only allowed at the end of a pattern's path ('/v1/*')")
    _check_path(path)
    return UrlPattern(text, found["scheme"], host, port, path, prefix)


def parse_binding_host(text: str) -> tuple[str, int | None]:
    """A secret binding's host ("api.example.com", "*.example.com", "host:8443")."""
    if not isinstance(text, str) or "/" in text or "@" in text:
        raise UrlError(f"{text!r} is not a host name (no scheme, path or user info)")
    host, colon, port = text.partition(":")
    if colon and not (port.isdigit() and 0 < int(port) < 65536 and len(port) <= 5):
        raise UrlError(f"port {port!r} is not a number from 1 to 65535")
    return _host(host, wildcard=True), int(port) if colon else None


def grant_problems(http: Any, secrets: Any) -> list[tuple[tuple[str | int, ...], str]]:
    """What is wrong with `spec.http` / `spec.secrets` beyond their JSON Schema: (field path, message) pairs.

    Shared by the template loader (with line numbers) and the run-contract parser (the node's check).
    """
    problems: list[tuple[tuple[str | int, ...], str]] = []
    rules = http.get("allow", []) if isinstance(http, dict) else []
    patterns: list[UrlPattern] = []
    for i, rule in enumerate(rules):
        try:
            patterns.append(parse_pattern(rule.get("url")))
        except UrlError as exc:
            problems.append((("spec", "http", "allow", i, "url"), f"{rule.get('url')!r}: {exc}"))
    seen: set[str] = set()
    for i, binding in enumerate(secrets or []):
        name = binding.get("name")
        if name in seen:
            problems.append((("spec", "secrets", i, "name"), f"secret {name!r} is declared twice"))
        seen.add(name)
        if str(binding.get("header", "")).lower() in RESERVED_HEADERS:
            problems.append((("spec", "secrets", i, "header"), f"secret {name!r}: header {binding.get('header')!r} "
                                                               "is set by the host only; choose another header"))
        fmt = binding.get("format", "{value}")
        if not isinstance(fmt, str) or fmt.count("{value}") != 1:
            problems.append((("spec", "secrets", i, "format"), f"secret {name!r}: format must hold '{{value}}' "
                                                               "exactly once"))
        if not isinstance(http, dict):
            problems.append((("spec", "secrets", i), f"secret {name!r}: there is no spec.http, so no request could "
                                                      "carry it; declare the hosts in spec.http.allow"))
            continue
        for j, host in enumerate(binding.get("hosts", [])):
            where: tuple[str | int, ...] = ("spec", "secrets", i, "hosts", j)
            try:
                bhost, bport = parse_binding_host(host)
            except UrlError as exc:
                problems.append((where, f"secret {name!r}: {exc}"))
                continue
            covering = [p for p in patterns if _covers(p, bhost, bport)]
            if not covering:
                problems.append((where, f"secret {name!r} is bound to host {host!r}, which no spec.http.allow "
                                        "pattern names; a secret goes only to hosts the agent may call"))
            elif any(p.scheme != "https" for p in covering):
                problems.append((where, f"secret {name!r} is bound to host {host!r}, which an allow pattern reaches "
                                        "over plain http; secrets are sent over https only"))
    return problems


def _covers(pattern: UrlPattern, host: str, port: int | None) -> bool:
    """Whether `pattern` reaches the binding's host: the same host, or a concrete host under its wildcard."""
    if port is not None and pattern.port != port:
        return False
    if pattern.host == host:
        return True
    return (pattern.host.startswith("*.") and not host.startswith("*.") and host.endswith(pattern.host[1:])
            and host != pattern.host[2:])


def from_spec(http: Any, secrets: Any) -> HttpGrant | None:
    """The grant of already-validated `spec.http` / `spec.secrets` (None when the agent declares no http)."""
    if not isinstance(http, dict):
        return None
    limits = http.get("limits", {})
    return HttpGrant(
        rules=tuple(HttpRule(parse_pattern(r["url"]), tuple(r.get("methods", ["GET"]))) for r in http["allow"]),
        limits=HttpLimits(max_requests=limits.get("maxRequests", DEFAULT_MAX_REQUESTS),
                          max_response_kib=limits.get("maxResponseKiB", DEFAULT_MAX_RESPONSE_KIB),
                          max_request_kib=limits.get("maxRequestKiB", DEFAULT_MAX_REQUEST_KIB),
                          timeout_ms=limits.get("timeoutMs", DEFAULT_TIMEOUT_MS)),
        secrets=tuple(SecretBinding(s["name"], s["header"], s.get("format", "{value}"), tuple(s["hosts"]))
                      for s in secrets or []),
    )
