"""The one wasmtime engine configuration for agents, shared by the pipeline's checks and the node.

The pipeline validates, compiles and tests a module under exactly the settings a node runs it
with, so "it compiled within budget in the pipeline" means the same thing on the node, and a
module compiled by a child process can be deserialized by its parent.

Proposals: the finished WebAssembly 2.0 feature set that C and WAT toolchains emit (mutable
globals, sign extension, non-trapping float-to-int, multi-value, bulk memory, reference types,
fixed-width SIMD) is on; every other proposal — threads, exception handling, tail calls,
function references, GC, relaxed SIMD, multi-memory, memory64, wide arithmetic, custom page
sizes, stack switching, the component model — is off, so the attack surface is what the
template policy judged. A module that uses one fails validation with the proposal's name.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from .distversion import installed_version as version

MAX_WASM_STACK = 512 * 1024  # bytes of native stack a guest may use: deep recursion traps

PROPOSALS_ON = ("bulk_memory", "multi_value", "reference_types", "simd")
PROPOSALS_OFF = ("threads", "exceptions", "tail_call", "function_references", "gc", "relaxed_simd",
                 "multi_memory", "memory64", "wide_arithmetic", "custom_page_sizes", "stack_switching",
                 "component_model")

SETTINGS: dict[str, Any] = {
    "epoch_interruption": True,
    "max_wasm_stack": MAX_WASM_STACK,
    "cranelift_opt_level": "speed",
    **{f"wasm_{p}": True for p in PROPOSALS_ON},
    **{f"wasm_{p}": False for p in PROPOSALS_OFF},
}


def make_config(fuel: bool, *, epoch: bool = True, parallel: bool = True) -> Any:
    """A `wasmtime.Config` with SETTINGS; `epoch=False` exists only for the benchmark that prices it.

    `parallel=False` is for the compile child: one core per compilation, whatever the module.
    Neither switch changes the generated code's compatibility (epoch is part of settings_key).
    """
    import wasmtime

    config = wasmtime.Config()
    for key, value in SETTINGS.items():
        setattr(config, key, value)
    config.epoch_interruption = epoch
    config.consume_fuel = fuel
    config.parallel_compilation = parallel
    return config


def settings_key(fuel: bool) -> str:
    """What a compiled module depends on besides its bytes: wasmtime, the settings, the host CPU."""
    host = os.uname()  # what platform.machine() and .system() return on POSIX, without importing platform
    doc = {"wasmtime": version("wasmtime"), "settings": SETTINGS, "fuel": fuel,
           "machine": host.machine, "system": host.sysname}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]
