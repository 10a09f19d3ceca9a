"""Signing latency: the local keyring vs Vault/OpenBao Transit, measured in the same run.

Both sign the same 32-byte SHA-256 digests through the `KeyProvider` interface, as the pipeline
does. Transit runs as a real `bao server -dev` on loopback (started and stopped here), so its
figure is the floor of a remote Vault: HTTP round trip + RSA signature in the server + the local
check of the returned signature, without network latency. A bare `cryptography` RSA signature
is measured too, to show what the keyring adds around it.
Writes benchmarks/results/signing.json and signing.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))  # bao_server: the same OpenBao launcher the tests use

from bao_server import running_openbao  # noqa: E402
from common import NO_TARGET, percentile, sized, write_results  # noqa: E402
from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils  # noqa: E402

from agentfactory.keys import KeyProvider, LocalKeyring  # noqa: E402
from agentfactory.keys.vault import TransitKeyProvider  # noqa: E402

N = sized(300, 12)
WARMUP = sized(20, 2)
ROUNDS = 3  # the N signatures of each provider are split in rounds that alternate, to share any drift


@contextlib.contextmanager
def openbao(home: Path) -> Iterator[tuple[str, str]]:
    """`bao server -dev` on 127.0.0.1; yields (address, root token) and stops it afterwards."""
    with running_openbao(home) as server:
        yield server.addr, server.root_token



def summary(samples: list[float]) -> dict[str, float]:
    return {"n": len(samples), "p50_ms": percentile(samples, 0.50) * 1e3, "p99_ms": percentile(samples, 0.99) * 1e3,
            "mean_ms": statistics.fmean(samples) * 1e3, "max_ms": max(samples) * 1e3,
            "per_second": len(samples) / sum(samples)}


def timed(sign: Callable[[bytes], object], digests: list[bytes], out: list[float]) -> None:
    for d in digests:
        start = time.perf_counter()
        sign(d)
        out.append(time.perf_counter() - start)


def main() -> None:
    digests = [hashlib.sha256(f"artifact {i}".encode()).digest() for i in range(N)]
    with tempfile.TemporaryDirectory(prefix="af-bench-sign-") as tmp:
        base = Path(tmp)
        os.environ["AGENTFACTORY_HOME"] = str(base / "af-home")
        os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"
        (base / "bao").mkdir()
        with openbao(base / "bao") as (addr, token):
            import hvac

            hvac.Client(url=addr, token=token, timeout=10).sys.enable_secrets_engine("transit", path="transit")
            providers: dict[str, KeyProvider] = {
                "local": LocalKeyring(),
                "vault": TransitKeyProvider(addr, token=token, timeout=10),
            }
            bare = rsa.generate_private_key(public_exponent=65537, key_size=2048)

            def bare_sign(d: bytes) -> bytes:
                return bare.sign(d, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))

            signers: dict[str, Callable[[bytes], object]] = {
                "cryptography": bare_sign, **{k: p.sign_digest for k, p in providers.items()}}
            for sign in signers.values():  # first use creates the keys; warm caches and connections
                for d in digests[:WARMUP]:
                    sign(d)
            samples: dict[str, list[float]] = {k: [] for k in signers}
            chunk = N // ROUNDS
            for r in range(ROUNDS):
                part = digests[r * chunk:(r + 1) * chunk] if r < ROUNDS - 1 else digests[r * chunk:]
                for name, sign in signers.items():
                    timed(sign, part, samples[name])
            server = subprocess.run([str(Path(sys.executable).with_name("bao")), "version"], capture_output=True,
                                    text=True, check=False).stdout.strip()
    stats = {name: summary(s) for name, s in samples.items()}
    local, vault, crypto = stats["local"], stats["vault"], stats["cryptography"]
    result = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "server": server, "signatures_per_provider": N, "warmup": WARMUP,
        "what": "KeyProvider.sign_digest over a 32-byte SHA-256 digest, RSA-2048 PKCS#1 v1.5",
        "cryptography_bare": crypto, "local_keyring": local, "vault_transit_loopback": vault,
        "ratio_vault_over_local_p50": vault["p50_ms"] / local["p50_ms"],
        "ratio_vault_over_local_p99": vault["p99_ms"] / local["p99_ms"],
    }
    row = "| {} | {:.2f} ms | {:.2f} ms | {:.2f} ms | {:,.0f} |"
    lines = [
        "# Signing benchmark",
        "",
        f"Machine: {os.cpu_count()} CPUs, Python {platform.python_version()}; {server.split(' (')[0]}. "
        f"{N} signatures per provider (after {WARMUP} warm-up), in {ROUNDS} alternating rounds, same run. "
        "Transit is a real OpenBao dev server on loopback: a remote Vault adds the network round trip.",
        "",
        "| signer | p50 | p99 | mean | signatures/s |",
        "| --- | ---: | ---: | ---: | ---: |",
        row.format("bare `cryptography` RSA-2048 sign (no keyring)", crypto["p50_ms"], crypto["p99_ms"],
                   crypto["mean_ms"], crypto["per_second"]),
        row.format("local keyring `sign_digest`", local["p50_ms"], local["p99_ms"], local["mean_ms"],
                   local["per_second"]),
        row.format("Vault/OpenBao Transit `sign_digest`", vault["p50_ms"], vault["p99_ms"], vault["mean_ms"],
                   vault["per_second"]),
        "",
        f"- Transit / local: {result['ratio_vault_over_local_p50']:.1f}x at p50, "
        f"{result['ratio_vault_over_local_p99']:.1f}x at p99.",
        f"- The keyring adds {local['p50_ms'] - crypto['p50_ms']:.2f} ms at p50 over a bare signature "
        "(reading keyring.json, permission and identity checks of the key file on every signature).",
        "- A pipeline run makes a handful of signatures per template, so either provider costs "
        "milliseconds per template.",
        "",
        f"{NO_TARGET} a comparison of the two key providers in one run; nothing here is judged.",
        "",
    ]
    write_results("signing", result, lines)


if __name__ == "__main__":
    main()
