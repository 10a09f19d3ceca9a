"""The compile stage: every built module is validated and compiled once, under budget, before it is signed.

`wat2wasm` does not validate, and a small module can be a compile bomb; a template without test
cases used never to be compiled at all. So each module is validated by wasmtime under the agents'
engine settings (proposals included) and compiled in a bounded child process
(agentfactory.wasmcompile) under the compile ceiling nodes use (AGENTFACTORY_COMPILE_SECONDS,
AGENTFACTORY_COMPILE_MIB). A module over budget is refused with the numbers; one within budget
is tested with that very compilation, and what it cost goes into the provenance
(`internalParameters.compile`), so a node operator sees it before deploying.

A component (a Python agent) is compiled the same way with the component model on, under the
components' ceiling (AGENTFACTORY_COMPONENT_COMPILE_SECONDS: a component carries CPython, ~12 s of
CPU); the module of the result is then a `wasmtime.component.Component`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agentfactory.distversion import installed_version as version
from agentfactory.errors import BuildError
from agentfactory.template import Template
from agentfactory.wasm import ComponentInfo, inspect_component, is_component
from agentfactory.wasmcompile import CompileBudget, CompileRefused, ceiling, compile_bounded, make_component_config
from agentfactory.wasmconfig import PROPOSALS_ON, make_config


@dataclass(frozen=True)
class Compiled:
    """A module compiled under budget: the engine and module to test with, and the provenance record."""

    engine: Any  # wasmtime.Engine
    module: Any  # wasmtime.Module, or a wasmtime.component.Component for a component
    record: dict[str, Any]
    component: bool = False
    info: ComponentInfo | None = None  # a component's imports, exports and shape (for its store limits)


def budget_for(template: Template, component: bool = False) -> CompileBudget:
    """The template's compile budget: the node ceiling for its kind (templates cannot ask for more than a node
    allows; a component gets the components' ceiling, a core module the modules')."""
    del template  # the template contract has no compile limit of its own; every template gets the ceiling
    return ceiling(component)


def compile_checked(template: Template, wasm: bytes, where: str) -> Compiled:
    """Validate and compile `wasm` under budget; BuildError with the numbers when it is refused."""
    import wasmtime

    fuel = template.limits.fuel is not None
    component = is_component(wasm)
    budget = budget_for(template, component)
    try:
        payload, report = compile_bounded(wasm, fuel, budget, component=component)
    except CompileRefused as exc:
        knob = "AGENTFACTORY_COMPONENT_COMPILE_SECONDS" if component else "AGENTFACTORY_COMPILE_SECONDS"
        raise BuildError(where, f"compile check: {exc}; the {'component' if component else 'module'} is not signed "
                                f"or published (budget: {knob}, AGENTFACTORY_COMPILE_MIB)") from None
    if component:
        from wasmtime.component import Component

        engine = wasmtime.Engine(make_component_config(fuel))
        module: Any = Component.deserialize(engine, payload)  # our own child compiled these exact bytes
    else:
        engine = wasmtime.Engine(make_config(fuel))
        module = wasmtime.Module.deserialize(engine, payload)  # our own child compiled these exact bytes
    record = {"validated": True, "wasmtime": version("wasmtime"), "proposals": list(PROPOSALS_ON),
              "fuel": fuel, "budget": budget.to_json(), **report.to_json()}
    if component:
        record["componentModel"] = True
    info = inspect_component(wasm, where) if component else None
    return Compiled(engine=engine, module=module, record=record, component=component, info=info)
