"""What the node's HTTP service allows: connections, deadlines, and a node-wide memory budget.

Every resource a client or an agent can make the host hold is counted against a limit that is
checked before the resource is taken: a connection slot (in all and per client address), a request
deadline, and bytes of the memory budget (request bodies as they arrive, then per invocation the
agent's linear memory, its output caps and the sandbox's copies of stdin, then the response held
until it is sent), and an invocation worker within the agent's share of them (worker_shares.py).
The limits come from `AGENTFACTORY_RUNTIME_*` environment variables so that `agentfactory runtime
serve` and its DaemonSet can set them.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, fields

from prometheus_client import Gauge

from agentfactory.errors import ConfigError

MIB = 1024 * 1024
ENV_PREFIX = "AGENTFACTORY_RUNTIME_"
# Defined here rather than in agentfactory/metrics.py while this module is the only user.
BUDGET_BYTES = Gauge("agent_factory_runtime_memory_budget_bytes",
                     "The node's memory budget for requests in flight: total, and used now.", ["state"])
CONNECTIONS = Gauge("agent_factory_runtime_connections", "Open connections, by lane (main, overflow).", ["lane"])


@dataclass(frozen=True)
class ServerLimits:
    max_connections: int = 256  # connections served at once, all clients
    max_connections_per_client: int = 64  # connections served at once from one client address
    overflow_connections: int = 16  # extra connections that may only ask /healthz and /readyz (or get a 503)
    header_timeout: float = 10.0  # seconds from waiting for a request to the end of its headers
    request_timeout: float = 30.0  # seconds from waiting for a request to the end of its body
    response_timeout: float = 30.0  # seconds to send a response; a client that does not read is dropped
    overflow_timeout: float = 2.0  # the whole request and response on an overflow connection
    queue_wait: float = 5.0  # seconds an invocation waits for a worker before 503
    agent_worker_share: float = 0.5  # of the workers, what one agent (by name) may hold at once (at least 1)
    agent_queue_wait: float = 1.0  # seconds a request for an agent at its share waits, without a worker, before 503
    agent_queue_length: int = 16  # requests for one agent that may wait for a worker at once; past it 503 at once
    memory_budget_mib: int = 768  # bytes in flight: bodies, agents' memory and output caps, responses
    client_memory_share: float = 0.5  # of the memory budget, what one client address's requests may hold at once
    max_output_kib: int = 16384  # node ceiling on an agent's maxOutputKiB (per stream)
    refusals_per_client: int = 50  # refused requests (400, 403, 404) per second per client address, then paced

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServerLimits:
        """Defaults, overridden by AGENTFACTORY_RUNTIME_<FIELD> (e.g. ..._MEMORY_BUDGET_MIB=2048)."""
        env = os.environ if env is None else env
        values: dict[str, int | float] = {}
        for f in fields(cls):
            name = ENV_PREFIX + f.name.upper()
            raw = env.get(name)
            if raw is None:
                continue
            number = re.fullmatch(r"[0-9]{1,9}" if f.type == "int" else r"[0-9]{1,9}(\.[0-9]{1,6})?", raw.strip())
            share = f.name in ("agent_worker_share", "client_memory_share")
            if number is None or float(raw) <= 0 or (share and float(raw) > 1):
                kind = ("a fraction of the memory budget" if f.name == "client_memory_share" else
                        "a fraction of the workers" if share else
                        "a whole number" if f.type == "int" else "a number of seconds")
                most = " and at most 1" if share else ""
                raise ConfigError(f"{name}={raw!r}: must be {kind} greater than 0{most}")
            values[f.name] = int(raw) if f.type == "int" else float(raw)
        return cls(**values)  # type: ignore[arg-type]

    @property
    def memory_budget(self) -> int:
        return self.memory_budget_mib * MIB


class MemoryBudget:
    """Bytes the node may hold for requests in flight; `reserve` says no instead of going over.

    One client address's requests together may hold at most `client_share` of it (their bodies as they
    arrive, their invocations, their responses) once more than one of them holds memory: 64 connections
    from one address sending 2 MiB of each 16 MiB body and then waiting held the whole budget, and every
    other client got 503 for as long as they liked. One request alone may still use the whole budget."""

    def __init__(self, total: int, client_share: float = 1.0) -> None:
        self.total = total
        self.client_total = max(1, int(total * client_share))
        self.used = 0
        self.by_client: dict[str, int] = {}
        self._lock = threading.Lock()
        self._used = BUDGET_BYTES.labels(state="used")  # set several times per request: the child, looked up once
        BUDGET_BYTES.labels(state="total").set(total)
        self._used.set(0)

    def reservation(self, client: str = "") -> Reservation:
        return Reservation(self, client)

    def _take(self, n: int, client: str = "", held: int = 0) -> str | None:
        """Take `n` bytes for a request of `client` that holds `held` already; None, or what is full: "node" or
        "client". A client's one request may use the whole budget (an agent that fits the node runs for anyone);
        its requests together, once more than one holds memory, at most its share."""
        with self._lock:
            if self.used + n > self.total:
                return "node"
            mine = self.by_client.get(client, 0)
            if client and mine > held and mine + n > self.client_total:
                return "client"
            self.used += n
            if client:
                self.by_client[client] = mine + n
            self._used.set(self.used)
            return None

    def _give(self, n: int, client: str = "") -> None:
        with self._lock:
            self.used -= n
            if client:
                left = self.by_client.get(client, 0) - n
                if left > 0:
                    self.by_client[client] = left
                else:
                    self.by_client.pop(client, None)
            self._used.set(self.used)


class Reservation:
    """One request's share of the budget: grows and shrinks with it, all returned by `close`. `full` says which
    limit the last refused growth met: the node's budget, or its client address's share of it."""

    def __init__(self, budget: MemoryBudget, client: str = "") -> None:
        self.budget = budget
        self.client = client
        self.held = 0
        self.full = ""

    def grow(self, n: int) -> bool:
        if n <= 0:
            return True
        full = self.budget._take(n, self.client, self.held)
        if full is not None:
            self.full = full
            return False
        self.held += n
        return True

    def set(self, n: int) -> bool:
        """Hold exactly `n` bytes (shrinking always succeeds; growing may not)."""
        if n >= self.held:
            return self.grow(n - self.held)
        self.budget._give(self.held - n, self.client)
        self.held = n
        return True

    def close(self) -> None:
        self.set(0)


class ClientSlots:
    """Connections per lane: `main` within both limits, `overflow` (health only) past them, or none."""

    def __init__(self, limits: ServerLimits) -> None:
        self.limits = limits
        self.total = 0
        self.overflow = 0
        self.per_client: dict[str, int] = {}
        self._lock = threading.Lock()
        self._gauges = {lane: CONNECTIONS.labels(lane=lane) for lane in ("main", "overflow")}

    def admit(self, client: str) -> tuple[str, str] | None:
        """(lane, why) for a new connection from `client`; None: close it at once."""
        with self._lock:
            mine = self.per_client.get(client, 0)
            if self.total < self.limits.max_connections and mine < self.limits.max_connections_per_client:
                self.total += 1
                self.per_client[client] = mine + 1
                self._gauges["main"].set(self.total)
                return "main", ""
            if self.overflow >= self.limits.overflow_connections:
                return None
            self.overflow += 1
            self._gauges["overflow"].set(self.overflow)
            if mine >= self.limits.max_connections_per_client:
                why = (f"{client} has {mine} connections open, the most this node serves to one client address "
                       f"({self.limits.max_connections_per_client})")
            else:
                why = f"this node serves at most {self.limits.max_connections} connections at once, all in use"
            return "overflow", why

    def release(self, client: str, lane: str) -> None:
        with self._lock:
            if lane == "overflow":
                self.overflow -= 1
                self._gauges["overflow"].set(self.overflow)
                return
            self.total -= 1
            self._gauges["main"].set(self.total)
            left = self.per_client.get(client, 1) - 1
            if left:
                self.per_client[client] = left
            else:
                self.per_client.pop(client, None)


class RefusalPacer:
    """Refusals per client address at a steady rate: past it, the answer waits (at most a second).

    A client that floods the node with requests it will be refused (unknown agents, bad queries) costs
    the node a lookup and a parse each; pacing its answers bounds that cost at about `rate` per second
    plus one per second per connection it holds, without a thread or a worker doing anything meanwhile.
    The buckets are bounded (least recently seen addresses are forgotten).
    """

    MAX_CLIENTS = 4096

    def __init__(self, rate: int) -> None:
        self.rate = float(rate)
        self.burst = 2.0 * rate
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def delay(self, client: str) -> float:
        """Count one refusal for `client`; the seconds to wait before answering it."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.pop(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate) - 1.0
            self._buckets[client] = (max(tokens, -self.rate), now)
            while len(self._buckets) > self.MAX_CLIENTS:
                self._buckets.popitem(last=False)
        return 0.0 if tokens >= 0 else min(1.0, -tokens / self.rate)
