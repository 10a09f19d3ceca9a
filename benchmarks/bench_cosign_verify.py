"""`cosign verify` against `agentfactory verify`, on the same agent in the same registry, one run side by side.

Starts Debian's docker-registry on loopback (the tests' launcher), publishes the `wordstats` example with the
real pipeline (key-based signing, every signature logged in the embedded transparency log, Sigstore bundles
attached as referrers), then times, per verification, wall clock:

* `cosign verify --key … --trusted-root …` on the image (the real cosign from `make tools`; it checks every
  DSSE bundle attached: key signature, SET, inclusion proof, checkpoint, subject digest);
* `cosign verify-blob --key … --bundle … --trusted-root …` on the wasm and its signature bundle (local files);
* `agentfactory verify NAME:VERSION --store oci://… --policy trust.yaml` (the CLI, a process per verification
  like cosign: digest, signature, key status, SBOM, provenance, scan, builder, source, tlog, artifact policy);
* the verifier in process (`collect` + `verify` on the registry store, trust policy parsed once), for scale.

Writes benchmarks/results/cosign-verify.{json,md}.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))  # registry_server: the same launcher the tests use

from common import NO_TARGET, sized, summary_ms, write_results  # noqa: E402
from registry_server import running_registry  # noqa: E402

from agentfactory.cosign_root import trusted_log, trusted_root  # noqa: E402
from agentfactory.evidence import collect  # noqa: E402
from agentfactory.keys.local import LocalKeyring  # noqa: E402
from agentfactory.peertools import find  # noqa: E402
from agentfactory.store import open_store  # noqa: E402
from agentfactory.tlog.log import EmbeddedLog  # noqa: E402
from agentfactory.trust import load_trust_policy, to_yaml  # noqa: E402
from agentfactory.verifier import verify  # noqa: E402
from pipelines.run import Signing, run_pipeline  # noqa: E402

RUNS = sized(12, 2)  # per process-per-verification case: ~0.1-0.8 s each, the whole run well under a minute
IN_PROCESS_RUNS = sized(50, 3)
AGENT = "wordstats"


def timed(runs: int, once: Callable[[], None]) -> list[float]:
    once()  # warm the page cache and the registry, not measured
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        once()
        out.append(time.perf_counter() - start)
    return out


def run_ok(args: list[str], env: dict[str, str]) -> None:
    result = subprocess.run(args, capture_output=True, env=env, timeout=300, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args[:2])} refused: {result.stderr.decode(errors='replace')[-1500:]}")


def main() -> None:
    cosign = str(find("cosign"))
    version = subprocess.run([cosign, "version"], capture_output=True, text=True, check=False).stdout
    git_version = next((line.split()[-1] for line in version.splitlines() if line.startswith("GitVersion")), "?")
    with tempfile.TemporaryDirectory(prefix="af-bench-cosign-") as tmp:
        base = Path(tmp)
        home = base / "home"
        os.environ["AGENTFACTORY_HOME"] = str(home)
        os.environ.setdefault("AGENTFACTORY_TOOLCHAIN_CACHE", str(ROOT / ".agentfactory/cache/toolchain-tests"))
        os.environ["NO_PROXY"] = "127.0.0.1,localhost"
        with running_registry(base / "registry") as registry:
            store_url = f"oci://{registry.host}/agents?plain-http=true"
            store = open_store(store_url)
            keyring = LocalKeyring(home / "keys")
            keyring.create()
            log = EmbeddedLog()
            log_pem = log.public_key_pem()
            shutil.copytree(ROOT / "templates" / AGENT, base / "templates" / AGENT)  # the one agent compared
            report = run_pipeline(base / "templates", store, signing=Signing(keyring, tlog=log, tlog_key_pem=log_pem))
            assert report.ok, [t.errors for t in report.templates]
            agent, wasm = store.fetch_wasm(AGENT)
            first = log.entry_at(0).integrated_time
            (base / "trusted_root.json").write_bytes(trusted_root([trusted_log(
                log_pem, log.url, datetime.fromtimestamp(first, UTC), "log key")]))
            log.close()
            (base / "cosign.pub").write_bytes(keyring.public_keys()[0].pem)
            (base / "agent.wasm").write_bytes(wasm)
            signature = next(store.referrer_payload(agent, r) for r in store.referrers(agent)
                             if r.annotations.get("dev.sigstore.bundle.content") == "message-signature")
            (base / "signature.bundle.json").write_bytes(signature)
            policy_path = base / "trust.yaml"
            policy_path.write_text(to_yaml(keyring.public_keys(), log_keys=[log_pem]))

            cosign_env = {"PATH": os.environ.get("PATH", ""), "HOME": str(base / "cosign-home"),
                          "TUF_ROOT": str(base / "cosign-home" / "tuf"), "NO_PROXY": "127.0.0.1,localhost"}
            image = f"{registry.host}/agents/{AGENT}@{agent.manifest_digest}"
            af = [str(Path(sys.executable).with_name("agentfactory"))]
            af_env = {**os.environ}
            cases = {
                "cosign verify (registry)": (RUNS, lambda: run_ok(
                    [cosign, "verify", "--key", str(base / "cosign.pub"), "--trusted-root",
                     str(base / "trusted_root.json"), "--allow-http-registry", image], cosign_env)),
                "agentfactory verify (registry, CLI)": (RUNS, lambda: run_ok(
                    [*af, "verify", f"{AGENT}:{agent.version}", "--store", store_url, "--policy", str(policy_path),
                     "--policies", str(ROOT / "policies")], af_env)),
                "cosign verify-blob (wasm + bundle files)": (RUNS, lambda: run_ok(
                    [cosign, "verify-blob", "--key", str(base / "cosign.pub"), "--bundle",
                     str(base / "signature.bundle.json"), "--trusted-root", str(base / "trusted_root.json"),
                     str(base / "agent.wasm")], cosign_env)),
            }
            policy = load_trust_policy(policy_path)

            def in_process() -> None:
                found, data = store.fetch_wasm(f"{AGENT}:{agent.version}")
                verdict = verify(found.digest, data, collect(store, found), policy, name=AGENT, version=found.version)
                assert verdict.allowed, verdict.reasons

            results = {name: summary_ms(timed(n, fn)) for name, (n, fn) in cases.items()}
            results["agentfactory verifier in process (registry)"] = summary_ms(timed(IN_PROCESS_RUNS, in_process))
    cosign_p50 = results["cosign verify (registry)"]["p50_ms"]
    af_p50 = results["agentfactory verify (registry, CLI)"]["p50_ms"]
    result = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "cosign": git_version},
        "artifact": f"{AGENT} {agent.version}: a signature bundle and four DSSE bundles (SBOM, provenance, scan, "
                    "image signature), each with its embedded-log entry, on docker-registry (distribution 2.8)",
        "cases": results,
        "ratio_agentfactory_cli_over_cosign_p50": af_p50 / cosign_p50,
    }
    rows = [f"| {name} | {r['n']} | {r['p50_ms']:.1f} ms | {r['p99_ms']:.1f} ms | {r['mean_ms']:.1f} ms |"
            for name, r in results.items()]
    lines = [
        "# cosign verify against agentfactory verify",
        "",
        f"One agent ({result['artifact']}), one run, side by side, {os.cpu_count()} CPUs, cosign {git_version}. "
        "Wall time per verification; the CLI cases start a process each time (cosign is a Go binary, agentfactory "
        "a Python console script). Both check the key signatures and, offline, each log entry (signed entry "
        "timestamp, inclusion proof, checkpoint) against the pinned log key; agentfactory verify also judges the "
        "SBOM, provenance, scan, builder, source and the artifact policy (Rego).",
        "",
        "| case | runs | p50 | p99 | mean |",
        "| --- | ---: | ---: | ---: | ---: |",
        *rows,
        "",
        f"agentfactory verify (CLI) / cosign verify at p50: {result['ratio_agentfactory_cli_over_cosign_p50']:.2f}x. "
        "The gap between the CLI row and the in-process row is the Python process: interpreter start, imports "
        "and compiling the Rego policies, paid once per process (the admission webhook and the node runtime pay "
        "it once at start and then verify at the in-process cost).",
        "",
        f"{NO_TARGET} a side-by-side comparison of two verifiers on one agent; nothing here is judged.",
        "",
    ]
    write_results("cosign-verify", result, lines)


if __name__ == "__main__":
    main()
