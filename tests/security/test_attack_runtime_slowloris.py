"""Slowloris against the node: headers or a body trickled in, one byte or line at a time, on many connections.

Before: the socket timeout was per recv, so 256 connections sending a header line every 12 s blocked every
new connection (/healthz too) for as long as they liked, and a 16 MiB body at a byte per 20 s held its
connection (and 16 MiB reserved ahead of the data) for minutes. Now each request has a whole deadline for
headers and for the body, each client address has a connection limit, bodies are charged as they arrive,
and a connection past every slot can still ask /healthz.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest
from runtime_attack_fixtures import SPIN_WAT, agents, get, metric, post
from runtime_helpers import connect_from, read_reply, serve_process, wat_manifest

pytestmark = pytest.mark.toolchain

HEADER_TIMEOUT, REQUEST_TIMEOUT = 1.5, 3.0
LIMITS = {"AGENTFACTORY_RUNTIME_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
          "AGENTFACTORY_RUNTIME_REQUEST_TIMEOUT": str(REQUEST_TIMEOUT),
          "AGENTFACTORY_RUNTIME_MAX_CONNECTIONS": "24",
          "AGENTFACTORY_RUNTIME_MAX_CONNECTIONS_PER_CLIENT": "12",
          "AGENTFACTORY_RUNTIME_OVERFLOW_CONNECTIONS": "8",
          "AGENTFACTORY_RUNTIME_OVERFLOW_TIMEOUT": "1"}


def _trickle_headers(sock: socket.socket, stop: threading.Event, closed_after: list[float]) -> None:
    """A request line, then one header line every 0.3 s, for ever: until the server closes."""
    started = time.monotonic()
    try:
        sock.sendall(b"POST /v1/agents/ok/invoke HTTP/1.1\r\nHost: x\r\n")
        i = 0
        while not stop.is_set():
            sock.sendall(f"X-Slow-{i}: y\r\n".encode())
            i += 1
            if stop.wait(0.3):
                return
            sock.setblocking(False)
            try:
                if sock.recv(1) == b"":
                    break
            except BlockingIOError:
                pass
            finally:
                sock.setblocking(True)
    except OSError:
        pass
    closed_after.append(time.monotonic() - started)


def test_trickled_headers_are_cut_at_the_deadline_and_health_still_answers(tmp_path: Path) -> None:
    signed = agents(tmp_path / "home", tmp_path / "t")
    with serve_process(signed, tmp_path, env=LIMITS) as node:
        stop = threading.Event()
        closed_after: list[float] = []
        attackers = []
        threads = []
        # Two attacker addresses, 12 connections each: every main slot (24) taken, and more beyond.
        for source in ("127.0.0.2", "127.0.0.3"):
            for _ in range(12):
                sock = connect_from(source, node.port)
                attackers.append(sock)
                t = threading.Thread(target=_trickle_headers, args=(sock, stop, closed_after), daemon=True)
                t.start()
                threads.append(t)
        try:
            time.sleep(0.3)
            # A 13th connection from an attacker address is past its per-client limit: a clear 503, at once.
            with connect_from("127.0.0.2", node.port) as extra:
                extra.sendall(b"POST /v1/agents/ok/invoke HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
                reply = read_reply(extra)
            assert reply.startswith(b"HTTP/1.1 503"), reply[:200]
            assert b"Retry-After: 1" in reply and b"most this node serves to one client address" in reply
            # Every slot is taken, yet the kubelet's probe is answered (the overflow lane), fast.
            status, body, seconds = get(node.port, "/healthz")
            assert (status, body) == (200, b"ok\n") and seconds < 1.0
            assert get(node.port, "/readyz")[0] == 200
            status, headers, body = post(node.port, "/v1/agents/ok/invoke")
            assert status == 503 and headers["Retry-After"] == "1" and b"connections at once" in body
            # The trickling connections are cut at the header deadline, although each keeps sending.
            for t in threads:
                t.join(timeout=HEADER_TIMEOUT + 3)
            assert len(closed_after) == len(threads), "a trickling connection outlived the header deadline"
            assert max(closed_after) < HEADER_TIMEOUT + 1.5, closed_after
            # Their slots are free again: normal service.
            status, _, body = post(node.port, "/v1/agents/ok/invoke")
            assert (status, body) == (200, b"ok\n")
        finally:
            stop.set()
            for sock in attackers:
                sock.close()
        assert not any(b"Traceback" in line for line in node.stderr)


def test_a_trickled_body_is_cut_at_the_request_deadline_and_reserves_nothing_ahead(tmp_path: Path) -> None:
    signed = agents(tmp_path / "home", tmp_path / "t")
    with serve_process(signed, tmp_path, env=LIMITS) as node:
        socks = []
        started = time.monotonic()
        for _ in range(8):  # each declares the 16 MiB maximum, then sends a byte now and then
            sock = connect_from("127.0.0.2", node.port, timeout=REQUEST_TIMEOUT + 3)
            sock.sendall(b"POST /v1/agents/cat/invoke HTTP/1.1\r\nHost: x\r\nContent-Length: 16777216\r\n\r\nab")
            socks.append(sock)
        try:
            time.sleep(0.5)
            for sock in socks:
                sock.sendall(b"c")
            # Nothing is held for bodies that have not arrived: 8 x 16 MiB declared, a few bytes charged.
            used = metric(node.port, 'agent_factory_runtime_memory_budget_bytes{state="used"}')
            assert used < 1024 * 1024, used
            assert get(node.port, "/healthz")[0] == 200
            for sock in socks:
                reply = read_reply(sock)
                assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
                assert b"did not arrive within 3 s" in reply and b"3 of 16777216 body bytes" in reply
            assert time.monotonic() - started < REQUEST_TIMEOUT + 2
        finally:
            for sock in socks:
                sock.close()
        assert metric(node.port, 'agent_factory_runtime_memory_budget_bytes{state="used"}') == 0
        status, _, body = post(node.port, "/v1/agents/cat/invoke", b"still fine")
        assert (status, body) == (200, b"still fine")


def test_health_is_answered_while_every_worker_is_busy(tmp_path: Path) -> None:
    signed = agents(tmp_path / "home", tmp_path / "t", **{
        "spin": (wat_manifest("spin", timeout_ms=2000), {"src/main.wat": SPIN_WAT}),
    })
    with serve_process(signed, tmp_path, workers=1, env={"AGENTFACTORY_RUNTIME_QUEUE_WAIT": "0.5"}) as node:
        busy = threading.Thread(target=post, args=(node.port, "/v1/agents/spin/invoke"))
        busy.start()
        time.sleep(0.3)  # the only worker is spinning for 2 s
        status, body, seconds = get(node.port, "/healthz")
        assert (status, body) == (200, b"ok\n") and seconds < 0.5
        assert get(node.port, "/readyz")[0] == 200 and get(node.port, "/metrics")[0] == 200
        status, headers, body = post(node.port, "/v1/agents/ok/invoke")
        assert status == 503 and headers["Retry-After"] == "1" and b"every worker is busy" in body
        busy.join()
        assert post(node.port, "/v1/agents/ok/invoke")[2] == b"ok\n"
