"""Socket reads and writes under a deadline, and agent output encoded into JSON without amplification.

A socket timeout bounds one `recv`; a client that sends one byte just before each timeout holds a
connection forever. `DeadlineReader` re-arms the timeout with what is left of the request's deadline
before every `recv`, so headers and body have a whole-request deadline. `DeadlineWriter` does the same
for the response: a client that does not read is dropped when its deadline passes.

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


class DeadlineReader(io.RawIOBase):
    """The socket as a raw stream whose every `recv` ends by `deadline` (time.monotonic seconds)."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self.sock = sock
        self.deadline = math.inf

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request deadline passed")
        self.sock.settimeout(min(left, 3600.0))
        return self.sock.recv_into(buffer)


class DeadlineWriter(io.RawIOBase):
    """The socket as a raw writable stream whose writes all end by `deadline`."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self.sock = sock
        self.deadline = math.inf

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the response deadline passed")
        self.sock.settimeout(min(left, 3600.0))
        self.sock.sendall(data)  # the timeout bounds the whole sendall (Python >= 3.5)
        with memoryview(data) as view:
            return view.nbytes


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
