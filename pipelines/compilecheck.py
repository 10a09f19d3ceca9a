"""The compile stage: every built module is validated and compiled once, under budget, before it is signed.

`wat2wasm` does not validate, and a small module can be a compile bomb; a template without test
cases used never to be compiled at all. So each module is validated by wasmtime under the agents'
engine settings (proposals included) and compiled in a bounded child process
(agentfactory.wasmcompile) under the compile ceiling nodes use (AGENTFACTORY_COMPILE_SECONDS,
AGENTFACTORY_COMPILE_MIB). A module over budget is refused with the numbers; one within budget
is tested with that very compilation, and what it cost goes into the provenance
(`internalParameters.compile`), so a node operator sees it before deploying.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

from agentfactory.errors import BuildError
from agentfactory.template import Template
from agentfactory.wasmcompile import CompileBudget, CompileRefused, ceiling, compile_bounded
from agentfactory.wasmconfig import PROPOSALS_ON, make_config


@dataclass(frozen=True)
class Compiled:
    """A module compiled under budget: the engine and module to test with, and the provenance record."""

    engine: Any  # wasmtime.Engine
    module: Any  # wasmtime.Module
    record: dict[str, Any]


def budget_for(template: Template) -> CompileBudget:
    """The template's compile budget: the node ceiling (templates cannot ask for more than a node allows)."""
    del template  # the template contract has no compile limit of its own; every template gets the ceiling
    return ceiling()


def compile_checked(template: Template, wasm: bytes, where: str) -> Compiled:
    """Validate and compile `wasm` under budget; BuildError with the numbers when it is refused."""
    import wasmtime

    fuel = template.limits.fuel is not None
    budget = budget_for(template)
    try:
        payload, report = compile_bounded(wasm, fuel, budget)
    except CompileRefused as exc:
        raise BuildError(where, f"compile check: {exc}; the module is not signed or published "
                                "(budget: AGENTFACTORY_COMPILE_SECONDS, AGENTFACTORY_COMPILE_MIB)") from None
    engine = wasmtime.Engine(make_config(fuel))
    module = wasmtime.Module.deserialize(engine, payload)  # our own child compiled these exact bytes
    record = {"validated": True, "wasmtime": version("wasmtime"), "proposals": list(PROPOSALS_ON),
              "fuel": fuel, "budget": budget.to_json(), **report.to_json()}
    return Compiled(engine=engine, module=module, record=record)
