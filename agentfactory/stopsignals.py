"""SIGINT and SIGTERM as a request to stop a server: recorded, never raised.

Python's own SIGINT handler raises KeyboardInterrupt at whatever line the main thread is on. While a server
starts, that line can be a weakref callback or a finalizer, where Python prints "Exception ignored" and carries
on: the Ctrl-C is lost and the server runs on (`tlog serve` did this about once in five starts under load). So
each server installs `StopSignals` as its command starts. From then on a signal is only recorded and handed to
a watcher thread through a pipe, whatever the main thread is doing. The handler takes no lock and starts no
thread, so a signal that lands while the main thread holds a lock (or a second one during the first) cannot
deadlock it. The server, once made, tells the watcher how to stop it (`then`); the watcher does so as soon as
both a signal and that callback are there, so a signal that came while the server was still being set up
stops it as soon as it exists. The callback always runs in the watcher, never in the main thread (a
`socketserver` shutdown waits for the serving loop, which the main thread is about to run).

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
    """`install()` from the main thread as the command starts; `then(stop)` once the server exists. `stop` runs
    once, in the watcher thread, after the first SIGINT or SIGTERM."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        self._callback: Callable[[], object] | None = None
        self._has_callback = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="stop-signals", daemon=True)

    def install(self) -> StopSignals:
        self._watcher.start()
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._handle)
        return self

    def then(self, stop: Callable[[], object]) -> StopSignals:
        """How to stop the server: called in the watcher thread after a signal (at once if one came already)."""
        self._callback = stop
        self._has_callback.set()
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
        self._has_callback.wait()
        if self._callback is not None:
            self._callback()


__all__ = ["STOP_SIGNALS", "StopSignals"]
