"""The suite's guard against a hung child (tests/child_process.py): it fails the test, with the child's stacks,
where an unbounded wait would have held the whole run until CI killed it with nothing said."""

from __future__ import annotations

import subprocess
import sys

import pytest
from child_process import child_env, finish, first_line

HANG = ["-c", "import threading, time\n"
              "def stuck_in_a_thread(): time.sleep(600)\n"
              "threading.Thread(target=stuck_in_a_thread).start()\n"
              "time.sleep(600)\n"]


def test_a_child_that_does_not_exit_fails_with_every_threads_stack() -> None:
    proc = subprocess.Popen([sys.executable, *HANG], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=child_env())
    with pytest.raises(pytest.fail.Exception) as failed:
        finish(proc, timeout=0.5)
    assert proc.poll() is not None  # nothing left running
    message = str(failed.value)
    assert "did not exit after 0.5 s" in message
    assert "stuck_in_a_thread" in message and "<module>" in message  # both threads' stacks


def test_a_server_that_never_says_it_listens_fails_with_its_stacks() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import sys, time\nprint('starting', file=sys.stderr)\n"
                                                   "sys.stderr.flush()\ntime.sleep(600)\n"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=child_env())
    assert first_line(proc) == "starting\n"
    with pytest.raises(pytest.fail.Exception) as failed:
        first_line(proc, timeout=0.5)
    assert proc.poll() is not None
    assert "wrote no line after 0.5 s" in str(failed.value)
    assert "<module>" in str(failed.value)


def test_a_child_that_exits_is_waited_for_as_usual() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import sys; print('out'); sys.exit(3)"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
    assert finish(proc) == (3, "out\n", "")
