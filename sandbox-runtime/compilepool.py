"""Compilation on a node: bounded in time, memory and concurrency, and a failure costs once.

A signed module can still be a compile bomb (Cranelift's time and memory grow much faster than a
function's size) or ill-typed (`wat2wasm` does not validate). Each compile therefore runs in a
child process under a budget (agentfactory.wasmcompile: validation first, then RLIMIT_CPU,
RLIMIT_AS, one core, a wall-clock watchdog), at most `workers` at a time on the node, and a
refusal is remembered per (digest, engine settings) in a bounded negative cache, so that every
later request for that digest is refused at once instead of compiling again. The children run at
a lower CPU priority (BACKGROUND_NICE): invocations of agents already compiled keep the CPU, and
a compile bomb gets what they leave idle.

The node budget comes from AGENTFACTORY_COMPILE_SECONDS and AGENTFACTORY_COMPILE_MIB (defaults
10 s and 1024 MiB, agentfactory.wasmcompile.ceiling); the pipeline compiles every module under the
same ceiling before signing it, so a signed module over it was signed by someone who bypassed it.
Components (Python agents) compile the same way under the components' ceiling
(AGENTFACTORY_COMPONENT_COMPILE_SECONDS, default 60 s of CPU: one carries CPython, ~12 s here).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Any

import wasmtime

from agentfactory.wasmcompile import CompileBudget, CompileRefused, ceiling, compile_bounded, validate

from .engine import Engines
from .sandbox import SandboxRefusal

MAX_FAILURES = 1024
BACKGROUND_NICE = 10  # CFS weight 110 against 1024: a compile takes about a tenth of a busy core


class CompilePool:
    """Bounded compilation of verified bytes into modules of this node's engines."""

    def __init__(self, engines: Engines, budget: CompileBudget | None = None, workers: int | None = None,
                 max_failures: int = MAX_FAILURES, nice: int = BACKGROUND_NICE,
                 component_budget: CompileBudget | None = None) -> None:
        self.engines = engines
        self.nice = nice
        self.budget = budget or ceiling()
        self.component_budget = component_budget or ceiling(component=True)
        self.workers = workers or max(1, (os.cpu_count() or 2) // 2)
        self._slots = threading.BoundedSemaphore(self.workers)
        self._failures: OrderedDict[tuple[str, str], SandboxRefusal] = OrderedDict()
        self._max_failures = max_failures
        self._lock = threading.Lock()
        self.compiles = 0  # child compilations started: what the negative cache saves

    def compile(self, digest: str, settings: str, verified_wasm: bytes, fuel: bool,
                component: bool = False) -> Any:
        """The module (a wasmtime.Module, or a Component for a component) for `digest`; SandboxRefusal
        (remembered) when it is invalid or over budget."""
        key = (digest, settings)
        known = self.failure(digest, settings)
        if known is not None:
            raise known
        try:
            if not component:  # linear, in-process: an ill-typed module never reaches a compiler
                validate(verified_wasm, fuel)  # (a component is validated by the compile child)
            with self._slots:
                with self._lock:
                    self.compiles += 1
                with self.engines.cpu.unpinned():  # the child inherits this thread's CPUs: all of them
                    payload, _report = compile_bounded(verified_wasm, fuel, self.component_budget if component
                                                       else self.budget, validated=True, nice=self.nice,
                                                       component=component)
        except CompileRefused as exc:
            if exc.reason == "unavailable":
                raise SandboxRefusal("compile-unavailable", f"{exc}; retry later") from None
            raise self._remember(key, exc, component) from None
        try:  # our own child compiled bytes the verifier accepted: deserializing them runs no one else's code
            if component:
                from wasmtime.component import Component

                return Component.deserialize(self.engines.get(fuel, component=True), payload)
            return wasmtime.Module.deserialize(self.engines.get(fuel), payload)
        except wasmtime.WasmtimeError as exc:
            raise SandboxRefusal("bad-module", f"the compiled module could not be loaded: {exc}") from None

    def failure(self, digest: str, settings: str) -> SandboxRefusal | None:
        """The refusal remembered for `digest` under `settings` (the negative cache), if any."""
        key = (digest, settings)
        with self._lock:
            known = self._failures.get(key)
            if known is None:
                return None
            self._failures.move_to_end(key)
        return SandboxRefusal(known.reason, f"{known} (remembered from an earlier attempt; not compiled again)")

    def _remember(self, key: tuple[str, str], exc: CompileRefused, component: bool = False) -> SandboxRefusal:
        reason = "compile-budget" if exc.reason == "over-budget" else "bad-module"  # counted by the runtime
        knob = "AGENTFACTORY_COMPONENT_COMPILE_SECONDS" if component else "AGENTFACTORY_COMPILE_SECONDS"
        refusal = SandboxRefusal(reason, str(exc) if exc.reason != "over-budget" else
                                 f"{exc} (node compile budget: {knob}, AGENTFACTORY_COMPILE_MIB)")
        with self._lock:
            self._failures[key] = refusal
            while len(self._failures) > self._max_failures:
                self._failures.popitem(last=False)
        return refusal

    def forget(self, digest: str) -> None:
        with self._lock:
            for k in [k for k in self._failures if k[0] == digest]:
                del self._failures[k]
