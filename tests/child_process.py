"""Waiting on a child process without ever hanging the suite.

A CLI child that stops answering (a deadlock, a signal that never reaches it) must fail its test with the
child's own stacks, not hold the run until CI kills it with nothing printed. `finish` and `first_line` send
SIGABRT when their bound passes and fail with what the child printed: a child started with `child_env()`
(Python's faulthandler armed) prints every thread's traceback first. The fixtures that start servers for
other tests keep their own environment (faulthandler would also print into the output of compile children
that a test makes crash): a stuck one is stopped the same way and its test fails with its stderr.
The bounds are for hangs, far above any normal run: nothing here times how fast a command is.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from typing import AnyStr

import pytest

HANG_S = 120.0  # a child still running this long after it was told to stop (or to start) is stuck


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test process's environment, faulthandler armed (see the module docstring), plus `extra`."""
    return {**os.environ, "PYTHONFAULTHANDLER": "1", **(extra or {})}


def _stuck(proc: subprocess.Popen[AnyStr], what: str, waited: float, reader: threading.Thread | None = None,
           got: list[AnyStr] | None = None) -> None:
    """Make the stuck child print its threads' stacks (SIGABRT under faulthandler), kill it, and fail. A
    `reader` thread still blocked on its stderr takes the first line of them into `got`."""
    proc.send_signal(signal.SIGABRT)
    try:
        if reader is None:
            _, stderr = proc.communicate(timeout=10)
        else:  # the reader's stream holds what it read past its line: read on from the stream, not the pipe
            reader.join(10)
            proc.wait(10)
            stderr = proc.stderr.read() if proc.stderr is not None else None
    except subprocess.TimeoutExpired:
        proc.kill()
        _, stderr = proc.communicate()
    printed = "".join(x.decode(errors="replace") if isinstance(x, bytes) else x for x in [*(got or []), stderr or ""])
    pytest.fail(f"{proc.args!r} {what} after {waited:g} s; its stderr and stacks:\n{printed}", pytrace=False)


def finish(proc: subprocess.Popen[AnyStr], timeout: float = HANG_S) -> tuple[int, AnyStr, AnyStr]:
    """The child's exit code, stdout and stderr once it exits; the test fails with its stacks if it does not
    within `timeout`."""
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _stuck(proc, "did not exit", timeout)
        raise  # unreachable: _stuck fails the test
    return proc.returncode, stdout, stderr


def first_line(proc: subprocess.Popen[AnyStr], timeout: float = HANG_S) -> AnyStr:
    """The first line the child writes to stderr (a server's "listening" line); the test fails with the
    child's stacks if none comes within `timeout`. Read in a thread: a pipe's readline has no timeout."""
    assert proc.stderr is not None
    got: list[AnyStr] = []
    reader = threading.Thread(target=lambda: got.append(proc.stderr.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    if not got:
        _stuck(proc, "wrote no line", timeout, reader, got)
    return got[0]
