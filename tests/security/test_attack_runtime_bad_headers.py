"""Malformed requests: headers and queries that the standard library's parsers take, or choke on.

Before: `Content-Length: ²` (a Unicode digit: str.isdigit() is true, int() is not) and a query with more
than 600 fields raised an uncaught ValueError: no response, a traceback on stderr. Now every header the
service reads and the query are parsed strictly (ASCII digits, one Content-Length, bounded counts, UTF-8
escapes), and whatever else goes wrong in a handler is answered, never a traceback; the node keeps serving.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from runtime_attack_fixtures import agents, post
from runtime_helpers import connect_from, read_reply, serve_process

pytestmark = pytest.mark.toolchain

INVOKE = "POST /v1/agents/ok/invoke"


def _raw(port: int, request: bytes, timeout: float = 5.0) -> bytes:
    with connect_from("127.0.0.1", port, timeout=timeout) as sock:
        sock.sendall(request)
        return read_reply(sock)


CASES: list[tuple[str, int, str | None]] = [
    (f"{INVOKE} HTTP/1.1\r\nContent-Length: \u00b2\r\n", 400, "is not a number of bytes"),  # superscript two
    (f"{INVOKE} HTTP/1.1\r\nContent-Length: \u0663\r\n", 400, "is not a number of bytes"),  # Arabic-Indic three
    (f"{INVOKE} HTTP/1.1\r\nContent-Length: +3\r\n", 400, "is not a number of bytes"),
    (f"{INVOKE} HTTP/1.1\r\nContent-Length: 0x10\r\n", 400, "is not a number of bytes"),
    (f"{INVOKE} HTTP/1.1\r\nContent-Length: 1_0\r\n", 400, "is not a number of bytes"),
    (f"{INVOKE} HTTP/1.1\r\nContent-Length: -1\r\n", 400, "is not a number of bytes"),
    (f"{INVOKE} HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n", 400, "is not a number of bytes"),
    (f"{INVOKE} HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 5\r\n", 400, "sent 2 times"),
    (f"{INVOKE} HTTP/1.1\r\nTransfer-Encoding: chunked\r\n", 400, "chunked bodies are not accepted"),
    (f"{INVOKE} HTTP/1.1\r\nContent-Length: 999999999\r\n", 413, "stdin limit"),
    ("POST /nowhere HTTP/1.1\r\nContent-Length: \u00b2\r\n", 400, "is not a number of bytes"),
    ("POST /v1/agents/ok/invoke?" + "&".join(["arg=a"] * 601) + " HTTP/1.1\r\n", 400, "601 fields; at most 600"),
    ("POST /v1/agents/ok/invoke?arg=%ff%fe HTTP/1.1\r\n", 400, "the query cannot be parsed"),
    ("POST /v1/agents/ok/invoke?" + "bogus=1&" * 5 + " HTTP/1.1\r\n", 400, "unknown query parameter"),
    ("POST /v1/agents/%C3%A9/invoke HTTP/1.1\r\n", 400, "is not an agent name"),
    ("GET /v1/agents/ok/invoke?\u00b2=\u00b2 HTTP/1.1\r\n", 404, "no such endpoint"),
    ("GET /healthz HTTP/1.1\r\n" + "".join(f"X-{i}: y\r\n" for i in range(101)), 431, None),  # http.server's
    ("GET /healthz HTTP/1.1\r\nX-Long: " + "y" * 70_000 + "\r\n", 431, None),  # own limits still hold
    ("BREW /healthz HTTP/1.1\r\n", 501, None),
]


def test_malformed_requests_are_answered_never_a_traceback(tmp_path: Path) -> None:
    signed = agents(tmp_path / "home", tmp_path / "t")
    with serve_process(signed, tmp_path) as node:
        for head, status, words in CASES:  # each on a connection of its own
            reply = _raw(node.port, head.encode("utf-8") + b"Host: x\r\nConnection: close\r\n\r\n")
            assert reply.startswith(f"HTTP/1.1 {status} ".encode()), (head[:80], reply[:300])
            if words is not None:
                body = reply.split(b"\r\n\r\n", 1)[1]
                assert words in json.loads(body)["error"], (head[:80], body)
            assert post(node.port, "/v1/agents/ok/invoke")[2] == b"ok\n"  # still serving
    assert not any(b"Traceback" in line or b"Error" in line for line in node.stderr), node.stderr


def test_a_refused_request_body_is_never_read_as_the_next_request(tmp_path: Path) -> None:
    """A request refused before its body is read must not leave the body to be parsed as a request."""
    signed = agents(tmp_path / "home", tmp_path / "t")
    smuggled = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    with serve_process(signed, tmp_path) as node:
        for target in (b"/v1/agents/ok/invoke?bogus=1", b"/v1/agents/Bad_Name/invoke", b"/nowhere"):
            reply = _raw(node.port, b"POST " + target + b" HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                         % len(smuggled) + smuggled, timeout=1.0)  # a second answer would come at once
            assert reply.count(b"HTTP/1.1 ") == 1 and reply.startswith(b"HTTP/1.1 4"), reply
        # A GET's body was never read at all: a GET /healthz carrying a whole POST as its body was answered twice,
        # the smuggled invocation run and audited. Every method's body framing is now judged: a GET with a body
        # (either framing) is refused and its connection closed.
        inner = b"POST /v1/agents/ok/invoke HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
        for target in (b"/healthz", b"/readyz", b"/metrics", b"/nowhere"):
            for framing in (b"Content-Length: %d\r\n\r\n" % len(inner) + inner,
                            b"Transfer-Encoding: chunked\r\n\r\n%x\r\n" % len(inner) + inner + b"\r\n0\r\n\r\n"):
                reply = _raw(node.port, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n" + framing, timeout=1.0)
                assert reply.count(b"HTTP/1.1 ") == 1 and reply.startswith(b"HTTP/1.1 400"), (target, reply)
                assert b"carries no body" in reply and b"Connection: close" in reply, reply
        assert _raw(node.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
                    timeout=1.0).startswith(b"HTTP/1.1 200")
