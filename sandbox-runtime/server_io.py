"""Socket reads and writes under a deadline, request header fields, and agent output encoded into JSON
without amplification.

A socket timeout bounds one `recv`; a client that sends one byte just before each timeout holds a
connection forever. `DeadlineReader` makes sure before every `recv` that the socket's timeout is no
longer than what is left of the request's deadline, so headers and body have a whole-request deadline.
`DeadlineWriter` does the same for each `send` of the response: a client that does not read is dropped
when its deadline passes. Setting a timeout is a system call that releases the GIL, so it is only done
when the one already set is too long for the deadline (or much shorter than it): on a keep-alive
connection the timeout set for the first request serves the next ones, and a `recv` or `send` that
times out before its deadline is simply tried again with the timeout re-armed.

`read_headers` reads a request's header fields strictly (http.client's limits: 100 fields of at most
64 KiB each) without the email parser the standard library uses, which cost more than the rest of the
request's parsing; a field the email parser would have taken in a way a proxy may not (a space before
the colon, a folded line) is a 400.

`json_document` encodes stdout and stderr as JSON text only when that costs at most what base64
would (plus a little), else as base64: a guest that prints control bytes (6 bytes each as
`\\u0001`) gets base64 (4 bytes per 3). Its length is computed beforehand and its body produced in
chunks, so a response is never built (or copied) whole in memory.
"""

from __future__ import annotations

import base64
import codecs
import io
import json
import math
import re
import socket
import time
from collections.abc import Iterator
from typing import Any

CHUNK = 64 * 1024
B64_CHUNK = 48 * 1024  # a multiple of 3: chunks encode without padding in the middle
# Bytes json.dumps(ensure_ascii=False) escapes: two characters for these, six (\u00XX) for other controls.
SHORT_ESCAPES = b'"\\\b\f\n\r\t'
ESCAPED = bytes(range(0x20)) + b'"\\'
NOT_ESCAPED = bytes(b for b in range(256) if b not in ESCAPED)
TEXT_SLACK = 64  # small outputs stay readable text even when escaping makes them a little longer


SLACK = 0.5  # an armed timeout is this much shorter than the deadline, so that the next request can reuse it
MAX_LINE = 65536  # a header line, as http.client
MAX_HEADERS = 100  # header fields in a request, as http.client
FIELD_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token


def arm(sock: socket.socket, left: float) -> None:
    """Make the socket's timeout at most `left` seconds (what is left of a deadline), setting it only when
    the current one is too long, unset, or so short that waiting in steps of it would spin."""
    current = sock.gettimeout()
    if current is not None and current <= left and current >= min(1.0, left / 2):
        return
    sock.settimeout(min(left - SLACK if left > 2 * SLACK else left, 3600.0))


class DeadlineReader(io.RawIOBase):
    """The socket as a raw stream whose every `recv` ends by `deadline` (time.monotonic seconds)."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self.sock = sock
        self.deadline = math.inf

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while True:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the request deadline passed")
            arm(self.sock, left)
            try:
                return self.sock.recv_into(buffer)
            except TimeoutError:  # a timeout armed for an earlier request: try again with what is left
                continue


class DeadlineWriter(io.RawIOBase):
    """The socket as a raw writable stream whose writes all end by `deadline`."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self.sock = sock
        self.deadline = math.inf

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        with memoryview(data) as view:
            sent, total = 0, view.nbytes
            while True:
                left = self.deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("the response deadline passed")
                arm(self.sock, left)
                try:
                    sent += self.sock.send(view[sent:])
                except TimeoutError:  # nothing sent within the timeout, which may be shorter than the deadline
                    continue
                if sent >= total:
                    return total


class HeaderError(Exception):
    """A request's header fields cannot be read: answer `code` and close."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class Headers:
    """A request's header fields by lower-case name, in the order sent (what the handlers read)."""

    def __init__(self, fields: dict[str, list[str]]) -> None:
        self._fields = fields

    def get(self, name: str, default: str | None = None) -> str | None:
        values = self._fields.get(name.lower())
        return values[0] if values else default

    def get_all(self, name: str) -> list[str] | None:
        return self._fields.get(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._fields


def read_headers(rfile: io.BufferedIOBase) -> Headers:
    """The header fields up to the empty line; HeaderError (431 too many or too long, 400 malformed)."""
    fields: dict[str, list[str]] = {}
    for count in range(MAX_HEADERS + 1):
        line = rfile.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise HeaderError(431, "Line too long")
        if line in (b"\r\n", b"\n", b""):
            return Headers(fields)
        if count == MAX_HEADERS:
            raise HeaderError(431, f"Too many headers: more than {MAX_HEADERS}")
        text = line.decode("iso-8859-1").rstrip("\r\n")
        name, colon, value = text.partition(":")
        if not colon or not FIELD_NAME.fullmatch(name):
            what = "a folded header line (obs-fold)" if text[:1] in (" ", "\t") else "a malformed header line"
            raise HeaderError(400, f"{what}: {text[:80]!r}")
        fields.setdefault(name.lower(), []).append(value.strip(" \t"))
    raise AssertionError("unreachable")  # the loop returns or raises


def _b64_length(n: int) -> int:
    return 4 * ((n + 2) // 3)


def choose(data: bytes) -> tuple[str, int]:
    """("text"|"base64", encoded length without quotes): text only if it is not much longer than base64.

    One pass in 64 KiB chunks (nothing of the output's size is allocated), stopping as soon as the
    answer is base64: the text would be too long, or it is not UTF-8.
    """
    b64 = _b64_length(len(data))
    bound = b64 + TEXT_SLACK
    text = len(data)
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        for start in range(0, len(data), CHUNK):
            chunk = data[start:start + CHUNK]
            escaped = chunk.translate(None, NOT_ESCAPED)
            if escaped:
                short = sum(escaped.count(c) for c in SHORT_ESCAPES)
                text += short + 5 * (len(escaped) - short)
                if text > bound:
                    return "base64", b64
            decoder.decode(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return "base64", b64
    return "text", text


def _pieces(data: bytes, how: str) -> Iterator[bytes]:
    if how == "base64":
        for start in range(0, len(data), B64_CHUNK):
            yield base64.b64encode(data[start:start + B64_CHUNK])
        return
    decoder = codecs.getincrementaldecoder("utf-8")()
    for start in range(0, len(data), CHUNK):
        yield json.dumps(decoder.decode(data[start:start + CHUNK]), ensure_ascii=False)[1:-1].encode()
    tail = decoder.decode(b"", final=True)
    if tail:
        yield json.dumps(tail, ensure_ascii=False)[1:-1].encode()


def json_document(meta: dict[str, Any], streams: list[tuple[str, bytes]]) -> tuple[int, Iterator[bytes]]:
    """`meta` plus each (name, bytes) as `name` (text) or `nameBase64`: (exact length, body in chunks)."""
    head = json.dumps(meta, ensure_ascii=False).encode()[:-1]  # without the closing brace
    parts: list[tuple[bytes, bytes, str]] = []
    length = len(head) + 2  # "}\n"
    sep = b", " if meta else b""
    for name, data in streams:
        how, size = choose(data)
        key = name if how == "text" else name + "Base64"
        prefix = sep + json.dumps(key).encode() + b': "'
        sep = b", "
        parts.append((prefix, data, how))
        length += len(prefix) + size + 1

    def body() -> Iterator[bytes]:
        yield head
        for prefix, data, how in parts:
            yield prefix
            yield from _pieces(data, how)
            yield b'"'
        yield b"}\n"

    return length, body()


def streams_json(stdout: bytes, stderr: bytes) -> dict[str, str]:
    """stdout and stderr as a dict, encoded by the same rule (for `agentfactory run --json`)."""
    out: dict[str, str] = {}
    for name, data in (("stdout", stdout), ("stderr", stderr)):
        how, _ = choose(data)
        out[name if how == "text" else name + "Base64"] = (
            data.decode("utf-8") if how == "text" else base64.b64encode(data).decode())
    return out
