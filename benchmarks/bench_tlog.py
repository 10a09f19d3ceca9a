"""The embedded transparency log as a service: appends per second over HTTP beside the disk's raw fsync rate.

Targets: >= 2,000 appends/s over HTTP with 4 clients, no errors, and no acknowledged entry lost to a SIGKILL.

Measured in one run, so the rows compare with each other (the disk and the CPUs are shared, and both vary):
1. Raw append+fsync: `TreeStorage.append`, one transaction (one fsync) per entry, in the folder the log uses;
   measured at the start and end of the run and before and after each HTTP phase (the disk's rate varies with
   what else runs). This is the most a log without group commit could reach.
2. `EmbeddedLog.add` in process: 1 thread; 16 threads one add at a time (serialised: a commit each, as before
   group commit); 16 threads with group commit (one transaction and one fsync per batch of concurrent adds; see
   agentfactory/tlog/log.py), with the commits made and the mean batch they carried.
3. POST /api/v1/log/entries over loopback to `agentfactory tlog serve` (its own process) from 1, 4 and 16 client
   processes, one keep-alive connection each, posting distinct hashedrekord entries signed before the clock
   starts. Every add verifies the signature, is answered only after the fsync that holds it, and carries a fresh
   inclusion proof, signed checkpoint and SET. Clients and server share the machine, so the clients are lean
   (`_Lean`: prepared request bytes, the answer read by its Content-Length, about 50 µs of CPU per request, as
   `wrk` would be); the 4-client phase is run again from Python's http.client (about 220 µs), side by side. The
   server keeps its threads on one CPU (`--host-cpu auto`, its default); the 4-client phase is run again on a
   server started with `--host-cpu off`, side by side, to price that placement; and in interleaved pairs on
   servers started with the default `--batch-wait-ms` and with `--batch-wait-ms 0` (a commit never waits for the
   entries the last batch predicts), to price that wait.
4. GET latency (random entries by index, fresh proof and checkpoint each) and offline verification of a record.
5. SIGKILL at full rate: 16 clients post until the server is killed -9 mid-stream; the log is then reopened and
   every acknowledged entry looked up, the whole tree re-hashed (`check(full=True)`), and the largest tree an
   answer was proved against checked to be a prefix of the reopened one (same root at that size).

AGENTFACTORY_BENCH_SMOKE=1: small sizes, a few seconds, no targets judged. Writes benchmarks/results/tlog.{json,md}
through `common.write_results`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import multiprocessing as mp
import os
import platform
import random
import signal
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

from common import NO_TARGET, SMOKE, percentile, sized, stop, verdict, write_results  # noqa: E402

ENTRIES = "/api/v1/log/entries"
RAW = sized(500, 30)  # single-entry transactions timed for the raw fsync rate
IN_PROCESS = sized(2000, 60)
CLIENT_COUNTS = sized((1, 4, 16), (1, 4))  # client processes take a while to start on a busy machine
HTTP_ENTRIES = sized(4000, 64)  # per client count, split between the clients
GETS = sized(1000, 50)
KILL_CLIENTS = sized(16, 4)
KILL_AFTER = sized(3000, 100)  # acknowledged entries before the SIGKILL
KILL_POOL = 2 * KILL_AFTER + 1000  # what the clients may post: more than they get through before the kill
TARGET_PER_S = 2000
WAIT_PAIRS = sized(3, 1)  # interleaved pairs of 4-client phases: default batch wait, then none
TARGET_CLIENTS = 4


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


def raw_fsync_rate(folder: Path) -> float:
    """Entries/s with one transaction (one fsync, WAL synchronous=FULL) per entry, on the log's disk."""
    from agentfactory.tlog.storage import TreeStorage

    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp, TreeStorage(Path(tmp) / "raw.db") as store:
        store.append(b"warm-up", 1, None)
        start = time.perf_counter()
        for i in range(RAW):
            store.append(b"raw %d" % i, 1_700_000_000, None)
        return RAW / (time.perf_counter() - start)


def in_process(folder: Path, threads: int, one_at_a_time: bool = False) -> dict[str, Any]:
    """`EmbeddedLog.add` from `threads` threads; `one_at_a_time` serialises the adds behind a lock, so every
    add has a commit (and an fsync) of its own: what the log did before group commit."""
    from agentfactory.tlog.log import EmbeddedLog

    docs = [json.loads(p) for p in proposals(IN_PROCESS, f"in-process {threads} {one_at_a_time}")]
    serial = threading.Lock()
    with EmbeddedLog(folder) as log:
        shares = [docs[k::threads] for k in range(threads)]

        def run(share: list[dict[str, Any]]) -> None:
            for doc in share:
                if one_at_a_time:
                    with serial:
                        log.add(doc)
                else:
                    log.add(doc)

        workers = [threading.Thread(target=run, args=(share,)) for share in shares]
        start, cpu = time.perf_counter(), time.process_time()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        commits, committed = log.commits, log.committed
    return {"threads": threads, "one_commit_per_add": one_at_a_time, "entries": IN_PROCESS,
            "adds_per_s": IN_PROCESS / elapsed, "cpu_ms_per_add": cpu * 1000 / IN_PROCESS,
            "commits": commits, "mean_batch": committed / max(commits, 1)}


class _Lean:
    """One keep-alive HTTP/1.1 connection that sends prepared bytes and reads a response by its Content-Length:
    the load generator `wrk` would be, in Python. http.client spends about 220 µs of CPU per request (building
    headers, parsing the answer's through the email package) on the CPUs the server shares; this about 50.
    Strict about what it reads: a status line, headers, a Content-Length body; anything else is an error."""

    def __init__(self, host: str, port: int) -> None:
        import socket

        self.sock = socket.create_connection((host, port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.host = f"{host}:{port}"
        self._buf = b""

    def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, dict[bytes, bytes], bytes]:
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n"
        if body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.sock.sendall(head.encode() + b"\r\n" + body)
        return self._response()

    def _response(self) -> tuple[int, dict[bytes, bytes], bytes]:
        while (end := self._buf.find(b"\r\n\r\n")) < 0:
            self._more()
        lines = self._buf[:end].split(b"\r\n")
        self._buf = self._buf[end + 4:]
        version, status, _ = (lines[0] + b" ").split(b" ", 2)
        if version != b"HTTP/1.1" or not status.isdigit():
            raise OSError(f"not an HTTP/1.1 status line: {lines[0][:80]!r}")
        headers = {}
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon:
                raise OSError(f"malformed header line {line[:80]!r}")
            headers[name.strip().lower()] = value.strip()
        length = headers.get(b"content-length", b"")
        if not length.isdigit() or b"transfer-encoding" in headers:
            raise OSError("a response without a Content-Length")
        while len(self._buf) < int(length):
            self._more()
        data, self._buf = self._buf[:int(length)], self._buf[int(length):]
        return int(status), headers, data

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise OSError("the server closed the connection")
        self._buf += chunk

    def close(self) -> None:
        self.sock.close()


def client(url: str, bodies: list[bytes], ready: Any, start: Any, out: Any, counter: Any = None,
           kind: str = "lean") -> None:
    """One keep-alive connection (`_Lean`, or http.client with kind="http.client", to price the load generator).
    Says it is connected on `ready`, then posts once `start` is set (every client is connected by then).

    Puts (ok, errors, begin, end, acknowledged entry ids, the last 201 body, its CPU seconds while posting) on
    `out`. Stops at the first transport error (the server was killed): what was in flight then was never
    acknowledged."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    ok = errors = 0
    acked: list[str] = []
    last = b""

    def post_lean(conn: _Lean, body: bytes) -> tuple[int, str, bytes]:
        status, headers, data = conn.request("POST", ENTRIES, body)
        return status, headers.get(b"etag", b"").decode(), data

    def post_http_client(conn: http.client.HTTPConnection, body: bytes) -> tuple[int, str, bytes]:
        conn.request("POST", ENTRIES, body=body, headers={"content-type": "application/json"})
        response = conn.getresponse()
        return response.status, response.getheader("ETag") or "", response.read()

    conn: Any = None
    try:
        if kind == "lean":
            conn, post = _Lean(host, port), post_lean
            conn.request("GET", "/healthz")
        else:
            conn, post = http.client.HTTPConnection(host, port, timeout=30), post_http_client
            conn.request("GET", "/healthz")
            conn.getresponse().read()
    except (OSError, http.client.HTTPException):
        bodies = []  # started after the server was killed: nothing to say but that
    ready.put(None)
    start.wait(600)
    begin, cpu = time.time(), time.process_time()
    for body in bodies:
        try:
            status, etag, data = post(conn, body)
        except (OSError, ValueError, http.client.HTTPException):
            break
        if status == 201:
            ok += 1
            acked.append(etag)
            last = data
            if counter is not None:
                with counter.get_lock():
                    counter.value += 1
        else:
            errors += 1
    out.put((ok, errors, begin, time.time(), acked, last, time.process_time() - cpu))
    if conn is not None:
        conn.close()


def start_server(folder: Path, host_cpu: str = "auto", *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    import httpx

    exe = Path(sys.executable).with_name("agentfactory")
    server = subprocess.Popen([str(exe), "tlog", "serve", "--listen", "127.0.0.1:0", "--dir", str(folder),
                               "--host-cpu", host_cpu, *extra], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert server.stderr is not None
    line = server.stderr.readline()
    if not line:
        raise SystemExit("tlog serve exited before listening: " + server.stderr.read().decode())
    url = json.loads(line)["listening"]
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(url + "/healthz", timeout=1)
            return server, url
        except httpx.TransportError:
            if time.monotonic() > deadline:
                server.kill()
                raise SystemExit("tlog serve did not answer /healthz") from None
            time.sleep(0.05)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (Linux /proc); None where that cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def post_from(url: str, shares: list[list[bytes]], counter: Any = None, kind: str = "lean") -> tuple[list[Any], Any]:
    """Start one client process per share; (their processes, the queue their results arrive on)."""
    ctx = mp.get_context("spawn")
    queue, ready, start = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=client, args=(url, share, ready, start, queue, counter, kind)) for share in shares]
    for p in procs:
        p.start()
    for _ in procs:  # the clock starts once every client has started and connected, however slow that was
        ready.get(timeout=600)
    start.set()
    return procs, queue


def over_http(folder: Path) -> dict[str, Any]:
    import httpx

    server, url = start_server(folder)
    try:
        rates: dict[str, Any] = {}
        for n in CLIENT_COUNTS:
            rates[str(n)] = http_phase(folder, server, url, n, f"http {n}")
        # the same load from http.client, side by side: what a heavier load generator takes from the server
        heavy = http_phase(folder, server, url, TARGET_CLIENTS, "http.client", kind="http.client")

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
    finally:
        stop(server)
    server, url = start_server(folder, host_cpu="off")  # the price of placement, side by side, same log
    try:
        spread = http_phase(folder, server, url, TARGET_CLIENTS, "http off")
    finally:
        stop(server)
    pairs = []
    for k in range(WAIT_PAIRS):  # interleaved: the machine's other work moves both sides of a pair alike
        pair = {}
        for label, extra in (("wait", ()), ("no wait", ("--batch-wait-ms", "0"))):
            server, url = start_server(folder, "auto", *extra)
            try:
                pair[label] = http_phase(folder, server, url, TARGET_CLIENTS, f"pair {k} {label}")
            finally:
                stop(server)
        pairs.append(pair)
    return {"by_clients": rates, "http_client": heavy, "host_cpu_off": spread, "batch_wait_pairs": pairs,
            "tree_size": size,
            "get_p50_ms": percentile(samples, 0.5), "get_p99_ms": percentile(samples, 0.99),
            "verify_p50_ms": percentile(checks, 0.5), "verify_p99_ms": percentile(checks, 0.99)}


def http_phase(folder: Path, server: subprocess.Popen[bytes], url: str, n: int, seed: str,
               kind: str = "lean") -> dict[str, Any]:
    """`n` client processes post HTTP_ENTRIES distinct entries between them: the rate, errors, server CPU and
    the clients' CPU (`kind`: the lean client or http.client, see `client`)."""
    bodies = proposals(HTTP_ENTRIES, seed)
    raw_before = raw_fsync_rate(folder.parent / "raw")  # the disk's rate varies: measured around each phase
    cpu_before = cpu_seconds(server.pid)
    procs, queue = post_from(url, [bodies[k::n] for k in range(n)], kind=kind)
    results = [queue.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    cpu_after = cpu_seconds(server.pid)
    raw_after = raw_fsync_rate(folder.parent / "raw")
    ok = sum(r[0] for r in results)
    wall = max(r[3] for r in results) - min(r[2] for r in results)
    cpu_ms = None if cpu_before is None or cpu_after is None else (cpu_after - cpu_before) * 1000 / ok
    client_us = sum(r[6] for r in results) * 1e6 / ok if ok else None
    print(f"HTTP ({seed}), {n} {kind} clients: {ok / wall:.0f}/s (raw fsync before/after: {raw_before:.0f}/"
          f"{raw_after:.0f}/s; CPU per add: server {cpu_text(cpu_ms)}, clients {client_us or 0:.0f} µs)", flush=True)
    return {"clients": n, "client": kind, "entries": ok, "errors": sum(r[1] for r in results), "seconds": wall,
            "adds_per_s": ok / wall, "raw_fsync_per_s": [raw_before, raw_after], "server_cpu_ms_per_add": cpu_ms,
            "client_cpu_us_per_request": client_us}


def sigkill_at_full_rate(folder: Path) -> dict[str, Any]:
    """KILL_CLIENTS clients post until the server is SIGKILLed; then count what was acknowledged but lost."""
    from agentfactory.errors import NotFoundError
    from agentfactory.tlog.log import EmbeddedLog

    bodies = proposals(KILL_POOL, "sigkill")
    server, url = start_server(folder)
    counter = mp.get_context("spawn").Value("l", 0)
    try:
        procs, queue = post_from(url, [bodies[k::KILL_CLIENTS] for k in range(KILL_CLIENTS)], counter)
        deadline = time.monotonic() + 600
        while counter.value < KILL_AFTER and time.monotonic() < deadline and server.poll() is None:
            time.sleep(0.002)
        killed_at = time.time()
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=10)
        results = [queue.get(timeout=60) for _ in procs]
        for p in procs:
            p.join()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    acked = [entry_id for r in results for entry_id in r[4]]
    begin = min(r[2] for r in results)
    heads = [json.loads(r[5]) for r in results if r[5]]
    proofs = [next(iter(h.values()))["verification"]["inclusionProof"] for h in heads]
    largest = max(proofs, key=lambda p: p["treeSize"])
    with EmbeddedLog(folder) as log:  # what `tlog serve` opens on restart
        lost = 0
        for entry_id in acked:
            try:
                log.entry(entry_id)
            except NotFoundError:
                lost += 1
        problems = log.check(full=True)
        size = log.info().tree_size
        prefix_ok = size >= largest["treeSize"] and log.root_at(largest["treeSize"]).hex() == largest["rootHash"]
    return {"clients": KILL_CLIENTS, "acknowledged": len(acked), "adds_per_s_before_kill": len(acked) /
            (killed_at - begin), "lost": lost, "tree_size_after": size, "largest_proved_size": largest["treeSize"],
            "largest_proved_tree_is_prefix": prefix_ok, "check_problems": problems[:20]}


def client_text(phase: dict[str, Any]) -> str:
    us = phase.get("client_cpu_us_per_request")
    return "not measured" if us is None else f"{us:.0f} µs"


def cpu_text(ms: float | None) -> str:
    """Server CPU per add, and the rate one process (one core for Python) could reach at that cost."""
    return "not measured" if ms is None else f"{ms:.2f} ms (one process: at most ~{1000 / ms:,.0f}/s)"


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-tlog-", dir=os.environ.get("BENCH_TLOG_DIR")) as tmp:
        measure(Path(tmp))


def measure(base: Path) -> None:
    from agentfactory.tlog.server import BATCH_WAIT_S  # here, not at the top: every client process imports this file

    load_before = os.getloadavg()[0]
    raw_before = raw_fsync_rate(base / "raw")
    local = [in_process(base / "in-process-1", 1), in_process(base / "in-process-16-serial", 16, True),
             in_process(base / "in-process-16", 16)]
    http = over_http(base / "http")
    raw_after = raw_fsync_rate(base / "raw")
    crash = sigkill_at_full_rate(base / "sigkill")
    load_after = os.getloadavg()[0]
    at_target = http["by_clients"][str(TARGET_CLIENTS)]
    errors = sum(r["errors"] for r in http["by_clients"].values())
    # Judged on every phase a default server ran with TARGET_CLIENTS lean clients (the one above, and the default
    # side of each pair), by their median: one phase moves by 10 % from run to run on a shared machine.
    judged = [at_target["adds_per_s"], *(p["wait"]["adds_per_s"] for p in http["batch_wait_pairs"])]
    judged_errors = errors + sum(p["wait"]["errors"] for p in http["batch_wait_pairs"])
    judged_rate = statistics.median(judged)
    fast = judged_rate >= TARGET_PER_S and judged_errors == 0
    survived = crash["lost"] == 0 and not crash["check_problems"] and crash["largest_proved_tree_is_prefix"]
    meets = None if SMOKE else fast and survived
    result = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "load_before": load_before, "load_after": load_after},
              "smoke": SMOKE, "raw_fsync_per_s": {"before": raw_before, "after": raw_after},
              "in_process": local, "http": http, "sigkill": crash,
              "target": {"adds_per_s": TARGET_PER_S, "clients": TARGET_CLIENTS, "errors": 0, "lost": 0},
              "judged": {"adds_per_s": judged, "median": judged_rate, "errors": judged_errors},
              "meets_target": meets}

    lines = [
        "# Transparency log service",
        "",
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}; group commit (one transaction and one fsync "
        "per batch of concurrent adds; an add is answered only after the fsync that holds it). Load average "
        f"{load_before:.1f} before, {load_after:.1f} after: the machine was shared with other work, so compare the "
        "rows of this run with each other (the raw fsync rate was measured in the same run, on the same disk).",
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| raw append+fsync, one transaction per entry (`TreeStorage.append`, {RAW} entries), at the start / at "
        f"the end of the run | {raw_before:,.0f}/s / {raw_after:,.0f}/s |",
        *(f"| `EmbeddedLog.add` in process, {r['threads']} thread(s)"
          f"{', one at a time (a commit each: no group commit)' if r['one_commit_per_add'] else ''} "
          f"({r['entries']} entries; {r['commits']} commits, mean batch {r['mean_batch']:.1f}; CPU per add "
          f"{r['cpu_ms_per_add']:.2f} ms) "
          f"| {r['adds_per_s']:,.0f}/s |" for r in local),
        *(f"| POST /api/v1/log/entries, {r['clients']} client process(es), keep-alive ({r['entries']} entries, "
          f"{r['errors']} errors); raw append+fsync just before / after: {r['raw_fsync_per_s'][0]:,.0f}/s / "
          f"{r['raw_fsync_per_s'][1]:,.0f}/s; server CPU per add: {cpu_text(r['server_cpu_ms_per_add'])}; "
          f"the clients' CPU per request: {client_text(r)} "
          f"| {r['adds_per_s']:,.0f}/s |" for r in http["by_clients"].values()),
        f"| the same with {http['http_client']['clients']} client processes posting through Python's http.client "
        f"(same server, not judged): {http['http_client']['errors']} errors, server CPU per add "
        f"{cpu_text(http['http_client']['server_cpu_ms_per_add'])}, the clients' CPU per request "
        f"{client_text(http['http_client'])} | {http['http_client']['adds_per_s']:,.0f}/s |",
        f"| the same with {http['host_cpu_off']['clients']} client processes, `tlog serve --host-cpu off` (its "
        f"threads left to the scheduler; not judged): {http['host_cpu_off']['errors']} errors, server CPU per add "
        f"{cpu_text(http['host_cpu_off']['server_cpu_ms_per_add'])} | {http['host_cpu_off']['adds_per_s']:,.0f}/s |",
        *(f"| pair {k + 1} of {len(http['batch_wait_pairs'])}, {TARGET_CLIENTS} client processes, a server each: "
          f"`--batch-wait-ms` {BATCH_WAIT_S * 1000:g} (the default) / `0` (a commit never waits for the entries it "
          "expects); "
          f"server CPU per add {cpu_text(p['wait']['server_cpu_ms_per_add'])} / "
          f"{cpu_text(p['no wait']['server_cpu_ms_per_add'])}; errors {p['wait']['errors']} / {p['no wait']['errors']} "
          f"| {p['wait']['adds_per_s']:,.0f}/s / {p['no wait']['adds_per_s']:,.0f}/s "
          f"({p['wait']['adds_per_s'] / p['no wait']['adds_per_s']:.2f}x) |"
          for k, p in enumerate(http["batch_wait_pairs"])),
        f"| GET /api/v1/log/entries?logIndex (fresh proof + checkpoint + SET), tree of {http['tree_size']} "
        f"| p50 {http['get_p50_ms']:.2f} ms, p99 {http['get_p99_ms']:.2f} ms |",
        f"| verification of one record offline (SET, checkpoint signature, inclusion proof), tree of "
        f"{http['tree_size']} | p50 {http['verify_p50_ms']:.2f} ms, p99 {http['verify_p99_ms']:.2f} ms |",
        f"| SIGKILL of the server while {crash['clients']} clients post: acknowledged before the kill "
        f"| {crash['acknowledged']} at {crash['adds_per_s_before_kill']:,.0f}/s |",
        f"| ... after reopening: acknowledged entries lost; `check(full=True)` problems; largest proved tree "
        f"({crash['largest_proved_size']}) a prefix of the reopened one ({crash['tree_size_after']}) "
        f"| {crash['lost']}; {len(crash['check_problems'])}; "
        f"{'yes' if crash['largest_proved_tree_is_prefix'] else 'NO'} |",
        "",
        "What bounds the HTTP rate in this run: the server's CPU per add "
        f"({cpu_text(at_target['server_cpu_ms_per_add'])} with {TARGET_CLIENTS} clients), and the disk, whose raw "
        f"fsync rate was {min(at_target['raw_fsync_per_s']):,.0f}-{max(at_target['raw_fsync_per_s']):,.0f}/s around "
        "that phase (group commit carries several adds per fsync). In process, where there is no HTTP stack, "
        "16 threads reach "
        f"{local[-1]['adds_per_s']:,.0f}/s with group commit against {local[1]['adds_per_s']:,.0f}/s one commit at a "
        "time. `tlog serve` keeps its threads (the event loop, the commit thread) on one CPU (`--host-cpu`, "
        "agentfactory/cpuplace.py): they hand each batch to each other, and a hand-off to the other CPU wakes it; "
        "the row with `--host-cpu off` prices that. A commit waits (at most `--batch-wait-ms`) for as many entries "
        "as the last batch carried plus those already waiting when it ended: the clients just answered are about to "
        "send again, and a commit costs far more CPU than an entry; the pairs price that wait. "
        "One `tlog serve` process runs Python on one core at a time; "
        "the clients share the machine: at "
        f"this cost, {TARGET_PER_S:,}/s needs {TARGET_PER_S * (at_target['server_cpu_ms_per_add'] or 0) / 1000:.1f} "
        f"cores of server CPU alone, on a {os.cpu_count()}-CPU machine whose load average was {load_before:.1f}.",
        "",
    ]
    if SMOKE:
        lines += [f"{NO_TARGET} a smoke run (small sizes, few clients) judges nothing.", ""]
    else:
        lines += [
            "| target | result |",
            "| --- | --- |",
            f"| >= {TARGET_PER_S:,}/s over HTTP with {TARGET_CLIENTS} clients, no errors (the median of the "
            f"{len(judged)} phases a default server ran with {TARGET_CLIENTS} clients: "
            f"{', '.join(f'{r:,.0f}' for r in judged)}/s) | {judged_rate:,.0f}/s, {judged_errors} errors: "
            f"{verdict(fast)} |",
            f"| no acknowledged entry lost to SIGKILL, tree consistent after restart | {crash['lost']} lost, "
            f"{len(crash['check_problems'])} problems: {verdict(survived)} |",
            "",
        ]
    write_results("tlog", result, lines)


if __name__ == "__main__":
    main()
