"""The supervisor's own log is bounded: what a client can cause again and again is one line per second."""

from __future__ import annotations

import socket
import time
from typing import Any

from agentfactory.workers import NOISY_EVERY_S, Supervisor


def test_a_connection_flood_logs_one_line_per_second_with_the_count_not_logged() -> None:
    logged: list[dict[str, Any]] = []
    with socket.socket() as listener:
        supervisor = Supervisor(listener, 1, lambda slot, fd: [], log=logged.append)
        for _ in range(10_000):  # no worker is ready: every connection is dropped
            a, b = socket.socketpair()
            supervisor._hand(a)
            a.close()
            b.close()
        assert logged == [{"connection": "dropped", "why": "no worker could take it"}]
        time.sleep(NOISY_EVERY_S + 0.05)
        a, b = socket.socketpair()
        supervisor._hand(a)
        a.close()
        b.close()
        assert logged[1] == {"connection": "dropped", "why": "no worker could take it", "notLogged": 9_999}
