"""The two policy engines side by side: regopy in process against the OPA server over loopback.

Same inputs for both (bench_policy.py's template and artifact inputs, the sample admission input),
both through PolicyEngine.decide (the input boundary, then the engine): regopy's compiled bundles
in this process, and the real `opa run --server` with the bundle of policies/ queried by OPAEngine
(POST /v1/data/agentfactory/<policy>/decision on a keep-alive loopback connection, provenance and
strict builtin errors, the answer read strictly). Decision latency p50/p99 from one client, and
decisions per second from one client and from four threads sharing the engine. The decisions of
the two engines are checked equal first. Writes benchmarks/results/policy-engines.{json,md}.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

from bench_policy import artifact_document  # noqa: E402
from common import NO_TARGET, percentile, sized, write_results  # noqa: E402
from opa_server import running_opa  # noqa: E402

from agentfactory.peertools import find  # noqa: E402
from agentfactory.policy import PolicyEngine, RegoEngine, template_input  # noqa: E402
from agentfactory.policy_bundle import build_bundle  # noqa: E402
from agentfactory.policy_opa import OPAEngine  # noqa: E402
from agentfactory.policy_wasm import OPAWasmEngine  # noqa: E402
from agentfactory.template import load_template  # noqa: E402
from agentfactory.wasm import Import, ModuleInfo  # noqa: E402

RUNS = sized(800, 40)
THREADS = 4


def inputs() -> dict[str, dict[str, Any]]:
    t = load_template(ROOT / "templates" / "wordstats")
    module = ModuleInfo(imports=[Import("wasi_snapshot_preview1", n, "func") for n in
                                 ("fd_read", "fd_write", "fd_close", "fd_seek", "fd_fdstat_get", "proc_exit")])
    return {"template": template_input(t, [], module, None, path="templates/wordstats"),
            "artifact": artifact_document(),
            "admission": json.loads((ROOT / "examples/inputs/policy/admission.json").read_text())}


def latency(engine: PolicyEngine, policy: str, document: dict[str, Any]) -> dict[str, float]:
    """One client, one decision after the other: p50/p99 and decisions per second."""
    for _ in range(30):
        engine.decide(policy, document)
    samples = []
    started = time.perf_counter()
    for _ in range(RUNS):
        t = time.perf_counter()
        engine.decide(policy, document)
        samples.append(time.perf_counter() - t)
    wall = time.perf_counter() - started
    return {"p50_ms": statistics.median(samples) * 1e3, "p99_ms": percentile(samples, 0.99) * 1e3,
            "per_s": RUNS / wall}


def throughput(engine: PolicyEngine, policy: str, document: dict[str, Any]) -> float:
    """THREADS threads sharing the engine, RUNS decisions in all: decisions per second."""
    def work() -> None:
        for _ in range(RUNS // THREADS):
            engine.decide(policy, document)

    threads = [threading.Thread(target=work) for _ in range(THREADS)]
    started = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return (RUNS // THREADS * THREADS) / (time.perf_counter() - started)


def main() -> None:
    opa = find("opa")
    version = subprocess.run([str(opa), "version"], capture_output=True, text=True, check=True).stdout.split("\n")[0]
    docs = inputs()
    load_before = os.getloadavg()
    regopy = RegoEngine(ROOT / "policies")
    if regopy.broken:
        raise SystemExit(regopy.broken)
    regopy.warm_up()
    with tempfile.TemporaryDirectory(prefix="af-bench-opa-") as tmp:
        bundle = Path(tmp) / "bundle.tar.gz"
        build_bundle(ROOT / "policies", bundle)
        wasm = OPAWasmEngine(ROOT / "policies", opa=opa)
        if wasm.broken:
            raise SystemExit(wasm.broken)
        with running_opa(opa, bundle, Path(tmp) / "opa") as server:
            engine = OPAEngine(server.url, ROOT / "policies")
            for policy, document in docs.items():
                ours = regopy.decide(policy, document)
                for name, other in (("OPA", engine), ("opa-wasm", wasm)):
                    theirs = other.decide(policy, document)
                    if not ours.allow or (ours.allow, ours.deny, ours.warn) != (theirs.allow, theirs.deny, theirs.warn):
                        raise SystemExit(f"{policy}: the engines disagree or deny the benchmark's input: "
                                         f"regopy {ours}, {name} {theirs}")
            result: dict[str, Any] = {"runs": RUNS, "threads": THREADS, "cpus": os.cpu_count(), "opa": version,
                                      "policies": {}}
            for policy, document in docs.items():
                result["policies"][policy] = {
                    name: {**latency(e, policy, document), "per_s_threads": throughput(e, policy, document)}
                    for name, e in (("regopy", regopy), ("opa", engine), ("opa-wasm", wasm))}
            engine.close()
    result["loadavg_before_after"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
    lines = [
        "# Policy engines side by side: regopy in process, the OPA server, and OPA's Wasm compilation in process",
        "",
        f"Same inputs, both through `PolicyEngine.decide` (input boundary, then the engine), one run, {RUNS} "
        f"decisions each, {os.cpu_count()} CPUs shared by the client and the server. regopy: rego-cpp in this "
        f"process, compiled bundles, one interpreter behind a lock. OPA: `opa run --server` "
        f"({version.split(': ')[-1]}) with the bundle of policies/, on loopback, queried by OPAEngine "
        "(`POST /v1/data/agentfactory/<policy>/decision?provenance&strict-builtin-errors` on a keep-alive "
        "connection per thread, the answer read strictly and its "
        "bundle revision checked). opa-wasm: the policies compiled by the same OPA (`opa build -t wasm`), "
        "evaluated in this process by wasmtime, one instance per thread (agentfactory/policy_wasm.py). "
        f"decisions/s: one client; and {THREADS} threads sharing the engine.",
        "",
        f"Load average (1 min) before and after: {result['loadavg_before_after'][0]:.1f}, "
        f"{result['loadavg_before_after'][1]:.1f} (other work on the machine slows both engines alike).",
        "",
        f"{NO_TARGET} this page compares the three engines on the same inputs; the latency targets of a decision "
        "are bench_policy.py's (regopy and opa-wasm) and bench_admission.py's (the webhook).",
        "",
        f"| policy | engine | p50 | p99 | decisions/s (1 client) | decisions/s ({THREADS} threads) |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    labels = {"template": "template (wordstats, module imports)", "artifact": "artifact (prod, clean)",
              "admission": "admission (pinned, verified)"}
    for policy, by_engine in result["policies"].items():
        for name, r in by_engine.items():
            lines.append(f"| {labels[policy]} | {name} | {r['p50_ms']:.3f} ms | {r['p99_ms']:.3f} ms | "
                         f"{r['per_s']:.0f} | {r['per_s_threads']:.0f} |")
    lines.append("")
    write_results("policy-engines", result, lines)


if __name__ == "__main__":
    main()
