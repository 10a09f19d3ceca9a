"""What every benchmark shares: percentiles and summaries, a trivial agent, stopping a server, and writing
results as JSON plus a Markdown table."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent
# The pipeline scans every SBOM: benchmarks that build agents match them against the committed example
# OSV database unless one is configured (matching is timed on its own in bench_scan).
os.environ.setdefault("AGENTFACTORY_OSV_DB", str(ROOT / "examples" / "scanning" / "osv"))


@dataclass
class BenchHome:
    """A throwaway state folder (AGENTFACTORY_HOME) with a store, a keyring and the repository's policies."""

    base: Path
    store_path: Path
    store: Any
    keyring: Any
    engine: Any

    def publish(self, templates: Path) -> float:
        """Build, sign and publish `templates` with the real pipeline; the seconds it took."""
        from pipelines.run import Signing, run_pipeline

        started = time.perf_counter()
        report = run_pipeline(templates, self.store, signing=Signing(self.keyring), engine=self.engine)
        seconds = time.perf_counter() - started
        if not report.ok:
            raise SystemExit(f"pipeline failed: {[(t.name, t.errors) for t in report.templates if t.errors]}")
        return seconds


@contextlib.contextmanager
def bench_home(prefix: str) -> Iterator[BenchHome]:
    """What the runtime and admission benchmarks start from; the toolchain cache is the tests' (built once)."""
    from agentfactory.keys.local import LocalKeyring
    from agentfactory.policy import RegoEngine
    from agentfactory.store import open_store

    os.environ.setdefault("AGENTFACTORY_TOOLCHAIN_CACHE", str(ROOT / ".agentfactory/cache/toolchain-tests"))
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        base = Path(tmp)
        home = base / "home"
        os.environ["AGENTFACTORY_HOME"] = str(home)
        store_path = home / "store"
        yield BenchHome(base, store_path, open_store(f"oci-layout:{store_path}"), LocalKeyring(home / "keys"),
                        RegoEngine(ROOT / "policies"))


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
