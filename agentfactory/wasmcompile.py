"""Validate and compile a module under a time and memory budget, in a child process.

Cranelift's compile time and memory grow much faster than a module's size (a 50 KB function of
many locals in nested loops takes a minute and gigabytes), and wasmtime cannot bound a compile
in-process. So the compile runs in a child process of ours that sets its own RLIMIT_CPU and
RLIMIT_AS before it reads a byte, compiles on one core (`parallel_compilation` off), and hands
back the serialized module; the parent also kills it at the wall-clock budget. The serialized
bytes come from our own child compiling bytes the caller already verified, so deserializing them
runs no one else's native code. A node compiles in the background at a lower CPU priority
(`nice`), so that a compile bomb signed by one author takes only the CPU the node's invocations
leave idle; its budget is then CPU seconds, and a wall clock stretched by a busy node is "retry
later", never a verdict remembered against the module. Validation (wasmtime's validator under the agent engine's
proposals) happens first, in-process: it is linear and turns an ill-typed module into a clear
refusal before anything is compiled.

Components (Python agents, componentize-py) compile the same way with the component model switched
on (`make_component_config`; wasmtime-py has no in-process validator for them, so the child validates
while it compiles). A component carries a whole CPython: ~12 s of CPU where a C agent takes
milliseconds. Rather than let a template ask for its own budget, a node has one ceiling per kind:
AGENTFACTORY_COMPILE_SECONDS for core modules and AGENTFACTORY_COMPONENT_COMPILE_SECONDS (default 60)
for components, the same on the build machine and the node, so a module can never buy itself the
components' larger budget; memory is AGENTFACTORY_COMPILE_MIB for both.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import resource
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from .errors import AgentFactoryError, ConfigError
from .wasmconfig import make_config, settings_key

DEFAULT_SECONDS = 10.0  # the ceiling of one compilation, pipeline and node alike (AGENTFACTORY_COMPILE_SECONDS)
DEFAULT_COMPONENT_SECONDS = 60.0  # ... of one component's (AGENTFACTORY_COMPONENT_COMPILE_SECONDS)
DEFAULT_MEMORY_MIB = 1024  # ... and of its memory above the compiler's baseline (AGENTFACTORY_COMPILE_MIB)
STARTUP_SLACK = 5.0  # wall seconds allowed for the child to start Python and wasmtime, outside the budget
_HEADER = struct.Struct("<I")
OVER_TIME = 124  # the child's exit code when its wall-clock watchdog fires
WATCH_INTERVAL = 0.02  # how often the child's watchdog reads its CPU time and the clock
NICE_WALL_FACTOR = 4.0  # a niced compile may take this many times its CPU budget in wall-clock time


@dataclass(frozen=True)
class CompileBudget:
    """How long and how much memory one compilation may take (on top of the child's baseline)."""

    seconds: float
    memory_mib: int

    def to_json(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "memoryMiB": self.memory_mib}


@dataclass(frozen=True)
class CompileReport:
    """What a compilation cost: wall and CPU seconds, and memory (MiB) above the child's baseline."""

    seconds: float
    cpu_seconds: float
    memory_mib: float
    peak_rss_mib: float

    def to_json(self) -> dict[str, Any]:
        return {"seconds": round(self.seconds, 3), "cpuSeconds": round(self.cpu_seconds, 3),
                "memoryMiB": round(self.memory_mib, 1), "peakRssMiB": round(self.peak_rss_mib, 1)}


class CompileRefused(AgentFactoryError):
    """The module is invalid or over its compile budget; `reason` is invalid | over-budget | failed, or
    unavailable when the host could not start a compile at all (nothing is known about the module)."""

    def __init__(self, reason: str, message: str, report: CompileReport | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.report = report


def ceiling(component: bool = False) -> CompileBudget:
    """The compile ceiling from the environment (the same on the build machine and the node): for a core
    module, or for a component (its own, larger, time ceiling)."""
    seconds = (_env_number("AGENTFACTORY_COMPONENT_COMPILE_SECONDS", DEFAULT_COMPONENT_SECONDS) if component
               else _env_number("AGENTFACTORY_COMPILE_SECONDS", DEFAULT_SECONDS))
    memory = _env_number("AGENTFACTORY_COMPILE_MIB", DEFAULT_MEMORY_MIB)
    return CompileBudget(seconds=seconds, memory_mib=max(1, int(memory)))


def make_component_config(fuel: bool, *, parallel: bool = True) -> Any:
    """The agents' engine settings (agentfactory.wasmconfig) with the component model on: the same proposals
    for the core modules inside a component, plus the component layer around them."""
    config = make_config(fuel, parallel=parallel)
    config.wasm_component_model = True
    return config


def component_settings_key(fuel: bool) -> str:
    """What a compiled component depends on besides its bytes: the module settings, plus the component model."""
    return hashlib.sha256(f"{settings_key(fuel)}+component-model".encode()).hexdigest()[:16]


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: not a number") from None
    if not 0 < value <= 86400:
        raise ConfigError(f"{name}={raw!r}: must be a positive number (seconds or MiB)")
    return value


def validate(wasm: bytes, fuel: bool) -> None:
    """wasmtime's validator under the agents' engine settings; CompileRefused("invalid") naming why."""
    import wasmtime

    try:
        wasmtime.Module.validate(_validator(fuel), wasm)
    except wasmtime.WasmtimeError as exc:
        raise CompileRefused("invalid", f"not a valid WebAssembly module for this platform: {_cause(exc)}") from None


def compile_bounded(wasm: bytes, fuel: bool, budget: CompileBudget, *, validated: bool = False,
                    nice: int = 0, component: bool = False) -> tuple[bytes, CompileReport]:
    """Validate (unless the caller just did), then compile in a bounded child: (serialized module, cost).

    `component`: `wasm` is a component (validated by the child as it compiles); the payload is then a
    serialized `wasmtime.component.Component`.

    `nice` > 0 runs the child at that lower priority (a node's background compiles): the wall clock
    then allows NICE_WALL_FACTOR times the budget, and running out of it before the CPU budget is
    CompileRefused("unavailable"), the node's load, not the module's fault.
    """
    if not validated and not component:
        validate(wasm, fuel)
    wall = budget.seconds * (NICE_WALL_FACTOR if nice > 0 else 1.0)
    started = time.perf_counter()
    try:  # -P: the working directory is not put on sys.path, so no file there can stand in for ours
        proc = subprocess.Popen(
            [sys.executable, "-P", "-m", "agentfactory.wasmcompile", "1" if fuel else "0", repr(budget.seconds),
             str(budget.memory_mib), repr(wall), str(max(0, nice)), *(["component"] if component else [])],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, close_fds=True)
    except OSError as exc:  # the host, not the module: not remembered against the module
        raise CompileRefused("unavailable", f"cannot start the compile process: {exc.strerror}") from None
    try:
        out, err = proc.communicate(wasm, timeout=wall + STARTUP_SLACK)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        took = time.perf_counter() - started
        if nice > 0:
            raise CompileRefused("unavailable", f"the node was too busy to finish compiling within {took:.1f} s "
                                 "wall clock at background priority") from None
        raise CompileRefused("over-budget", f"compiling took more than its budget of {budget.seconds:g} s "
                             f"(stopped after {took:.1f} s wall clock)",
                             CompileReport(took, took, 0.0, 0.0)) from None
    took = time.perf_counter() - started
    if proc.returncode != 0 or len(out) < _HEADER.size:
        raise _child_failure(proc.returncode, err, budget, took, niced=nice > 0)
    (size,) = _HEADER.unpack_from(out)
    head = json.loads(out[_HEADER.size:_HEADER.size + size])
    report = CompileReport(head["seconds"], head["cpuSeconds"], head["memoryMiB"], head["peakRssMiB"])
    if report.seconds > budget.seconds or report.memory_mib > budget.memory_mib:
        raise CompileRefused("over-budget", f"compiling took {report.seconds:.2f} s and {report.memory_mib:.0f} MiB, "
                             f"over its budget of {budget.seconds:g} s and {budget.memory_mib} MiB", report)
    return out[_HEADER.size + size:], report


@functools.cache
def _validator(fuel: bool) -> Any:
    """One engine per fuel setting for validation (engines are thread-safe; stores are not)."""
    import wasmtime

    return wasmtime.Engine(make_config(fuel, parallel=False))


def _child_failure(code: int, err: bytes, budget: CompileBudget, took: float, *, niced: bool = False) -> CompileRefused:
    text = err.decode("utf-8", "replace").strip().splitlines()
    last = text[-1] if text else ""
    report = CompileReport(took, took, 0.0, 0.0)
    if code == OVER_TIME and last.startswith("over-time"):
        fields = last.split()
        mib, cpu = float(fields[1]), float(fields[2]) if len(fields) > 2 else budget.seconds
        if niced and cpu < budget.seconds:  # starved by the node's own work: not the module's verdict
            return CompileRefused("unavailable", f"the node was too busy to finish compiling within {took:.1f} s "
                                  f"wall clock at background priority ({cpu:.1f} s of CPU used of its "
                                  f"{budget.seconds:g} s budget)")
        return CompileRefused("over-budget", f"compiling took more than its budget of {budget.seconds:g} s "
                              f"(stopped at {budget.seconds:g} s, {mib:.0f} MiB in use)",
                              CompileReport(budget.seconds, budget.seconds, mib, 0.0))
    if code in (-9, -24):  # SIGKILL, SIGXCPU: RLIMIT_CPU
        return CompileRefused("over-budget", f"compiling used more than its budget of {budget.seconds:g} s of CPU "
                              f"(stopped after {took:.1f} s)", report)
    if code == -6 or "memory" in last.lower() or "alloc" in last.lower():  # Rust aborts when RLIMIT_AS is hit
        return CompileRefused("over-budget", f"compiling needed more than its budget of {budget.memory_mib} MiB "
                              f"of memory (stopped after {took:.1f} s)", report)
    if last.startswith("invalid:"):
        return CompileRefused("invalid", f"not a valid WebAssembly module for this platform: {last[8:].strip()}")
    return CompileRefused("failed", f"the compiler failed (exit {code}): {last[:300] or 'no message'}", report)


def _cause(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    causes = [ln for ln in lines if not ln[:1].isdigit() and not ln.startswith("Caused by")]
    return (causes or lines or [type(exc).__name__])[-1]


def _vm_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _watch(done: threading.Event, seconds: float, wall: float, started: float, baseline_kib: int,
           cpu_before: float) -> None:
    """Stop the compile at `seconds` of CPU or `wall` seconds of wall clock, whichever comes first."""
    while not done.wait(WATCH_INTERVAL):
        used = resource.getrusage(resource.RUSAGE_SELF)
        if used.ru_utime + used.ru_stime - cpu_before >= seconds or time.perf_counter() - started >= wall:
            _over_time(baseline_kib, cpu_before)


def _over_time(baseline_kib: int, cpu_before: float) -> None:
    used = resource.getrusage(resource.RUSAGE_SELF)
    cpu = used.ru_utime + used.ru_stime - cpu_before
    sys.stderr.write(f"over-time {max(0, used.ru_maxrss - baseline_kib) / 1024:.1f} {cpu:.3f}\n")
    sys.stderr.flush()
    os._exit(OVER_TIME)


def _child(argv: list[str]) -> int:
    """The compile child: limits itself, compiles stdin, writes header + serialized module to stdout."""
    import wasmtime

    fuel, seconds, memory_mib = argv[0] == "1", float(argv[1]), int(argv[2])
    wall, nice = (float(argv[3]), int(argv[4])) if len(argv) > 4 else (seconds, 0)
    component = len(argv) > 5 and argv[5] == "component"
    if nice > 0:
        os.nice(nice)
    engine = wasmtime.Engine(make_component_config(fuel, parallel=False) if component
                             else make_config(fuel, parallel=False))
    wasm = sys.stdin.buffer.read()
    used = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = used.ru_utime + used.ru_stime
    limit = math.ceil(cpu_before + seconds)
    resource.setrlimit(resource.RLIMIT_CPU, (limit, limit + 1))
    resource.setrlimit(resource.RLIMIT_AS, (_vm_bytes() + memory_mib * 1024 * 1024,) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    baseline_kib = used.ru_maxrss
    started = time.perf_counter()
    done = threading.Event()  # ctypes releases the GIL while compiling, so the watchdog runs beside it
    watchdog = threading.Thread(target=_watch, args=(done, seconds, wall, started, baseline_kib, cpu_before),
                                daemon=True)
    watchdog.start()
    try:
        if component:
            from wasmtime.component import Component

            payload = bytes(Component(engine, wasm).serialize())
        else:
            payload = bytes(wasmtime.Module(engine, wasm).serialize())
    except wasmtime.WasmtimeError as exc:
        print(f"invalid: {_cause(exc)}", file=sys.stderr)
        return 3
    except MemoryError:
        print("out of memory", file=sys.stderr)
        return 4
    took = time.perf_counter() - started
    done.set()
    end = resource.getrusage(resource.RUSAGE_SELF)
    head = json.dumps({"seconds": took, "cpuSeconds": end.ru_utime + end.ru_stime - cpu_before,
                       "memoryMiB": max(0, end.ru_maxrss - baseline_kib) / 1024,
                       "peakRssMiB": end.ru_maxrss / 1024}).encode()
    out = sys.stdout.buffer
    out.write(_HEADER.pack(len(head)) + head + payload)
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
