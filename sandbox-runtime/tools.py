"""Host tools: the host functions a node offers agents, imported from the module `agentfactory`.

A tool is linked into an agent's sandbox only when the agent's signed run contract declares it
(`spec.tools`) and the node provides it; the policy has already refused dangerous ones. Tools see
the invocation they serve through a thread-local context (a wasmtime store runs on one thread).
Every tool checks the invocation's deadline before it works (agentfactory.wasihost): epoch
interruption fires only in wasm code, so a host call must not start, nor return into the guest,
past the deadline. A tool that could wait must bound its wait by `wasihost.current().remaining()`.

`http.fetch` (http_fetch.py) is the one tool that reaches outside: its grant and counters are the
invocation's `FetchSession` (`ToolContext.http`, made by the sandbox from the signed contract);
`bind` makes it the session http_fetch serves, for core modules and components alike.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import wasmtime

from agentfactory import wasihost

from . import http_fetch

TOOL_MODULE = "agentfactory"
MAX_TOOL_LOG = 16 * 1024


@dataclass
class ToolContext:
    """Per-invocation state a tool may use: the agent's log lines, call counts."""

    log: bytearray = field(default_factory=bytearray)
    log_truncated: bool = False
    calls: dict[str, int] = field(default_factory=dict)
    http: http_fetch.FetchSession | None = None  # the agent's http.fetch grant, when its contract has one


_current = threading.local()


def current() -> ToolContext:
    ctx: ToolContext | None = getattr(_current, "ctx", None)
    if ctx is None:  # a tool called outside an invocation: give it a throwaway context
        ctx = ToolContext()
    return ctx


def bind(ctx: ToolContext | None) -> None:
    _current.ctx = ctx
    http_fetch.bind(ctx.http if ctx is not None else None)


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


HTTP_MIN_OUT = 512  # room for any error document: a smaller output buffer is refused before the request


def _http_fetch(caller: wasmtime.Caller, req_ptr: int, req_len: int, out_ptr: int, out_cap: int) -> int:
    """http.fetch for core modules: JSON request at [req_ptr, +req_len), JSON answer written at out_ptr.

    Returns the answer's length (a response or an `{"error": …}` document); -1 when a range is outside
    the guest's memory or out_cap < 512 (nothing was sent). An answer longer than out_cap is replaced by
    an error document of reason `buffer` (the request was made and counts).
    """
    ctx = current()
    ctx.calls["http.fetch"] = ctx.calls.get("http.fetch", 0) + 1
    memory = caller.get("memory")
    req_ptr, req_len, out_ptr, out_cap = (v & 0xFFFFFFFF for v in (req_ptr, req_len, out_ptr, out_cap))
    if not isinstance(memory, wasmtime.Memory) or out_cap < HTTP_MIN_OUT:
        return -1
    size = memory.data_len(caller)
    if req_ptr + req_len > size or out_ptr + out_cap > size or req_len > http_fetch.MAX_REQUEST_JSON:
        return -1
    answer = http_fetch.call_json(bytes(memory.read(caller, req_ptr, req_ptr + req_len)))
    if len(answer) > out_cap:
        answer = json.dumps({"error": {"reason": "buffer", "message": (
            f"http.fetch: the answer is {len(answer)} bytes and the output buffer {out_cap}; give a larger "
            "buffer (the request was made and counts)")}}).encode()
    wasihost.check()  # the deadline may have passed while the request ran: never write into the guest then
    memory.write(caller, answer, out_ptr)
    return len(answer)


_I32, _I64 = wasmtime.ValType.i32(), wasmtime.ValType.i64()

TOOLS: dict[str, Tool] = {t.name: t for t in (
    Tool("clock.now_ms", (), (_I64,), _clock_now_ms, False, "wall-clock time in milliseconds since the epoch"),
    Tool("log.write", (_I32, _I32), (_I32,), _log_write, True,
         f"append bytes from guest memory to the invocation's log (at most {MAX_TOOL_LOG} bytes)"),
    Tool("http.fetch", (_I32, _I32, _I32, _I32), (_I32,), _http_fetch, True,
         "an HTTP request to a host the contract allows (spec.http), secrets injected by the node "
         "(docs/runtime.md, http.fetch)"),
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
