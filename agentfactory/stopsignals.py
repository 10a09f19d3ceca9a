"""SIGINT and SIGTERM as a request to stop a server: recorded, never raised.

Python's own SIGINT handler raises KeyboardInterrupt at whatever line the main thread is on. While a server
starts, that line can be a weakref callback or a finalizer, where Python prints "Exception ignored" and carries
on: the Ctrl-C is lost and the server runs on (`tlog serve` did this about once in five starts). So each
server installs `StopSignals` before it says it is listening. From then on a signal is only recorded and
handed to a watcher thread through a pipe, whatever the main thread is doing, and the watcher asks the server
to stop (`on_stop`). The handler takes no lock and starts no thread, so a signal that lands while the main
thread holds a lock (or a second signal during the first) cannot deadlock it.

uvicorn replaces these handlers while it serves and, when it stops, puts them back and raises again the
signals it caught (its second Ctrl-C still forces the exit): they are recorded here too. `exit_code` gives
the command's exit status: 130 after SIGINT (docs/cli.md), 0 after SIGTERM, a clean stop.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """Install with `install()` (main thread); `on_stop` runs once, in a thread of its own, after the first
    SIGINT or SIGTERM."""

    def __init__(self, on_stop: Callable[[], object]) -> None:
        self.received: list[int] = []
        self._on_stop = on_stop
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        self._watcher = threading.Thread(target=self._watch, name="stop-signals", daemon=True)

    def install(self) -> StopSignals:
        self._watcher.start()
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._handle)
        return self

    @property
    def requested(self) -> bool:
        return bool(self.received)

    def exit_code(self) -> int:
        """128 + SIGINT (130, what shells report for a command stopped by Ctrl-C) after SIGINT, else 0."""
        return 128 + signal.SIGINT if signal.SIGINT in self.received else 0

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.received.append(signum)
        with contextlib.suppress(BlockingIOError):  # a pipe full of earlier signals: the watcher knows already
            os.write(self._write, b"\0")

    def _watch(self) -> None:
        os.read(self._read, 1)
        self._on_stop()


__all__ = ["STOP_SIGNALS", "StopSignals"]
