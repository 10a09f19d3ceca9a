"""Where an agent's request may go: host names resolved once, every address judged, the judged one used.

`http.fetch` resolves a host here, judges every address the answer holds (`classify`), and connects
to the address it judged: no second lookup happens between the check and the connection, so a DNS
answer that changes (rebinding) cannot move a request to an address that was never checked. An
answer holding any refused address refuses the request (a name that resolves to a public and a
private address is not a public name).

Address classes: `global`; `loopback` and `private` (RFC 1918, CGNAT 100.64/10, ULA fc00::/7,
site-local fec0::/10), reachable only when the node allows them; `metadata` (cloud instance
metadata services), `link-local`, `unspecified`, `multicast` and `reserved` (documentation,
benchmarking, 240/4, …), never. IPv4 embedded in IPv6 (mapped ::ffff:a.b.c.d, NAT64 64:ff9b::/96,
6to4 2002::/16) is judged as the IPv4 address it reaches.

Resolvers: the system's (`getaddrinfo`, on a pool of threads so that a hung lookup cannot outlive the
request's deadline), or a DNS server of the node's choosing queried over UDP (`--http-dns-server`),
for nodes that resolve agents' hosts through a dedicated resolver. A `getaddrinfo` cannot be
cancelled: a lookup its request gave up on keeps its thread for glibc's whole retry schedule. So one
agent may have at most MAX_LOOKUPS_PER_AGENT such abandoned lookups running (the lookups its requests
still wait for are bounded by its invocations), and the pool holds several agents' worth: four
short invocations whose names were never answered held the node's four threads for seconds, and
every other agent's `http.fetch` failed meanwhile.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import os
import secrets
import socket
import struct
import threading
from typing import Any, Protocol

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
METADATA = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle instance metadata
    "169.254.170.2",  # AWS ECS task metadata
    "169.254.169.253",  # AWS VPC DNS
    "100.100.100.200",  # Alibaba Cloud metadata
    "168.63.129.16",  # Azure wire server
    "fd00:ec2::254",  # AWS instance metadata over IPv6
))
_PRIVATE = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7", "fec0::/10"))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
MAX_ADDRESSES = 32
MAX_LOOKUPS_PER_AGENT = 2
_POOL_THREADS = 16
_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=_POOL_THREADS, thread_name_prefix="http-resolve")


class ResolveError(Exception):
    """The name could not be resolved in time; the message names the host."""


def classify(address: IP) -> str:
    """The class of an address: global, loopback, private, metadata, link-local, unspecified, multicast, reserved."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return classify(embedded)
    if address in METADATA:
        return "metadata"
    for test, name in ((address.is_unspecified, "unspecified"), (address.is_loopback, "loopback"),
                       (address.is_link_local, "link-local"), (address.is_multicast, "multicast")):
        if test:
            return name
    if any(address in net for net in _PRIVATE if net.version == address.version):
        return "private"
    return "global" if address.is_global else "reserved"


def refusal(address: IP, *, allow_loopback: bool, allow_private: bool) -> str | None:
    """Why the node refuses `address` (its class and the setting that would allow it), or None."""
    kind = classify(address)
    if kind == "global" or (kind == "loopback" and allow_loopback) or (kind == "private" and allow_private):
        return None
    hint = {"loopback": "this node does not let agents reach it (runtime --http-allow-loopback)",
            "private": "this node does not let agents reach it (runtime --http-allow-private)"}
    return f"{address} is a {kind} address; " + hint.get(kind, "agents may never reach it")


class Resolver(Protocol):
    def describe(self) -> str: ...

    def resolve(self, host: str, port: int, timeout: float, owner: str = "") -> list[IP]:
        """The addresses of `host` (at least one), or ResolveError; `owner`: the agent asking."""
        ...


def literal(host: str) -> IP | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


class SystemResolver:
    """The system's resolver (getaddrinfo), bounded by the caller's timeout and by each agent's abandoned lookups:
    those its requests gave up on that still hold a thread. The lookups an agent's requests wait for are bounded
    by its invocations (the worker share); only the abandoned ones could pile up."""

    def __init__(self) -> None:
        self._abandoned: dict[str, int] = {}
        self._lock = threading.Lock()

    def describe(self) -> str:
        return "the system resolver"

    def abandoned(self, owner: str) -> int:
        with self._lock:
            return self._abandoned.get(owner, 0)

    def resolve(self, host: str, port: int, timeout: float, owner: str = "") -> list[IP]:
        with self._lock:
            mine = self._abandoned.get(owner, 0)
            if mine >= MAX_LOOKUPS_PER_AGENT:
                raise ResolveError(f"{host}: {mine} name lookups this agent gave up on are still running, the most "
                                   "one agent may have (the system resolver cannot cancel one); retry later")
        state = {"done": False, "abandoned": False}

        def lookup() -> list[Any]:
            try:
                return socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
            finally:
                with self._lock:
                    state["done"] = True
                    if state["abandoned"]:  # its place among the agent's abandoned lookups is given back
                        left = self._abandoned.get(owner, 1) - 1
                        if left > 0:
                            self._abandoned[owner] = left
                        else:
                            self._abandoned.pop(owner, None)

        future = _POOL.submit(lookup)
        try:
            infos = future.result(timeout=max(timeout, 0.0))
        except concurrent.futures.TimeoutError:
            with self._lock:
                if not future.cancel() and not state["done"]:  # running on: it holds a thread until glibc gives up
                    state["abandoned"] = True
                    self._abandoned[owner] = self._abandoned.get(owner, 0) + 1
            raise ResolveError(f"{host}: the system resolver did not answer within {timeout:.3g} s") from None
        except socket.gaierror as exc:
            raise ResolveError(f"{host}: cannot be resolved ({exc.strerror})") from None
        found: list[IP] = []
        for info in infos:
            address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
            if address not in found:
                found.append(address)
        if not found:
            raise ResolveError(f"{host}: the resolver gave no address")
        return found[:MAX_ADDRESSES]


class DnsServerResolver:
    """A DNS server queried over UDP for A and AAAA records (no recursion of our own, no TCP fallback)."""

    def __init__(self, server: str, port: int = 53) -> None:
        address = literal(server)
        if address is None:
            raise ValueError(f"DNS server {server!r}: give an IP address")
        self.server = (str(address), port)
        self.family = socket.AF_INET6 if address.version == 6 else socket.AF_INET

    def describe(self) -> str:
        return f"the DNS server {self.server[0]}:{self.server[1]}"

    def resolve(self, host: str, port: int, timeout: float, owner: str = "") -> list[IP]:
        import time

        deadline = time.monotonic() + timeout
        found: list[IP] = []
        with socket.socket(self.family, socket.SOCK_DGRAM) as sock:
            sock.connect(self.server)  # the kernel drops answers from any other address
            for qtype in (1, 28):  # A, AAAA
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ResolveError(f"{host}: {self.describe()} did not answer within {timeout:.3g} s")
                found += [a for a in self._query(sock, host, qtype, left) if a not in found]
        if not found:
            raise ResolveError(f"{host}: {self.describe()} has no A or AAAA record for it")
        return found[:MAX_ADDRESSES]

    def _query(self, sock: socket.socket, host: str, qtype: int, timeout: float) -> list[IP]:
        ident = secrets.randbits(16)
        question = b"".join(bytes([len(p)]) + p.encode("ascii") for p in host.split(".")) + b"\0"
        sock.send(struct.pack(">HHHHHH", ident, 0x0100, 1, 0, 0, 0) + question + struct.pack(">HH", qtype, 1))
        sock.settimeout(timeout)
        try:
            while True:
                data = sock.recv(4096)
                if len(data) >= 12 and struct.unpack_from(">H", data)[0] == ident:
                    break
        except TimeoutError:
            raise ResolveError(f"{host}: {self.describe()} did not answer within {timeout:.3g} s") from None
        except OSError as exc:
            raise ResolveError(f"{host}: {self.describe()} cannot be queried ({os.strerror(exc.errno or 0)})") from None
        return _answers(data, host, qtype)


def _skip_name(data: bytes, at: int) -> int:
    for _ in range(128):
        if at >= len(data):
            raise ResolveError("a malformed DNS answer (name past the end)")
        length = data[at]
        if length & 0xC0 == 0xC0:
            return at + 2
        if length == 0:
            return at + 1
        at += 1 + length
    raise ResolveError("a malformed DNS answer (name too long)")


def _answers(data: bytes, host: str, qtype: int) -> list[IP]:
    _ident, flags, qdcount, ancount = struct.unpack_from(">HHHH", data)
    if not flags & 0x8000:
        raise ResolveError(f"{host}: the DNS server sent a query, not an answer")
    if flags & 0x0200:
        raise ResolveError(f"{host}: the DNS answer was truncated")
    rcode = flags & 0x000F
    if rcode == 3:
        return []
    if rcode != 0:
        raise ResolveError(f"{host}: the DNS server answered with error code {rcode}")
    at = 12
    for _ in range(qdcount):
        at = _skip_name(data, at) + 4
    out: list[IP] = []
    for _ in range(min(ancount, 64)):
        at = _skip_name(data, at)
        if at + 10 > len(data):
            raise ResolveError(f"{host}: a malformed DNS answer (record past the end)")
        rtype, rclass, _ttl, length = struct.unpack_from(">HHIH", data, at)
        at += 10
        rdata = data[at:at + length]
        at += length
        if len(rdata) != length:
            raise ResolveError(f"{host}: a malformed DNS answer (data past the end)")
        if rclass == 1 and rtype == qtype == 1 and length == 4:
            out.append(ipaddress.IPv4Address(rdata))
        elif rclass == 1 and rtype == qtype == 28 and length == 16:
            out.append(ipaddress.IPv6Address(rdata))
    return out
