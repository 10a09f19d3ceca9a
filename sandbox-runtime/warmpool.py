"""Compilation off the request path: a background compiler, and the warm pool that feeds it.

A compile can take seconds (Cranelift on a large or adversarial module, under the node budget of
compilepool.py). On the node's service no request waits for one: a request for an agent whose
module is not compiled yet queues its compile here and is answered 503 with Retry-After and the
reason, while other agents keep their workers. At node start, and every `interval` seconds after,
the warm pool lists the agents this node may run at its stage (beyond the entry stage: the version
promoted to it; at the entry stage: the newest version of each name), verifies each and queues its
compile, so that traffic meets compiled modules; `/readyz` says not ready until that first set is
compiled or refused. A refusal is remembered per digest by the compile pool (the negative cache):
it is answered 403 at once, and never compiled again. A component (a Python agent, ~12 s of CPU to
compile) takes exactly this path: its first request after admission or promotion is a 503 `compiling`
unless the warm pool got to it first, never a 25-second wait.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agentfactory.errors import AgentFactoryError

from .engine import kind_settings_key
from .modcache import ModuleCache
from .sandbox import SandboxRefusal

if TYPE_CHECKING:
    from .runtime import Runtime

MAX_QUEUED = 256  # compiles queued or running at once; past it a request gets 503 compile-unavailable
MAX_QUEUED_BYTES = 256 * 1024 * 1024  # verified wasm bytes held by those jobs (one job always fits)
RETRY_AFTER = 2  # seconds a client is told to wait for a compile in progress
JobKey = tuple[str, bool, bool]  # (wasm digest, fuel metering, component)


@dataclass
class Job:
    """One compile in the background: what, for whom, and since when."""

    name: str
    digest: str
    fuel: bool
    queued_at: float = field(default_factory=time.monotonic)
    started_at: float | None = None
    component: bool = False

    @property
    def key(self) -> JobKey:
        return (self.digest, self.fuel, self.component)

    def describe(self, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        queued = f"queued {now - self.queued_at:.1f} s ago"
        if self.started_at is None:
            return f"{self.name}@{self.digest} is waiting for a compile slot ({queued}); retry"
        return (f"compiling {self.name}@{self.digest} (started {now - self.started_at:.1f} s ago, {queued}); "
                "retry")


class BackgroundCompiler:
    """Compiles verified bytes on a few threads (the compile pool's slots), one job per digest at a time."""

    def __init__(self, modules: ModuleCache, *, max_queued: int = MAX_QUEUED, max_bytes: int = MAX_QUEUED_BYTES,
                 on_done: Callable[[Job, float, SandboxRefusal | None], None] | None = None) -> None:
        self.modules = modules
        self.max_queued = max_queued
        self.max_bytes = max_bytes
        self._bytes = 0
        self._on_done = on_done or (lambda _j, _s, _r: None)
        self._executor = ThreadPoolExecutor(max_workers=modules.pool.workers, thread_name_prefix="af-compile")
        self._jobs: dict[JobKey, Job] = {}
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, name: str, digest: str, verified_wasm: bytes, fuel: bool, component: bool = False) -> Job:
        """The job compiling `digest` (queued now, or already); SandboxRefusal when its compile failed before
        (remembered: 403) or the queue is full (compile-unavailable: 503)."""
        known = self.modules.failure(digest, fuel, component)
        if known is not None:
            raise known
        with self._lock:
            job = self._jobs.get((digest, fuel, component))
            if job is not None:
                return job
            if self._closed:
                raise SandboxRefusal("compile-unavailable", "the node is shutting down; retry on another node")
            if len(self._jobs) >= self.max_queued or (self._jobs and self._bytes + len(verified_wasm) > self.max_bytes):
                raise SandboxRefusal("compile-unavailable", f"{len(self._jobs)} compiles ({self._bytes} bytes of wasm) "
                                                            f"are queued on this node (at most {self.max_queued}, "
                                                            f"{self.max_bytes} bytes); retry later")
            job = Job(name, digest, fuel, component=component)
            self._jobs[job.key] = job
            self._bytes += len(verified_wasm)
        self._executor.submit(self._run, job, verified_wasm)
        return job

    def active(self, key: JobKey) -> Job | None:
        """The job for `key` while it is queued or compiling; None once it is done."""
        with self._lock:
            return self._jobs.get(key)

    def counts(self) -> dict[str, int]:
        with self._lock:
            running = sum(1 for j in self._jobs.values() if j.started_at is not None)
            return {"compiling": running, "queued": len(self._jobs) - running}

    def _run(self, job: Job, data: bytes) -> None:
        job.started_at = time.monotonic()
        refusal: SandboxRefusal | None = None
        try:
            if not self.modules.has(job.digest, job.fuel, job.component):  # a job just finished may have compiled it
                module = self.modules.pool.compile(job.digest, kind_settings_key(job.fuel, job.component), data,
                                                   job.fuel, job.component)
                self.modules.keep(job.digest, job.fuel, module, job.component)
        except SandboxRefusal as exc:
            refusal = exc
        except Exception as exc:  # a bug or a closed engine: not the agent's fault, not remembered
            refusal = SandboxRefusal("compile-unavailable", f"compiling failed on this node: {type(exc).__name__}: "
                                                            f"{exc}; retry later")
        finally:
            with self._lock:
                self._jobs.pop(job.key, None)
                self._bytes -= len(data)
        seconds = time.monotonic() - job.started_at
        with contextlib.suppress(Exception):  # an audit failure must not kill the compile thread
            self._on_done(job, seconds, refusal)

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)


@dataclass
class _Scan:
    """The outcome of one scan: per agent name, ready | compiling | refused:<reason> | error, and jobs."""

    outcomes: dict[str, str] = field(default_factory=dict)
    jobs: dict[str, JobKey] = field(default_factory=dict)
    finished_at: float = 0.0


class WarmPool:
    """Lists the agents this node may run, verifies them and compiles them before traffic arrives."""

    def __init__(self, runtime: Runtime, interval: float = 60.0) -> None:
        if runtime.compiler is None:
            raise AgentFactoryError("the warm pool needs a runtime that compiles in the background")
        self.runtime = runtime
        self.compiler = runtime.compiler
        self.interval = interval
        self.scans = 0
        self._first: _Scan | None = None  # the initial warm set: readiness waits for it
        self._last: _Scan | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="af-warm-pool", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.scan()
                wait = self.interval
            except Exception:  # the store cannot be listed now (or a bug): try again soon; not ready until it works
                wait = min(self.interval, 5.0)
            self._stop.wait(wait)

    def scan(self) -> None:
        """Verify every agent this node may run and queue the compile of those not compiled yet."""
        scan = _Scan()
        for name in sorted({e.name for e in self.runtime.store.entries()}):
            if self._stop.is_set():
                return
            outcome, job = self.runtime.warm(name)
            scan.outcomes[name] = outcome
            if job is not None:
                scan.jobs[name] = job
        scan.finished_at = time.monotonic()
        with self._lock:
            self.scans += 1
            self._last = scan
            if self._first is None:
                self._first = scan

    def ready(self) -> bool:
        """True once the first scan finished and each compile it queued has finished (compiled or refused)."""
        with self._lock:
            first = self._first
        return first is not None and all(self.compiler.active(k) is None for k in first.jobs.values())

    def status(self) -> dict[str, Any]:
        """For /readyz: ready, and the last scan's agents by state."""
        with self._lock:
            last, scans = self._last, self.scans
        counts = {"agents": 0, "compiled": 0, "compiling": 0, "failed": 0, "refused": 0, "errors": 0}
        if last is not None:
            counts["agents"] = len(last.outcomes)
            for name, outcome in last.outcomes.items():
                counts[self._state(outcome, last.jobs.get(name))] += 1
        return {"ready": self.ready(), "scans": scans, "warm": counts, "compiler": self.compiler.counts()}

    def _state(self, outcome: str, job: JobKey | None) -> str:
        if outcome == "ready":
            return "compiled"
        if outcome in ("refused:compile-budget", "refused:bad-module"):
            return "failed"
        if outcome.startswith("refused"):
            return "refused"
        if outcome == "error" or job is None:
            return "errors"
        if self.compiler.active(job) is not None:
            return "compiling"
        if self.compiler.modules.has(*job):
            return "compiled"
        return "failed" if self.compiler.modules.failure(*job) is not None else "errors"
