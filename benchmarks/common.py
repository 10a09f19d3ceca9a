"""What every benchmark shares: percentiles and summaries, a trivial agent, stopping a server, and writing
results as JSON plus a Markdown table."""

from __future__ import annotations

import json
import signal
import statistics
import subprocess
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of `values`, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def write_results(name: str, result: dict[str, Any], lines: list[str]) -> None:
    """benchmarks/results/<name>.json and <name>.md, and the table on stdout."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text("\n".join(lines))
    print("\n".join(lines))


def ms(seconds: float) -> float:
    return seconds * 1e3


def summary_ms(values: list[float]) -> dict[str, float]:
    """p50, p99, max and mean in milliseconds of durations in seconds."""
    return {"p50_ms": ms(statistics.median(values)), "p99_ms": ms(percentile(values, 0.99)),
            "max_ms": ms(max(values)), "mean_ms": ms(statistics.fmean(values)), "n": len(values)}


def stop(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM a server and wait; kill it if it has not stopped within 10 s."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# The smallest useful WASI command: writes "ok\n" to stdout and returns.
TRIVIAL_WAT = """\
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "ok\\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 3))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
"""
