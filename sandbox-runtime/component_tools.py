"""Host tools for component agents: the functions of the WIT world's `tools` interface a node provides.

The world (agentfactory.wit) names each tool twice: its WIT function (`log`, `now-ms`, `http-fetch`) and the
`spec.tools` name that grants it (`log.write`, `clock.now_ms`, `http.fetch`), the same name and the same
policy as the core-module tool of tools.py. A component is linked only with the WIT functions its signed
run contract declares and this node provides (BUILDERS); anything else it imports makes it refused before
it is compiled (component_sandbox.check).

The registration point: BUILDERS maps a WIT function name to a builder, called once per linked agent
with its ToolEnv, that returns the host function wasmtime calls as `f(store, *args)`. A host function
works on the invocation that calls it through tools.current() (the ToolContext sandbox.new_tool_context
made and bound for it, the same one core-module tools see); agentfactory.wit.host wraps every one in the
invocation's deadline. `http-fetch` takes a `request` record and returns a `response` record or an error
string (`result<response, string>`); see agentfactory.wit.TYPES for both.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from agentfactory import wit
from agentfactory.runspec import RunSpec
from agentfactory.wit.host import HostFunction

from . import tools


@dataclass(frozen=True)
class ToolEnv:
    """What a builder may know about the agent it links: its name and signed run contract."""

    agent: str
    runspec: RunSpec


Builder = Callable[[ToolEnv], HostFunction]


def _count(name: str) -> tools.ToolContext:
    ctx = tools.current()
    ctx.calls[name] = ctx.calls.get(name, 0) + 1
    return ctx


def _log(_env: ToolEnv) -> HostFunction:
    """`log(msg)`: one line of the invocation's log, at most tools.MAX_TOOL_LOG bytes in all."""
    def log(_store: Any, msg: str) -> None:
        ctx = _count("log.write")
        line = msg.encode("utf-8", "replace") + b"\n"
        room = tools.MAX_TOOL_LOG - len(ctx.log)
        if len(line) > room:
            ctx.log_truncated = True
            line = line[:max(room, 0)]
        ctx.log += line
    return log


def _now_ms(_env: ToolEnv) -> HostFunction:
    """`now-ms()`: wall-clock milliseconds since the epoch."""
    def now_ms(_store: Any) -> int:
        _count("clock.now_ms")
        return time.time_ns() // 1_000_000
    return now_ms


def _http_fetch(_env: ToolEnv) -> HostFunction:
    """`http-fetch(req) -> result<response, string>`: the invocation's http.fetch session (http_fetch.py)
    judges and sends the request; a refusal or failure is the error string, which never holds a secret."""
    from agentfactory.wit.host import response_record

    from . import http_fetch

    def http_fetch_tool(_store: Any, req: Any) -> Any:
        _count("http.fetch")
        try:
            request = http_fetch.FetchRequest(method=req.method, url=req.url,
                                              headers=tuple((str(n), str(v)) for n, v in req.headers),
                                              body=bytes(req.body) if req.body is not None else None)
            response = http_fetch.fetch(request)
        except http_fetch.FetchError as exc:
            return str(exc)
        return response_record(response.status, list(response.headers), response.body)
    return http_fetch_tool


# WIT function name -> builder: the world's tools this node provides to components.
BUILDERS: dict[str, Builder] = {"log": _log, "now-ms": _now_ms, "http-fetch": _http_fetch}


def register(wit_name: str, builder: Builder) -> None:
    """Provide the world's tool `wit_name` on this node (a WIT function of agentfactory.wit.TOOLS)."""
    if wit_name not in wit.BY_WIT:
        raise ValueError(f"{wit_name!r} is not a tool of the WIT world {wit.WORLD_ID}")
    BUILDERS[wit_name] = builder


def provided() -> tuple[str, ...]:
    """The spec.tools names of the world's tools this node provides to components."""
    return tuple(wit.BY_WIT[name].tool for name in BUILDERS if name in wit.BY_WIT)


def functions(env: ToolEnv, declared: Iterable[str]) -> dict[str, HostFunction]:
    """The host functions for the world's tools among `declared` (spec.tools names) that this node provides."""
    return {t.wit_name: BUILDERS[t.wit_name](env) for t in wit.tools_for(declared) if t.wit_name in BUILDERS}
