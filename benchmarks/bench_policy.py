"""Policy decision latency, template and artifact policy, regopy in-process (target ≤ 1 ms).

Writes benchmarks/results/policy.{json,md}.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import write_results  # noqa: E402

from agentfactory.policy import RegoEngine, template_input  # noqa: E402
from agentfactory.template import load_template  # noqa: E402
from agentfactory.wasm import ModuleInfo  # noqa: E402

RUNS = 2000


def measure(engine: RegoEngine, policy: str, document: dict[str, object]) -> dict[str, float]:
    for _ in range(50):
        engine.decide(policy, document)
    samples = []
    for _ in range(RUNS):
        start = time.perf_counter()
        engine.decide(policy, document)
        samples.append(time.perf_counter() - start)
    samples.sort()
    return {"p50_ms": statistics.median(samples) * 1e3, "p99_ms": samples[int(0.99 * RUNS)] * 1e3}


def main() -> None:
    start = time.perf_counter()
    engine = RegoEngine(ROOT / "policies")
    load_s = time.perf_counter() - start
    assert engine.broken is None, engine.broken
    t = load_template(ROOT / "templates" / "wordstats")
    from agentfactory.wasm import Import

    module = ModuleInfo(imports=[Import("wasi_snapshot_preview1", n, "func") for n in
                                 ("fd_read", "fd_write", "fd_close", "fd_seek", "fd_fdstat_get", "proc_exit")])
    template_doc = template_input(t, [], module, None, path="templates/wordstats")
    assert engine.decide("template", template_doc).allow
    artifact_doc = {
        "artifact": {"name": "wordstats", "version": "1.0.0", "digest": "sha256:" + "0" * 64}, "stage": "prod",
        "verdict": {"score": 10.0, "checks": [{"name": n, "ok": True, "reason": ""} for n in
                                              ("digest", "signature", "key-status", "sbom", "provenance", "builder",
                                               "source")]},
        "sbom": {"components": [{"name": "utf8", "version": "1.0.0", "purl": "pkg:generic/x/utf8@1.0.0",
                                 "licenses": ["Apache-2.0"]}]},
        "scan": None,
    }
    assert engine.decide("artifact", artifact_doc).allow
    result = {"load_and_compile_s": load_s, "template": measure(engine, "template", template_doc),
              "artifact": measure(engine, "artifact", artifact_doc), "target_ms": 1.0, "cpus": os.cpu_count()}
    lines = [
        "# Policy decision benchmark",
        "",
        f"regopy (rego-cpp) in-process, policies compiled once ({load_s * 1e3:.0f} ms), {RUNS} decisions each, "
        f"{os.cpu_count()} CPUs. A decision = set the input + query `allow` + query `deny`.",
        "",
        "| policy | p50 | p99 | target |",
        "| --- | ---: | ---: | ---: |",
        f"| template (wordstats, with module imports) | {result['template']['p50_ms']:.3f} ms | "
        f"{result['template']['p99_ms']:.3f} ms | ≤ 1 ms |",
        f"| artifact (prod stage, 7 checks, 1 SBOM component) | {result['artifact']['p50_ms']:.3f} ms | "
        f"{result['artifact']['p99_ms']:.3f} ms | ≤ 1 ms |",
        "",
    ]
    write_results("policy", result, lines)


if __name__ == "__main__":
    main()
