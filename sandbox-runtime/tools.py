"""Host tools: the host functions a node offers agents, imported from the module `agentfactory`.

A tool is linked into an agent's sandbox only when the agent's signed run contract declares it
(`spec.tools`) and the node provides it; the policy has already refused dangerous ones. Tools see
the invocation they serve through a thread-local context (a wasmtime store runs on one thread).
Every tool checks the invocation's deadline before it works (agentfactory.wasihost): epoch
interruption fires only in wasm code, so a host call must not start, nor return into the guest,
past the deadline. A tool that could wait must bound its wait by `wasihost.current().remaining()`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import wasmtime

from agentfactory import wasihost

TOOL_MODULE = "agentfactory"
MAX_TOOL_LOG = 16 * 1024


@dataclass
class ToolContext:
    """Per-invocation state a tool may use: the agent's log lines, call counts."""

    log: bytearray = field(default_factory=bytearray)
    log_truncated: bool = False
    calls: dict[str, int] = field(default_factory=dict)


_current = threading.local()


def current() -> ToolContext:
    ctx: ToolContext | None = getattr(_current, "ctx", None)
    if ctx is None:  # a tool called outside an invocation: give it a throwaway context
        ctx = ToolContext()
    return ctx


def bind(ctx: ToolContext | None) -> None:
    _current.ctx = ctx


@dataclass(frozen=True)
class Tool:
    name: str
    params: tuple[wasmtime.ValType, ...]
    results: tuple[wasmtime.ValType, ...]
    impl: Callable[..., Any]
    needs_caller: bool
    doc: str

    def functype(self) -> wasmtime.FuncType:
        return wasmtime.FuncType(list(self.params), list(self.results))


def _clock_now_ms() -> int:
    current().calls["clock.now_ms"] = current().calls.get("clock.now_ms", 0) + 1
    return time.time_ns() // 1_000_000


def _log_write(caller: wasmtime.Caller, ptr: int, length: int) -> int:
    """Append guest bytes [ptr, ptr+len) to the invocation's log; 0, or -1 when out of bounds or full."""
    ctx = current()
    ctx.calls["log.write"] = ctx.calls.get("log.write", 0) + 1
    memory = caller.get("memory")
    if not isinstance(memory, wasmtime.Memory) or ptr < 0 or length < 0:
        return -1
    if ptr + length > memory.data_len(caller):
        return -1
    room = MAX_TOOL_LOG - len(ctx.log)
    if length > room:
        ctx.log_truncated = True
        length = max(room, 0)
    if length:
        ctx.log += memory.read(caller, ptr, ptr + length)
    return 0 if not ctx.log_truncated else -1


_I32, _I64 = wasmtime.ValType.i32(), wasmtime.ValType.i64()

TOOLS: dict[str, Tool] = {t.name: t for t in (
    Tool("clock.now_ms", (), (_I64,), _clock_now_ms, False, "wall-clock time in milliseconds since the epoch"),
    Tool("log.write", (_I32, _I32), (_I32,), _log_write, True,
         f"append bytes from guest memory to the invocation's log (at most {MAX_TOOL_LOG} bytes)"),
)}


def define(linker: wasmtime.Linker, names: Iterable[str]) -> None:
    """Link the named tools (already checked to be declared and provided)."""
    for name in names:
        tool = TOOLS[name]
        linker.define_func(TOOL_MODULE, name, tool.functype(), _within_deadline(tool.impl),
                           access_caller=tool.needs_caller)


def _within_deadline(impl: Callable[..., Any]) -> Callable[..., Any]:
    """`impl`, refused (a timeout trap) when called, or returning, past the invocation's deadline."""
    def call(*args: Any) -> Any:
        wasihost.check()
        result = impl(*args)
        wasihost.check()
        return result
    return call
