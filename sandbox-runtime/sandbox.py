"""The sandbox: one fresh wasmtime store per invocation, with every limit of the run contract.

- wall-clock deadline: epoch interruption (the engine's ticker thread), plus fuel when declared;
  host calls that can wait (poll_oneoff, tools) are bound by the same deadline
  (agentfactory.wasihost), and waiting there until it passes is a `timeout` too;
- memory: store limits (memory.grow fails past `memoryMiB`); native stack: the engine's limit;
- output: stdout and stderr captured in memory, each capped at `maxOutputKiB`; writes past the cap
  fail in the guest and the limit is reported;
- WASI: argv, only the environment variables the contract allows, read-only preopens exactly as
  declared (and only under host folders the node allows, holding only folders and regular files:
  a FIFO or device would block an open or read past the deadline), no sockets;
- tools: only those declared and provided (tools.py); any other import refuses to link.

Linking is done once per verified module (`link` → InstancePre); each invocation then only
creates a store and instantiates, which is what the sandbox-creation benchmark measures.

Sandbox creation and teardown run one thread at a time (HOST_LANE); the guest itself does not. They are
some 40 short wasmtime C calls, and each ctypes call releases the GIL: with several worker threads doing
them at once, every call handed the GIL to another thread (a futex wake and a context switch), and a
run's CPU grew from ~130 µs to ~700 µs at 4 threads (benchmarks/results/runtime.md). Queued on one lock,
the waiting threads sleep instead, and the one in the lane keeps the GIL across its calls. The guest's
code (instantiation, which runs any start function, and the entrypoint) runs outside the lane, in
parallel, so a long invocation never holds up another's creation. Under `runtime serve` every thread stays
on one home CPU, and a guest call still running after a couple of milliseconds is let onto every CPU until
it returns (cpu_home.py).

A component (a Python agent) goes through the same `link` and `run`, which hand it to
component_sandbox.py: the same limits, checked against the project's WIT world instead of WASI.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import wasmtime

from agentfactory import wasihost
from agentfactory.errors import AgentFactoryError
from agentfactory.runspec import RunSpec
from agentfactory.wasm import ComponentInfo

from . import component_sandbox, tools
from .component_sandbox import ComponentLink
from .engine import Engines
from .http_fetch import HttpNode

WASI_MODULE = wasihost.WASI_MODULE
PAGE = 65536
# Outcomes, most specific first: what stopped the guest.
OUTCOMES = ("ok", "error", "timeout", "fuel", "memory", "stack", "output", "trap")
HOST_LANE = threading.Lock()  # sandbox creation and teardown, one thread at a time (see the module's doc)


class SandboxRefusal(AgentFactoryError):
    """The module cannot be run under its contract here; `reason` is the metric label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Invocation:
    stdin: bytes = b""
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass
class Execution:
    """What happened inside the sandbox."""

    outcome: str  # one of OUTCOMES
    exit_code: int | None  # None when the guest did not exit (trap, deadline)
    reason: str
    stdout: bytes
    stderr: bytes
    limits_hit: tuple[str, ...]
    guest_seconds: float  # the entrypoint call (and a start function, which runs while instantiating)
    setup_seconds: float  # sandbox creation outside the guest: WASI config, store, limits, instantiation
    tool_log: bytes = b""

    def to_json(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "exitCode": self.exit_code, "reason": self.reason,
                "limitsHit": list(self.limits_hit), "guestMs": round(self.guest_seconds * 1000, 3),
                "setupMs": round(self.setup_seconds * 1000, 3)}


@dataclass(frozen=True)
class Linked:
    """A verified module linked against its contract: ready to instantiate many times."""

    pre: wasmtime.InstancePre | None  # None for a component
    engine: wasmtime.Engine
    runspec: RunSpec
    preopens: tuple[tuple[str, str], ...]  # (host path, guest path)
    http: HttpNode | None = None  # the node's http.fetch, when the contract grants http
    component: ComponentLink | None = None  # a component agent's linker and limits (component_sandbox.py)
    starts: bool = True  # the module may have a start function: instantiation runs guest code (not in HOST_LANE)


def new_tool_context(linked: Linked, name: str = "agent") -> tools.ToolContext:
    """The tool context of one invocation of `linked`, for core modules and components alike: its own
    http.fetch session when the contract grants http (caps and secrets are per invocation)."""
    spec = linked.runspec
    http = linked.http.session(name, spec.http) if linked.http is not None and spec.http is not None else None
    return tools.ToolContext(http=http)


def check_imports(module: wasmtime.Module, runspec: RunSpec) -> list[str]:
    """The tools to link; SandboxRefusal naming the first import the contract does not allow."""
    linked: list[str] = []
    for imp in module.imports:
        mod, name = imp.module, imp.name or ""
        if mod == WASI_MODULE:
            continue
        if mod == tools.TOOL_MODULE:
            if name not in runspec.tools:
                raise SandboxRefusal("undeclared-tool", f"the module imports tool {name!r} from {mod!r}, which its "
                                     "signed run contract does not declare (spec.tools); refusing to instantiate")
            if name not in tools.TOOLS:
                raise SandboxRefusal("undeclared-tool", f"the agent declares tool {name!r}, which this node does not "
                                     f"provide (tools: {', '.join(sorted(tools.TOOLS))})")
            linked.append(name)
            continue
        raise SandboxRefusal("undeclared-tool", f"the module imports {mod}.{name} from unknown module {mod!r}; agents "
                             f"may import only {WASI_MODULE} functions and declared tools from {tools.TOOL_MODULE!r}")
    return linked


def check_preopens(runspec: RunSpec, host_roots: tuple[Path, ...]) -> tuple[tuple[str, str], ...]:
    """Each declared preopen as (real host path, guest path); refused unless under an allowed root."""
    out = []
    for p in runspec.preopens:
        try:
            real = Path(p.host_path).resolve(strict=True)
        except (OSError, RuntimeError):
            raise SandboxRefusal("host-path", f"preopen {p.guest_path} → {p.host_path}: the host folder does not "
                                 "exist on this node") from None
        if not real.is_dir():
            raise SandboxRefusal("host-path", f"preopen {p.guest_path} → {p.host_path}: not a folder")
        if not any(real == root or real.is_relative_to(root) for root in host_roots):
            allowed = ", ".join(str(r) for r in host_roots) or "none (runtime --allow-host-path)"
            raise SandboxRefusal("host-path", f"preopen {p.guest_path} → {p.host_path}: this node does not let agents "
                                 f"see {real} (allowed host folders: {allowed})")
        blocking = wasihost.blocking_entry(real)
        if blocking is not None:
            raise SandboxRefusal("host-path", f"preopen {p.guest_path} → {p.host_path}: {blocking}; agents may be "
                                 "granted only folders of regular files")
        out.append((str(real), p.guest_path))
    return tuple(out)


def link(engines: Engines, module: Any, runspec: RunSpec, host_roots: tuple[Path, ...],
         info: ComponentInfo | None = None, name: str = "agent", http: HttpNode | None = None,
         starts: bool = True) -> Linked:
    """Check the module against its contract and pre-link it: WASI plus exactly the declared tools. A component
    (`info` is its bounded reading) is linked with the world's tools instead (component_sandbox.link). `starts`
    is False only when the module's bytes were read and hold no start section (ModuleInfo.start)."""
    if runspec.http is not None:  # the node judges the signed grant again: its own settings, ceilings, secrets
        problems = http.check_grant(runspec.http) if http is not None else ["this node offers no http.fetch"]
        if problems:
            raise SandboxRefusal("http-grant", "the agent's http.fetch grant (spec.http, spec.secrets) is refused "
                                 "by this node: " + "; ".join(problems))
    if info is not None:
        return component_sandbox.link(engines, module, runspec, info, name, http)
    names = check_imports(module, runspec)
    if not any(e.name == runspec.entrypoint and isinstance(e.type, wasmtime.FuncType) for e in module.exports):
        raise SandboxRefusal("bad-module", f"the module does not export the entrypoint {runspec.entrypoint!r} "
                             "(spec.entrypoint) as a function")
    preopens = check_preopens(runspec, host_roots)
    engine = engines.get(runspec.limits.fuel is not None)
    linker = wasmtime.Linker(engine)
    wasihost.define_wasi(linker)  # poll_oneoff and clocks respect the invocation's deadline
    tools.define(linker, names)
    try:
        pre = linker.instantiate_pre(module)
    except wasmtime.WasmtimeError as exc:
        raise SandboxRefusal("undeclared-tool", f"the module's imports do not match what the node provides: "
                             f"{_last_line(exc)}") from None
    return Linked(pre=pre, engine=engine, runspec=runspec, preopens=preopens,
                  http=http if runspec.http is not None else None, starts=starts)


def run(engines: Engines, linked: Linked, name: str, invocation: Invocation) -> Execution:
    """Run the agent once in a fresh store. Never raises for what the guest does."""
    if linked.component is not None:
        return component_sandbox.run(engines, linked, name, invocation)
    assert linked.pre is not None
    started = time.perf_counter()
    spec = linked.runspec
    memory_limit = spec.limits.memory_mib * 1024 * 1024
    code: int | None = 0
    trap: BaseException | None = None
    instance: wasmtime.Instance | None = None
    exports: Any = None  # wrapping the exports costs ~7 % of a run: once per run
    lane = _Lane()
    lane.enter()
    try:
        store, out, err, ctx, deadline = _create(engines, linked, name, invocation)
    except BaseException:
        lane.leave()
        raise
    guest_started = time.perf_counter()
    placed = engines.cpu.enter_guest()  # a long guest is let off the home CPU (cpu_home.py)
    try:
        if linked.starts:
            lane.leave()  # the start function is guest code: it runs outside the lane
        instance = linked.pre.instantiate(store)  # a start function runs here, under the same limits
        exports = instance.exports(store)
        entry = exports.get(spec.entrypoint)
        lane.leave()
        if isinstance(entry, wasmtime.Func):
            guest_started = time.perf_counter()
            entry(store)
    except wasmtime.ExitTrap as exc:
        code = exc.code
    except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
        code, trap = None, exc
    finally:
        lane.leave()
        engines.cpu.leave_guest(placed)
        guest_seconds = time.perf_counter() - guest_started
        tools.bind(None)
        wasihost.bind(None)
    lane.enter()
    try:
        memory_hit = _memory_hit(store, exports, memory_limit)
    finally:
        lane.leave()
    outcome, reason = _judge(code, trap, spec, out.overflow or err.overflow, memory_hit, deadline.hit)
    del instance, exports, store  # freeing the store is part of the sandbox's cost (outside the lane: a guest
    # that touched all its memory takes a while to unmap)
    limits = tuple(n for n, hit in (("timeout", outcome == "timeout"), ("fuel", outcome == "fuel"),
                                    ("memory", memory_hit), ("stack", outcome == "stack"),
                                    ("output", out.overflow or err.overflow)) if hit)
    total = time.perf_counter() - started
    return Execution(outcome=outcome, exit_code=code, reason=reason, stdout=out.value(), stderr=err.value(),
                     limits_hit=limits, guest_seconds=guest_seconds, setup_seconds=total - guest_seconds,
                     tool_log=bytes(ctx.log))


class _Lane:
    """One run's hold on HOST_LANE: `leave` on a lane this run does not hold is a no-op, so every exit path
    can leave without counting."""

    __slots__ = ("held",)

    def __init__(self) -> None:
        self.held = False

    def enter(self) -> None:
        HOST_LANE.acquire()
        self.held = True

    def leave(self) -> None:
        if self.held:
            self.held = False
            HOST_LANE.release()


def _create(engines: Engines, linked: Linked, name: str,
            invocation: Invocation) -> tuple[wasmtime.Store, wasihost.CappedOutput, wasihost.CappedOutput, Any,
                                             wasihost.Deadline]:
    """A fresh store with the contract's limits, WASI and tools bound to this thread; run in HOST_LANE."""
    spec = linked.runspec
    cap = spec.limits.max_output_kib * 1024
    out, err = wasihost.CappedOutput(cap), wasihost.CappedOutput(cap)
    wasi = wasmtime.WasiConfig()
    wasi.argv = [name, *invocation.args]
    wasi.env = [(k, invocation.env[k]) for k in spec.env if k in invocation.env]
    wasihost.stdin_bytes(wasi, invocation.stdin)
    wasi.stdout_custom = out
    wasi.stderr_custom = err
    for host, guest in linked.preopens:
        wasi.preopen_dir(host, guest, fs_mutable=False)
    store = wasmtime.Store(linked.engine)
    memory_limit = spec.limits.memory_mib * 1024 * 1024
    store.set_limits(memory_size=memory_limit, instances=1, tables=4, memories=1, table_elements=100_000)
    if spec.limits.fuel is not None:
        store.set_fuel(spec.limits.fuel)
    store.set_wasi(wasi)
    ctx = new_tool_context(linked, name)
    tools.bind(ctx)
    store.set_epoch_deadline(engines.deadline_ticks(spec.limits.timeout_ms))
    deadline = wasihost.Deadline(spec.limits.timeout_ms / 1000)
    wasihost.bind(deadline, (out, err))
    return store, out, err, ctx, deadline


def _memory_hit(store: wasmtime.Store, exports: Any, limit: int) -> bool:
    """Whether the guest's memory reached the limit (memory.grow fails there without trapping); `exports` is
    the instance's exports (None when it was not instantiated)."""
    if exports is None:
        return False
    try:
        memory = exports.get("memory")
        return isinstance(memory, wasmtime.Memory) and memory.data_len(store) + PAGE > limit
    except wasmtime.WasmtimeError:
        return False


def _judge(code: int | None, trap: BaseException | None, spec: RunSpec, output_overflow: bool,
           memory_hit: bool, deadline_hit: bool = False) -> tuple[str, str]:
    limits = spec.limits
    if trap is not None:
        tc = getattr(trap, "trap_code", None)
        if deadline_hit:
            return "timeout", (f"deadline exceeded: stopped after {limits.timeout_ms} ms (spec.limits.timeoutMs) "
                               "while waiting in a host call")
        if tc == wasmtime.TrapCode.INTERRUPT:
            return "timeout", f"deadline exceeded: stopped after {limits.timeout_ms} ms (spec.limits.timeoutMs)"
        if tc == wasmtime.TrapCode.OUT_OF_FUEL:
            return "fuel", f"out of fuel: used its {limits.fuel} units (spec.limits.fuel)"
        if tc == wasmtime.TrapCode.STACK_OVERFLOW:
            return "stack", "call stack exhausted (deep recursion); the native stack limit is per agent, not tunable"
        if memory_hit:
            return "memory", (f"memory limit reached ({limits.memory_mib} MiB, spec.limits.memoryMiB) and the guest "
                              f"trapped: {_trap_text(trap)}")
        return "trap", f"the guest trapped: {_trap_text(trap)}"
    if output_overflow:
        return "output", (f"wrote more than {limits.max_output_kib} KiB to stdout or stderr "
                          "(spec.limits.maxOutputKiB); the output was cut there")
    if code == 0:
        return "ok", "exited 0"
    return "error", f"exited {code}"


def _trap_text(trap: BaseException) -> str:
    tc = getattr(trap, "trap_code", None)
    return f"wasm trap {tc.name.lower()}" if tc is not None else _last_line(trap)


def _last_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    # wasmtime puts the cause last; its backtrace lines start with digits
    causes = [ln for ln in lines if not ln[:1].isdigit() and not ln.startswith("wasm backtrace")]
    return (causes or lines or [type(exc).__name__])[-1]


__all__ = ["Execution", "Invocation", "Linked", "SandboxRefusal", "link", "run"]
