"""The sandbox for component agents (Python agents, componentize-py): the same contract as for core modules.

- before anything is compiled, `check` holds the component's imports and exports (read by the bounded
  reader, agentfactory.wasm) to the project's WIT world and to the signed run contract: only the world's
  `tools` interface, only the tools the contract declares and this node provides, each with the world's
  signature, and `run: func(input: string) -> result<string, string>`; no WASI at all (a component is
  built with every WASI import stubbed out, so a contract granting preopens or environment variables to
  one is refused too). Each refusal names the import or export;
- `link` makes one component linker per agent with exactly those tools (agentfactory.wit.host);
- `run` instantiates in a fresh store per invocation with the same limits as a module: the memory ceiling
  for each linear memory and exactly the core instances and memories the component declares, fuel when
  declared, the epoch deadline and the deadline-aware tools; stdin (UTF-8) is `run`'s input, its ok text
  is stdout (exit code 0), its err text stderr (exit code 1), each capped at maxOutputKiB.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import wasmtime

from agentfactory import wasihost, wit
from agentfactory.runspec import RunSpec
from agentfactory.wasm import ComponentInfo
from agentfactory.wit import host

from . import component_tools, tools

if TYPE_CHECKING:
    from .engine import Engines
    from .http_fetch import HttpNode
    from .sandbox import Execution, Invocation, Linked


@dataclass(frozen=True)
class ComponentLink:
    """A verified component and the linker of its declared tools: ready to instantiate many times."""

    component: Any  # wasmtime.component.Component
    linker: Any  # wasmtime.component.Linker
    limits: dict[str, int]


def check(info: ComponentInfo, runspec: RunSpec) -> None:
    """SandboxRefusal naming the first reason the component may not run under `runspec` here (before compiling)."""
    from .sandbox import SandboxRefusal

    if runspec.entrypoint != wit.ENTRYPOINT:
        raise SandboxRefusal("world-mismatch", f"the run contract's entrypoint is {runspec.entrypoint!r}; a component "
                                               f"agent's is the WIT world's {wit.ENTRYPOINT!r} (spec.entrypoint)")
    if runspec.preopens or runspec.env:
        raise SandboxRefusal("undeclared-tool", "the run contract grants WASI preopens or environment variables to "
                                                "a component agent, which gets no WASI (spec.capabilities.wasi)")
    missing = [t for t in wit.tools_for(runspec.tools) if t.wit_name not in component_tools.BUILDERS]
    if missing:
        raise SandboxRefusal("undeclared-tool", f"the agent declares the tool {missing[0].tool!r}, which this node "
                                                "does not provide to components (tools: "
                                                f"{', '.join(component_tools.provided())})")
    problems = wit.world_problems(info, runspec.tools)
    if problems:
        mismatch = all("another world" in p for p in problems)
        raise SandboxRefusal("world-mismatch" if mismatch else "undeclared-tool",
                             f"the component does not fit the world {wit.WORLD_ID} and its signed run contract: "
                             + "; ".join(problems) + "; refusing to compile it")


def link(engines: Engines, component: Any, runspec: RunSpec, info: ComponentInfo, name: str,
         http: HttpNode | None = None) -> Linked:
    """Check `component` against its contract and make its linker: exactly the declared tools of the world."""
    from .sandbox import Linked

    check(info, runspec)
    engine = engines.get(runspec.limits.fuel is not None, component=True)
    env = component_tools.ToolEnv(agent=name, runspec=runspec)
    linker = host.make_linker(engine, component_tools.functions(env, runspec.tools))
    limits = host.store_limits(info, runspec.limits.memory_mib)
    return Linked(pre=None, engine=engine, runspec=runspec, preopens=(),
                  http=http if runspec.http is not None else None,
                  component=ComponentLink(component=component, linker=linker, limits=limits))


def run(engines: Engines, linked: Linked, name: str, invocation: Invocation) -> Execution:
    """Run the component once in a fresh store. Never raises for what the guest does."""
    from .sandbox import Execution, new_tool_context

    assert linked.component is not None
    started = time.perf_counter()
    spec = linked.runspec
    cap = spec.limits.max_output_kib * 1024
    text = invocation.stdin.decode("utf-8")  # checked by the runtime (check_invocation) before it got here
    store = wasmtime.Store(linked.engine)
    store.set_limits(**linked.component.limits)
    if spec.limits.fuel is not None:
        store.set_fuel(spec.limits.fuel)
    ctx = new_tool_context(linked, name)
    tools.bind(ctx)
    store.set_epoch_deadline(engines.deadline_ticks(spec.limits.timeout_ms))
    deadline = wasihost.Deadline(spec.limits.timeout_ms / 1000)
    wasihost.bind(deadline)
    tag, payload, trap = "", "", None
    guest_started = time.perf_counter()
    placed = engines.cpu.enter_guest()  # a long guest is let off the home CPU (cpu_home.py)
    try:
        tag, payload = host.call_run(linked.component.linker, linked.component.component, store, text)
    except (wasmtime.Trap, wasmtime.WasmtimeError, RuntimeError) as exc:
        trap = exc
    finally:
        engines.cpu.leave_guest(placed)
        guest_seconds = time.perf_counter() - guest_started
        tools.bind(None)
        wasihost.bind(None)
    out = payload.encode("utf-8") if tag == "ok" else b""
    err = payload.encode("utf-8") if tag == "err" else b""
    overflow = len(out) > cap or len(err) > cap
    outcome, code, reason = _judge(tag, trap, spec, overflow, deadline.hit)
    limits = tuple(n for n, hit in (("timeout", outcome == "timeout"), ("fuel", outcome == "fuel"),
                                    ("memory", outcome == "memory"), ("stack", outcome == "stack"),
                                    ("output", overflow)) if hit)
    del store
    total = time.perf_counter() - started
    return Execution(outcome=outcome, exit_code=code, reason=reason, stdout=out[:cap], stderr=err[:cap],
                     limits_hit=limits, guest_seconds=guest_seconds, setup_seconds=total - guest_seconds,
                     tool_log=bytes(ctx.log))


def _judge(tag: str, trap: BaseException | None, spec: RunSpec, overflow: bool,
           deadline_hit: bool) -> tuple[str, int | None, str]:
    """(outcome, exit code, reason) of one call of `run`, in the words sandbox._judge uses for modules."""
    from .sandbox import _last_line

    limits = spec.limits
    if trap is not None:
        kind, text = host.trap_kind(trap), _last_line(trap)
        if deadline_hit:
            return "timeout", None, (f"deadline exceeded: stopped after {limits.timeout_ms} ms (spec.limits.timeoutMs) "
                                     "while waiting in a host call")
        if kind == "interrupt":
            return "timeout", None, f"deadline exceeded: stopped after {limits.timeout_ms} ms (spec.limits.timeoutMs)"
        if kind == "fuel":
            return "fuel", None, f"out of fuel: used its {limits.fuel} units (spec.limits.fuel)"
        if kind == "stack":
            return "stack", None, "call stack exhausted (deep recursion); the native stack limit is per agent"
        if any(w in text.lower() for w in ("memoryerror", "out of memory", "memory.grow")):
            return "memory", None, (f"memory limit reached ({limits.memory_mib} MiB, spec.limits.memoryMiB) and the "
                                    f"guest trapped: {text}")
        return "trap", None, f"the guest trapped: {text}"
    if overflow:
        return "output", 0 if tag == "ok" else 1, (f"returned more than {limits.max_output_kib} KiB "
                                                   "(spec.limits.maxOutputKiB); the output was cut there")
    if tag == "ok":
        return "ok", 0, "run returned ok"
    return "error", 1, "run returned an error"
