"""The node under a hostile mix: what normal traffic keeps (throughput, p99) and what the node holds (RSS).

`agentfactory runtime serve` (default limits, 4 workers) in its own process, on loopback. Normal traffic:
separate client processes, keep-alive connections invoking a trivial agent. Measured twice: alone, and
beside a hostile mix run from its own process on other loopback addresses (so that the per-client limits
apply to it and not to the normal clients):

- slowloris: connections that trickle a header line every second, reconnecting when cut;
- slow bodies: connections that declare a 16 MiB body and send a byte a second;
- non-readers: clients that send 16 MiB of control bytes to a cat agent with `Accept: application/json`
  and never read the answer, reconnecting when dropped;
- a flood of 404s: unknown agents with unique versions, as fast as one keep-alive connection goes;
- sleepers: clients invoking a signed agent that sleeps 20 s in `poll_oneoff` (stopped at its 1 s deadline),
  back to back, half as many as the node has workers (its share, by default) and, in a phase of its own
  (`sleeper_all`), as many as it has: those beyond the agent's share wait 1 s without a worker, then 503;
- a compile-heavy agent: a client asking, as fast as one keep-alive connection goes, for older versions of a
  signed agent that takes seconds to compile (pinned by digest, so not in the warm set): each is compiled
  once in the background while every request for it gets 503 `compiling`.

The node's RSS is sampled every 50 ms during both phases and compared with its configured memory
budget. Writes benchmarks/results/hostile.{json,md}. Bounded: a fixed number of connections, ~25 s.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import TRIVIAL_WAT, bench_home, ms, percentile, sized, stop, verdict, write_results  # noqa: E402

from agentfactory.provenance import DEFAULT_BUILDER_ID  # noqa: E402
from agentfactory.trust import to_yaml  # noqa: E402

WORKERS = 4
WARMUP_S, MEASURE_S = sized((1.0, 8.0), (0.2, 0.6))
HOSTILE_LEAD_S = sized(2.0, 0.3)  # the mix starts this long before normal traffic is measured
PAUSE_S = sized(1.0, 0.1)  # between phases
NORMAL_PROCESSES, NORMAL_THREADS = sized((2, 2), (1, 2))
SLOWLORIS_PER_ADDRESS, SLOWLORIS_ADDRESSES = sized(60, 2), ("127.0.0.2", "127.0.0.3")
SLOW_BODIES, NON_READERS = sized((16, 8), (1, 1))
HOSTILE_SOURCE = "127.0.0.4"  # slow bodies, non-readers and the flood
TARGET_LOSS_PCT = 20.0
SLEEPERS = WORKERS // 2  # in the mix; the `sleeper_all` phase uses WORKERS
# about 3 s of Cranelift on one core (see tests/security/test_attack_compile_on_request_path.py); a smoke run's
# heavy agent compiles quickly: it checks the path (503 `compiling`, then 200), not the cost
HEAVY_LOCALS = sized(1200, 40)
HEAVY_PER_PHASE = sized(3, 1)  # distinct compile-heavy versions per phase that asks for them: about 9 s of compiles

SLEEPER_WAT = """(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (i64.store (i32.const 1024) (i64.const 42))
    (i32.store8 (i32.const 1032) (i32.const 0))
    (i32.store (i32.const 1040) (i32.const 1))
    (i64.store (i32.const 1048) (i64.const 20000000000))
    (drop (call $poll (i32.const 1024) (i32.const 1100) (i32.const 1) (i32.const 1200)))))
"""


def heavy_wat(locals_: int, depth: int = 100) -> str:
    """One function whose `locals_` i64 locals are all live across `depth` nested loops: slow to compile."""
    body = "".join(f"(local.set {i} (i64.add (local.get {i}) (local.get {(i + 1) % locals_})))"
                   for i in range(locals_))
    for j in range(depth):
        body = f"(loop $l{j} {body} (br_if $l{j} (i64.eqz (local.get {j % locals_}))))"
    return (f'(module (memory (export "memory") 1) (func $f (local {" ".join(["i64"] * locals_)}) {body}) '
            '(func (export "_start")))')

CAT_WAT = """(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (func (export "_start") (local $n i32)
    (loop $again
      (i32.store (i32.const 0) (i32.const 1024))
      (i32.store (i32.const 4) (i32.const 65536))
      (if (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 16)) (then (return)))
      (local.set $n (i32.load (i32.const 16)))
      (if (i32.eqz (local.get $n)) (then (return)))
      (i32.store (i32.const 0) (i32.const 1024))
      (i32.store (i32.const 4) (local.get $n))
      (if (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16)) (then (return)))
      (br $again))))
"""

# Normal traffic. argv: port threads warm_until stop_at (wall clock); prints one JSON line.
NORMAL = r"""
import http.client, json, sys, threading, time
port, threads, warm_until, stop_at = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
lock = threading.Lock()
latencies, errors = [], [0]
def worker():
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    mine, bad = [], 0
    while time.time() < stop_at:
        t0 = time.perf_counter()
        try:
            conn.request("POST", "/v1/agents/trivial/invoke", body=b"")
            resp = conn.getresponse()
            ok = resp.status == 200 and resp.read() == b"ok\n"
        except Exception:
            ok = False
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        t1 = time.perf_counter()
        if time.time() >= warm_until:
            if ok:
                mine.append(t1 - t0)
            else:
                bad += 1
    with lock:
        latencies.extend(mine)
        errors[0] += bad
ts = [threading.Thread(target=worker) for _ in range(threads)]
for t in ts: t.start()
for t in ts: t.join()
print(json.dumps({"latencies": latencies, "errors": errors[0]}))
"""

# The hostile mix. argv: port stop_at slowloris_per_address addresses(comma) source slow_bodies non_readers kinds
# sleepers heavy_digests(comma, or -)
HOSTILE = r"""
import http.client, json, socket, sys, threading, time
port, stop_at, per_addr = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
addresses, source = sys.argv[4].split(","), sys.argv[5]
slow_bodies, non_readers = int(sys.argv[6]), int(sys.argv[7])
kinds = sys.argv[8].split(",")
sleepers, heavy = int(sys.argv[9]), [d for d in sys.argv[10].split(",") if d != "-"]
lock = threading.Lock()
stats = {"slowloris_connections": 0, "slowloris_cut": 0, "slow_body_connections": 0, "slow_body_cut": 0,
         "non_reader_requests": 0, "non_reader_dropped": 0, "flood_requests": 0, "flood_404": 0, "flood_other": 0,
         "sleeper_requests": 0, "sleeper_timeout": 0, "sleeper_share": 0, "sleeper_other": 0, "sleeper_max_s": 0.0,
         "heavy_requests": 0, "heavy_compiling": 0, "heavy_200": 0, "heavy_other": 0, "heavy_max_503_s": 0.0}
def bump(key, n=1):
    with lock:
        stats[key] += n
def connect(src):
    s = socket.socket(); s.settimeout(5); s.bind((src, 0))
    try:
        s.connect(("127.0.0.1", port))
    except OSError:
        s.close(); time.sleep(0.2); raise
    return s
def slowloris(src):
    while time.time() < stop_at:
        s = socket.socket()
        try:
            s = connect(src); bump("slowloris_connections")
            s.sendall(b"POST /v1/agents/trivial/invoke HTTP/1.1\r\nHost: x\r\n")
            i = 0
            while time.time() < stop_at:
                time.sleep(1.0)
                s.sendall(b"X-%d: y\r\n" % i); i += 1
                s.setblocking(False)
                try:
                    if s.recv(1) == b"": raise OSError("closed")
                except BlockingIOError:
                    pass
                s.setblocking(True)
        except OSError:
            bump("slowloris_cut")
        finally:
            s.close()
def slow_body():
    while time.time() < stop_at:
        s = socket.socket()
        try:
            s = connect(source); bump("slow_body_connections")
            s.sendall(b"POST /v1/agents/cat/invoke HTTP/1.1\r\nHost: x\r\nContent-Length: 16777216\r\n\r\n")
            while time.time() < stop_at:
                time.sleep(1.0)
                s.sendall(b"x")
                s.setblocking(False)
                try:
                    if s.recv(1) == b"": raise OSError("closed")
                except BlockingIOError:
                    pass
                s.setblocking(True)
        except OSError:
            bump("slow_body_cut")
        finally:
            s.close()
BODY = b"\x01" * (16 * 1024 * 1024 - 1)
REQUEST = (b"POST /v1/agents/cat/invoke HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\n"
           b"Content-Length: %d\r\n\r\n" % len(BODY)) + BODY
def non_reader():
    while time.time() < stop_at:
        s = socket.socket()
        try:
            s = connect(source); s.settimeout(30)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(REQUEST); bump("non_reader_requests")
            while time.time() < stop_at:  # never read: wait to be dropped
                time.sleep(0.5)
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR): raise OSError("dropped")
                s.setblocking(False)
                try:
                    s.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # a pipelined request: fails once dropped
                except BlockingIOError:
                    pass
                s.setblocking(True)
        except OSError:
            bump("non_reader_dropped")
        finally:
            s.close()
def flood():
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    i = 0
    while time.time() < stop_at:
        i += 1
        try:
            conn.request("POST", "/v1/agents/nosuch-%d/invoke?version=1.0.%d" % (i, i), body=b"")
            resp = conn.getresponse(); resp.read()
            bump("flood_requests"); bump("flood_404" if resp.status == 404 else "flood_other")
        except Exception:
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
def sleeper():
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(source, 0))
    while time.time() < stop_at:
        t0 = time.perf_counter()
        try:
            conn.request("POST", "/v1/agents/sleeper/invoke", body=b"")
            resp = conn.getresponse(); body = resp.read()
            took = time.perf_counter() - t0
            share = resp.status == 503 and b"already holds" in body  # over the agent's share of the workers
            with lock:
                stats["sleeper_requests"] += 1
                stats["sleeper_max_s"] = max(stats["sleeper_max_s"], took)
                stats["sleeper_timeout" if resp.getheader("X-Agent-Outcome") == "timeout" else
                      "sleeper_share" if share else "sleeper_other"] += 1
        except Exception:
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(source, 0))
def compile_heavy():
    # Asks for each version until it is compiled (one 200), then no more: what is measured is the compiles
    # and the 503s, not the heavy agent's own invocations once it runs.
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(source, 0))
    waiting = list(heavy)
    i = 0
    while time.time() < stop_at:
        if not waiting:
            time.sleep(0.1)
            continue
        digest = waiting[i % len(waiting)]; i += 1
        t0 = time.perf_counter()
        try:
            conn.request("POST", "/v1/agents/heavy/invoke?digest=" + digest, body=b"")
            resp = conn.getresponse(); body = resp.read()
            took = time.perf_counter() - t0
            with lock:
                stats["heavy_requests"] += 1
                if resp.status == 503 and b'"compiling"' in body:
                    stats["heavy_compiling"] += 1
                    stats["heavy_max_503_s"] = max(stats["heavy_max_503_s"], took)
                else:
                    stats["heavy_200" if resp.status == 200 else "heavy_other"] += 1
                    if resp.status == 200:
                        waiting.remove(digest)
        except Exception:
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(source, 0))
ts = []
if "sleeper" in kinds or "sleeper_all" in kinds:
    ts += [threading.Thread(target=sleeper, daemon=True) for _ in range(sleepers)]
if "compile_heavy" in kinds:
    ts += [threading.Thread(target=compile_heavy, daemon=True)]
if "slowloris" in kinds:
    ts += [threading.Thread(target=slowloris, args=(a,), daemon=True) for a in addresses for _ in range(per_addr)]
if "slow_body" in kinds:
    ts += [threading.Thread(target=slow_body, daemon=True) for _ in range(slow_bodies)]
if "non_reader" in kinds:
    ts += [threading.Thread(target=non_reader, daemon=True) for _ in range(non_readers)]
if "flood" in kinds:
    ts += [threading.Thread(target=flood, daemon=True)]
for t in ts: t.start()
while time.time() < stop_at: time.sleep(0.1)
time.sleep(0.5)
with lock:
    print(json.dumps({**stats, "cpu_s": time.process_time()}))
"""


# For the comparison only: the same Runtime behind uvicorn (httptools, one event loop, invocations in a
# 4-thread pool), no hardening. argv: store_path trust_file policies_dir; prints {"listening": URL} on stdout.
UVICORN = r"""
import json, sys
from pathlib import Path
import anyio, uvicorn
from agentfactory.httpserve import bind, url_of
from agentfactory.policy import RegoEngine
from agentfactory.store import open_store
from agentfactory.trust import load_trust_policy
from sandbox_runtime.runtime import Runtime
from sandbox_runtime.sandbox import Invocation
rt = Runtime(open_store("oci-layout:" + sys.argv[1]), load_trust_policy(Path(sys.argv[2])),
             RegoEngine(Path(sys.argv[3])))
limiter = anyio.CapacityLimiter(4)
async def app(scope, receive, send):
    path = scope["path"]
    chunks, more = [], True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    if path == "/healthz":
        status, body = 200, b"ok\n"
    else:
        result = await anyio.to_thread.run_sync(rt.invoke, path.split("/")[3], Invocation(stdin=b"".join(chunks)),
                                                limiter=limiter)
        status, body = 200, result.execution.stdout
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/octet-stream"), (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})
sock = bind("127.0.0.1:0", "127.0.0.1:0")
print(json.dumps({"listening": url_of(sock, "http")}), flush=True)
uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, timeout_keep_alive=5, lifespan="off",
                              limit_concurrency=256, http="httptools", loop="asyncio")).run(sockets=[sock])
"""


def agent_yaml(name: str, output_kib: int, version: str = "1.0.0", timeout_ms: int = 5000) -> str:
    return f"""\
apiVersion: agentfactory.dev/v1alpha1
kind: AgentTemplate
metadata:
  name: {name}
  version: {version}
  description: "hostile-mix benchmark agent"
  owners: ["@agentfactory/benchmarks"]
spec:
  language: wat
  sources: [src/main.wat]
  entrypoint: _start
  tools: []
  capabilities:
    wasi:
      preopens: []
      env: []
  limits:
    memoryMiB: 1
    timeoutMs: {timeout_ms}
    maxOutputKiB: {output_kib}
  dependencies: []
  tests:
    none: "a benchmark agent: the benchmark runs it"
"""


def write_templates(folder: Path) -> None:
    for name, wat, output_kib, timeout_ms in (("trivial", TRIVIAL_WAT, 64, 5000), ("cat", CAT_WAT, 16384, 5000),
                                              ("sleeper", SLEEPER_WAT, 64, 1000)):
        write_template(folder, name, agent_yaml(name, output_kib, timeout_ms=timeout_ms), wat)


def write_template(folder: Path, name: str, manifest: str, wat: str) -> None:
    (folder / name / "src").mkdir(parents=True)
    (folder / name / "agent.yaml").write_text(manifest)
    (folder / name / "src" / "main.wat").write_text(wat)


def publish_heavy(h: Any, count: int) -> list[str]:
    """Versions 1.0.0 .. 1.0.<count> of `heavy`, each slow to compile (and different bytes), through the real
    pipeline (which compiles each once under the build's budget): the digests of all but the newest, which
    is the one the warm pool compiles at start."""
    digests = []
    for i in range(count + 1):
        folder = h.base / f"heavy-{i}"
        write_template(folder, "heavy", agent_yaml("heavy", 64, version=f"1.0.{i}"), heavy_wat(HEAVY_LOCALS + i))
        h.publish(folder)
        digests.append(h.store.resolve(f"heavy:1.0.{i}").digest)
    return digests[:-1]


def wait_ready(port: int, seconds: float = 300) -> float:
    """Until /readyz is 200 (the warm pool compiled what the node may run): the seconds it took."""
    import http.client

    started = time.monotonic()
    while time.monotonic() - started < seconds:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                return time.monotonic() - started
        finally:
            conn.close()
        time.sleep(0.1)
    raise RuntimeError(f"the node was not ready within {seconds} s")


def start_server(store_path: Path, trust_file: Path) -> tuple[subprocess.Popen[str], int]:
    exe = Path(sys.executable).parent / "agentfactory"
    cmd = [str(exe), "runtime", "serve", "--listen", "127.0.0.1:0", "--store", f"oci-layout:{store_path}",
           "--policies", str(ROOT / "policies"), "--policy", str(trust_file), "--workers", str(WORKERS),
           "--audit-log", str(store_path.parent / "audit.jsonl")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTFACTORY_RUNTIME_")}  # default limits
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env=env)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    if not line.startswith("{"):
        proc.kill()
        raise RuntimeError(f"the runtime server did not start: {line}{proc.stderr.read()}")
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    return proc, int(json.loads(line)["listening"].rsplit(":", 1)[1])


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def phase(port: int, pid: int, kinds: tuple[str, ...], heavy: list[str] | None = None) -> dict[str, Any]:
    """Normal traffic for MEASURE_S, beside the given hostile kinds (none: alone)."""
    sleepers = WORKERS if "sleeper_all" in kinds else SLEEPERS
    lead = HOSTILE_LEAD_S if kinds else 0.0
    now = time.time()
    warm_until = now + lead + WARMUP_S
    stop_at = warm_until + MEASURE_S
    attack = None
    if kinds:
        attack = subprocess.Popen([sys.executable, "-c", HOSTILE, str(port), str(stop_at), str(SLOWLORIS_PER_ADDRESS),
                                   ",".join(SLOWLORIS_ADDRESSES), HOSTILE_SOURCE, str(SLOW_BODIES), str(NON_READERS),
                                   ",".join(kinds), str(sleepers), ",".join(heavy or ["-"])],
                                  stdout=subprocess.PIPE, text=True)
        time.sleep(lead)
    clients = [subprocess.Popen([sys.executable, "-c", NORMAL, str(port), str(NORMAL_THREADS), str(warm_until),
                                 str(stop_at)], stdout=subprocess.PIPE, text=True) for _ in range(NORMAL_PROCESSES)]
    samples: list[int] = []
    cpu_before = cpu_seconds(pid)
    while time.time() < stop_at:
        samples.append(rss(pid))
        time.sleep(0.05)
    server_cpu = cpu_seconds(pid) - cpu_before
    latencies: list[float] = []
    errors = 0
    for c in clients:
        out, _ = c.communicate(timeout=60)
        doc = json.loads(out)
        latencies += doc["latencies"]
        errors += doc["errors"]
    stats = json.loads(attack.communicate(timeout=60)[0]) if attack is not None else None
    seconds = stop_at - warm_until
    return {"kinds": list(kinds), "requests_per_s": len(latencies) / seconds,
            "p50_ms": latency_ms(latencies, 0.5), "p99_ms": latency_ms(latencies, 0.99), "errors": errors,
            "requests": len(latencies), "rss_mib_max": max(samples) / 2**20,
            "server_cpu_per_s": server_cpu / (time.time() - warm_until + WARMUP_S), "hostile": stats}


def latency_ms(latencies: list[float], q: float) -> float | None:
    """The q-quantile in ms; None when no normal request succeeded in the window (the attack won: a result)."""
    return ms(percentile(latencies, q)) if latencies else None


def fmt_ms(value: float | None) -> str:
    return "none succeeded" if value is None else f"{value:.2f} ms"


def markdown(r: dict[str, Any]) -> list[str]:
    calm = r["phases"][0]
    full = r["phases"][-2]
    h = full["hostile"]
    hog = next(p["hostile"] for p in r["phases"] if p["kinds"] == ["sleeper_all"])
    u = r["uvicorn_prototype"]
    rows = []
    for p in r["phases"]:
        name = ", ".join(p["kinds"]) or "alone"
        kept = 100.0 * p["requests_per_s"] / r["baseline_requests_per_s"]
        attacker_cpu = f"{p['hostile']['cpu_s']:.1f} s" if p["hostile"] else "-"
        rows.append(f"| {name} | {p['requests_per_s']:.0f} ({kept:.0f} %) | {fmt_ms(p['p50_ms'])} | "
                    f"{fmt_ms(p['p99_ms'])} | {p['errors']} | {p['rss_mib_max']:.0f} MiB | "
                    f"{p['server_cpu_per_s']:.2f} | {attacker_cpu} |")
    return [
        "# The node under a hostile mix",
        "",
        f"`agentfactory runtime serve --workers {WORKERS}` with its default limits (memory budget "
        f"{r['memory_budget_mib']} MiB, header deadline 10 s, request deadline 30 s, response deadline 30 s, "
        "256 connections, 64 per client address), on loopback, "
        f"{r['machine']['cpus']} CPUs shared by the server, the normal clients and the attacker. Normal traffic: "
        f"{NORMAL_PROCESSES} client processes x {NORMAL_THREADS} keep-alive connections invoking a trivial agent "
        f"(`POST /v1/agents/trivial/invoke`), {MEASURE_S:g} s measured after {WARMUP_S:g} s warm-up; the "
        f"hostile mix starts {HOSTILE_LEAD_S:g} s earlier, from its own process and other loopback addresses. "
        "Normal traffic alone is measured first and last; \"kept\" is against their mean. The machine is shared "
        f"(1-minute load average {r['machine']['loadavg_1m_before']:.1f} before, "
        f"{r['machine']['loadavg_1m_after']:.1f} after): compare rows of one run, not runs.",
        "",
        "| beside | requests/s (kept) | p50 | p99 | errors | node RSS max | server CPU/s | attacker CPU |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *rows,
        "",
        f"Throughput kept beside the whole mix: **{100 - r['throughput_loss_pct']:.0f} %** (goal: at most "
        f"{TARGET_LOSS_PCT:.0f} % lost: {verdict(r['throughput_pass'])}). Per hostile kind: "
        + "; ".join(f"{k}: {100 - v:.0f} % kept ({'pass' if v <= TARGET_LOSS_PCT else 'fail'})"
                    for k, v in r["phase_loss_pct"].items()) + ". Node RSS: idle "
        f"{r['rss_idle_mib']:.0f} MiB, at most {r['rss_mib_max']:.0f} MiB in any phase, i.e. "
        f"{r['rss_mib_max'] - r['rss_idle_mib']:.0f} MiB above idle against a budget of {r['memory_budget_mib']} "
        f"MiB: {verdict(r['rss_pass'])}.",
        "",
        "What the whole mix did, and what the node did about it:",
        "",
        "| attack | what it did | what the node did |",
        "| --- | --- | --- |",
        f"| slowloris: {len(SLOWLORIS_ADDRESSES)} addresses x {SLOWLORIS_PER_ADDRESS} connections, a header line "
        f"a second | {h['slowloris_connections']} connections | "
        f"cut {h['slowloris_cut']} at the header deadline (10 s) |",
        f"| slow bodies: {SLOW_BODIES} x 16 MiB declared, a byte a second | {h['slow_body_connections']} connections "
        f"| nothing reserved ahead of the data; {h['slow_body_cut']} cut (request deadline 30 s) |",
        f"| non-readers: {NON_READERS} clients, 16 MiB of control bytes as JSON, never read | "
        f"{h['non_reader_requests']} requests | each answer held (16 MiB, in the budget) until dropped at the "
        f"response deadline (30 s): {h['non_reader_dropped']} dropped within the phase |",
        f"| 404 flood: one keep-alive connection, unique names and versions | {h['flood_requests']} requests "
        f"| {h['flood_404']} x 404, {h['flood_other']} other; refusal records in the audit trail: "
        f"{r['audit_refusal_lines']} lines, {r['audit_refusal_kib']:.0f} KiB for {r['refusals']} refusals |",
        f"| sleepers: {SLEEPERS} connections invoking an agent that sleeps 20 s in `poll_oneoff` | "
        f"{h['sleeper_requests']} requests | {h['sleeper_timeout']} stopped at the 1 s deadline (422 timeout, "
        f"slowest answer {h['sleeper_max_s']:.2f} s), {h['sleeper_share']} x 503 over the agent's share, "
        f"{h['sleeper_other']} other; each held a worker for 1 s |",
        f"| compile-heavy: one keep-alive connection asking for {HEAVY_PER_PHASE} versions (each about 3 s of "
        f"compile) pinned by digest | {h['heavy_requests']} requests | {h['heavy_compiling']} x 503 `compiling` "
        f"(slowest {1000 * h['heavy_max_503_s']:.1f} ms: no request waits for a compile), {h['heavy_200']} x 200 once "
        f"compiled (then that version is not asked again), {h['heavy_other']} other; the compiles ran in the "
        "background, one at a time |",
        "",
        f"In the `sleeper_all` phase ({WORKERS} sleeper connections, {r['agent_share']} of {WORKERS} workers "
        f"the agent's share): {hog['sleeper_requests']} requests, {hog['sleeper_timeout']} ran and were stopped at "
        f"the 1 s deadline (422), {hog['sleeper_share']} waited 1 s without a worker and got 503 \"agent 'sleeper' "
        f"already holds {r['agent_share']} of {WORKERS} workers\" with `Retry-After`, {hog['sleeper_other']} other "
        f"(slowest answer {hog['sleeper_max_s']:.2f} s).",
        "",
        f"The node was ready (`/readyz` 200: the warm pool had compiled trivial, cat, sleeper and the newest `heavy`) "
        f"{r['ready_after_start_s']:.1f} s after it started listening.",
        "",
        "Reading it honestly. A compile never sits on a request path: the compile-heavy client only ever gets "
        "quick 503s, and normal traffic keeps its median latency; but a compile takes one of this machine's two "
        "cores for its seconds (the pool compiles on at most half the CPUs), which is what normal traffic loses "
        "beside it (throughput, and a longer p99 tail). Sleepers cost no CPU (the clamped `poll_oneoff` waits in "
        f"the host), but each holds a worker until its deadline. One agent holds at most its share of the workers "
        f"({r['agent_share']} of {WORKERS}, `AGENTFACTORY_RUNTIME_AGENT_WORKER_SHARE`): as many sleepers as "
        "workers (`sleeper_all`) now hold half of them, the rest wait without a worker and are refused, and "
        "normal traffic keeps the other workers (before the share it kept 1 % of its throughput, p99 about the "
        "sleeper's 1 s deadline). The share is per agent name: an author with several agents, or many clients "
        "of several slow agents, can still fill the workers, one share per agent. The whole mix at once "
        f"{'stays within' if r['throughput_pass'] else 'exceeds'} the {TARGET_LOSS_PCT:.0f} % goal in this run, on "
        "a 2-core machine shared with the normal clients and the attacker (and other work). The two `alone` rows "
        "differ by more than some of the losses (other work on the machine): read single rows with that margin.",
        "",
        "## The same node behind uvicorn (for the choice of server)",
        "",
        "The same `Runtime` behind uvicorn 0.54 (httptools, one asyncio loop, invocations in a 4-thread pool, "
        "a bare ASGI app with no hardening at all), the same normal traffic, alone:",
        "",
        "| server | requests/s | p50 | p99 | errors | server CPU/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        f"| `runtime serve` (hardened http.server) | {calm['requests_per_s']:.0f} | {fmt_ms(calm['p50_ms'])} | "
        f"{fmt_ms(calm['p99_ms'])} | {calm['errors']} | {calm['server_cpu_per_s']:.2f} |",
        f"| uvicorn prototype | {u['requests_per_s']:.0f} | {fmt_ms(u['p50_ms'])} | {fmt_ms(u['p99_ms'])} | "
        f"{u['errors']} | {u['server_cpu_per_s']:.2f} |",
        "",
    ]


# Alone first and last: the baseline is their mean (other load on the machine drifts).
MIX = ("slowloris", "slow_body", "non_reader", "flood", "sleeper", "compile_heavy")
PHASES: tuple[tuple[str, ...], ...] = ((), ("slowloris", "slow_body", "non_reader"), ("flood",), ("sleeper",),
                                       ("sleeper_all",), ("compile_heavy",), MIX, ())


def main() -> None:
    load_before = os.getloadavg()[0]
    with bench_home("af-bench-hostile-") as h:
        write_templates(h.base / "templates")
        h.publish(h.base / "templates")
        heavy_phases = sum("compile_heavy" in k for k in PHASES)
        heavy = publish_heavy(h, heavy_phases * HEAVY_PER_PHASE)
        trust_file = h.base / "trust.yaml"
        trust_file.write_text(to_yaml(h.keyring.public_keys(), (DEFAULT_BUILDER_ID,), ("*",)))
        proc, port = start_server(h.store_path, trust_file)
        try:
            ready_s = wait_ready(port)  # the warm pool: trivial, cat, sleeper and the newest heavy compiled
            time.sleep(0.5)
            rss_idle = rss(proc.pid)
            phases = []
            for kinds in PHASES:
                digests = None
                if "compile_heavy" in kinds:  # versions never asked for before: each one compiles now
                    digests, heavy = heavy[:HEAVY_PER_PHASE], heavy[HEAVY_PER_PHASE:]
                phases.append(phase(port, proc.pid, kinds, digests))
                time.sleep(PAUSE_S)
        finally:
            stop(proc)
        alt = subprocess.Popen([sys.executable, "-c", UVICORN, str(h.store_path), str(trust_file),
                                str(ROOT / "policies")], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        try:
            assert alt.stdout is not None
            alt_port = int(json.loads(alt.stdout.readline())["listening"].rsplit(":", 1)[1])
            uvicorn_alone = phase(alt_port, alt.pid, ())
        finally:
            stop(alt)
        lines = (h.store_path.parent / "audit.jsonl").read_bytes().splitlines()
    refusal_lines = [line for line in lines if b'"allowed":false' in line]
    from sandbox_runtime.server_limits import ServerLimits
    from sandbox_runtime.worker_shares import share_of

    budget = ServerLimits().memory_budget_mib
    baseline = (phases[0]["requests_per_s"] + phases[-1]["requests_per_s"]) / 2
    loss = 100.0 * (1 - phases[-2]["requests_per_s"] / baseline)
    rss_max = max(p["rss_mib_max"] for p in phases)
    result = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "machine": f"{platform.system()} {platform.machine()}", "loadavg_1m_before": load_before,
                    "loadavg_1m_after": os.getloadavg()[0]},
        "baseline_requests_per_s": baseline,
        "workers": WORKERS, "ready_after_start_s": ready_s,
        "memory_budget_mib": budget, "rss_idle_mib": rss_idle / 2**20, "rss_mib_max": rss_max,
        "phases": phases, "uvicorn_prototype": uvicorn_alone, "throughput_loss_pct": loss,
        "throughput_pass": loss <= TARGET_LOSS_PCT,
        "rss_pass": rss_max - rss_idle / 2**20 <= budget,
        "refusals": sum(p["hostile"]["flood_404"] + p["hostile"]["sleeper_share"] for p in phases if p["hostile"]),
        "agent_share": share_of(WORKERS, ServerLimits().agent_worker_share),
        "phase_loss_pct": {",".join(p["kinds"]) or "alone": 100.0 * (1 - p["requests_per_s"] / baseline)
                           for p in phases[1:-1]},
        "audit_refusal_lines": len(refusal_lines), "audit_refusal_kib": sum(map(len, refusal_lines)) / 1024,
    }
    write_results("hostile", result, markdown(result))


if __name__ == "__main__":
    main()
