"""The admission webhook: decision latency in process and over TLS, evidence cached and on first sight.

Everything is measured in the same run, on the example templates built, signed and published by the pipeline
into a fresh store; writes benchmarks/results/admission.{json,md}. Targets (design): with evidence cached, over
TLS, on 2 cores, p99 ≤ 5 ms at 1000 reviews/s; first sight of a digest ≤ 20 ms with embedded backends.

1. In process (no HTTP): `Admitter.review(parse_review(body), "enforce")` of a WasmAgent review, cached, and on
   first sight of a digest (a fresh Admitter per sample), with the time spent in the policy engine.
2. Over TLS on loopback: `agentfactory admission serve` in its own process, load from separate client processes
   over keep-alive HTTPS connections: closed loop at 1, 4 and 8 connections, and an open loop at a fixed 1000
   reviews/s whose latencies are measured from each request's scheduled send time (coordinated omission).
3. Over TLS, first sight: digests the server has not seen, on one reused connection, after restarts.
4. A denied review (unpinned reference, unsigned agent), cached, for comparison.
5. Where the time goes: /healthz over the same TLS, the same app over plain HTTP, server CPU per review.

AGENTFACTORY_BENCH_ONLY=threads runs only part 1's non-memoised reviews in threads, THREADS_ROUNDS times on one
Admitter, and prints each round and the spread; it writes no results (a quick before/after on a shared machine).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import platform
import shutil
import ssl
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from importlib.metadata import version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import (  # noqa: E402
    TRIVIAL_WAT,
    bench_home,
    ms,
    percentile,
    run_threads,
    sized,
    stop,
    summary_ms,
    verdict,
    write_results,
)

from admission.cli import build_admitter  # noqa: E402
from admission.config import load_config  # noqa: E402
from admission.decide import Admitter  # noqa: E402
from admission.review import parse_review, response  # noqa: E402
from agentfactory.provenance import DEFAULT_BUILDER_ID  # noqa: E402
from agentfactory.trust import to_yaml  # noqa: E402
from pipelines.run import run_pipeline  # noqa: E402

TEMPLATES = ROOT / "templates"
EXAMPLES = sorted(p.name for p in TEMPLATES.iterdir() if (p / "agent.yaml").is_file())
CACHED_AGENT = "wordstats"
UNSIGNED = "unsigned"
INPROC_WARMUP, INPROC_RUNS, INPROC_VARYING_RUNS, FIRST_SIGHT_SAMPLES = sized((200, 3000, 1000, 20), (5, 30, 10, 2))
CLOSED_WARMUP_S, CLOSED_MEASURE_S = sized((0.5, 3.0), (0.1, 0.3))
# (client processes, threads each): one keep-alive connection per thread
CLOSED_LEVELS: tuple[tuple[int, int], ...] = sized(((1, 1), (1, 4), (2, 4)), ((1, 1), (1, 4)))
OPEN_RATE = 1000.0
MISS_THROUGHPUT_RUNS = sized(3000, 40)
OPEN_WARMUP_S, OPEN_MEASURE_S = sized((1.0, 5.0), (0.1, 0.3))
OPEN_PROCESSES, OPEN_THREADS = 2, 8  # 16 connections, each one request every 16 ms at 1000/s
OPEN_RUNS = sized(5, 1)  # over TLS; the target is judged on every run
# open loop, every review in a new namespace (admission.rego evaluated on each); a smoke run keeps the judged rate
MISS_RATES = sized((400.0, 1000.0), (1000.0,))
OPEN_GRACE_S = sized(5.0, 1.0)  # a request not sent within this long after the window is counted as not sent
TLS_FIRST_RESTARTS = sized(3, 1)
TARGET_P99_MS, TARGET_RATE, TARGET_FIRST_MS = 5.0, 1000.0, 20.0
ONLY_ENV = "AGENTFACTORY_BENCH_ONLY"
THREADS_ROUNDS = sized(5, 1)  # AGENTFACTORY_BENCH_ONLY=threads: rounds of the non-memoised reviews in threads
# The load generator, run as separate processes so that the client does not share the server's GIL.
# argv[1]: a JSON spec; prints one JSON line. One keep-alive connection per thread. Closed loop: each thread
# sends as soon as its previous answer arrived. Open loop: request i (of all processes) is due at
# t0 + i / rate and goes to connection i mod total_conns; its latency runs from when it was due, so a request
# that waits for its connection (the server fell behind) counts the wait.
CLIENT = r"""
import json, os, ssl, sys, threading, time
spec = json.loads(sys.argv[1])
host, port, path, method = spec["host"], spec["port"], spec["path"], spec["method"]
ctx = ssl.create_default_context(cafile=spec["cafile"]) if spec["tls"] else None
template = spec["body"].encode()
expect = spec["expect_allowed"]
threads, mode = spec["threads"], spec["mode"]
offset = time.time() - time.perf_counter()  # wall-clock schedule -> perf_counter
warm_at, stop_at = spec["warm_until"] - offset, spec["stop_at"] - offset
lock = threading.Lock()
out = {"latencies": [], "lags": [], "errors": 0, "unsent": 0, "samples": [], "last_done": 0.0}

# One keep-alive HTTP/1.1 connection that sends prepared bytes and reads each response by its Content-Length:
# what a load generator such as wrk does, in Python. http.client builds every request's headers and parses every
# answer's through the email package: about 200 µs of CPU per request, on the CPUs the server shares.
class Lean:

    def __init__(self):
        import socket
        raw = socket.create_connection((host, port), timeout=30)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = ctx.wrap_socket(raw, server_hostname=host) if ctx is not None else raw
        self.buf = b""

    def request(self, head, body=b""):
        self.sock.sendall(head + body)
        while b"\r\n\r\n" not in self.buf:
            self._more()
        header, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = header.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = next(int(v) for k, _, v in (line.partition(b":") for line in lines[1:])
                      if k.strip().lower() == b"content-length")
        while len(self.buf) < length:
            self._more()
        answer, self.buf = self.buf[:length], self.buf[length:]
        return status, answer

    def _more(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buf += chunk

    def close(self):
        self.sock.close()

HOST_HEADER = f"Host: {host}:{port}\r\n".encode()
GET_HEAD = b"GET " + path.encode() + b" HTTP/1.1\r\n" + HOST_HEADER + b"\r\n"
POST_START = b"POST " + path.encode() + b" HTTP/1.1\r\n" + HOST_HEADER + b"Content-Type: application/json\r\n"

def connect():
    return Lean()

def one(conn, uid):
    if method == "GET":
        status, body = conn.request(GET_HEAD)
        return status == 200 and body == b"ok\n", f"{status} {body[:80]!r}"
    body = template.replace(b"__UID__", uid.encode())
    status, answer = conn.request(POST_START + b"Content-Length: %d\r\n\r\n" % len(body), body)
    if status != 200:
        return False, f"HTTP {status} {answer[:200]!r}"
    r = json.loads(answer)["response"]
    return r["uid"] == uid and r["allowed"] is expect, json.dumps(r)[:300]

def worker(k):
    conn = connect()
    lat, lags, bad, unsent, last = [], [], 0, 0, 0.0
    n = 0
    if mode == "open":
        total, rate, t0 = spec["total_conns"], spec["rate"], spec["t0"] - offset
        conn_index = spec["conn_offset"] + k
    while True:
        if mode == "open":
            due = t0 + (conn_index + n * total) / rate
            if due >= stop_at:
                break
            now = time.perf_counter()
            if due > now:
                time.sleep(due - now)
            elif now > stop_at + spec["grace"]:
                unsent += 1
                n += 1
                continue
            start = due
        else:
            start = time.perf_counter()
            if start >= stop_at:
                break
        sent = time.perf_counter()
        uid = f"{os.getpid()}-{k}-{n}"
        n += 1
        try:
            ok, detail = one(conn, uid)
        except (OSError, ValueError, KeyError, StopIteration) as exc:
            ok, detail = False, repr(exc)
            conn.close()
            conn = connect()
        done = time.perf_counter()
        if start >= warm_at:
            lat.append(done - start)
            lags.append(sent - start)
            last = max(last, done)
            if not ok:
                bad += 1
                with lock:
                    if len(out["samples"]) < 5:
                        out["samples"].append(detail)
    conn.close()
    with lock:
        out["latencies"] += lat
        out["lags"] += lags
        out["errors"] += bad
        out["unsent"] += unsent
        out["last_done"] = max(out["last_done"], last + offset)

ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
for t in ts:
    t.start()
time.sleep(max(0.0, warm_at - time.perf_counter()))
cpu0 = sum(os.times()[:2])
time.sleep(max(0.0, stop_at - time.perf_counter()))
out["cpu_s"] = sum(os.times()[:2]) - cpu0
for t in ts:
    t.join()
print(json.dumps(out))
"""

# The same app as `agentfactory admission serve` with the same uvicorn settings, over plain HTTP: what TLS costs.
PLAIN_SERVER = r"""
import json, socket, sys
from pathlib import Path
import uvicorn
from admission.app import create_app
from admission.cli import build_admitter
from admission.config import load_config
admitter = build_admitter(load_config(Path(sys.argv[1])))
sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", 0))
print(json.dumps({"listening": "http://127.0.0.1:%d" % sock.getsockname()[1]}), file=sys.stderr, flush=True)
uvicorn.Server(uvicorn.Config(create_app(admitter), log_level="warning", access_log=False, timeout_keep_alive=30,
                              limit_concurrency=1000, server_header=False)).run(sockets=[sock])
"""


# -- the world -----------------------------------------------------------------------------------------
def wasm_agent_review(ref: str, name: str = "agent", uid: str | None = None,
                      namespace: str = "team-a") -> dict[str, Any]:
    """A WasmAgent CREATE as the API server sends it (tests/admission_helpers.py)."""
    obj = {"apiVersion": "agentfactory.dev/v1alpha1", "kind": "WasmAgent", "metadata": {"name": name},
           "spec": {"agent": ref}}
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": uid or str(uuid.uuid4()), "kind": {"group": "agentfactory.dev", "version": "v1alpha1",
                                                   "kind": "WasmAgent"},
        "resource": {"group": "agentfactory.dev", "version": "v1alpha1", "resource": "wasmagents"},
        "name": name, "namespace": namespace, "operation": "CREATE", "userInfo": {"username": "alice"},
        "object": obj, "oldObject": None, "dryRun": False}}


def body_of(ref: str, uid: str | None = None, name: str = "agent", namespace: str = "team-a") -> bytes:
    return json.dumps(wasm_agent_review(ref, name=name, uid=uid, namespace=namespace)).encode()


def new_object_body(ref: str) -> bytes:
    """A review whose object name is its uid: the load generator gives every request a new name as well."""
    uid = f"u{uuid.uuid4().hex}"
    return body_of(ref, uid=uid, name=uid)


def new_namespace_body(ref: str) -> bytes:
    """A review whose namespace is its uid: every request in a namespace never seen (the decision not cached)."""
    uid = f"u{uuid.uuid4().hex}"
    return body_of(ref, uid=uid, namespace=uid)


def write_unsigned(folder: Path) -> None:
    t = folder / UNSIGNED
    (t / "src").mkdir(parents=True)
    (t / "src" / "main.wat").write_text(TRIVIAL_WAT)
    (t / "agent.yaml").write_text(f"""\
apiVersion: agentfactory.dev/v1alpha1
kind: AgentTemplate
metadata:
  name: {UNSIGNED}
  version: 1.0.0
  description: Published without a signature; the webhook must refuse it.
  owners: ["@agentfactory/benchmarks"]
spec:
  language: wat
  sources: [src/main.wat]
  entrypoint: _start
  limits:
    memoryMiB: 1
    timeoutMs: 1000
  tests:
    none: "a benchmark agent: the benchmark runs it"
""")


# -- 1. in process ------------------------------------------------------------------------------------
class EngineTimer:
    """Wraps an Admitter's policy engine to add up the time spent deciding (artifact and admission policy)."""

    def __init__(self, admitter: Admitter) -> None:
        self.seconds = 0.0
        self.calls = 0
        inner = admitter.engine.decide

        def decide(policy: str, document: dict[str, Any]) -> Any:
            start = time.perf_counter()
            try:
                return inner(policy, document)
            finally:
                self.seconds += time.perf_counter() - start
                self.calls += 1

        admitter.engine.decide = decide  # type: ignore[method-assign,misc]


def timed_reviews(admitter: Admitter, bodies: list[bytes], expect: bool, cpu: list[float] | None = None) -> list[float]:
    """Wall time of each review; with `cpu`, also this thread's CPU time (wall minus CPU: time off the CPU)."""
    out = []
    for body in bodies:
        start, cpu0 = time.perf_counter(), time.thread_time()
        answer = admitter.review(parse_review(body), "enforce")
        out.append(time.perf_counter() - start)
        if cpu is not None:
            cpu.append(time.thread_time() - cpu0)
        if answer.allowed is not expect:
            raise RuntimeError(f"in-process review: allowed={answer.allowed}, expected {expect}: {answer.message}")
    return out


def miss_throughput(admitter: Admitter, ref: str, tag: str = "") -> list[dict[str, Any]]:
    """Reviews/s of reviews whose admission decision is not memoised (each from a new namespace), from 1 thread
    and from as many threads as the policy engine has workers (AGENTFACTORY_POLICY_WORKERS, one per CPU by
    default), with the process's CPU use: whether the decisions use more than one core."""
    workers = int(getattr(admitter.engine, "workers", 1) or 1)
    out = []
    for threads in sorted({1, workers, 2 * workers}):
        per_thread = MISS_THROUGHPUT_RUNS // threads
        bodies = [[body_of(ref, namespace=f"miss-{tag}{threads}-{k}-{i}") for i in range(per_thread)]
                  for k in range(threads)]
        errors: list[BaseException] = []

        def run(mine: list[bytes], errors: list[BaseException] = errors) -> None:
            try:
                timed_reviews(admitter, mine, True)
            except BaseException as exc:  # reported below: a wrong answer fails the benchmark
                errors.append(exc)

        wall, cpu = run_threads(run, bodies)
        if errors:
            raise RuntimeError(f"non-memoised reviews in {threads} threads: {errors[0]}")
        n = sum(len(b) for b in bodies)
        out.append({"threads": threads, "engine_workers": workers, "n": n, "rps": n / wall, "cpu_util": cpu / wall,
                    "cpu_us_per_review": cpu / n * 1e6, "pass": n / wall >= TARGET_RATE})
    return out


def bench_in_process(config_file: Path, base: Path, refs: dict[str, str]) -> dict[str, Any]:
    config = dataclasses.replace(load_config(config_file), audit_log=base / "audit-in-process.jsonl")
    admitter = build_admitter(config)
    ref = refs[CACHED_AGENT]
    timed_reviews(admitter, [body_of(ref) for _ in range(INPROC_WARMUP)], True)
    timer = EngineTimer(admitter)
    cached = timed_reviews(admitter, [body_of(ref) for _ in range(INPROC_RUNS)], True)
    engine_calls_cached = timer.calls

    # the verdict cached and every review a new object (its name), which is not in the admission policy's input:
    # the decision is reused; then every review in a new namespace, which is: admission.rego is evaluated each time
    varying: dict[str, Any] = {}
    for label, make in (("new_object", lambda i: body_of(ref, name=f"agent-{i}")),
                        ("new_namespace", lambda i: body_of(ref, namespace=f"team-{i}"))):
        calls0, seconds0 = timer.calls, timer.seconds
        times = timed_reviews(admitter, [make(i) for i in range(INPROC_VARYING_RUNS)], True)
        varying[label] = {**summary_ms(times), "policy_engine_calls": timer.calls - calls0,
                          "policy_engine_mean_ms": ms((timer.seconds - seconds0) / len(times))}

    varying["miss_throughput"] = miss_throughput(admitter, ref)

    # the parts of a cached review: parse, decide (with and without the audit record), the response's JSON
    body = body_of(ref)
    parts: dict[str, list[float]] = {"parse_review": [], "review_no_audit": [], "audit_record": [],
                                     "response_json": []}
    quiet = Admitter(config, admitter.store, admitter.trust, admitter.engine, None)
    quiet.review(parse_review(body))
    for _ in range(INPROC_RUNS // 3):
        t0 = time.perf_counter()
        review = parse_review(body)
        t1 = time.perf_counter()
        answer = quiet.review(review, "enforce")
        t2 = time.perf_counter()
        assert admitter.audit is not None
        admitter.audit.record("admission", plane="admission", uid=review.uid, operation=review.operation,
                              namespace=review.namespace, kind="agentfactory.dev/WasmAgent", name=review.name,
                              dryRun=False, mode="enforce", allowed=True, decision=answer.decision, message="",
                              agents=answer.agents)
        t3 = time.perf_counter()
        json.dumps(response(review.uid, answer.allowed, warnings=answer.warnings), separators=(",", ":")).encode()
        t4 = time.perf_counter()
        for key, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            parts[key].append(dt)

    denied: dict[str, Any] = {}
    for label, denied_ref in (("unpinned", f"{CACHED_AGENT}:1.0.0"), ("unsigned", refs[UNSIGNED])):
        timed_reviews(admitter, [body_of(denied_ref) for _ in range(INPROC_WARMUP)], False)
        denied[label] = {"ref": denied_ref, **summary_ms(
            timed_reviews(admitter, [body_of(denied_ref) for _ in range(INPROC_RUNS)], False))}

    # first sight: a fresh Admitter as `admission serve` builds it (store, trust policy, engine, caches); one
    # review of another example first (it compiles the policy bundles and opens the store, as any earlier review
    # in a running server has), then the timed review of a digest this Admitter has never seen
    first_review: list[float] = []
    first_sight: list[float] = []
    first_cpu: list[float] = []
    first_engine: list[float] = []
    construct: list[float] = []
    # Every Admitter is kept until the end: freeing one frees its rego-cpp interpreters, ~30 ms of CPU in whatever
    # code the garbage collector interrupts (the timer's closure makes a cycle), which a server never does.
    kept: list[Admitter] = []
    for i in range(FIRST_SIGHT_SAMPLES):
        target, other = EXAMPLES[i % len(EXAMPLES)], EXAMPLES[(i + 1) % len(EXAMPLES)]
        start = time.perf_counter()
        fresh = build_admitter(config)
        construct.append(time.perf_counter() - start)
        kept.append(fresh)
        first_review += timed_reviews(fresh, [body_of(refs[other])], True)
        timer = EngineTimer(fresh)
        first_sight += timed_reviews(fresh, [body_of(refs[target])], True, first_cpu)
        first_engine.append(timer.seconds)
    kept.clear()
    gc.collect()
    samples = [{"agent": EXAMPLES[i % len(EXAMPLES)], "wall_ms": ms(w), "cpu_ms": ms(c), "policy_engine_ms": ms(e)}
               for i, (w, c, e) in enumerate(zip(first_sight, first_cpu, first_engine, strict=True))]
    return {
        "cached": {"agent": CACHED_AGENT, "warmup": INPROC_WARMUP, **summary_ms(cached),
                   "policy_engine_calls": engine_calls_cached},
        "cached_parts": {k: summary_ms(v) for k, v in parts.items()},
        "cached_verdict": varying,
        "denied": denied,
        "first_sight": {**summary_ms(first_sight), "cpu": summary_ms(first_cpu),
                        "policy_engine": summary_ms(first_engine), "target_ms": TARGET_FIRST_MS,
                        "pass": ms(max(first_sight)) <= TARGET_FIRST_MS, "samples": samples},
        "first_review_after_start": summary_ms(first_review),
        "admitter_construction": summary_ms(construct),
    }


# -- servers and load -------------------------------------------------------------------------------
@dataclasses.dataclass
class Server:
    proc: subprocess.Popen[str]
    host: str
    port: int
    tls: bool

    def cpu_seconds(self) -> float:
        """The server's CPU time, its worker processes' (`--workers`) included."""
        return sum(_cpu_of(pid) for pid in (self.proc.pid, *_children(self.proc.pid)))


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with suppress(OSError, ValueError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _cpu_of(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_listening(proc: subprocess.Popen[str], what: str) -> str:
    assert proc.stderr is not None
    seen: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        if line.startswith("{") and "listening" in line:
            threading.Thread(target=proc.stderr.read, daemon=True).start()  # never let the pipe fill
            return str(json.loads(line)["listening"])
    proc.kill()
    raise RuntimeError(f"{what} did not start: {''.join(seen)}")


@contextmanager
def serving(config_file: Path, tls_dir: Path | None, engine: str = "rego", extra: tuple[str, ...] = ()
            ) -> Iterator[Server]:
    """`agentfactory admission serve` (tls_dir given; `--policy-engine engine`, then `extra`) or the same app over
    plain HTTP; healthy on return."""
    if tls_dir is not None:
        exe = Path(sys.executable).parent / "agentfactory"
        cmd = [str(exe) if exe.exists() else "agentfactory", "admission", "serve", "--listen", "127.0.0.1:0",
               "--tls-cert", str(tls_dir / "tls.crt"), "--tls-key", str(tls_dir / "tls.key"),
               "--config", str(config_file), "--policy-engine", engine, *extra]
    else:
        cmd = [sys.executable, "-c", PLAIN_SERVER, str(config_file)]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT)
    try:
        url = wait_listening(proc, " ".join(cmd[:3]))
        host, port = url.split("://", 1)[1].rsplit(":", 1)
        server = Server(proc, host, int(port), tls_dir is not None)
        ctx = ssl.create_default_context(cafile=str(tls_dir / "ca.crt")) if tls_dir else None
        deadline = time.monotonic() + 30
        while True:
            conn = connection(server, ctx)
            try:
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            finally:
                conn.close()
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the webhook did not become healthy")
            time.sleep(0.05)
        yield server
    finally:
        stop(proc)


def connection(server: Server, ctx: ssl.SSLContext | None) -> Any:
    import http.client

    if ctx is None:
        return http.client.HTTPConnection(server.host, server.port, timeout=30)
    return http.client.HTTPSConnection(server.host, server.port, timeout=30, context=ctx)


def steal_seconds() -> float:
    """CPU time the hypervisor took from this VM (all CPUs), from /proc/stat; 0 where there is none."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def run_clients(server: Server, cafile: Path, *, path: str, method: str, body: bytes, expect: bool,
                processes: int, threads: int, mode: str, warmup: float, measure: float,
                rate: float = 0.0, keep_latencies: bool = False) -> dict[str, Any]:
    t0 = time.time() + 0.5  # every client started before anyone sends
    warm_until, stop_at = t0 + warmup, t0 + warmup + measure
    template = body.decode()
    uid = json.loads(body)["request"]["uid"] if body else ""
    specs = [{"host": server.host, "port": server.port, "path": path, "method": method, "tls": server.tls,
              "cafile": str(cafile), "body": template.replace(uid, "__UID__") if uid else "",
              "expect_allowed": expect, "threads": threads, "mode": mode, "warm_until": warm_until,
              "stop_at": stop_at, "t0": t0, "rate": rate, "total_conns": processes * threads,
              "conn_offset": p * threads, "grace": OPEN_GRACE_S} for p in range(processes)]
    clients = [subprocess.Popen([sys.executable, "-c", CLIENT, json.dumps(s)], stdout=subprocess.PIPE, text=True)
               for s in specs]
    time.sleep(max(0.0, warm_until - time.time()))
    cpu0, load0, steal0 = server.cpu_seconds(), os.getloadavg()[0], steal_seconds()
    time.sleep(max(0.0, stop_at - time.time()))
    server_cpu = server.cpu_seconds() - cpu0
    steal = steal_seconds() - steal0
    latencies: list[float] = []
    lags: list[float] = []
    errors = unsent = 0
    samples: list[str] = []
    client_cpu = last_done = 0.0
    for c in clients:
        out, _ = c.communicate(timeout=warmup + measure + OPEN_GRACE_S + 60)
        if c.returncode != 0:
            raise RuntimeError(f"load generator exit {c.returncode}")
        doc = json.loads(out)
        latencies += doc["latencies"]
        lags += doc["lags"]
        errors += doc["errors"]
        unsent += doc["unsent"]
        samples += doc["samples"]
        client_cpu += doc["cpu_s"]
        last_done = max(last_done, doc["last_done"])
    n = len(latencies)
    result: dict[str, Any] = {
        "client_processes": processes, "threads_per_process": threads, "connections": processes * threads,
        "requests": n, "errors": errors, "error_samples": samples[:5], "rps": n / measure,
        "p50_ms": ms(statistics.median(latencies)), "p99_ms": ms(percentile(latencies, 0.99)),
        "p999_ms": ms(percentile(latencies, 0.999)), "max_ms": ms(max(latencies)),
        "server_cpu_us_per_request": server_cpu / n * 1e6, "server_cpu_util": server_cpu / measure,
        "client_cpu_util": client_cpu / measure, "loadavg_1m": load0, "steal_s": steal}
    if keep_latencies:
        result["latencies_ms"] = [ms(x) for x in latencies]
    if mode == "open":
        result.update({"target_rate": rate, "scheduled": round(rate * measure), "unsent": unsent,
                       "send_lag_p50_ms": ms(statistics.median(lags)), "send_lag_p99_ms": ms(percentile(lags, 0.99)),
                       "drain_ms": ms(max(0.0, last_done - stop_at))})
    return result


def metrics_of(server: Server, ctx: ssl.SSLContext | None) -> dict[str, float]:
    """The server's own latency histogram (body read to response, excluding TLS and HTTP parsing)."""
    conn = connection(server, ctx)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    out: dict[str, float] = {}
    prefix = "agent_factory_control_plane_request_duration_seconds"
    for line in text.splitlines():
        if line.startswith(prefix):
            name, value = line.rsplit(" ", 1)
            out[name.removeprefix(prefix)] = float(value)
    return out


def server_side(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    count = after.get("_count", 0.0) - before.get("_count", 0.0)
    if count <= 0:
        return {}

    def le(bound: str) -> float:
        key = f'_bucket{{le="{bound}"}}'
        return (after.get(key, 0.0) - before.get(key, 0.0)) / count

    return {"reviews": int(count), "mean_ms": ms((after["_sum"] - before.get("_sum", 0.0)) / count),
            "share_le_1ms": le("0.001"), "share_le_2_5ms": le("0.0025"), "share_le_5ms": le("0.005")}


# -- 2-5. over the wire ------------------------------------------------------------------------------
def bench_wire(config_file: Path, tls_dir: Path, refs: dict[str, str]) -> dict[str, Any]:
    ca = tls_dir / "ca.crt"
    ctx = ssl.create_default_context(cafile=str(ca))
    allowed_body, unpinned_body = body_of(refs[CACHED_AGENT]), body_of(f"{CACHED_AGENT}:1.0.0")
    unsigned_body = body_of(refs[UNSIGNED])
    result: dict[str, Any] = {}
    with serving(config_file, tls_dir) as server:
        first = ms(one_review(server, ctx, allowed_body, True))  # fills the cache (and compiles the policy bundles)
        closed = [run_clients(server, ca, path="/validate", method="POST", body=allowed_body, expect=True,
                              processes=p, threads=t, mode="closed", warmup=CLOSED_WARMUP_S,
                              measure=CLOSED_MEASURE_S) for p, t in CLOSED_LEVELS]
        open_runs = []
        for _ in range(OPEN_RUNS):
            before = metrics_of(server, ctx)
            run = run_clients(server, ca, path="/validate", method="POST", body=allowed_body, expect=True,
                              processes=OPEN_PROCESSES, threads=OPEN_THREADS, mode="open", warmup=OPEN_WARMUP_S,
                              measure=OPEN_MEASURE_S, rate=OPEN_RATE, keep_latencies=True)
            run["server_side"] = server_side(before, metrics_of(server, ctx))
            run["pass"] = (run["p99_ms"] <= TARGET_P99_MS and run["errors"] == 0 and run["unsent"] == 0
                           and run["rps"] >= 0.98 * TARGET_RATE)
            open_runs.append(run)
        # the Pods of a ReplicaSet: a new object name each review (not in the policy input: the decision is reused)
        before = metrics_of(server, ctx)
        new_names = run_clients(server, ca, path="/validate", method="POST", body=new_object_body(refs[CACHED_AGENT]),
                                expect=True, processes=OPEN_PROCESSES, threads=OPEN_THREADS, mode="open",
                                warmup=OPEN_WARMUP_S, measure=OPEN_MEASURE_S, rate=OPEN_RATE)
        new_names["server_side"] = server_side(before, metrics_of(server, ctx))
        new_names["pass"] = (new_names["p99_ms"] <= TARGET_P99_MS and new_names["errors"] == 0
                             and new_names["unsent"] == 0 and new_names["rps"] >= 0.98 * TARGET_RATE)
        merged = [x for r in open_runs for x in r.pop("latencies_ms")]
        open_merged = {"requests": len(merged), "p50_ms": statistics.median(merged),
                       "p99_ms": percentile(merged, 0.99), "p999_ms": percentile(merged, 0.999)}
        denied = {}
        for label, body in (("unpinned", unpinned_body), ("unsigned", unsigned_body)):
            one_review(server, ctx, body, False)
            denied[label] = run_clients(server, ca, path="/validate", method="POST", body=body, expect=False,
                                        processes=1, threads=1, mode="closed", warmup=CLOSED_WARMUP_S,
                                        measure=CLOSED_MEASURE_S)
        allowed_one = closed[0]
        healthz = run_clients(server, ca, path="/healthz", method="GET", body=b"", expect=True, processes=1,
                              threads=1, mode="closed", warmup=CLOSED_WARMUP_S, measure=CLOSED_MEASURE_S)

    # the verdict cached, every review in a new namespace: admission.rego evaluated on each (a server of its own, as
    # an overload leaves reviews running in its worker threads after their deadline), by each policy engine
    result["decision_miss"] = decision_miss(config_file, tls_dir, refs, "rego")
    result["decision_miss_opa_wasm"] = decision_miss(config_file, tls_dir, refs, "opa-wasm")
    # regopy in two worker processes (one per CPU) behind the supervisor that shares the connections out
    result["decision_miss_workers"] = decision_miss(config_file, tls_dir, refs, "rego", ("--workers", "2"))
    # the same with the threads spread (`--host-cpu off`), where each evaluation goes to a worker thread: what
    # evaluating on the event loop buys, side by side
    result["decision_miss_opa_wasm_spread"] = decision_miss(config_file, tls_dir, refs, "opa-wasm",
                                                            ("--host-cpu", "off"))
    result.update({"first_review_after_start_ms": first, "closed": closed, "open_runs": open_runs,
                   "open_pass": all(r["pass"] for r in open_runs),
                   "open_merged": open_merged, "new_names": new_names, "denied": denied,
                   "healthz_1conn": healthz, "allowed_1conn": allowed_one})

    # the same app over plain HTTP (same uvicorn settings): what TLS adds
    with serving(config_file, None) as plain:
        one_review(plain, None, allowed_body, True)
        before = metrics_of(plain, None)
        result["plain_http"] = {
            "closed_1conn": run_clients(plain, ca, path="/validate", method="POST", body=allowed_body, expect=True,
                                        processes=1, threads=1, mode="closed", warmup=CLOSED_WARMUP_S,
                                        measure=CLOSED_MEASURE_S),
            "open": run_clients(plain, ca, path="/validate", method="POST", body=allowed_body, expect=True,
                                processes=OPEN_PROCESSES, threads=OPEN_THREADS, mode="open", warmup=OPEN_WARMUP_S,
                                measure=OPEN_MEASURE_S, rate=OPEN_RATE)}
        result["plain_http"]["open"]["server_side"] = server_side(before, metrics_of(plain, None))

    # first sight over TLS: a fresh server; one review of another example (as any running server has done),
    # then each digest it has not seen, on the same kept-alive connection (no TLS handshake in the figure)
    samples: list[float] = []
    after_start: list[float] = []
    for restart in range(TLS_FIRST_RESTARTS):
        order = EXAMPLES[restart % len(EXAMPLES):] + EXAMPLES[:restart % len(EXAMPLES)]
        with serving(config_file, tls_dir) as server:
            conn = connection(server, ctx)
            try:
                after_start.append(timed_post(conn, body_of(refs[order[0]]), True))
                samples += [timed_post(conn, body_of(refs[name]), True) for name in order[1:]]
            finally:
                conn.close()
    result["first_sight"] = {**summary_ms(samples), "restarts": TLS_FIRST_RESTARTS,
                             "target_ms": TARGET_FIRST_MS, "pass": ms(max(samples)) <= TARGET_FIRST_MS,
                             "first_review_after_start": summary_ms(after_start)}
    return result


def timed_post(conn: Any, body: bytes, expect: bool) -> float:
    """One review on an open connection (the first request on it pays the TLS handshake: warm it first)."""
    if conn.sock is None:
        conn.request("GET", "/healthz")
        conn.getresponse().read()
    start = time.perf_counter()
    conn.request("POST", "/validate", body=body, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    elapsed = time.perf_counter() - start
    doc = json.loads(data)["response"]
    if resp.status != 200 or doc["allowed"] is not expect:
        raise RuntimeError(f"review: HTTP {resp.status}, {doc}")
    return elapsed


def one_review(server: Server, ctx: ssl.SSLContext | None, body: bytes, expect: bool) -> float:
    conn = connection(server, ctx)
    try:
        return timed_post(conn, body, expect)
    finally:
        conn.close()


# -- report -----------------------------------------------------------------------------------------
def markdown(result: dict[str, Any]) -> list[str]:
    m, ip, w = result["machine"], result["in_process"], result["wire"]
    runs, fs, pl = w["open_runs"], w["first_sight"], w["plain_http"]
    op = runs[0]
    c, parts = ip["cached"], ip["cached_parts"]
    lines = [
        "# Admission webhook benchmark",
        "",
        f"One run, {m['cpus']} CPUs, Python {m['python']}, uvicorn {m['uvicorn']}, {m['machine']}; 1-minute load "
        f"average {m['loadavg_1m_before']:.2f} before, {m['loadavg_1m_after']:.2f} after. The example templates "
        f"built, signed (local keyring) and published by the pipeline into a fresh OCI layout store (in "
        f"{result['pipeline_s']:.1f} s); the webhook configured with that store, a trust policy pinning the key "
        "and builder, the repository's policies and an audit log. Every review is a WasmAgent CREATE with a fresh "
        "uid; every answer was checked (HTTP 200, `response.uid`, `response.allowed`).",
        "",
        "## In process (no HTTP)",
        "",
        "`Admitter.review(parse_review(body), \"enforce\")` with the Admitter `admission serve` builds "
        "(`build_admitter`), audit record included.",
        "",
        "| case | p50 | p99 | max | n |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| allowed, evidence cached ({c['agent']}) | {c['p50_ms']:.3f} ms | {c['p99_ms']:.3f} ms | "
        f"{c['max_ms']:.3f} ms | {c['n']} |",
    ]
    cv = ip["cached_verdict"]
    no, nn = cv["new_object"], cv["new_namespace"]
    lines += [f"| allowed, evidence cached, a new object name each review | {no['p50_ms']:.3f} ms | "
              f"{no['p99_ms']:.3f} ms | {no['max_ms']:.3f} ms | {no['n']} |",
              f"| allowed, verdict cached, a new namespace each review (admission.rego evaluated) | "
              f"{nn['p50_ms']:.3f} ms | {nn['p99_ms']:.3f} ms | {nn['max_ms']:.3f} ms | {nn['n']} |"]
    for label, d in ip["denied"].items():
        lines.append(f"| denied, {label} (cached) | {d['p50_ms']:.3f} ms | {d['p99_ms']:.3f} ms | "
                     f"{d['max_ms']:.3f} ms | {d['n']} |")
    mt = cv["miss_throughput"]
    f, fe, fr = ip["first_sight"], ip["first_sight"]["policy_engine"], ip["first_review_after_start"]
    lines += [
        f"| **first sight of a digest** (fresh Admitter, bundles compiled) | {f['p50_ms']:.2f} ms | "
        f"{f['p99_ms']:.2f} ms | {f['max_ms']:.2f} ms | {f['n']} |",
        f"| its CPU time (the thread's; the rest of the wall time it was off the CPU) | {f['cpu']['p50_ms']:.2f} ms | "
        f"{f['cpu']['p99_ms']:.2f} ms | {f['cpu']['max_ms']:.2f} ms | {f['cpu']['n']} |",
        f"| of which in the policy engine (artifact + admission policy) | {fe['p50_ms']:.2f} ms | {fe['p99_ms']:.2f} "
        f"ms | {fe['max_ms']:.2f} ms | {fe['n']} |",
        f"| first review of a fresh Admitter (compiles the policy bundles) | {fr['p50_ms']:.2f} ms | "
        f"{fr['p99_ms']:.2f} ms | {fr['max_ms']:.2f} ms | {fr['n']} |",
        "",
        f"Policy engine calls: {c['policy_engine_calls']} for the cached reviews of one object, "
        f"{no['policy_engine_calls']} for {no['n']} new object names (the verdict and the admission decision are "
        "both cached; the decision's key is the admission policy's whole input, which has the namespace, operation, "
        "kind, mode, reference and verdict but not the object name, so the Pods a ReplicaSet makes reuse it), "
        f"{nn['policy_engine_calls']} for {nn['n']} new namespaces ({nn['policy_engine_mean_ms']:.2f} ms mean in "
        "the engine: admission.rego evaluated). "
        "Parts of one cached review, p50: "
        + ", ".join(f"`{k}` {v['p50_ms'] * 1e3:.0f} µs" for k, v in parts.items())
        + f". Building an Admitter (store, trust policy, Rego compile): {ip['admitter_construction']['p50_ms']:.0f} "
        "ms p50, not counted. First sight: a fresh Admitter per sample that has already answered one review of "
        "another example (so the policy bundles are compiled, as in any server that has answered once), then a "
        "review of a digest it has never seen: resolve, fetch and hash the wasm, verify signatures, provenance "
        "and SBOM, artifact policy, admission policy. Store files are in the page cache.",
        "",
        f"Target ≤ {f['target_ms']:.0f} ms for first sight (judged on the max wall time): {verdict(f['pass'])}.",
    ]
    if not f["pass"]:
        slow = max(f["samples"], key=lambda x: x["wall_ms"])
        lines.append(f"The target is **missed**: the slowest sample ({slow['agent']}) took {slow['wall_ms']:.1f} ms, "
                     f"of which {slow['cpu_ms']:.1f} ms on the CPU and {slow['policy_engine_ms']:.1f} ms in the policy "
                     f"engine (load average {m['loadavg_1m_before']:.2f} before the run).")
    lines += [
        "",
        "### Reviews whose admission decision is not memoised, in threads",
        "",
        "Each review from a namespace never seen (the verdict cached), so admission.rego is evaluated on every one; "
        f"the policy engine has {mt[0]['engine_workers']} worker(s) (one rego-cpp interpreter each, "
        "`AGENTFACTORY_POLICY_WORKERS`, one per CPU by default); rego-cpp runs a query without the GIL (ctypes), "
        "the rest of a review holds it. CPU is the process's CPU time over the wall time (1.0 = one CPU).",
        "",
        "| threads | reviews/s | CPU | CPU/review | n | target ≥ 1000/s |",
        "| ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    lines += [f"| {r['threads']} | {r['rps']:.0f} | {r['cpu_util']:.2f} | {r['cpu_us_per_review']:.0f} µs | {r['n']} | "
              f"{verdict(r['pass'])} |" for r in mt]
    lines += [
        "",
        "## Over TLS on loopback, evidence cached",
        "",
        "`agentfactory admission serve` (uvicorn, one process, TLS with the certificate from `agentfactory "
        "admission certs`) in its own process; load from separate Python client processes, one keep-alive TLS "
        "connection per thread sending prepared bytes and reading each answer by its Content-Length (as `wrk` "
        "would; http.client cost about 200 µs of client CPU per request more, on the CPUs the server shares), "
        "`POST /validate`. "
        f"**Client and server share the machine's {m['cpus']} CPUs**: the client's own CPU time is in every "
        "figure below, and the CPU columns show who used what (1.0 = one CPU).",
        "",
        f"### Closed loop ({CLOSED_WARMUP_S:g} s warm-up, {CLOSED_MEASURE_S:g} s measured)",
        "",
        "| clients | connections | reviews/s | p50 | p99 | p99.9 | max | errors | server CPU/review | server CPU | "
        "client CPU |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for lv in w["closed"]:
        lines.append(
            f"| {lv['client_processes']} process(es) x {lv['threads_per_process']} threads | {lv['connections']} | "
            f"{lv['rps']:.0f} | {lv['p50_ms']:.2f} ms | {lv['p99_ms']:.2f} ms | {lv['p999_ms']:.2f} ms | "
            f"{lv['max_ms']:.2f} ms | {lv['errors']} | {lv['server_cpu_us_per_request']:.0f} µs | "
            f"{lv['server_cpu_util']:.2f} | {lv['client_cpu_util']:.2f} |")
    lines += [
        "",
        f"### Open loop at {op['target_rate']:.0f} reviews/s ({OPEN_WARMUP_S:g} s warm-up, {OPEN_MEASURE_S:g} s "
        "measured)",
        "",
        f"Request i is due at t0 + i/{op['target_rate']:.0f} s and goes to connection i mod {op['connections']} "
        f"({op['client_processes']} processes x {op['threads_per_process']} threads); its latency runs from when it "
        "was due, so time spent waiting for a busy connection (the server, or the client, fell behind) is counted "
        f"(coordinated omission). `send lag` is how late requests left. {len(runs)} runs over TLS on the same "
        "server, then the same app over plain HTTP.",
        "",
        "| run | achieved/s | p50 | p99 | p99.9 | max | errors | not sent | send lag p99 | server CPU/review | "
        "server CPU | client CPU |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    labelled = [(f"TLS (`admission serve`) #{i + 1}, load {r['loadavg_1m']:.2f}", r) for i, r in enumerate(runs)]
    for label, lv in [*labelled, ("plain HTTP (same app, for comparison)", pl["open"])]:
        lines.append(
            f"| {label} | {lv['rps']:.0f} | {lv['p50_ms']:.2f} ms | {lv['p99_ms']:.2f} ms | {lv['p999_ms']:.2f} ms | "
            f"{lv['max_ms']:.2f} ms | {lv['errors']} | {lv['unsent']} | {lv['send_lag_p99_ms']:.2f} ms | "
            f"{lv['server_cpu_us_per_request']:.0f} µs | {lv['server_cpu_util']:.2f} | {lv['client_cpu_util']:.2f} |")
    worst = max(runs, key=lambda r: r["p99_ms"])
    lines += [
        "",
        f"Target p99 ≤ {TARGET_P99_MS:.0f} ms at {TARGET_RATE:.0f} reviews/s over TLS, no errors, judged on every "
        f"run: {verdict(w['open_pass'])} ({sum(r['pass'] for r in runs)} of {len(runs)} runs; worst p99 "
        f"{worst['p99_ms']:.2f} ms at {worst['rps']:.0f}/s achieved). All {len(runs)} runs merged "
        f"({w['open_merged']['requests']} reviews): p50 {w['open_merged']['p50_ms']:.2f} ms, p99 "
        f"{w['open_merged']['p99_ms']:.2f} ms, p99.9 {w['open_merged']['p999_ms']:.2f} ms. CPU stolen by the "
        f"hypervisor during these runs: {sum(r['steal_s'] for r in runs) * 1e3:.0f} ms in all.",
        "",
        "The server's own histogram (`/metrics`, body read to response, excluding TLS and HTTP parsing) over each "
        "TLS run: "
        + "; ".join(f"#{i + 1} mean {r['server_side']['mean_ms']:.3f} ms, {r['server_side']['share_le_1ms'] * 100:.1f}"
                    f" % ≤ 1 ms, {r['server_side']['share_le_5ms'] * 100:.2f} % ≤ 5 ms"
                    for i, r in enumerate(runs) if r.get("server_side")) + ".",
    ]
    nm = w["new_names"]
    lines += [
        "",
        f"A sixth run on the same server with a new object name in every review (the uid as the name: the Pods a "
        f"ReplicaSet makes): {nm['rps']:.0f}/s achieved, p50 {nm['p50_ms']:.2f} ms, p99 {nm['p99_ms']:.2f} ms, "
        f"p99.9 {nm['p999_ms']:.2f} ms, max {nm['max_ms']:.2f} ms, {nm['errors']} errors, {nm['unsent']} not sent, "
        f"server CPU {nm['server_cpu_us_per_request']:.0f} µs/review: {verdict(nm['pass'])}.",
    ]
    nw = w["decision_miss"]
    nc = nw["closed_4conn"]
    engines = [("regopy (default)", nw), ("opa-wasm", w["decision_miss_opa_wasm"]),
               ("regopy, `--workers 2`", w["decision_miss_workers"]),
               ("opa-wasm, `--host-cpu off` (not judged)", w["decision_miss_opa_wasm_spread"])]
    lines += [
        "",
        "### Evidence cached, the admission decision not (a new namespace each review)",
        "",
        "The same, but every request comes from a namespace never seen (its uid as the namespace), so the verdict "
        "comes from the cache and admission.rego is evaluated on every review: the worst case with evidence cached "
        "(in a cluster: the first review of each agent in each namespace, operation and mode). A server of its "
        "own per policy engine: `admission serve` as above (regopy), then `admission serve --policy-engine "
        "opa-wasm` (the policies compiled to Wasm by OPA, in process: docs/policy.md). With its threads on one "
        "CPU (`--host-cpu`, the default) the server evaluates admission.rego on its event loop when the verdict is "
        "cached and the input is small (docs/admission.md); the last rows are opa-wasm with `--host-cpu off`, "
        "where every evaluation goes to a worker thread: the price of that hand-off, side by side. The "
        "`--workers 2` rows are regopy in two worker processes, one per CPU, the connections shared out evenly "
        "by the supervisor (docs/admission.md): the server CPU there is the supervisor's and both workers'.",
        "",
        "| engine | load | achieved/s | p50 | p99 | p99.9 | max | errors | not sent | server CPU/review | server CPU | "
        "client CPU |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, miss in engines:
        m = miss["closed_4conn"]
        lines.append(
            f"| {name} | closed loop, 4 connections | {m['rps']:.0f} | {m['p50_ms']:.2f} ms | {m['p99_ms']:.2f} ms | "
            f"{m['p999_ms']:.2f} ms | {m['max_ms']:.2f} ms | {m['errors']} | | "
            f"{m['server_cpu_us_per_request']:.0f} µs | {m['server_cpu_util']:.2f} | {m['client_cpu_util']:.2f} |")
        for r in miss["open_runs"]:
            lines.append(
                f"| {name} | open loop at {r['target_rate']:.0f}/s, 16 connections | {r['rps']:.0f} | "
                f"{r['p50_ms']:.2f} ms | {r['p99_ms']:.2f} ms | {r['p999_ms']:.2f} ms | {r['max_ms']:.2f} ms | "
                f"{r['errors']} | {r['unsent']} | {r['server_cpu_us_per_request']:.0f} µs | "
                f"{r['server_cpu_util']:.2f} | {r['client_cpu_util']:.2f} |")
    lines += [
        "",
    ]
    wk = w["decision_miss_workers"]
    one_cached = next((lv for lv in w["closed"] if lv["connections"] == 4), None) if w["closed"] else None
    if wk.get("cached_closed_4conn") and one_cached:
        cw = wk["cached_closed_4conn"]
        lines += [
            "",
            f"The trade-off of `--workers 2` on this machine, where the client shares the 2 CPUs: the same server "
            f"answered cached reviews (the first table's load, closed loop, 4 connections) at {cw['rps']:.0f}/s, "
            f"p99 {cw['p99_ms']:.2f} ms, {cw['server_cpu_us_per_request']:.0f} µs of server CPU per review, against "
            f"{one_cached['rps']:.0f}/s, p99 {one_cached['p99_ms']:.2f} ms, "
            f"{one_cached['server_cpu_us_per_request']:.0f} µs for one process. One process leaves a CPU to the "
            "client; two workers share both CPUs with it, each wakes up for each of its fewer connections' "
            "requests, and the audit records take the trail's lock. Where the decisions are cached, one process "
            "per pod is faster; where first-time decisions dominate, and on nodes whose webhook pods have the "
            "cores, `--workers` is.",
        ]
    lines += [
        "",
        "Server CPU per review is the server's CPU time during the measured window over the reviews due in it; once "
        "the server falls behind, the reviews finish after the window and the figure is too low.",
        "",
        f"Target ≥ {TARGET_RATE:.0f} reviews/s with the decision not cached (DESIGN.md: non-memoised admission "
        "decisions ≥ 1000/s), 4 connections, over TLS beside the client: "
        + "; ".join(f"{name} {miss['closed_4conn']['rps']:.0f}/s {verdict(miss['closed_4conn']['rps'] >= TARGET_RATE)}"
                    for name, miss in engines[:3]) + ".",
        "",
        f"Target p99 ≤ {TARGET_P99_MS:.0f} ms at {TARGET_RATE:.0f} reviews/s with the decision not cached (stricter: "
        "the cached reviews' latency target, applied to these): "
        + "; ".join(f"{name} {verdict(miss['pass_at_target_rate'])}" for name, miss in engines[:3]) + ".",
    ]
    if not nw["pass_at_target_rate"]:
        at_target = [r for r in nw["open_runs"] if r["target_rate"] >= TARGET_RATE]
        low = min(nw["open_runs"], key=lambda r: r["target_rate"])
        lines.append(
            f"Missed when the decision is not cached: the server's policy engine (a pool of "
            f"{mt[0]['engine_workers']} rego-cpp interpreter(s)) evaluates admission.rego in about "
            f"{nn['policy_engine_mean_ms']:.1f} ms per review "
            f"in process, and with the HTTP work on top one server process tops out near {nc['rps']:.0f} reviews/s "
            f"of such reviews at 4 connections ({nc['server_cpu_us_per_request']:.0f} µs of server CPU per review, "
            "about one CPU in all), and lower with 16 connections in flight "
            f"({low['server_cpu_us_per_request']:.0f} µs per review at {low['target_rate']:.0f}/s). "
            f"Offered {TARGET_RATE:.0f}/s, the queue grows for the whole run (here at the client, whose 16 "
            f"connections are all waiting; {sum(r['unsent'] for r in at_target)} requests "
            f"not even sent {OPEN_GRACE_S:.0f} s after the window); a review that waited past the webhook's "
            "deadlineMs inside the server would be denied, fail closed (errors column: "
            f"{sum(r['errors'] for r in at_target)}).")
    ow = w["decision_miss_opa_wasm"]
    if not ow["pass_at_target_rate"]:
        oc = ow["closed_4conn"]
        lines += ["", f"With opa-wasm the evaluation is about a quarter of regopy's (benchmarks/results/policy.md), "
                      f"and one server process answers {oc['rps']:.0f} such reviews/s at 4 connections "
                      f"({oc['server_cpu_us_per_request']:.0f} µs of server CPU per review, against "
                      f"{nc['server_cpu_us_per_request']:.0f} µs with regopy)" + opa_wasm_miss(ow)]
    hz, a1, p1 = w["healthz_1conn"], w["allowed_1conn"], pl["closed_1conn"]
    lines += [
        "",
        "### Where the time goes (one connection, closed loop)",
        "",
        "| request | requests/s | p50 | p99 | server CPU/request |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| `GET /healthz` over TLS (no admission work) | {hz['rps']:.0f} | {hz['p50_ms']:.3f} ms | "
        f"{hz['p99_ms']:.3f} ms | {hz['server_cpu_us_per_request']:.0f} µs |",
        f"| `POST /validate` over TLS, allowed (cached) | {a1['rps']:.0f} | {a1['p50_ms']:.3f} ms | "
        f"{a1['p99_ms']:.3f} ms | {a1['server_cpu_us_per_request']:.0f} µs |",
        f"| `POST /validate` over plain HTTP, allowed (cached) | {p1['rps']:.0f} | {p1['p50_ms']:.3f} ms | "
        f"{p1['p99_ms']:.3f} ms | {p1['server_cpu_us_per_request']:.0f} µs |",
    ]
    for label, d in w["denied"].items():
        lines.append(f"| `POST /validate` over TLS, denied, {label} (cached) | {d['rps']:.0f} | {d['p50_ms']:.3f} ms | "
                     f"{d['p99_ms']:.3f} ms | {d['server_cpu_us_per_request']:.0f} µs |")
    lines += [
        "",
        f"For scale: the whole cached decision in process is {c['p50_ms'] * 1e3:.0f} µs p50.",
        "",
        "## Over TLS, first sight of a digest",
        "",
        f"{fs['restarts']} fresh servers; on each, one review of an example (it compiles the policy bundles), then "
        "one review of each other example, digests the server has never seen, on the same kept-alive connection "
        "(the TLS handshake is not in the figure).",
        "",
        "| case | p50 | max | n |",
        "| --- | ---: | ---: | ---: |",
        f"| **first sight of a digest** | {fs['p50_ms']:.2f} ms | {fs['max_ms']:.2f} ms | {fs['n']} |",
        f"| first review after start (bundles compiled on it) | {fs['first_review_after_start']['p50_ms']:.2f} ms | "
        f"{fs['first_review_after_start']['max_ms']:.2f} ms | {fs['first_review_after_start']['n']} |",
        "",
        f"Target ≤ {fs['target_ms']:.0f} ms (judged on the max): {verdict(fs['pass'])}.",
        "",
    ]
    return lines


def opa_wasm_miss(ow: dict[str, Any]) -> str:
    """The end of the sentence that says why opa-wasm missed the p99 target: its rate, or its tail at the rate."""
    oc = ow["closed_4conn"]
    if oc["rps"] < TARGET_RATE:
        return (f", still short of {TARGET_RATE:.0f}/s beside the client on 2 CPUs: the rest is the HTTP and TLS "
                "work, all on one interpreter.")
    at = [r for r in ow["open_runs"] if r["target_rate"] >= TARGET_RATE and not r["pass"]]
    tails = "; ".join(f"p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, max {r['max_ms']:.2f} ms at "
                      f"{r['server_cpu_util']:.2f} of a CPU, the client's send lag p99 {r['send_lag_p99_ms']:.2f} ms"
                      for r in at)
    return (f": the rate is there. What misses at {TARGET_RATE:.0f}/s, open loop, is the tail ({tails}). The "
            "server is not saturated, so the tail is reviews that wait rather than work: about one in a hundred "
            "waits several milliseconds, for the server's one CPU or its turn on the event loop, on a machine whose "
            "2 CPUs the client shares; the same server's p99 at this rate has moved by several times from one run "
            "to the next here (benchmarks/README.md). The target is judged on the run above as it is.")


def decision_miss(config_file: Path, tls_dir: Path, refs: dict[str, str], engine: str,
                  extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """Reviews from a new namespace each (admission.rego evaluated on every one) on a fresh `admission serve
    --policy-engine engine` (then `extra`): 4 connections closed loop, then open loop at each of MISS_RATES."""
    ca = tls_dir / "ca.crt"
    ctx = ssl.create_default_context(cafile=str(ca))
    varying = new_namespace_body(refs[CACHED_AGENT])
    with serving(config_file, tls_dir, engine, extra) as server:
        one_review(server, ctx, varying, True)
        miss_closed = run_clients(server, ca, path="/validate", method="POST", body=varying, expect=True, processes=1,
                                  threads=4, mode="closed", warmup=CLOSED_WARMUP_S, measure=CLOSED_MEASURE_S)
        miss_open = []
        for rate in MISS_RATES:
            before = metrics_of(server, ctx)
            run = run_clients(server, ca, path="/validate", method="POST", body=varying, expect=True,
                              processes=OPEN_PROCESSES, threads=OPEN_THREADS, mode="open", warmup=OPEN_WARMUP_S,
                              measure=OPEN_MEASURE_S, rate=rate)
            run["server_side"] = server_side(before, metrics_of(server, ctx))
            run["pass"] = (run["p99_ms"] <= TARGET_P99_MS and run["errors"] == 0 and run["unsent"] == 0
                           and run["rps"] >= 0.98 * rate)
            miss_open.append(run)
        # with --workers, what the cached reviews get from the same server (the trade-off: docs/admission.md)
        cached = (run_clients(server, ca, path="/validate", method="POST", body=body_of(refs[CACHED_AGENT]),
                              expect=True, processes=1, threads=4, mode="closed", warmup=CLOSED_WARMUP_S,
                              measure=CLOSED_MEASURE_S) if "--workers" in extra else None)
    return {"engine": engine, "extra": list(extra), "closed_4conn": miss_closed, "open_runs": miss_open,
            "cached_closed_4conn": cached,
            "pass_at_target_rate": all(
        r["pass"] for r in miss_open if r["target_rate"] >= TARGET_RATE)}


def threads_only() -> None:
    """Part 1's non-memoised reviews in threads alone, THREADS_ROUNDS rounds (each in namespaces of its own) on
    one Admitter; prints every round and the spread per thread count, and writes no results."""
    load_before = os.getloadavg()
    with bench_home("af-bench-admission-threads-") as h:
        templates = h.base / "templates"
        shutil.copytree(TEMPLATES / CACHED_AGENT, templates / CACHED_AGENT)  # the one agent this part reviews
        h.publish(templates)
        ref = f"{CACHED_AGENT}@{h.store.resolve(CACHED_AGENT).digest}"
        trust_file = h.base / "trust.yaml"
        trust_file.write_text(to_yaml(h.keyring.public_keys(), (DEFAULT_BUILDER_ID,), ("*",)))
        config_file = h.base / "webhook.yaml"
        config_file.write_text(f"store: oci-layout:{h.store_path}\ntrustPolicy: {trust_file}\n"
                               f"policies: {ROOT / 'policies'}\nauditLog: {h.base / 'audit.jsonl'}\n")
        admitter = build_admitter(load_config(config_file))
        timed_reviews(admitter, [body_of(ref) for _ in range(INPROC_WARMUP)], True)
        rounds = [miss_throughput(admitter, ref, tag=f"r{i}-") for i in range(THREADS_ROUNDS)]
    print(f"{ONLY_ENV}=threads: {THREADS_ROUNDS} round(s) of {MISS_THROUGHPUT_RUNS} non-memoised reviews per thread "
          f"count; 1-minute load average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after")
    print("| threads | reviews/s per round | median | CPU/review per round |")
    print("| ---: | --- | ---: | --- |")
    for i, first in enumerate(rounds[0]):
        rps = [r[i]["rps"] for r in rounds]
        cpu = [r[i]["cpu_us_per_review"] for r in rounds]
        print(f"| {first['threads']} | {', '.join(f'{x:.0f}' for x in rps)} | {statistics.median(rps):.0f} | "
              f"{', '.join(f'{x:.0f} µs' for x in cpu)} |")


def main() -> None:
    only = os.environ.get(ONLY_ENV, "")
    if only not in ("", "threads"):
        raise SystemExit(f"{ONLY_ENV}={only!r}: expected threads (the non-memoised reviews in threads alone) or "
                         "nothing (every part)")
    if only:
        threads_only()
        return
    load_before = os.getloadavg()
    with bench_home("af-bench-admission-") as h:
        base, store_path, store, keyring = h.base, h.store_path, h.store, h.keyring
        pipeline_s = h.publish(TEMPLATES)
        write_unsigned(base / "unsigned")
        report = run_pipeline(base / "unsigned", store, run_tests=False, signing=None)
        if any(t.errors for t in report.templates):
            raise SystemExit(f"unsigned publish failed: {[t.errors for t in report.templates]}")
        refs = {name: f"{name}@{store.resolve(name).digest}" for name in [*EXAMPLES, UNSIGNED]}
        trust_file = base / "trust.yaml"
        trust_file.write_text(to_yaml(keyring.public_keys(), (DEFAULT_BUILDER_ID,), ("*",)))
        config_file = base / "webhook.yaml"
        config_file.write_text(f"store: oci-layout:{store_path}\ntrustPolicy: {trust_file}\n"
                               f"policies: {ROOT / 'policies'}\nauditLog: {base / 'audit.jsonl'}\n")
        tls_dir = base / "tls"
        exe = Path(sys.executable).parent / "agentfactory"
        subprocess.run([str(exe) if exe.exists() else "agentfactory", "admission", "certs", "--out", str(tls_dir)],
                       check=True, capture_output=True, cwd=ROOT)

        in_process = bench_in_process(config_file, base, refs)
        wire = bench_wire(config_file, tls_dir, refs)
        audit_lines = sum(1 for _ in (base / "audit.jsonl").open("rb"))

    result: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "uvicorn": version("uvicorn"), "cpus": os.cpu_count(),
                    "machine": f"{platform.system()} {platform.machine()}",
                    "loadavg_1m_before": load_before[0], "loadavg_1m_after": os.getloadavg()[0]},
        "pipeline_s": pipeline_s,
        "examples": EXAMPLES,
        "targets": {"cached_p99_ms": TARGET_P99_MS, "rate": TARGET_RATE, "first_sight_ms": TARGET_FIRST_MS},
        "in_process": in_process,
        "wire": wire,
        "server_audit_records": audit_lines,
        "pass": {"cached_tls_p99_at_1000": wire["open_pass"],
                 "decision_not_cached_in_process_1000_per_s": any(
                     r["pass"] for r in in_process["cached_verdict"]["miss_throughput"]),
                 "cached_new_object_names_tls_p99_at_1000": wire["new_names"]["pass"],
                 "decision_not_cached_tls_p99_at_1000": wire["decision_miss"]["pass_at_target_rate"],
                 "decision_not_cached_tls_p99_at_1000_opa_wasm": wire["decision_miss_opa_wasm"]["pass_at_target_rate"],
                 "decision_not_cached_tls_1000_per_s": wire["decision_miss"]["closed_4conn"]["rps"] >= TARGET_RATE,
                 "decision_not_cached_tls_1000_per_s_opa_wasm":
                     wire["decision_miss_opa_wasm"]["closed_4conn"]["rps"] >= TARGET_RATE,
                 "decision_not_cached_tls_p99_at_1000_workers_2": wire["decision_miss_workers"]["pass_at_target_rate"],
                 "decision_not_cached_tls_1000_per_s_workers_2":
                     wire["decision_miss_workers"]["closed_4conn"]["rps"] >= TARGET_RATE,
                 "first_sight_in_process": in_process["first_sight"]["pass"],
                 "first_sight_tls": wire["first_sight"]["pass"]},
    }
    write_results("admission", result, markdown(result))


if __name__ == "__main__":
    main()
