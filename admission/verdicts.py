"""The webhook's verdict cache: TTL, a shorter negative TTL, a size bound, and coalescing.

Keyed by everything a verdict depends on (digest, agent name, stage, the trust policy's
fingerprint): the same digest judged for another stage or under another trust policy is another
entry. Refusals are cached for `negative_ttl` (short: a fix to the evidence shows up quickly), and N
identical requests that arrive while one verification runs wait for it instead of verifying N times.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from typing import Generic, TypeVar

from agentfactory.metrics import ADMISSION_CACHE, LabelCache

T = TypeVar("T")
_COUNTS = LabelCache(ADMISSION_CACHE)  # one lookup per review: the children by result, not labels() each time


class VerdictCache(Generic[T]):
    def __init__(self, ttl: float, negative_ttl: float, max_entries: int, *, positive: Callable[[T], bool]) -> None:
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.max_entries = max_entries
        self._positive = positive
        self._entries: OrderedDict[str, tuple[float, T]] = OrderedDict()
        self._running: dict[str, Future[T]] = {}
        self._lock = threading.Lock()

    def peek(self, key: str) -> T | None:
        """The fresh cached value for `key`, or None; never computes (the event loop's fast path)."""
        with self._lock:
            hit = self._entries.get(key)
            if hit is None or hit[0] <= time.monotonic():
                return None
            self._entries.move_to_end(key)
        _COUNTS.get("hit" if self._positive(hit[1]) else "negative-hit").inc()
        return hit[1]

    def get(self, key: str, compute: Callable[[], T], timeout: float | None = None) -> T:
        """The cached value for `key`, or `compute()` once however many callers ask at the same time."""
        now = time.monotonic()
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None and hit[0] > now:
                self._entries.move_to_end(key)
                _COUNTS.get("hit" if self._positive(hit[1]) else "negative-hit").inc()
                return hit[1]
            running = self._running.get(key)
            if running is None:
                running = Future()
                self._running[key] = running
                owner = True
            else:
                owner = False
        if not owner:
            _COUNTS.get("coalesced").inc()
            return running.result(timeout=timeout)
        _COUNTS.get("miss").inc()
        try:
            value = compute()
        except BaseException as exc:
            with self._lock:
                self._running.pop(key, None)
            running.set_exception(exc)
            raise
        ttl = self.ttl if self._positive(value) else self.negative_ttl
        with self._lock:
            self._running.pop(key, None)
            if ttl > 0:
                self._entries[key] = (time.monotonic() + ttl, value)
                self._entries.move_to_end(key)
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
        running.set_result(value)
        return value

    def __len__(self) -> int:
        return len(self._entries)
