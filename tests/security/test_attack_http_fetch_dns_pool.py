"""Attack: lookups that never return starve every agent's `http.fetch`.

A `getaddrinfo` cannot be cancelled: a lookup its request gave up on keeps its thread for glibc's whole retry
schedule. The node resolved on a pool of 4 threads, so four short invocations of one agent whose names were never
answered (a DNS server that drops the query) held the node's lookups for about 10 s, and every other agent's
`http.fetch` failed with "the system resolver did not answer". Now one agent may have at most
MAX_LOOKUPS_PER_AGENT lookups it gave up on still running, and the pool holds several agents' worth; the lookups its
requests still wait for are not limited (its invocations bound them).
"""

from __future__ import annotations

import socket
import threading
from typing import Any

import pytest

from sandbox_runtime import http_resolve
from sandbox_runtime.http_resolve import ResolveError, SystemResolver


def test_one_agents_hung_lookups_never_take_another_agents(monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    real = socket.getaddrinfo

    def getaddrinfo(host: str, port: Any, *args: Any) -> Any:
        if host.startswith("evil"):
            release.wait(30)  # a name whose DNS answer never comes (glibc retries for seconds)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        if host == "slow.test":
            threading.Event().wait(0.3)  # a slow answer, but an answer
        return real("127.0.0.1", port, *args)

    monkeypatch.setattr(http_resolve.socket, "getaddrinfo", getaddrinfo)
    resolver = SystemResolver()
    try:
        refused = 0
        for i in range(8):  # eight invocations of the hostile agent, each giving up after 50 ms
            with pytest.raises(ResolveError) as caught:
                resolver.resolve(f"evil{i}.test", 443, 0.05, "evil")
            refused += "2 name lookups this agent gave up on are still running" in str(caught.value)
        assert refused == 6 and resolver.abandoned("evil") == 2
        for agent in ("good", "other", "third"):  # every other agent still resolves, at once
            assert [str(a) for a in resolver.resolve("good.test", 443, 2.0, agent)] == ["127.0.0.1"]
        # lookups an agent still waits for are not limited: 6 at once, as 6 invocations of it would make
        answers: list[Any] = []
        waiting = [threading.Thread(target=lambda: answers.append(resolver.resolve("slow.test", 443, 5.0, "busy")))
                   for _ in range(6)]
        for t in waiting:
            t.start()
        for t in waiting:
            t.join()
        assert len(answers) == 6 and resolver.abandoned("busy") == 0
    finally:
        release.set()
    deadline = threading.Event()
    for _ in range(100):
        if resolver.abandoned("evil") == 0:
            break
        deadline.wait(0.02)
    assert resolver.abandoned("evil") == 0  # given back when the hung lookups end
    with pytest.raises(ResolveError, match="cannot be resolved"):
        resolver.resolve("evil-again.test", 443, 2.0, "evil")
