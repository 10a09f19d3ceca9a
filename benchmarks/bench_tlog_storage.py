"""Transparency-log storage: durable append rate, and root/proof latency at 100k and 1M entries.

Targets: >= 500 appends/s one transaction per entry, proofs <= 1 ms p50 at 1,000,000 entries. `append`
commits (and fsyncs, WAL with synchronous=FULL) once per entry: the raw fsync rate, the most a log without group
commit could reach. `append_batch` is what the log's group commit does with concurrent adds (one transaction,
one fsync per batch; 16 is about the batch 16 writers form), `append_many` the bulk path. The tree is grown to
100k, measured, then to 1M and measured again; the 1M tree takes about a minute to build. The database lives in
a temporary folder (BENCH_TLOG_DIR to choose one, so that the disk being measured is the one a log would use).
AGENTFACTORY_BENCH_SMOKE=1: small trees, a few seconds, no targets judged. Writes tlog-storage.{json,md}
through `common.write_results`.
"""

from __future__ import annotations

import os
import platform
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import NO_TARGET, SMOKE, percentile, sized, verdict, write_results  # noqa: E402

from agentfactory.tlog import merkle  # noqa: E402
from agentfactory.tlog.storage import TreeStorage  # noqa: E402

SIZES = sized((100_000, 1_000_000), (2_000, 5_000))
BATCH = sized(10_000, 1_000)
SINGLE = sized(500, 30)  # one-transaction-per-entry appends timed
GROUP = 16  # a group commit's batch at 16 concurrent writers
SMALL_BATCH = 64
BATCHES = sized(20, 3)  # of GROUP and of SMALL_BATCH entries
PROBES = sized(2_000, 100)
TARGET_APPENDS = 500
TARGET_PROOF_MS = 1.0
EXTRA = {"kind": "hashedrekord", "version": "0.0.1"}


def body(i: int) -> bytes:
    """Roughly the size of a canonical hashedrekord body (~600 bytes)."""
    return (b'{"apiVersion":"0.0.1","kind":"hashedrekord","spec":{"data":{"hash":{"algorithm":"sha256","value":"'
            + b"%064x" % i + b'"}},"signature":{"content":"' + b"A" * 344 + b'","publicKey":{"content":"'
            + b"B" * 120 + b'"}}}}')


def latency(fn: Callable[[], object], n: int = PROBES) -> dict[str, float]:
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return {"p50_ms": percentile(samples, 0.5), "p99_ms": percentile(samples, 0.99), "max_ms": max(samples)}


def grow(store: TreeStorage, target: int) -> float:
    """Append until the log holds `target` entries in batches of BATCH; entries per second."""
    start, n = time.perf_counter(), store.size()
    first = n
    while n < target:
        count = min(BATCH, target - n)
        store.append_many((body(i), 1_700_000_000 + i, EXTRA) for i in range(n, n + count))
        n += count
    return (n - first) / (time.perf_counter() - start)


def measure(store: TreeStorage, rng: random.Random) -> dict[str, Any]:
    size = store.size()
    root = store.root()
    # Correctness spot check while we are here: proofs at this size verify.
    for index in rng.sample(range(size), 20):
        merkle.verify_inclusion(store.leaf(index).leaf_hash, index, size, store.inclusion_proof(index, size), root)
        old = rng.randrange(1, size)
        merkle.verify_consistency(old, size, store.root(old), root, store.consistency_proof(old, size))
    return {
        "size": size,
        "root": latency(lambda: store.root(rng.randrange(1, size + 1))),
        "inclusion_proof": latency(lambda: store.inclusion_proof(rng.randrange(size), size)),
        "inclusion_proof_old_size": latency(
            lambda: (lambda n: store.inclusion_proof(rng.randrange(n), n))(rng.randrange(1, size + 1))),
        "consistency_proof": latency(lambda: store.consistency_proof(rng.randrange(1, size), size)),
        "leaf_by_hash": latency(lambda: store.leaf_by_hash(merkle.leaf_hash(body(rng.randrange(size))))),
        "check_sample_s": timed(store.check),
    }


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    rng = random.Random(6962)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="af-bench-tlog-", dir=os.environ.get("BENCH_TLOG_DIR")) as tmp:
        path = Path(tmp) / "log.db"
        store = TreeStorage(path)
        start = time.perf_counter()
        for i in range(SINGLE):
            store.append(body(10_000_000 + i), 1_700_000_000, EXTRA)
        single_rate = SINGLE / (time.perf_counter() - start)
        start = time.perf_counter()
        for b in range(BATCHES):
            base = 15_000_000 + b * GROUP
            store.append_batch([(body(base + i), 1_700_000_000, EXTRA) for i in range(GROUP)])
        group_rate = BATCHES * GROUP / (time.perf_counter() - start)
        start = time.perf_counter()
        for b in range(BATCHES):
            base = 20_000_000 + b * SMALL_BATCH
            store.append_many((body(base + i), 1_700_000_000, EXTRA) for i in range(SMALL_BATCH))
        small_batch_rate = BATCHES * SMALL_BATCH / (time.perf_counter() - start)
        # Start the big tree afresh so that entry i is body(i) (leaf_by_hash probes rely on it).
        store.close()
        path.unlink()
        for suffix in ("-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        store = TreeStorage(path)
        at: dict[str, Any] = {}
        build_rate: dict[str, float] = {}
        for size in SIZES:
            build_rate[str(size)] = grow(store, size)
            at[str(size)] = measure(store, rng)
            print(f"{size}: built at {build_rate[str(size)]:.0f}/s, {at[str(size)]}", flush=True)
        full_check_s = timed(lambda: store.check(full=True))
        store.close()
        db_bytes = sum(p.stat().st_size for p in Path(tmp).iterdir())
        with TreeStorage(path) as again:
            reopen_s = timed(lambda: (again.size(), again.root()))
    load_after = os.getloadavg()[0]
    result = {
        "machine": {"python": platform.python_version(), "sqlite": sqlite3.sqlite_version, "cpus": os.cpu_count(),
                    "platform": platform.platform(), "load_before": load_before, "load_after": load_after},
        "append_single_per_s": single_rate,
        f"append_batch_batch{GROUP}_per_s": group_rate,
        f"append_many_batch{SMALL_BATCH}_per_s": small_batch_rate,
        f"append_many_batch{BATCH}_per_s": build_rate,
        "at": at,
        "check_full_s_at_1M": full_check_s,  # at the largest size (SIZES[-1])
        "database_bytes_at_1M": db_bytes,
        "reopen_size_and_root_s": reopen_s,
    }
    largest = SIZES[-1]
    lines = [
        "# Transparency-log storage (SQLite, WAL, synchronous=FULL)",
        "",
        f"Machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}. "
        f"Entry bodies ~600 bytes. Load average {load_before:.1f} before, {load_after:.1f} after: the machine (and its "
        "disk) was shared with other work, so compare the rows of this run with each other.",
        "",
        "| append | entries/s |",
        "|---|---:|",
        f"| `append` (one transaction + fsync per entry: the raw fsync rate) | {single_rate:,.0f} |",
        f"| `append_batch`, batches of {GROUP} (group commit: one transaction + fsync per batch) | {group_rate:,.0f} |",
        f"| `append_many`, batches of {SMALL_BATCH} | {small_batch_rate:,.0f} |",
        *(f"| `append_many`, batches of {BATCH:,} (growing to {int(s):,}) | {r:,.0f} |" for s, r in build_rate.items()),
        "",
        "| operation (ms) | " + " | ".join(f"{int(s):,} p50 / p99" for s in at) + " |",
        "|---|" + "---:|" * len(at),
    ]
    for op in ("root", "inclusion_proof", "inclusion_proof_old_size", "consistency_proof", "leaf_by_hash"):
        cells = " | ".join(f"{m[op]['p50_ms']:.3f} / {m[op]['p99_ms']:.3f}" for m in at.values())
        lines.append(f"| `{op}` | {cells} |")
    lines += [
        "",
        "`check()` (sample of 256 rows per level): "
        + ", ".join(f"{m['check_sample_s'] * 1000:.0f} ms at {int(s):,}" for s, m in at.items())
        + f"; `check(full=True)` at {largest:,}: {full_check_s:.1f} s. Database at {largest:,}: "
        f"{db_bytes / 1e6:.0f} MB. Reopen + size + root: {reopen_s * 1000:.1f} ms.",
        "",
    ]
    proof_p50 = max(at[str(largest)][op]["p50_ms"] for op in ("inclusion_proof", "consistency_proof"))
    if SMOKE:
        lines += [f"{NO_TARGET} a smoke run (small trees) judges nothing.", ""]
    else:
        lines += [
            "| target | result |",
            "| --- | --- |",
            f"| `append` >= {TARGET_APPENDS}/s, one fsync per entry | {single_rate:,.0f}/s: "
            f"{verdict(single_rate >= TARGET_APPENDS)} |",
            f"| inclusion and consistency proofs <= {TARGET_PROOF_MS:g} ms p50 at {largest:,} entries | "
            f"{proof_p50:.3f} ms: {verdict(proof_p50 <= TARGET_PROOF_MS)} |",
            "",
        ]
    write_results("tlog-storage", result, lines)


if __name__ == "__main__":
    main()
