"""The wasmtime engines of a node, and the one thread that drives their deadlines.

Signals cannot interrupt running wasm (wasmtime-py #126), so every store gets an epoch deadline
and a single ticker thread bumps the epoch of every engine at a fixed interval: one thread for
all invocations, rather than a timer per call. Fuel changes the generated code, so agents that
declare a fuel budget run on a second engine; the engine settings are part of the compiled-module
cache key. The settings themselves (proposals included) live in agentfactory.wasmconfig, because
the pipeline validates, compiles and tests every module under exactly the same ones. Components
(Python agents) get two more engines with the component model on (agentfactory.wasmcompile), ticked
by the same thread, which also lets long guest calls off the node's home CPU (cpu_home.py).
"""

from __future__ import annotations

import contextlib
import math
import threading

import wasmtime

from agentfactory.wasmcompile import component_settings_key, make_component_config
from agentfactory.wasmconfig import MAX_WASM_STACK, SETTINGS, make_config, settings_key

from .cpu_home import CpuHome

TICK_SECONDS = 0.005


class Engines:
    """Engines with and without fuel metering, for core modules and for components, and the one epoch ticker."""

    def __init__(self, tick_seconds: float = TICK_SECONDS, cpu: CpuHome | None = None) -> None:
        self.tick_seconds = tick_seconds
        self.cpu = cpu or CpuHome.off()
        self._engines = {False: wasmtime.Engine(make_config(False)), True: wasmtime.Engine(make_config(True))}
        self._components = {False: wasmtime.Engine(make_component_config(False)),
                            True: wasmtime.Engine(make_component_config(True))}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, name="epoch-ticker", daemon=True)
        self._thread.start()

    def get(self, fuel: bool, component: bool = False) -> wasmtime.Engine:
        return self._components[fuel] if component else self._engines[fuel]

    def deadline_ticks(self, timeout_ms: int) -> int:
        """Ticks for a wall-clock deadline of `timeout_ms`: never early, at most one tick late."""
        return max(1, math.ceil(timeout_ms / 1000 / self.tick_seconds)) + 1

    def _tick(self) -> None:
        while not self._stop.wait(self.tick_seconds):
            for engine in (*self._engines.values(), *self._components.values()):
                engine.increment_epoch()
            # placement is for speed, the deadlines are not: nothing a sweep raises may stop this thread
            with contextlib.suppress(Exception):
                self.cpu.sweep()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1)


def kind_settings_key(fuel: bool, component: bool = False) -> str:
    """The compiled-code cache key of the engine settings for a core module or a component."""
    return component_settings_key(fuel) if component else settings_key(fuel)


__all__ = ["MAX_WASM_STACK", "SETTINGS", "Engines", "kind_settings_key", "make_config", "settings_key"]
