"""The wasmtime engines of a node, and the one thread that drives their deadlines.

Signals cannot interrupt running wasm (wasmtime-py #126), so every store gets an epoch deadline
and a single ticker thread bumps the epoch of every engine at a fixed interval: one thread for
all invocations, rather than a timer per call. Fuel changes the generated code, so agents that
declare a fuel budget run on a second engine; the engine settings are part of the compiled-module
cache key.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import threading
from importlib.metadata import version
from typing import Any

import wasmtime

TICK_SECONDS = 0.005
MAX_WASM_STACK = 512 * 1024  # bytes of native stack a guest may use: deep recursion traps
# Features an agent may use. wasm32-wasi C and WAT need none of the proposals; threads, GC and
# the component model stay off so the attack surface is what the template policy judged.
SETTINGS: dict[str, Any] = {
    "epoch_interruption": True,
    "max_wasm_stack": MAX_WASM_STACK,
    "wasm_threads": False,
    "wasm_gc": False,
    "wasm_component_model": False,
    "wasm_memory64": False,
    "cranelift_opt_level": "speed",
}


def make_config(fuel: bool, *, epoch: bool = True) -> wasmtime.Config:
    """The engine configuration (SETTINGS); `epoch=False` exists only for the benchmark that prices it."""
    config = wasmtime.Config()
    config.epoch_interruption = epoch
    config.max_wasm_stack = MAX_WASM_STACK
    config.wasm_threads = False
    config.wasm_gc = False
    config.wasm_component_model = False
    config.wasm_memory64 = False
    config.cranelift_opt_level = "speed"
    config.consume_fuel = fuel
    return config


class Engines:
    """Two engines (with and without fuel metering) and the epoch ticker that serves both."""

    def __init__(self, tick_seconds: float = TICK_SECONDS) -> None:
        self.tick_seconds = tick_seconds
        self._engines = {False: wasmtime.Engine(make_config(False)), True: wasmtime.Engine(make_config(True))}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, name="epoch-ticker", daemon=True)
        self._thread.start()

    def get(self, fuel: bool) -> wasmtime.Engine:
        return self._engines[fuel]

    def deadline_ticks(self, timeout_ms: int) -> int:
        """Ticks for a wall-clock deadline of `timeout_ms`: never early, at most one tick late."""
        return max(1, math.ceil(timeout_ms / 1000 / self.tick_seconds)) + 1

    def _tick(self) -> None:
        while not self._stop.wait(self.tick_seconds):
            for engine in self._engines.values():
                engine.increment_epoch()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1)


def settings_key(fuel: bool) -> str:
    """What a compiled module depends on besides its bytes: wasmtime, the settings, the host CPU."""
    doc = {"wasmtime": version("wasmtime"), "settings": SETTINGS, "fuel": fuel,
           "machine": platform.machine(), "system": platform.system()}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]
