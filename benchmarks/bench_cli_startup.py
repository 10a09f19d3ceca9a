"""Whole-CLI wall time (interpreter start-up, imports, policy loading, the work), hyperfine-style.

Runs each command N times as a fresh process and reports p50/p90: `agentfactory --help`, `agentfactory verify
wordstats` and `agentfactory pipeline run` on an unchanged template, each with the compiled-policy cache warm
(what every run after the first sees) and cold (the cache folder deleted before each run), beside `python -c
pass`. Goal (issue 23): ≤ 250 ms p50 for a warm `verify` and `pipeline run`.

What pausing the garbage collector during start-up buys (agentfactory/cli/collector.py) is measured in the same
run: the warm `pipeline run` again, interleaved run by run with the same command through a `main()` whose
`collector.pause` does nothing (not judged).

Bytecode is cached as for an installed package (PYTHONDONTWRITEBYTECODE is removed; PYTHONPYCACHEPREFIX points
at a folder of this run, filled by a first untimed run), so the figures do not include compiling the
project's .py files, which a development shell with PYTHONDONTWRITEBYTECODE=1 pays on every command.
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, percentile, sized, verdict, write_results

RUNS = sized(15, 2)
GOAL_MS = 250.0
EXE = str(Path(sys.executable).with_name("agentfactory"))
# The console script with collector.pause switched off: Python's collector as the interpreter leaves it.
UNPAUSED = [sys.executable, "-c", "import sys; from agentfactory.cli import collector, main; "
            "collector.pause = lambda: None; sys.argv[0] = 'agentfactory'; main()"]


def timed(cmd: list[str], env: dict[str, str], cwd: Path, before: Any = None) -> float:
    """Seconds one run of `cmd` took; it must succeed (a verify that denies is a broken benchmark)."""
    if before is not None:
        before()
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout.decode()[-2000:]}"
                         f"{proc.stderr.decode()[-2000:]}")
    return seconds


def summary(runs: list[float]) -> dict[str, float]:
    return {"p50_ms": statistics.median(runs) * 1e3, "p90_ms": percentile(runs, 0.9) * 1e3,
            "min_ms": min(runs) * 1e3, "n": len(runs)}


def series(cmd: list[str], env: dict[str, str], cwd: Path, before: Any = None) -> dict[str, float]:
    return summary([timed(cmd, env, cwd, before) for _ in range(RUNS)])


def interleaved(a: list[str], b: list[str], env: dict[str, str], cwd: Path) -> tuple[dict[str, float], ...]:
    """Two commands run in turn, RUNS times each, so that a change in the machine's load hits both alike."""
    runs: tuple[list[float], list[float]] = ([], [])
    for _ in range(RUNS):
        runs[0].append(timed(a, env, cwd))
        runs[1].append(timed(b, env, cwd))
    return summary(runs[0]), summary(runs[1])


ENGINE_PROBE = """
import time
t0 = time.perf_counter()
from agentfactory.policy import RegoEngine
t1 = time.perf_counter()
engine = RegoEngine()
t2 = time.perf_counter()
engine.decide("artifact", {})
t3 = time.perf_counter()
print(f"{(t1 - t0) * 1e3:.1f} {(t2 - t1) * 1e3:.1f} {(t3 - t2) * 1e3:.1f}")
"""


def engine_times(env: dict[str, str], cwd: Path, cache: Path, cold: bool) -> dict[str, float]:
    """Import of agentfactory.policy, RegoEngine(), first decision (ms), in a fresh process."""
    if cold:
        shutil.rmtree(cache, ignore_errors=True)
    out = subprocess.run([sys.executable, "-c", ENGINE_PROBE], env=env, cwd=cwd, capture_output=True, check=True)
    imp, build, first = (float(x) for x in out.stdout.split())
    return {"import_ms": imp, "construct_ms": build, "first_decision_ms": first}


def import_breakdown(cmd: list[str], env: dict[str, str], cwd: Path, top: int = 8) -> dict[str, Any]:
    """`python -X importtime` of one run: total import time and the heaviest top-level imports (ms)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", *cmd], env=env, cwd=cwd, capture_output=True,
                          text=True, check=True)
    roots: dict[str, float] = {}
    for line in proc.stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        name = parts[2]
        if name.startswith(" ") and not name.startswith("  "):  # a top-level import: one space of indent
            roots[name.strip()] = roots.get(name.strip(), 0.0) + int(parts[1]) / 1e3
    heaviest = sorted(roots.items(), key=lambda kv: -kv[1])[:top]
    return {"total_ms": sum(roots.values()), "heaviest_ms": dict(heaviest)}


def main() -> None:
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="af-bench-startup-") as tmp:
        base = Path(tmp)
        templates = base / "templates"
        templates.mkdir()
        shutil.copytree(ROOT / "templates" / "wordstats", templates / "wordstats")
        home = base / "home"
        cache = home / "cache" / "policy"
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "AGENTFACTORY_POLICIES",
                                                                 "AGENTFACTORY_STORE", "AGENTFACTORY_POLICY_CACHE")}
        env.update({"AGENTFACTORY_HOME": str(home), "PYTHONPYCACHEPREFIX": str(base / "pycache"),
                    "AGENTFACTORY_TOOLCHAIN_CACHE": os.environ.get(
                        "AGENTFACTORY_TOOLCHAIN_CACHE", str(ROOT / ".agentfactory/cache/toolchain-tests")),
                    "AGENTFACTORY_OSV_DB": os.environ["AGENTFACTORY_OSV_DB"]})
        pipeline = [EXE, "pipeline", "run", "--templates", str(templates), "-j", "1"]
        commands = {"agentfactory --help": [EXE, "--help"],
                    "agentfactory verify wordstats": [EXE, "verify", "wordstats"],
                    "agentfactory pipeline run (unchanged)": pipeline}
        timed(pipeline, env, base)  # builds and publishes wordstats; fills the bytecode and policy caches
        for cmd in commands.values():
            timed(cmd, env, base)

        def clear() -> None:
            shutil.rmtree(cache, ignore_errors=True)

        rows: dict[str, dict[str, Any]] = {}
        for label, cmd in commands.items():
            if cmd is pipeline:
                rows[f"{label} | warm"], unpaused = interleaved(cmd, UNPAUSED + cmd[1:], env, base)
            else:
                rows[f"{label} | warm"] = series(cmd, env, base)
            if label != "agentfactory --help":  # --help judges nothing: it never loads the policies
                rows[f"{label} | cold"] = series(cmd, env, base, before=clear)
        imports = {label: import_breakdown(cmd, env, base)
                   for label, cmd in commands.items() if label != "agentfactory --help"}
        bare = series([sys.executable, "-c", "pass"], env, base)
        engine_cold = engine_times(env, base, cache, cold=True)
        engine_warm = engine_times(env, base, cache, cold=False)
    load_after = os.getloadavg()
    judged = ("agentfactory verify wordstats | warm", "agentfactory pipeline run (unchanged) | warm")
    verdicts = {k: v["p50_ms"] <= GOAL_MS for k, v in rows.items()}
    result = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
              "load_average_1m": {"before": load_before[0], "after": load_after[0]},
              "runs": RUNS, "goal_p50_ms": GOAL_MS,
              "commands": {k: {**v, "goal_met": verdicts[k]} for k, v in rows.items()},
              "pipeline_run_collector_not_paused": unpaused,
              "python_c_pass": bare, "imports_warm": imports,
              "policy_engine": {"cold_cache": engine_cold, "warm_cache": engine_warm},
              "goal_met": all(verdicts[k] for k in judged)}
    lines = ["# CLI start-up benchmark", "",
             f"Machine: {os.cpu_count()} CPUs, Python {platform.python_version()}. Each command run {RUNS} times as "
             "a new process (wall time, hyperfine-style); bytecode cached as for an installed package; "
             "`warm` = the compiled-policy cache filled by an earlier run, `cold` = its folder deleted before each "
             f"run (the policies compiled again). Load average (1 min) {load_before[0]:.2f} before the runs, "
             f"{load_after[0]:.2f} after: other work on the machine slows every row alike.", "",
             "| command | policy cache | p50 | p90 | min | goal ≤ 250 ms p50 |",
             "| --- | --- | ---: | ---: | ---: | --- |"]
    for key, row in rows.items():
        label, cache_state = key.split(" | ")
        lines.append(f"| `{label}` | {cache_state} | {row['p50_ms']:.0f} ms | {row['p90_ms']:.0f} ms | "
                     f"{row['min_ms']:.0f} ms | {verdict(verdicts[key])} |")
    lines += ["",
              f"- The garbage collector paused during start-up (agentfactory/cli/collector.py): the warm `pipeline "
              f"run (unchanged)` row above was run in turn with the same command through a `main()` whose "
              f"`collector.pause` does nothing: {unpaused['p50_ms']:.0f} ms p50 (p90 {unpaused['p90_ms']:.0f}, min "
              f"{unpaused['min_ms']:.0f}) without the pause. Importing a command makes objects that live as long "
              "as the process; Python's "
              "collector walked them again in each collection during the imports and once more at exit.",
              f"- Baseline, judged against nothing: `python -c pass` p50 {bare['p50_ms']:.0f} ms, "
              f"p90 {bare['p90_ms']:.0f} ms.",
              f"- The policy engine in a fresh process (import of agentfactory.policy / `RegoEngine()` / first "
              f"artifact decision): cold cache {engine_cold['import_ms']:.0f} / {engine_cold['construct_ms']:.0f} / "
              f"{engine_cold['first_decision_ms']:.0f} ms (parse, compile and plan, then save the bundle); warm "
              f"cache {engine_warm['import_ms']:.0f} / {engine_warm['construct_ms']:.0f} / "
              f"{engine_warm['first_decision_ms']:.0f} ms (load the authenticated bundle).",
              *[f"- Imports of `{label}` (`python -X importtime`, one warm run): {row['total_ms']:.0f} ms in all; "
                "heaviest top-level: " + ", ".join(f"{k} {v:.0f} ms" for k, v in row["heaviest_ms"].items()) + "."
                for label, row in imports.items()],
              f"- Goal (issue 23): a warm `verify` and `pipeline run` on an unchanged template ≤ 250 ms p50 — "
              f"{verify_text(rows, judged)}: {verdict(all(verdicts[k] for k in judged))}."]
    write_results("cli-startup", result, lines)


def verify_text(rows: dict[str, dict[str, Any]], judged: tuple[str, ...]) -> str:
    return ", ".join(f"{k.split(' | ')[0].removeprefix('agentfactory ')} {rows[k]['p50_ms']:.0f} ms" for k in judged)


if __name__ == "__main__":
    main()
