"""The embedded transparency log as a service: appends per second over HTTP, GET latency, in-process rate.

Targets: >= 500 appends/s over HTTP on loopback. `agentfactory tlog serve` runs in its own process; the
clients run in CLIENTS further processes, one keep-alive connection each (http.client), posting distinct pre-signed
hashedrekord entries (ECDSA P-256, signed before the clock starts). Every add verifies the signature,
fsyncs its leaf (one transaction per entry: no batching) and answers with a fresh inclusion proof, a
signed checkpoint and a SET. GET latency is one connection fetching random entries by index (fresh proof
and checkpoint each). Client and server share the machine. Writes benchmarks/results/tlog.{json,md}.
"""

from __future__ import annotations

import base64
import hashlib
import json
import multiprocessing as mp
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import percentile, write_results  # noqa: E402

ENTRIES = "/api/v1/log/entries"
IN_PROCESS = 2000
HTTP_PER_CLIENT = 1000
CLIENTS = 4
GETS = 1000


def proposals(n: int, seed: str) -> list[bytes]:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

    key = ec.generate_private_key(ec.SECP256R1())
    pem = base64.b64encode(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                         serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
    out = []
    for i in range(n):
        digest = hashlib.sha256(f"{seed} {i}".encode()).digest()
        sig = base64.b64encode(key.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256())))).decode()
        out.append(json.dumps({"apiVersion": "0.0.1", "kind": "hashedrekord", "spec": {
            "data": {"hash": {"algorithm": "sha256", "value": digest.hex()}},
            "signature": {"content": sig, "publicKey": {"content": pem}}}}).encode())
    return out


def in_process(folder: Path) -> dict[str, float]:
    from agentfactory.tlog.log import EmbeddedLog

    docs = [json.loads(p) for p in proposals(IN_PROCESS, "in-process")]
    with EmbeddedLog(folder) as log:
        start = time.perf_counter()
        for doc in docs:
            log.add(doc)
        elapsed = time.perf_counter() - start
    return {"entries": IN_PROCESS, "adds_per_s": IN_PROCESS / elapsed}


def client(url: str, bodies: list[bytes], start_at: float, out: Any) -> None:
    """One keep-alive connection; http.client, not httpx: a lighter client leaves the shared CPUs to the server."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    headers = {"content-type": "application/json"}
    ok = errors = 0
    conn.request("GET", "/healthz")
    conn.getresponse().read()
    time.sleep(max(0.0, start_at - time.time()))
    begin = time.time()
    for body in bodies:
        conn.request("POST", ENTRIES, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        if response.status == 201:
            ok += 1
        else:
            errors += 1
    out.put((ok, errors, begin, time.time()))
    conn.close()


def over_http(folder: Path) -> dict[str, Any]:
    import httpx

    exe = Path(sys.executable).with_name("agentfactory")
    server = subprocess.Popen([str(exe), "tlog", "serve", "--listen", "127.0.0.1:0", "--dir", str(folder)],
                              stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        assert server.stderr is not None
        url = json.loads(server.stderr.readline())["listening"]
        while True:
            try:
                httpx.get(url + "/healthz", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        shares = [proposals(HTTP_PER_CLIENT, f"http {k}") for k in range(CLIENTS)]
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        start_at = time.time() + 2.0
        procs = [ctx.Process(target=client, args=(url, share, start_at, queue)) for share in shares]
        for p in procs:
            p.start()
        results = [queue.get(timeout=300) for _ in procs]
        for p in procs:
            p.join()
        ok = sum(r[0] for r in results)
        errors = sum(r[1] for r in results)
        wall = max(r[3] for r in results) - min(r[2] for r in results)

        samples = []
        records: list[bytes] = []
        with httpx.Client(base_url=url, timeout=30) as c:
            size = c.get("/api/v1/log").json()["treeSize"]
            pem = c.get("/api/v1/log/publicKey").content
            for _ in range(GETS):
                index = random.randrange(size)
                begin = time.perf_counter()
                r = c.get(ENTRIES, params={"logIndex": index})
                samples.append((time.perf_counter() - begin) * 1000)
                assert r.status_code == 200
                records.append(json.dumps(r.json(), separators=(",", ":")).encode())
        # What a verifier does with each record, offline: SET, checkpoint signature, inclusion proof.
        from agentfactory.tlog.bundle import check_record
        from agentfactory.tlog.note import load_log_public_key, log_id_of

        key = load_log_public_key(pem, "log key")
        trusted = {log_id_of(key): key}
        checks = []
        for record in records:
            begin = time.perf_counter()
            check_record(record, trusted, "record")
            checks.append((time.perf_counter() - begin) * 1000)
        return {"clients": CLIENTS, "entries": ok, "errors": errors, "seconds": wall, "adds_per_s": ok / wall,
                "tree_size": size, "get_p50_ms": percentile(samples, 0.5), "get_p99_ms": percentile(samples, 0.99),
                "verify_p50_ms": percentile(checks, 0.5), "verify_p99_ms": percentile(checks, 0.99)}
    finally:
        server.terminate()
        server.wait(timeout=10)


def main() -> None:
    base = Path(os.environ.get("BENCH_TLOG_DIR") or tempfile.mkdtemp(prefix="bench-tlog-"))
    load_before = os.getloadavg()[0]
    local = in_process(base / "in-process")
    http = over_http(base / "http")
    result = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "load_before": load_before, "load_after": os.getloadavg()[0]},
              "in_process": local, "http": http, "target_adds_per_s": 500,
              "meets_target": http["adds_per_s"] >= 500 and http["errors"] == 0}
    lines = [
        "# Transparency log service",
        "",
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}; one fsync per entry, no batching.",
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| `EmbeddedLog.add` in process ({local['entries']} entries) | {local['adds_per_s']:.0f}/s |",
        f"| POST /api/v1/log/entries, {CLIENTS} client processes, keep-alive ({http['entries']} entries, "
        f"{http['errors']} errors) | {http['adds_per_s']:.0f}/s (target >= 500/s) |",
        f"| GET /api/v1/log/entries?logIndex (fresh proof + checkpoint + SET), tree of {http['tree_size']} "
        f"| p50 {http['get_p50_ms']:.2f} ms, p99 {http['get_p99_ms']:.2f} ms |",
        f"| verification of one record offline (SET, checkpoint signature, inclusion proof), tree of "
        f"{http['tree_size']} | p50 {http['verify_p50_ms']:.2f} ms, p99 {http['verify_p99_ms']:.2f} ms |",
        "",
    ]
    write_results("tlog", result, lines)


if __name__ == "__main__":
    main()
