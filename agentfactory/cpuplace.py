"""CPU placement of a service's threads (Linux): keep them on one home CPU.

A Python service does its work under one GIL, handed from thread to thread many times per request (an
event loop and a commit thread, connection threads and native libraries' own worker threads). When those
threads sit on different CPUs, each hand-off wakes the other CPU, which costs far more than the hand-off
itself; kept on one CPU they cost little, and the process loses little it could use, since its Python runs
on one core at a time anyway. Measured on 2 CPUs, the node runtime answered 850-1,000 trivial invocations/s at 4
connections with its threads spread and 2,500-2,900/s with them on one CPU; the transparency log 882 and
1,208 appends/s with 4 clients (benchmarks/results/runtime.md, tlog.md).

The services take `--host-cpu auto|off|CPU`: `auto` keeps the process on the CPU the scheduler started it on,
when it may use two or more (so that several services on one machine, each allowed every CPU, spread as the
scheduler spread them, rather than all choosing the same one); `off` leaves placement to the scheduler.
Threads started after `place_every_thread` inherit the CPUs of the thread that starts them.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from .errors import ConfigError


def allowed_cpus() -> frozenset[int]:
    """The CPUs this process may run on; empty where placement is not supported (not Linux)."""
    if not hasattr(os, "sched_getaffinity") or not Path("/proc/self/task").is_dir():
        return frozenset()
    return frozenset(os.sched_getaffinity(0))


def choose_home(setting: str, flag: str = "--host-cpu") -> frozenset[int] | None:
    """The home CPU set for `setting` ("auto", "off" or a CPU number), or None to leave placement alone.

    A CPU this process may not run on, or anything else, is a ConfigError naming `flag`."""
    setting = setting.strip().lower()
    if setting == "off":
        return None
    cpus = allowed_cpus()
    if setting == "auto":
        if len(cpus) < 2:
            return None
        here = current_cpu()
        return frozenset({here if here in cpus else max(cpus)})
    if not setting.isascii() or not setting.isdigit():
        raise ConfigError(f"{flag} {setting[:40]!r}: expected auto, off or a CPU number")
    cpu = int(setting)
    if cpus and cpu not in cpus:
        raise ConfigError(f"{flag} {cpu}: this process may run only on CPUs {','.join(map(str, sorted(cpus)))}")
    return frozenset({cpu}) if len(cpus) >= 2 else None


def current_cpu() -> int | None:
    """The CPU the calling thread runs on now (field 39 of /proc/thread-self/stat), or None."""
    try:
        stat = Path("/proc/thread-self/stat").read_text()
        return int(stat.rpartition(")")[2].split()[36])
    except (OSError, ValueError, IndexError):
        return None


def place_every_thread(cpus: frozenset[int]) -> int:
    """Every thread of this process onto `cpus`: how many were placed."""
    placed = 0
    for task in os.listdir("/proc/self/task"):
        with contextlib.suppress(ProcessLookupError):  # a thread that just ended
            os.sched_setaffinity(int(task), cpus)
            placed += 1
    return placed
