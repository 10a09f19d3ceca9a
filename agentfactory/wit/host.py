"""The host side of the world for one invocation of a component agent, shared by the pipeline's test stage
and the node's sandbox (as agentfactory.wasihost is for core modules).

- `make_linker` links the world's `tools` interface with exactly the host functions given (WIT name ->
  function), each refused (a timeout trap) when called, or returning, past the invocation's deadline;
  nothing else is linked, so a component importing anything more fails to instantiate;
- `store_limits` are the store limits of a component: the template's memory ceiling for each linear
  memory, and exactly as many core instances and memories as the component declares (a component is
  many core modules: CPython, its libc, adapters);
- `call_run` instantiates the component in a fresh store and calls `run(input)`: `("ok", text)` or
  `("err", message)`, the agent's own answer; traps propagate to the caller, who judges them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from .. import wasihost
from ..wasm import ComponentInfo
from . import ENTRYPOINT, TOOLS_IMPORT

HostFunction = Callable[..., Any]  # called as f(store, *args), as wasmtime's component linker calls it
MAX_TOOL_LOG = 16 * 1024  # bytes an invocation may log (what core-module tools allow)
MAX_TABLE_ELEMENTS = 100_000
MAX_TABLES = 16


def within_deadline(function: HostFunction) -> HostFunction:
    """`function`, refused (a timeout trap) when called, or returning, past the invocation's deadline."""
    def call(store: Any, *args: Any) -> Any:
        wasihost.check()
        result = function(store, *args)
        wasihost.check()
        return result
    return call


def make_linker(engine: Any, functions: Mapping[str, HostFunction]) -> Any:
    """A component linker that provides the world's tools interface with exactly `functions`."""
    from wasmtime.component import Linker

    linker = Linker(engine)
    if functions:
        with linker.root() as root, root.add_instance(TOOLS_IMPORT) as tools:
            for name, function in sorted(functions.items()):
                tools.add_func(name, within_deadline(function))
    return linker


def log_tool(append: Callable[[bytes], None]) -> HostFunction:
    """`log(msg)`: the message, as one UTF-8 line, to `append` (which caps what it keeps)."""
    def log(_store: Any, msg: str) -> None:
        append(msg.encode("utf-8", "replace") + b"\n")
    return log


def now_ms_tool() -> HostFunction:
    """`now-ms()`: wall-clock time in milliseconds since the epoch."""
    def now_ms(_store: Any) -> int:
        return time.time_ns() // 1_000_000
    return now_ms


class CappedLog:
    """An invocation's log lines, at most MAX_TOOL_LOG bytes; `truncated` once something was dropped."""

    def __init__(self, limit: int = MAX_TOOL_LOG) -> None:
        self.data = bytearray()
        self.limit = limit
        self.truncated = False

    def append(self, chunk: bytes) -> None:
        room = self.limit - len(self.data)
        if len(chunk) > room:
            self.truncated = True
            chunk = chunk[:max(room, 0)]
        self.data += chunk


def store_limits(info: ComponentInfo, memory_mib: int) -> dict[str, int]:
    """The store limits of a component under a memory ceiling of `memory_mib` per linear memory."""
    return {"memory_size": memory_mib * 1024 * 1024, "instances": max(1, info.core_instances),
            "memories": max(1, len(info.memories)), "tables": MAX_TABLES, "table_elements": MAX_TABLE_ELEMENTS}


def response_record(status: int, headers: list[tuple[str, str]], body: bytes) -> Any:
    """The WIT `response` record that `http-fetch` returns (wasmtime lowers it by its field names)."""
    from wasmtime.component import Record

    record = Record()
    record.__dict__.update(status=status, headers=headers, body=body)
    return record


def call_run(linker: Any, component: Any, store: Any, text: str) -> tuple[str, str]:
    """Instantiate `component` in `store` and call `run(text)`: ("ok" | "err", the agent's text)."""
    instance = linker.instantiate(store, component)
    run = instance.get_func(store, ENTRYPOINT)
    if run is None:
        raise RuntimeError(f"the component does not export {ENTRYPOINT!r}")
    result = run(store, text)
    run.post_return(store)
    tag, payload = getattr(result, "tag", None), getattr(result, "payload", None)
    if tag not in ("ok", "err") or not isinstance(payload, str):
        raise RuntimeError(f"run returned {type(result).__name__}, not result<string, string>")
    return tag, payload


# wasmtime reports a trap inside a component call as a WasmtimeError without a trap code; its text says which.
_TRAP_TEXTS = (("wasm trap: interrupt", "interrupt"), ("all fuel consumed", "fuel"), ("call stack exhausted", "stack"))


def trap_kind(exc: BaseException) -> str | None:
    """interrupt (the epoch deadline), fuel or stack when `exc` is such a trap, else None."""
    import wasmtime

    code = getattr(exc, "trap_code", None)
    by_code = {wasmtime.TrapCode.INTERRUPT: "interrupt", wasmtime.TrapCode.OUT_OF_FUEL: "fuel",
               wasmtime.TrapCode.STACK_OVERFLOW: "stack"}
    if code in by_code:
        return by_code[code]
    text = str(exc)
    return next((kind for needle, kind in _TRAP_TEXTS if needle in text), None)
