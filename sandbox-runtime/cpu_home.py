"""Where a node's threads run: its host work on one home CPU, a long guest on any CPU the node may use.

Why. A node's host work (HTTP, verification, sandbox creation, the WASI calls wasmtime hands to its tokio
worker threads) is Python under one GIL plus short native calls, handed from thread to thread dozens of
times per invocation. When those threads sit on different CPUs, every hand-off wakes the other CPU (an
inter-processor interrupt, often a core leaving its idle state), and a trivial invocation costs three to six
times the CPU: on 2 CPUs, 850-1,000 invocations/s over HTTP at 4 connections against 2,500-2,900/s with
the same threads kept on one CPU (benchmarks/results/runtime.md). So `runtime serve` keeps every thread of
the process on a home CPU.

Guest code needs no GIL, and a long guest must not be confined to the home CPU: two compute-bound agents
should run on two cores, and a spinning guest must not take the CPU the node answers on. A guest call that
is still running when the epoch ticker sweeps (every tick, 5 ms), at least `WIDEN_AFTER` seconds after it
began, has its thread let onto every CPU the node may use; the thread goes home when the guest returns.
A compile child is started from a thread let onto every CPU as well (`unpinned`), since it inherits its
parent's CPUs.

`--host-cpu` is read by agentfactory.cpuplace ("auto": the CPU the scheduler started the process on, when it
may use two or more); "off" leaves the scheduler alone, as a `Runtime` made in process always does (a library
must not move its caller's threads).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator

from agentfactory.cpuplace import allowed_cpus, choose_home, place_every_thread

WIDEN_AFTER = 0.002  # seconds a guest runs before its thread may leave the home CPU
REPIN_EVERY = 1.0  # seconds between sweeps that bring stray threads home (see `sweep`)


class CpuHome:
    """The node's home CPU set and the guest calls running now (by native thread id, with their start)."""

    def __init__(self, home: frozenset[int] | None, allowed: frozenset[int], widen_after: float = WIDEN_AFTER) -> None:
        self.home = home
        self.allowed = allowed
        self.widen_after = widen_after
        self._lock = threading.Lock()
        self._running: dict[int, float] = {}  # native thread id -> when its guest call began (monotonic)
        self._widened: set[int] = set()  # let out on purpose: a long guest, or a thread starting a child
        self.widened_total = 0  # guest calls let onto every CPU since start
        self.strays_repinned = 0  # threads found off the home CPU by the periodic sweep, and brought home
        self._next_repin = 0.0

    @classmethod
    def off(cls) -> CpuHome:
        return cls(None, frozenset())

    @classmethod
    def choose(cls, setting: str) -> CpuHome:
        """"auto", "off" or one CPU number (agentfactory.cpuplace.choose_home); a bad one is a ConfigError."""
        home = choose_home(setting, "--host-cpu")
        return cls(home, allowed_cpus()) if home is not None else cls.off()

    @property
    def active(self) -> bool:
        return self.home is not None

    def pin_process(self) -> int:
        """Every thread of the process to the home CPU (threads made later inherit it): how many were moved."""
        return place_every_thread(self.home) if self.home is not None else 0

    def unpin_process(self) -> int:
        """Every thread of the process back on every allowed CPU (undoes `pin_process`)."""
        return place_every_thread(self.allowed) if self.home is not None else 0

    def enter_guest(self) -> int:
        """Called by the thread about to run guest code: a token for `leave_guest` (0 when off)."""
        if self.home is None:
            return 0
        tid = threading.get_native_id()
        with self._lock:
            self._running[tid] = time.monotonic()
        return tid

    def leave_guest(self, tid: int) -> None:
        """The guest returned: forget the call, and bring the thread home if the sweep let it out."""
        if not tid:
            return
        with self._lock:
            self._running.pop(tid, None)
            widened = tid in self._widened
            self._widened.discard(tid)
            if widened and self.home is not None:
                _place_self(self.home)

    def sweep(self) -> None:
        """From the epoch ticker: let every guest call older than `widen_after` onto every allowed CPU; and
        every REPIN_EVERY seconds bring home any other thread found elsewhere. A thread inherits the CPUs of
        the thread that starts it, so one started from a let-out guest thread (wasmtime starts worker
        threads on demand) would otherwise stay off the home CPU for good, and every hand-off to it would
        cost a cross-CPU wake-up again."""
        if self.home is None:
            return
        now = time.monotonic()
        if now >= self._next_repin:
            self._next_repin = now + REPIN_EVERY
            self._repin_strays()
        if not self._running:
            return
        with self._lock:
            for tid, began in self._running.items():
                if tid not in self._widened and now - began >= self.widen_after:
                    try:
                        os.sched_setaffinity(tid, self.allowed)
                    except OSError:  # the thread is gone; its leave_guest will not find it widened
                        continue
                    self._widened.add(tid)
                    self.widened_total += 1

    def _repin_strays(self) -> None:
        assert self.home is not None
        with self._lock:
            for task in os.listdir("/proc/self/task"):
                tid = int(task)
                if tid in self._widened:
                    continue
                try:
                    if os.sched_getaffinity(tid) != self.home:
                        os.sched_setaffinity(tid, self.home)
                        self.strays_repinned += 1
                except OSError:  # a thread that just ended
                    continue

    @contextlib.contextmanager
    def unpinned(self) -> Iterator[None]:
        """The calling thread on every allowed CPU for the block: a child process started here gets them all."""
        if self.home is None:
            yield
            return
        tid = threading.get_native_id()
        with self._lock:  # marked let out, so that the periodic sweep does not bring it home meanwhile
            self._widened.add(tid)
            _place_self(self.allowed)
        try:
            yield
        finally:
            with self._lock:
                self._widened.discard(tid)
                _place_self(self.home)

    def describe(self) -> dict[str, object]:
        """For the node's start-up line: the home CPU set, or that placement is left to the scheduler."""
        if self.home is None:
            return {"hostCpu": "off"}
        return {"hostCpu": sorted(self.home), "guestCpus": sorted(self.allowed)}


def _place_self(cpus: frozenset[int]) -> None:
    """The calling thread onto `cpus`, or nowhere new: placement is for speed, so a CPU set the kernel no longer
    allows (a cpuset shrunk under the node) never fails the invocation or the compile that asked for it."""
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, cpus)
