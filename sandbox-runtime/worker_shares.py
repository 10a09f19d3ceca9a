"""The invocation workers, shared between agents: one agent may hold at most its share of them at once.

Without a share, as many requests for one slow agent as there are workers (a signed agent that waits in
a host call until its deadline, for example) take every worker, and every other agent waits or gets a
503. With it, an agent's requests beyond `share` of the workers wait briefly without a worker, in a
bounded per-agent queue, and are then refused with the reason; the other workers stay free for the
other agents.

The share is counted per agent *name* (the name in the request path), not per digest: a template
author controls how many versions, and so digests, an agent has, and every version and digest of one
name would otherwise get a share of its own. The name is also known before any store lookup, so a
request is counted before it costs the node anything but a thread.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from prometheus_client import Counter, Gauge

# Defined here rather than in agentfactory/metrics.py while this module is the only user. No agent label:
# names come from clients, and the label's cardinality must not.
WORKER_REFUSALS = Counter("agent_factory_runtime_worker_refusals_total",
                          "Invocations refused without a worker: the agent at its share of the workers "
                          "(share), its queue full (agent-queue), or every worker busy (busy).", ["reason"])
WORKERS_HELD = Gauge("agent_factory_runtime_workers_busy", "Invocation workers held now, of how many.", ["state"])


class NoWorker(Exception):
    """No worker for this request: `reason` (share, agent-queue, busy) and a message that says why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def share_of(workers: int, share: float) -> int:
    """The workers one agent may hold at once: `share` of them, at least one."""
    return max(1, int(workers * share + 1e-9))


class WorkerPool:
    """`workers` invocation slots; `acquire(agent)` takes one within the agent's share, or says why not."""

    def __init__(self, workers: int, *, share: float, queue_wait: float, agent_wait: float,
                 agent_queue: int) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        if not 0 < share <= 1:
            raise ValueError(f"the agent worker share must be greater than 0 and at most 1, not {share}")
        self.workers = workers
        self.per_agent = share_of(workers, share)
        self.queue_wait = queue_wait
        self.agent_wait = min(agent_wait, queue_wait)
        self.agent_queue = agent_queue
        self.free = workers
        self.held: dict[str, int] = {}
        self.queues: dict[str, deque[threading.Condition]] = {}  # each agent's waiting requests, oldest first
        self._lock = threading.Lock()
        self._busy = WORKERS_HELD.labels(state="busy")  # set twice per invocation: the child, looked up once
        WORKERS_HELD.labels(state="total").set(workers)
        self._busy.set(0)

    def acquire(self, agent: str) -> None:
        """Take a worker for `agent`, waiting at most `agent_wait` for its share and `queue_wait` in all.

        One agent's requests take workers in the order they came (a FIFO per agent, each waiter with a
        condition of its own), and only the requests that can take a freed worker are woken: the waiting
        requests of an agent at its share cost nothing while the other agents' requests come and go."""
        started = time.monotonic()
        with self._lock:
            queue = self.queues.get(agent)
            if queue is None and self._take(agent):
                return
            if queue is not None and len(queue) >= self.agent_queue:
                raise self._refuse("agent-queue", f"agent {agent!r} already holds {self.held.get(agent, 0)} of "
                                                  f"{self.workers} workers (its share is {self.per_agent}) and "
                                                  f"{len(queue)} more requests for it are waiting; retry later")
            if queue is None:
                queue = self.queues[agent] = deque()
            me = threading.Condition(self._lock)
            queue.append(me)
            try:
                while True:
                    if queue[0] is me and self._take(agent):
                        return
                    mine = self.held.get(agent, 0)
                    waited = time.monotonic() - started
                    if mine >= self.per_agent:
                        if waited >= self.agent_wait:
                            raise self._refuse("share", f"agent {agent!r} already holds {mine} of {self.workers} "
                                                        f"workers, its share on this node "
                                                        "(AGENTFACTORY_RUNTIME_AGENT_WORKER_SHARE); retry later")
                        me.wait(self.agent_wait - waited)
                    else:
                        if waited >= self.queue_wait:
                            raise self._refuse("busy", "every worker is busy; retry later")
                        me.wait(self.queue_wait - waited)
            finally:
                head = queue[0] is me
                queue.remove(me)
                if not queue:
                    del self.queues[agent]
                elif head:
                    queue[0].notify()  # the next of this agent's requests may take a worker now

    def release(self, agent: str) -> None:
        with self._lock:
            left = self.held[agent] - 1
            if left:
                self.held[agent] = left
            else:
                del self.held[agent]
            self.free += 1
            self._busy.set(self.workers - self.free)
            for name, queue in self.queues.items():  # wake the heads that may take it, not those at their share
                if self.held.get(name, 0) < self.per_agent:
                    queue[0].notify()

    def _take(self, agent: str) -> bool:
        """A worker for `agent` if one is free and the agent is under its share (the lock is held)."""
        mine = self.held.get(agent, 0)
        if mine >= self.per_agent or self.free <= 0:
            return False
        self.held[agent] = mine + 1
        self.free -= 1
        self._busy.set(self.workers - self.free)
        return True

    @staticmethod
    def _refuse(reason: str, message: str) -> NoWorker:
        WORKER_REFUSALS.labels(reason=reason).inc()
        return NoWorker(reason, message)
