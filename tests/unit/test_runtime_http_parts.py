"""The node service's request-path parts on their own: header fields, deadline I/O, metric children, audit lines.

These were rewritten for throughput (issue 23); each test pins what the slower version did, or the
hostile-client protection it must keep.
"""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import Counter

from agentfactory.audit import AuditLog, verify_chain
from agentfactory.metrics import LabelCache
from sandbox_runtime.server import _http_date, _http_version
from sandbox_runtime.server_io import (
    MAX_HEADERS,
    MAX_LINE,
    DeadlineReader,
    DeadlineWriter,
    HeaderError,
    arm,
    read_headers,
)


def _head(text: bytes) -> io.BufferedReader:
    return io.BufferedReader(io.BytesIO(text))


def test_header_fields_are_read_by_name_in_order() -> None:
    rfile = _head(b"Host: x\r\ncontent-length:  12 \r\nAccept: application/json\r\nX-A: 1\r\nx-a: 2\r\n\r\nBODY")
    headers = read_headers(rfile)
    assert headers.get("Content-Length") == "12"
    assert headers.get("ACCEPT") == "application/json"
    assert headers.get_all("X-A") == ["1", "2"]
    assert headers.get("Transfer-Encoding") is None and headers.get_all("Transfer-Encoding") is None
    assert "host" in headers and "nope" not in headers
    assert rfile.read() == b"BODY"  # the body is left for the handler


def test_header_bytes_are_latin_1_so_a_unicode_digit_is_never_a_number() -> None:
    value = read_headers(_head("Content-Length: \u00b2\r\n\r\n".encode())).get("Content-Length")
    assert value == "\u00c2\u00b2" and not value.isascii()


@pytest.mark.parametrize(("head", "code", "words"), [
    (b"Content-Length : 5\r\n\r\n", 400, "malformed header line"),  # a proxy may read it as Content-Length
    (b"X-A: 1\r\n folded\r\n\r\n", 400, "folded header line"),
    (b"no colon here\r\n\r\n", 400, "malformed header line"),
    (b": empty name\r\n\r\n", 400, "malformed header line"),
    (b"X-Long: " + b"y" * MAX_LINE + b"\r\n\r\n", 431, "Line too long"),
    (b"".join(b"X-%d: y\r\n" % i for i in range(MAX_HEADERS + 1)) + b"\r\n", 431, "Too many headers"),
])
def test_malformed_or_oversized_header_fields_are_refused(head: bytes, code: int, words: str) -> None:
    with pytest.raises(HeaderError) as caught:
        read_headers(_head(head))
    assert caught.value.code == code and words in str(caught.value)


def test_as_many_header_fields_as_http_client_allows_are_read() -> None:
    head = b"".join(b"X-%d: y\r\n" % i for i in range(MAX_HEADERS)) + b"\n"
    assert read_headers(_head(head)).get(f"x-{MAX_HEADERS - 1}") == "y"
    assert read_headers(_head(b"")).get("Host") is None  # the client closed: no fields, the handler decides


def test_http_versions_are_read_as_http_server_reads_them() -> None:
    assert _http_version("HTTP/1.1") == (1, 1) and _http_version("HTTP/01.10") == (1, 10)
    for bad in ("HTTP/1", "HTTP/1.1.1", "HTTP/\u00b2.1", "HTTP/1.x", "HTTPS/1.1", "HTTP/12345678901.1"):
        assert _http_version(bad) is None, bad


def test_the_date_header_is_the_current_second_in_imf_fixdate() -> None:
    import email.utils

    before = email.utils.formatdate(time.time(), usegmt=True)
    date = _http_date()
    assert date == _http_date()
    assert date.endswith(" GMT") and date >= before[:17]


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def test_a_timeout_set_for_an_earlier_request_is_kept_and_never_ends_a_read_early(
        pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    server.settimeout(1.0)  # armed for an earlier request; this one has 6 s
    reader = DeadlineReader(server)
    reader.deadline = time.monotonic() + 6.0
    timer = threading.Timer(2.5, client.sendall, args=(b"late",))  # after the socket's timeout, before the deadline
    timer.start()
    buffer = bytearray(16)
    try:
        n = reader.readinto(buffer)
    finally:
        timer.join()
    assert bytes(buffer[:n]) == b"late"


def test_a_read_past_its_deadline_is_a_timeout(pair: tuple[socket.socket, socket.socket]) -> None:
    server, _ = pair
    server.settimeout(30.0)  # longer than what is left: re-armed, not trusted
    reader = DeadlineReader(server)
    reader.deadline = time.monotonic() + 0.3
    with pytest.raises(TimeoutError):
        reader.readinto(bytearray(16))
    armed = server.gettimeout()
    assert armed is not None and armed <= 0.3
    reader.deadline = time.monotonic() - 1
    with pytest.raises(TimeoutError, match="deadline passed"):
        reader.readinto(bytearray(16))


def test_the_socket_timeout_is_set_once_for_requests_with_the_same_deadline(
        pair: tuple[socket.socket, socket.socket]) -> None:
    server, _ = pair
    arm(server, 10.0)
    first = server.gettimeout()
    assert first is not None and first <= 10.0
    arm(server, 9.99)  # the next request: a few milliseconds less left than the first one had
    assert server.gettimeout() == first
    arm(server, 100.0)  # a longer deadline: the shorter timeout serves it (reads are retried)
    assert server.gettimeout() == first
    arm(server, 0.2)  # a shorter one: re-armed, never longer than what is left
    assert server.gettimeout() == 0.2
    arm(server, 10.0)  # so short against what is left that waiting in its steps would spin: re-armed
    assert server.gettimeout() == first


def test_a_response_is_written_whole_or_dropped_at_its_deadline(pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    writer = DeadlineWriter(server)
    writer.deadline = time.monotonic() + 30
    data = bytes(range(256)) * 8192  # 2 MiB: more than the socket buffers, written in several sends
    got = bytearray()

    def read_all() -> None:
        while len(got) < len(data):
            got.extend(client.recv(65536))

    reading = threading.Thread(target=read_all)
    reading.start()
    assert writer.write(data) == len(data)
    reading.join()
    assert bytes(got) == data
    writer.deadline = time.monotonic() + 0.3  # nobody reads now: the buffers fill, then the deadline passes
    with pytest.raises(TimeoutError):
        writer.write(data)


def test_label_cache_children_are_the_metrics_own() -> None:
    metric = Counter("agent_factory_test_label_cache_total", "test", ["a", "b"])
    cache = LabelCache(metric)
    cache.get("x", "y").inc()
    cache.get("x", "y").inc(2)
    assert cache.get("x", "y") is metric.labels(a="x", b="y")
    assert metric.labels(a="x", b="y")._value.get() == 3
    LabelCache.MAX, saved = 2, LabelCache.MAX
    try:
        for i in range(5):  # past its bound the cache starts again; the metric keeps every child
            cache.get(str(i), "z").inc()
    finally:
        LabelCache.MAX = saved
    assert len(cache._children) <= 2
    assert all(metric.labels(a=str(i), b="z")._value.get() == 1 for i in range(5))


def test_audit_lines_are_the_documented_json_and_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    docs = [log.record("execution", agent="a", digest="sha256:" + "0" * 64, outcome="ok", exitCode=0,
                       durationMs=0.25, limitsHit=[], reason="x" * 3000, nested={"k": "é\u2028", 1: [None, True]})]
    docs.append(log.record("decision", agent="a", allowed=True, score=10.0))
    log.close()
    lines = path.read_bytes().decode("utf-8").split("\n")[:-1]  # not splitlines: U+2028 is inside a record
    assert lines == [json.dumps(d, separators=(",", ":"), ensure_ascii=False) for d in docs]
    assert docs[0]["reason"] == "x" * 2000 + "…" and docs[0]["nested"] == {"k": "é\u2028", "1": [None, True]}
    assert verify_chain(path) == 2
