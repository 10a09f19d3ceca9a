"""What every benchmark shares: percentiles and summaries, a trivial agent, stopping a server, writing
results as JSON plus a Markdown table, and the smoke mode (AGENTFACTORY_BENCH_SMOKE=1: small sizes, results
in a temporary folder) that CI runs so that a broken benchmark fails a test instead of rotting."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")
SMOKE_ENV = "AGENTFACTORY_BENCH_SMOKE"
RESULTS_ENV = "AGENTFACTORY_BENCH_RESULTS"  # a folder for the results instead of benchmarks/results


def _smoke() -> bool:
    value = os.environ.get(SMOKE_ENV, "")
    if value not in ("", "0", "1"):
        raise SystemExit(f"{SMOKE_ENV}={value!r}: expected 1 (smoke run) or 0 / unset (full run)")
    return value == "1"


# A smoke run proves the script still works (it builds, starts, measures and reports every part) with sizes
# small enough for CI; its figures mean nothing and never reach benchmarks/results.
SMOKE = _smoke()


def sized(full: T, smoke: T) -> T:
    """`full` in a real run, `smoke` in a smoke run: every size, count and duration a benchmark uses."""
    return smoke if SMOKE else full


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


def results_dir() -> Path:
    """benchmarks/results, or $AGENTFACTORY_BENCH_RESULTS; a smoke run never writes the committed results:
    without the variable it writes to a new temporary folder, and pointed at benchmarks/results it refuses."""
    chosen = os.environ.get(RESULTS_ENV)
    if not SMOKE:
        return Path(chosen) if chosen else RESULTS
    folder = Path(chosen) if chosen else Path(tempfile.mkdtemp(prefix="af-bench-smoke-"))
    if folder.resolve() == RESULTS.resolve():
        raise SystemExit(f"{RESULTS_ENV}={chosen}: a smoke run's figures mean nothing and must not replace the "
                         f"committed results in {RESULTS}; point it at another folder")
    return folder


# A stated target: "target" or "goal" followed, on the same line, by a bound.
_TARGET = re.compile(r"\b(target|goal)s?\b.{0,120}?(≤|≥|<=|>=|\bat most\b|\bat least\b)", re.IGNORECASE)
_VERDICT = re.compile(r"\b(pass|fail)\b", re.IGNORECASE)
NO_TARGET = "No target:"  # opens the line of a results page that only compares, and says why nothing is judged


def verdict(ok: bool) -> str:
    """How a results page says whether a target was met."""
    return "**pass**" if ok else "**FAIL**"


def missing_verdicts(lines: list[str]) -> list[str]:
    """Why a results page does not say pass or fail for its targets (empty when it does): a line stating a
    target without a verdict, a row of a table with a target column without one, or a page with neither a
    verdict nor a line opening with NO_TARGET."""
    problems: list[str] = []
    in_table = target_column = False
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if text.startswith("|"):
            cells = [c.strip().lower() for c in text.strip("|").split("|")]
            if not in_table:  # a table's first row is its header: a target column means every row says
                in_table, target_column = True, any("target" in c or "goal" in c for c in cells)
                continue
            if all(set(c) <= set("-: ") for c in cells):  # the separator row
                continue
            if target_column and not _VERDICT.search(text):
                problems.append(f"line {number}: a row of a table with a target column and no pass/fail: {text}")
                continue
        else:
            in_table = target_column = False
        if _TARGET.search(text) and not _VERDICT.search(text):
            problems.append(f"line {number}: a target without pass/fail: {text}")
    if not any(_VERDICT.search(line) for line in lines) and not any(line.startswith(NO_TARGET) for line in lines):
        problems.append(f"no pass/fail anywhere and no line opening with {NO_TARGET!r} (a page that only compares "
                        "says so)")
    return problems


def write_results(name: str, result: dict[str, Any], lines: list[str]) -> None:
    """<name>.json and <name>.md in results_dir(), and the page on stdout. A page whose targets do not all say
    pass or fail is written (the figures are kept) and then the run fails: the script's report is broken."""
    folder = results_dir()
    if SMOKE:
        result = {"smoke": True, **result}
        lines = [f"> Smoke run ({SMOKE_ENV}=1): reduced sizes, the figures mean nothing.", "", *lines]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (folder / f"{name}.md").write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"results: {folder / name}.{{json,md}}")
    problems = missing_verdicts(lines)
    if problems:
        raise SystemExit(f"{folder / name}.md does not say pass or fail for its targets:\n" + "\n".join(problems))


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


def run_threads(target: Callable[[Any], None], shares: Sequence[Any]) -> tuple[float, float]:
    """Run `target(share)` in one thread per share, all at once: (wall seconds, process CPU seconds)."""
    import threading

    pool = [threading.Thread(target=target, args=(share,)) for share in shares]
    cpu0, start = time.process_time(), time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return time.perf_counter() - start, time.process_time() - cpu0
