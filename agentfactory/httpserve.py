"""What the HTTP services (the webhook, the transparency log) share: a bound socket, a capped body, and the
plain ASGI reading and writing their hot routes use instead of a framework's (each request's routing,
middleware and Request/Response objects cost about as much CPU as the work of a cached answer).

The socket is bound before uvicorn starts, so `--listen HOST:0` can report the port it got and a
port in use is a clear configuration error rather than a log line from inside the server. It is made
with protocol IPPROTO_TCP and TCP_NODELAY: asyncio sets TCP_NODELAY on accepted connections only for
sockets whose protocol says TCP, and without it a response written as head then body waits for the
client's delayed ACK (about 40 ms per request on Linux).
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .errors import ConfigError, InputError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class BodyTooLarge(Exception):
    """The request body is over the limit (declared or streamed); nothing past the limit was read."""


def bind(listen: str, example: str) -> socket.socket:
    """A socket bound to `listen` (HOST:PORT; [v6] addresses allowed), ready for uvicorn's `sockets=`."""
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise InputError("--listen", f"{listen!r}: write HOST:PORT (e.g. {example})")
    host = host.strip("[]")
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, int(port)))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"--listen {listen}: {exc.strerror}") from None
    return sock


def url_of(sock: socket.socket, scheme: str) -> str:
    host, port = sock.getsockname()[:2]
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


async def read_body(request: Any, limit: int) -> bytes:
    """A Starlette request's body, refused past `limit` bytes before it is all in memory."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(declared)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(str(size))
        chunks.append(chunk)
    return b"".join(chunks)


async def read_asgi_body(scope: Scope, receive: Receive, limit: int) -> bytes | None:
    """An ASGI request's body, refused (BodyTooLarge) past `limit` before it is all in memory, as `read_body`;
    None when the client disconnected first."""
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise BodyTooLarge(value.decode())
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(str(size))
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def send_body(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None,
                    content_type: bytes = b"application/json") -> None:
    """One whole ASGI response: status, Content-Length, Content-Type, `headers`, then `body`."""
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-length", str(len(body)).encode()), (b"content-type", content_type), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


def route_path(scope: Scope) -> str:
    """The path a router matches (Starlette's rule: the request path below the app's root_path)."""
    path, root = str(scope["path"]), str(scope.get("root_path", ""))
    return path[len(root):] if root and path.startswith(root) else path
