"""Python's cyclic garbage collector during a console-script process's start-up.

Importing a command creates tens of thousands of objects the collector tracks (about 30,000 when
`pipeline run` starts its work: modules, classes, functions, their dicts and tuples) that live until the
process ends. While they are being created, each collection walks all of them again, and the last
collection at interpreter exit walks them once more: about 30 ms of a 260 ms
`pipeline run` (issue 23, benchmarks/results/cli-startup.md). So `main()` pauses collection while the
command is found and imported, then freezes what exists (`gc.freeze`: never traced again, never freed,
as it would not be anyway) and turns collection back on before the command's own work begins. A
command, a long-running server above all, always runs with the collector on.

Only the console script pauses: a process that imports `agentfactory.cli` (a test's CliRunner, a
library user) never sees its collector changed, because `resume()` does nothing unless `pause()` ran.
"""

from __future__ import annotations

import gc

_paused = False


def pause() -> None:
    """Stop collecting until `resume()`; does nothing if the collector is already off (the caller's choice)."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume() -> None:
    """Freeze every object made so far and collect again; a no-op unless `pause()` turned collection off."""
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()
