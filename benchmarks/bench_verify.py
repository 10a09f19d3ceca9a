"""Verification of one artifact: cold (policy and keys parsed, evidence read) and with parsed keys cached.

Both sides are measured in the same run; writes benchmarks/results/verify.{json,md}.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import NO_TARGET, percentile, sized, write_results  # noqa: E402

from agentfactory.evidence import collect  # noqa: E402
from agentfactory.keys.local import LocalKeyring  # noqa: E402
from agentfactory.store import OCILayoutStore  # noqa: E402
from agentfactory.trust import load_trust_policy, to_yaml  # noqa: E402
from agentfactory.verifier import verify  # noqa: E402
from pipelines.run import Signing, run_pipeline  # noqa: E402

RUNS = sized(300, 10)



def main() -> None:
    with tempfile.TemporaryDirectory(prefix="af-bench-verify-") as tmp:
        base = Path(tmp)
        os.environ["AGENTFACTORY_HOME"] = str(base / "home")
        os.environ.setdefault("AGENTFACTORY_TOOLCHAIN_CACHE", str(ROOT / ".agentfactory/cache/toolchain-tests"))
        store = OCILayoutStore(base / "store")
        keyring = LocalKeyring(base / "keys")
        report = run_pipeline(ROOT / "templates", store, signing=Signing(keyring))
        assert report.ok, [t.errors for t in report.templates]
        policy_path = base / "trust.yaml"
        policy_path.write_text(to_yaml(keyring.public_keys()))
        agent = store.resolve("wordstats")

        def once(policy: object | None) -> float:
            start = time.perf_counter()
            p = policy or load_trust_policy(policy_path)
            _, wasm = store.fetch_wasm(agent.digest)
            verdict = verify(agent.digest, wasm, collect(store, agent), p)  # type: ignore[arg-type]
            elapsed = time.perf_counter() - start
            assert verdict.allowed, verdict.reasons
            return elapsed

        cold = [once(None) for _ in range(RUNS)]
        cached_policy = load_trust_policy(policy_path)
        warm = [once(cached_policy) for _ in range(RUNS)]
    result = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "artifact": "wordstats (signature + SBOM + provenance attestations, OCI layout store)",
        "cold": {"p50_ms": statistics.median(cold) * 1e3, "p99_ms": percentile(cold, 0.99) * 1e3},
        "keys_cached": {"p50_ms": statistics.median(warm) * 1e3, "p99_ms": percentile(warm, 0.99) * 1e3},
    }
    result["ratio_cold_over_cached_p50"] = result["cold"]["p50_ms"] / result["keys_cached"]["p50_ms"]
    lines = [
        "# Verification benchmark",
        "",
        f"One artifact ({result['artifact']}), {RUNS} verifications each, same run, "
        f"{os.cpu_count()} CPUs. Each run reads the module and its evidence from the store, checks the digest, "
        "three RSA signatures and the SBOM.",
        "",
        "| case | p50 | p99 |",
        "| --- | ---: | ---: |",
        f"| cold: trust policy read and keys parsed every time | {result['cold']['p50_ms']:.2f} ms | "
        f"{result['cold']['p99_ms']:.2f} ms |",
        f"| parsed keys cached | {result['keys_cached']['p50_ms']:.2f} ms | {result['keys_cached']['p99_ms']:.2f} ms |",
        "",
        f"Cold / cached at p50: {result['ratio_cold_over_cached_p50']:.1f}x.",
        "",
        f"{NO_TARGET} a comparison of the two cases in one run; nothing here is judged.",
        "",
    ]
    write_results("verify", result, lines)


if __name__ == "__main__":
    main()
