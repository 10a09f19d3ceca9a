"""Registry backend: verification of one artifact read from a real registry, and store copy.

Starts Debian's docker-registry on loopback (the tests' launcher), publishes the example
templates with evidence, then measures in one run: verify with a new client per call (new
connections, new auth) against verify with one client reused; and copying an agent with its
evidence into a fresh repository. Writes benchmarks/results/registry.{json,md}.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))  # registry_server: the same launcher the tests use

from common import NO_TARGET, percentile, sized, write_results  # noqa: E402
from registry_server import running_registry  # noqa: E402

from agentfactory.evidence import collect  # noqa: E402
from agentfactory.keys.local import LocalKeyring  # noqa: E402
from agentfactory.store import OCILayoutStore, open_store  # noqa: E402
from agentfactory.store.copy import copy_agent  # noqa: E402
from agentfactory.trust import from_public_keys  # noqa: E402
from agentfactory.verifier import verify  # noqa: E402
from pipelines.run import Signing, run_pipeline  # noqa: E402

RUNS = sized(100, 5)
COPIES = sized(10, 2)



def main() -> None:
    os.environ["NO_PROXY"] = "127.0.0.1,localhost"
    with tempfile.TemporaryDirectory(prefix="af-bench-registry-") as tmp:
        base = Path(tmp)
        os.environ["AGENTFACTORY_HOME"] = str(base / "home")
        os.environ.setdefault("AGENTFACTORY_TOOLCHAIN_CACHE", str(ROOT / ".agentfactory/cache/toolchain-tests"))
        keyring = LocalKeyring(base / "keys")
        layout = OCILayoutStore(base / "layout")
        assert run_pipeline(ROOT / "templates", layout, signing=Signing(keyring)).ok
        policy = from_public_keys(keyring.public_keys())
        with running_registry(base / "registry") as reg:
            url = f"oci://{reg.host}/agents?plain-http=true"
            start = time.perf_counter()
            for agent in layout.list_agents():
                copy_agent(layout, open_store(url), agent)
            copy_all_s = time.perf_counter() - start

            def once(store: object) -> float:
                t = time.perf_counter()
                s = store if store is not None else open_store(url)
                agent, wasm = s.fetch_wasm("wordstats:1.0.0")  # type: ignore[attr-defined]
                verdict = verify(agent.digest, wasm, collect(s, agent), policy)  # type: ignore[arg-type]
                assert verdict.allowed, verdict.reasons
                return time.perf_counter() - t

            cold = [once(None) for _ in range(RUNS)]
            shared = open_store(url)
            warm = [once(shared) for _ in range(RUNS)]
            copies = []
            for i in range(COPIES):
                target = open_store(f"oci://{reg.host}/copy{i}?plain-http=true")
                t = time.perf_counter()
                copy_agent(layout, target, layout.resolve("wordstats"))
                copies.append(time.perf_counter() - t)
    result = {
        "verify_new_client_ms": {"p50": statistics.median(cold) * 1e3, "p99": percentile(cold, 0.99) * 1e3},
        "verify_reused_client_ms": {"p50": statistics.median(warm) * 1e3, "p99": percentile(warm, 0.99) * 1e3},
        "copy_one_agent_with_evidence_ms": {"p50": statistics.median(copies) * 1e3},
        "copy_four_examples_s": copy_all_s,
    }
    lines = [
        "# Registry benchmark",
        "",
        f"Debian docker-registry (distribution 2.8.2) on loopback, plain HTTP, {os.cpu_count()} CPUs, same run. "
        "Verify = resolve `wordstats:1.0.0` (tag list + manifests), fetch the module, read the referrers "
        "(tag schema: the registry has no referrers API) and 3 evidence manifests and blobs, check 3 RSA signatures "
        f"and the SBOM; {RUNS} runs each.",
        "",
        "| case | p50 | p99 |",
        "| --- | ---: | ---: |",
        f"| verify from the registry, new client each time | {result['verify_new_client_ms']['p50']:.1f} ms | "
        f"{result['verify_new_client_ms']['p99']:.1f} ms |",
        f"| verify from the registry, client reused (keep-alive) | {result['verify_reused_client_ms']['p50']:.1f} ms | "
        f"{result['verify_reused_client_ms']['p99']:.1f} ms |",
        f"| `store copy` of one agent with its evidence into a new repository | "
        f"{result['copy_one_agent_with_evidence_ms']['p50']:.1f} ms | |",
        "",
        f"Copying the four examples with all evidence from the layout: {copy_all_s * 1e3:.0f} ms.",
        "",
        f"{NO_TARGET} the cost of the registry backend, new against reused client in one run; nothing here is "
        "judged.",
        "",
    ]
    write_results("registry", result, lines)


if __name__ == "__main__":
    main()
