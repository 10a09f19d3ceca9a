"""The wasmtime engines of a node, and the one thread that drives their deadlines.

Signals cannot interrupt running wasm (wasmtime-py #126), so every store gets an epoch deadline
and a single ticker thread bumps the epoch of every engine at a fixed interval: one thread for
all invocations, rather than a timer per call. Fuel changes the generated code, so agents that
declare a fuel budget run on a second engine; the engine settings are part of the compiled-module
cache key. The settings themselves (proposals included) live in agentfactory.wasmconfig, because
the pipeline validates, compiles and tests every module under exactly the same ones.
"""

from __future__ import annotations

import math
import threading

import wasmtime

from agentfactory.wasmconfig import MAX_WASM_STACK, SETTINGS, make_config, settings_key

TICK_SECONDS = 0.005


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


__all__ = ["MAX_WASM_STACK", "SETTINGS", "Engines", "make_config", "settings_key"]
