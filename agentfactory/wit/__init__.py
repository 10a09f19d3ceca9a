"""The WIT world the runtime provides to Python agents (WebAssembly components): agentfactory:agent@0.1.0.

One world, versioned, shipped with the tool (`agentfactory/wit/agentfactory-agent@0.1.0.wit`): the
agent exports `run: func(input: string) -> result<string, string>` and imports the `tools` interface of
host tools. A template builds against the subset of that interface its `spec.tools` declares
(`world_text(tools)`), so its component imports only the tools it declared and policy can judge them by
name, exactly as it judges a core module's imports from the `agentfactory` module. Each WIT function is
the component form of a tool of the same name in `spec.tools` (`log` is `log.write`, `now-ms` is
`clock.now_ms`, `http-fetch` is `http.fetch`).

The signatures are kept here in the form `agentfactory.wasm` renders a component's types, so the
pipeline and the node compare a component's imports and exports with the world without a WIT parser;
`tests/unit/test_wit_world.py` holds the shipped file to `world_text()`, and the integration tests hold
a component componentize-py built from it to these signatures.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

from ..wasm import ComponentInfo, ComponentItem, Export, Import, ModuleInfo

PACKAGE = "agentfactory:agent"
VERSION = "0.1.0"
WORLD = "agent"
INTERFACE = "tools"
WORLD_ID = f"{PACKAGE}@{VERSION}"  # what a template's provenance names
TOOLS_IMPORT = f"{PACKAGE}/{INTERFACE}@{VERSION}"  # the import name in a component
FILE = f"agentfactory-agent@{VERSION}.wit"  # the shipped world, package data of agentfactory.wit
ENTRYPOINT = "run"
RUN_SIGNATURE = "func(input: string) -> result<string, string>"

_REQUEST = "record{method: string, url: string, headers: list<tuple<string, string>>, body: option<list<u8>>}"
_RESPONSE = "record{status: u16, headers: list<tuple<string, string>>, body: list<u8>}"

# WIT type name -> (its WIT declaration, its rendered form)
TYPES: dict[str, tuple[str, str]] = {
    "request": ("""  /// An outbound HTTP request. The host adds the secrets the template binds to this host;
  /// the agent never sees them.
  record request {
    method: string,
    url: string,
    headers: list<tuple<string, string>>,
    body: option<list<u8>>,
  }
""", _REQUEST),
    "response": ("""  /// The response: status, headers, and the body, capped by the template's limits.
  record response {
    status: u16,
    headers: list<tuple<string, string>>,
    body: list<u8>,
  }
""", _RESPONSE),
}


@dataclass(frozen=True)
class WitTool:
    """One function of the `tools` interface and the `spec.tools` name that grants it."""

    wit_name: str
    tool: str
    declaration: str  # WIT, with its doc comment
    signature: str  # as agentfactory.wasm renders it
    types: tuple[str, ...] = ()  # the TYPES it uses


TOOLS: tuple[WitTool, ...] = (
    WitTool("log", "log.write",
            "  /// Appends a line to the invocation's log (at most 16 KiB per invocation; the rest is dropped).\n"
            "  log: func(msg: string);\n",
            "func(msg: string)"),
    WitTool("now-ms", "clock.now_ms",
            "  /// Wall-clock time in milliseconds since the Unix epoch.\n"
            "  now-ms: func() -> u64;\n",
            "func() -> u64"),
    WitTool("http-fetch", "http.fetch",
            "  /// One HTTP request to a host the template declares (spec.http), under its limits; an error\n"
            "  /// says why the host refused or failed it.\n"
            "  http-fetch: func(req: request) -> result<response, string>;\n",
            f"func(req: {_REQUEST}) -> result<{_RESPONSE}, string>", ("request", "response")),
)
BY_TOOL = {t.tool: t for t in TOOLS}
BY_WIT = {t.wit_name: t for t in TOOLS}


def tools_for(declared: Iterable[str]) -> tuple[WitTool, ...]:
    """The world's tools among `declared` (spec.tools names), in the world's order."""
    wanted = set(declared)
    return tuple(t for t in TOOLS if t.tool in wanted)


def world_text(declared: Iterable[str] | None = None) -> str:
    """The WIT world, with every tool (the shipped file) or only those `declared` (a template's build)."""
    tools = TOOLS if declared is None else tools_for(declared)
    needed = [name for name in TYPES if any(name in t.types for t in tools)]
    body = "".join(TYPES[name][0] + "\n" for name in needed) + "\n".join(t.declaration for t in tools)
    interface = (f"/// Host tools. A template lists the ones it uses in spec.tools (log.write, clock.now_ms,\n"
                 f"/// http.fetch); its component is built against only those, and a node links only those.\n"
                 f"interface {INTERFACE} {{\n{body}}}\n\n") if tools else ""
    return (f"/// The world Agent Factory's runtime provides to agents built as WebAssembly components.\n"
            f"package {WORLD_ID};\n\n"
            f"{interface}"
            f"world {WORLD} {{\n"
            + (f"  import {INTERFACE};\n\n" if tools else "") +
            f"  /// The agent: the invocation's input in, its output (ok) or an error message (err) out.\n"
            f"  export {ENTRYPOINT}: func(input: string) -> result<string, string>;\n"
            f"}}\n")


def expected_imports(declared: Iterable[str]) -> dict[str, str]:
    """WIT function name -> signature, for the tools a template declared that the world has."""
    return {t.wit_name: t.signature for t in tools_for(declared)}


def shipped() -> Traversable:
    """The shipped world file (the trusted copy, not a pull request's)."""
    return resources.files("agentfactory").joinpath("wit", FILE)


# --- judging a component against the world --------------------------------------------------------

TOOL_MODULE = "agentfactory"  # the module name core-module tools are imported from: policy judges both alike


def world_problems(info: ComponentInfo, declared: Iterable[str]) -> list[str]:
    """Why a component does not fit this world for a template that declared `declared` tools (empty: it fits).

    Each reason names the import or export: an interface outside the world (a WASI interface, another
    package, another version of this world), a tool the template did not declare, a signature that is not
    the world's (the component was built against another world), or no `run` of the world's type.
    """
    problems: list[str] = []
    expected = expected_imports(declared)
    every = {t.wit_name: t for t in TOOLS}
    types = {name: rendered for name, (_, rendered) in TYPES.items()}
    for item in info.imports:
        if item.name != TOOLS_IMPORT:
            problems.append(_foreign_import(item))
            continue
        if item.kind != "instance":
            problems.append(f"import {item.name!r} is a {item.kind}, not the world's interface instance")
            continue
        for member in item.items:
            if member.kind == "type":
                if member.name in types and member.signature == types[member.name]:
                    continue
                problems.append(f"import {TOOLS_IMPORT}: type {member.name!r} = {member.signature} is not the "
                                f"world's ({types.get(member.name, 'no such type')}): built against another world")
            elif member.kind != "func":
                problems.append(f"import {TOOLS_IMPORT}: {member.name!r} is a {member.kind}, not a tool function")
            elif member.name not in every:
                problems.append(f"import {TOOLS_IMPORT}: {member.name!r} is not a tool of the world {WORLD_ID} "
                                f"(its tools: {', '.join(every)})")
            elif member.name not in expected:
                problems.append(f"import {TOOLS_IMPORT}: the component imports the tool {member.name!r} "
                                f"({every[member.name].tool}), which spec.tools does not declare")
            elif member.signature != expected[member.name]:
                problems.append(f"import {TOOLS_IMPORT}: {member.name} is {member.signature}, not the world's "
                                f"{expected[member.name]}: built against another world")
    run = info.export(ENTRYPOINT)
    if run is None:
        problems.append(f"the component does not export {ENTRYPOINT!r} (the world {WORLD_ID} exports "
                        f"{ENTRYPOINT}: {RUN_SIGNATURE}): built against another world")
    elif run.kind != "func" or run.signature != RUN_SIGNATURE:
        problems.append(f"export {ENTRYPOINT!r} is {run.signature or run.kind}, not the world's {RUN_SIGNATURE}: "
                        "built against another world")
    return problems


def _foreign_import(item: ComponentItem) -> str:
    name = item.name
    if name.startswith("wasi:"):
        return (f"import {name!r}: a WASI interface, which a component agent is never granted (it is built with "
                "every WASI import stubbed out; the template cannot ask for one)")
    if name.split("/")[0].split("@")[0] == PACKAGE or name.startswith(f"{PACKAGE}/"):
        return f"import {name!r}: not this world's interface {TOOLS_IMPORT}: built against another world"
    return f"import {name!r}: not an interface of the world {WORLD_ID} (it offers only {TOOLS_IMPORT})"


def as_module(info: ComponentInfo) -> ModuleInfo:
    """The component's imports and exports in the form policy judges core modules by: each tool of the world's
    interface as a function of module "agentfactory" named by its spec.tools name (log.write), every other
    imported function under its interface's name (so T3 of the template policy refuses it by name), and the
    exports by name and kind. Memory is what the component's core modules define."""
    imports: list[Import] = []
    for item in info.imports:
        members = item.items if item.kind == "instance" else (item,)
        for member in members:
            if member.kind == "type":
                continue
            if item.name == TOOLS_IMPORT and member.kind == "func" and member.name in BY_WIT:
                imports.append(Import(TOOL_MODULE, BY_WIT[member.name].tool, "func"))
            else:
                imports.append(Import(item.name, member.name, member.kind))
        if item.kind == "instance" and not item.items:
            imports.append(Import(item.name, "", "instance"))
    return ModuleInfo(imports=imports, exports=[Export(e.name, e.kind) for e in info.exports],
                      custom_sections=list(info.custom_sections), memories=list(info.memories))
