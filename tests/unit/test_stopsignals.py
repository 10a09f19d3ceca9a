"""A stop signal is recorded, never raised (agentfactory/stopsignals.py): the servers' Ctrl-C and SIGTERM work
whatever line the main thread is on when they land, including the lines where Python swallows exceptions."""

from __future__ import annotations

import signal
import sys
import threading
import weakref
from collections.abc import Iterator

import pytest

from agentfactory.stopsignals import STOP_SIGNALS, StopSignals


class _Thing:
    pass


@pytest.fixture(autouse=True)
def _restore_handlers() -> Iterator[None]:
    saved = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def _signal_inside_a_weakref_callback(signum: int) -> None:
    """Deliver `signum` while Python runs a weakref callback, where an exception is printed as "Exception
    ignored" and dropped: where `tlog serve` lost a Ctrl-C while it started."""
    thing = _Thing()
    ref = weakref.ref(thing, lambda _: signal.raise_signal(signum))
    del thing
    assert ref() is None


def test_pythons_own_handler_loses_a_ctrl_c_inside_a_callback(monkeypatch: pytest.MonkeyPatch) -> None:
    """The control: with KeyboardInterrupt raised at the line the main thread is on, the program goes on."""
    ignored: list[type[BaseException] | None] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda info: ignored.append(info.exc_type))  # "Exception ignored"
    signal.signal(signal.SIGINT, signal.default_int_handler)
    _signal_inside_a_weakref_callback(signal.SIGINT)  # no KeyboardInterrupt reaches this frame
    assert ignored == [KeyboardInterrupt]


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 0)])
def test_a_signal_inside_a_callback_still_stops_the_server(signum: int, code: int) -> None:
    stopped = threading.Event()
    stop = StopSignals().install().then(stopped.set)
    _signal_inside_a_weakref_callback(signum)
    assert stopped.wait(10)
    assert stop.requested and stop.received == [signum] and stop.exit_code() == code


def test_a_burst_of_signals_stops_once_and_never_blocks_the_handler() -> None:
    """Each signal writes one byte to a pipe nobody drains after the first: the handler never blocks on it."""
    calls: list[int] = []
    done = threading.Event()
    stop = StopSignals().install().then(lambda: (calls.append(1), done.set()))
    for _ in range(100_000):  # far more than a pipe holds (64 KiB)
        signal.raise_signal(signal.SIGTERM)
    signal.raise_signal(signal.SIGINT)
    assert done.wait(10)
    assert calls == [1] and len(stop.received) == 100_001 and stop.exit_code() == 130


def test_a_signal_before_the_server_exists_stops_it_once_it_does() -> None:
    """A server set up slowly (a log to open, policies to compile): the signal that came meanwhile is kept, and
    the stop runs in the watcher thread as soon as the server says how, never in the thread that says it."""
    ran_in: list[str] = []
    done = threading.Event()
    stop = StopSignals().install()
    signal.raise_signal(signal.SIGINT)
    assert stop.requested and not done.wait(0.2)  # nothing to stop yet
    stop.then(lambda: (ran_in.append(threading.current_thread().name), done.set()))
    assert done.wait(10) and ran_in == ["stop-signals"] and stop.exit_code() == 130


def test_no_signal_no_stop() -> None:
    stopped = threading.Event()
    stop = StopSignals().install().then(stopped.set)
    assert not stopped.wait(0.2) and not stop.requested and stop.exit_code() == 0
