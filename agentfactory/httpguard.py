"""Connection guards for the services on uvicorn (`admission serve`, `tlog serve`): what uvicorn leaves open.

uvicorn times a connection out only *between* requests (`timeout_keep_alive`, armed after a response). A
connection that opens (its TLS handshake done) and never sends a request, or sends its request a byte at a
time, is kept for ever; once `limit_concurrency` connections are open, uvicorn answers every request of
every client 503. So 1,000 idle connections from any pod took the admission webhook away from the API
server (with `failurePolicy: Fail`, every workload create in the cluster refused), and the log from its
clients, for as long as the attacker liked. The node runtime has its own server with the same guards
(sandbox-runtime/server_limits.py).

`guarded_http` is uvicorn's httptools protocol with two more rules:
- a request must be read whole within `request_timeout` seconds of the connection opening or of the
  request's first byte (after that, uvicorn's keep-alive timeout covers the idle time between requests);
- one client address holds at most `per_peer` connections; the next is closed at once, before any byte
  is read, so one attacker cannot fill the server's connections (many addresses still can, each with a
  connection that must send a whole request every `timeout_keep_alive` seconds).
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from typing import Any

from .errors import ConfigError

REQUEST_TIMEOUT_S = 10.0  # generous for an API server's review (a few KiB) or a log entry over a slow link
PER_PEER = 64  # an API server opens a handful of connections per replica (6 under 16 concurrent creates)
TIMEOUT_ENV = "AGENTFACTORY_HTTP_REQUEST_TIMEOUT_S"
PER_PEER_ENV = "AGENTFACTORY_HTTP_CONNECTIONS_PER_CLIENT"


def guarded_http(request_timeout: float | None = None, per_peer: int | None = None) -> type[Any]:
    """A uvicorn HTTP protocol class (`uvicorn.Config(http=...)`) with the guards above; one per server: the
    per-address counts are the class's own. Defaults: $AGENTFACTORY_HTTP_REQUEST_TIMEOUT_S (10 s) and
    $AGENTFACTORY_HTTP_CONNECTIONS_PER_CLIENT (64); a value that is not a positive number is a ConfigError."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    timeout = request_timeout if request_timeout is not None else _positive(TIMEOUT_ENV, float, REQUEST_TIMEOUT_S)
    share = per_peer if per_peer is not None else int(_positive(PER_PEER_ENV, int, PER_PEER))

    held: Counter[str] = Counter()

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        _deadline: asyncio.TimerHandle | None = None
        _peer: str | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            peer = self.client[0] if self.client else None
            if peer is not None and held[peer] >= share:
                transport.abort()  # over this address's share: never read, never counted in uvicorn's 503s
                return
            if peer is not None:
                held[peer] += 1
                self._peer = peer
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            self._release()
            super().connection_lost(exc)

        def _release(self) -> None:
            """Give back this connection's place in its address's share (once)."""
            if self._peer is not None:
                held[self._peer] -= 1
                if held[self._peer] <= 0:
                    del held[self._peer]
                self._peer = None

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()

        def on_message_complete(self) -> None:
            self._disarm()
            super().on_message_complete()

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(timeout, self._expire)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expire(self) -> None:
            # aborted, not closed: a TLS close waits up to 30 s for the peer's close_notify, holding the
            # connection (and its place) meanwhile; this peer sent no whole request, so it gets no goodbye
            self._deadline = None
            self._release()
            self.transport.abort()

    return GuardedHttpToolsProtocol



def _positive(name: str, kind: type[float] | type[int], default: float) -> float:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        value = 0
    if not value > 0 or value > 86_400:
        raise ConfigError(f"${name}={text[:40]!r}: expected a positive number (at most 86400)")
    return value
