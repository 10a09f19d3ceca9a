"""Throughput of the policy-injection property test (tests/security/test_attack_policy_injection.py).

Every string leaf of real inputs of the three policies, replaced in turn by every hostile string;
each case is one decision (input boundary + compiled query + typed read) and one comparison with the
benign string's decision. Writes benchmarks/results/policy_fuzz.{json,md}; fails if any case is
more permissive than its benign counterpart (the benchmark measures the real test, it does not skip it).
"""

from __future__ import annotations

import os
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests" / "security"))

from common import sized, verdict, write_results  # noqa: E402
from policy_injection_cases import HOSTILE, bases, run  # noqa: E402

from agentfactory.policy import RegoEngine  # noqa: E402

# A smoke run: three hostile strings spread over the list, on the first input of each policy.
STRINGS = sized(HOSTILE, HOSTILE[::20])


def rates(r: dict[str, float]) -> dict[str, float]:
    return {**r, "cases_per_s": r["cases"] / r["seconds"], "cases_per_cpu_s": r["cases"] / r["cpu_seconds"],
            "cpu_ms_per_case": r["cpu_seconds"] / r["cases"] * 1e3}


def row(name: str, r: dict[str, float]) -> str:
    return (f"| {name} | {r['cases']:.0f} | {r['seconds']:.1f} | {r['cases'] / r['seconds']:.0f} | "
            f"{r['cpu_seconds']:.1f} | {r['cases'] / r['cpu_seconds']:.0f} | "
            f"{r['cpu_seconds'] / r['cases'] * 1e3:.2f} |")


def main() -> None:
    engine = RegoEngine(ROOT / "policies")
    if engine.broken is not None:
        raise SystemExit(f"{ROOT / 'policies'}: {engine.broken}")
    engine.warm_up()
    per_policy: dict[str, dict[str, float]] = defaultdict(lambda: {"cases": 0, "seconds": 0.0, "cpu_seconds": 0.0})
    failures: list[str] = []
    every = bases()
    chosen = sized(every, [next(b for b in every if b.policy == p) for p in dict.fromkeys(b.policy for b in every)])
    for base in chosen:
        wall, cpu = time.perf_counter(), time.process_time()
        outcome = run(engine, base, STRINGS)
        sums = per_policy[base.policy]
        sums["cases"] += outcome.cases
        sums["seconds"] += time.perf_counter() - wall
        sums["cpu_seconds"] += time.process_time() - cpu
        failures += outcome.failures or []
    if failures:
        raise SystemExit("more permissive decisions:\n" + "\n".join(failures[:20]))
    total = {k: sum(r[k] for r in per_policy.values()) for k in ("cases", "seconds", "cpu_seconds")}
    result = {
        "hostile_strings": len(STRINGS), "cpus": os.cpu_count(),
        "policies": {p: rates(r) for p, r in per_policy.items()},
        "total": rates(total),
        "failures": 0,
    }
    lines = [
        "# Policy injection property test: throughput",
        "",
        f"The cases of tests/security/test_attack_policy_injection.py: every string leaf of real inputs, replaced "
        f"in turn by each of {len(STRINGS)} hostile strings; one decision and one comparison with the benign "
        f"string's decision a case. regopy in-process, {os.cpu_count()} CPUs. "
        "Wall-clock figures depend on what else the machine runs; CPU seconds are this process's own.",
        "",
        "| policy | cases | wall s | cases/s (wall) | CPU s | cases/s (CPU) | CPU ms/case |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        *(row(p, r) for p, r in [*per_policy.items(), ("all", total)]),
        "",
        f"No case more permissive than with the benign string: {verdict(True)} (a run with one fails instead, "
        "listing them).",
        "",
    ]
    write_results("policy_fuzz", result, lines)


if __name__ == "__main__":
    main()
