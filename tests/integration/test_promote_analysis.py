"""Canary analysis against real parts: `agentfactory runtime serve` nodes running signed agents, real
invocations during real (short) windows, a real Prometheus scraping the nodes, and real servers that
answer rubbish. Nothing is mocked."""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from child_process import first_line
from prometheus_client.parser import text_string_to_metric_families
from runtime_helpers import OK_WAT, publish, signed_store, wat_manifest

from agentfactory.errors import ConfigError, InputError
from pipelines.promote.analysis import (
    Analysis,
    Measurement,
    MetricsUnavailable,
    PrometheusMetrics,
    RuntimeMetrics,
    Thresholds,
    analyze,
    parse_window,
    quantile,
)

pytestmark = pytest.mark.toolchain
EXE = str(Path(sys.executable).with_name("agentfactory"))
WINDOW = 2.0

# Reads one byte of stdin: "x" exits 1 (outcome `error`), anything else prints "ok".
CANARY_WAT = """(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "ok\\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 128))
    (i32.store (i32.const 4) (i32.const 1))
    (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
    (if (i32.eq (i32.load8_u (i32.const 128)) (i32.const 120)) (then (call $proc_exit (i32.const 1))))
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 3))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
"""


@dataclass
class Agents:
    canary: str  # digests
    steady: str
    plain: str  # unsigned: every invocation is refused


@dataclass
class Node:
    """One `agentfactory runtime serve` process on loopback."""

    proc: subprocess.Popen[bytes]
    url: str
    port: int

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_node(cwd: Path, port: int = 0) -> Node:
    proc = subprocess.Popen([EXE, "runtime", "serve", "--listen", f"127.0.0.1:{port}"], cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ.copy())
    assert proc.stderr is not None
    line = first_line(proc).decode()
    if not line.startswith("{"):
        proc.kill()
        proc.wait()
        pytest.fail(f"the runtime did not start: {line}{proc.stderr.read().decode()}")
    url = json.loads(line)["listening"]
    return Node(proc, url, int(url.rsplit(":", 1)[1]))


@pytest.fixture
def agents(af_home: Path, tmp_path: Path) -> Agents:
    s = signed_store(af_home)
    publish(s, tmp_path / "signed", {
        "canary": (wat_manifest("canary"), {"src/main.wat": CANARY_WAT}),
        "steady": (wat_manifest("steady"), {"src/main.wat": OK_WAT}),
    })
    publish(s, tmp_path / "unsigned", {"plain": (wat_manifest("plain"), {"src/main.wat": OK_WAT})}, sign=False)
    return Agents(*(s.store.resolve(name).digest for name in ("canary", "steady", "plain")))


@pytest.fixture
def nodes(agents: Agents, tmp_path: Path) -> Iterator[list[Node]]:
    started = [start_node(tmp_path), start_node(tmp_path)]
    yield started
    for n in started:
        n.stop()


Batch = tuple[str, str, list[bytes], int]  # node URL, agent, stdin of each invocation, expected HTTP status


def drive(batches: list[Batch]) -> None:
    """Each invocation once; a node still compiling the agent (503 `compiling`, counted nowhere) is asked
    again, a bounded number of times."""
    for url, agent, bodies, status in batches:
        with httpx.Client(base_url=url, timeout=30) as client:
            for body in bodies:
                for _ in range(600):
                    r = client.post(f"/v1/agents/{agent}/invoke", content=body)
                    if r.status_code != 503 or r.json().get("reason") != "compiling":
                        break
                    time.sleep(0.01)
                assert r.status_code == status, (agent, body, r.status_code, r.text)


def during_window(batches: list[Batch], then: Callable[[], None] | None = None) -> Callable[[float], None]:
    """A `sleep` for RuntimeMetrics: the traffic starts in a thread as the window opens, and the window
    is waited out in real time (the traffic is short; the thread is joined before the last scrape)."""
    def sleep(seconds: float) -> None:
        failures: list[BaseException] = []

        def run() -> None:
            try:
                drive(batches)
                if then is not None:
                    then()
            except BaseException as exc:
                failures.append(exc)

        worker = threading.Thread(target=run)
        worker.start()
        time.sleep(seconds)
        worker.join(timeout=60)
        assert not worker.is_alive() and not failures, failures
    return sleep


def ok(n: int) -> list[bytes]:
    return [b"fine"] * n


def bad(n: int) -> list[bytes]:
    return [b"x"] * n


def test_runtime_metrics_judge_the_canary_digest_across_nodes(nodes: list[Node], agents: Agents) -> None:
    a, b = (n.url for n in nodes)
    # 30 invocations of the canary over two nodes, 6 of them failing; other agents' traffic beside it.
    source = RuntimeMetrics([a, b + "/metrics"], sleep=during_window([
        (a, "canary", ok(12) + bad(3), 200), (b, "canary", bad(3) + ok(12), 200),
        (a, "steady", ok(10), 200), (b, "plain", ok(4), 403)]))
    result = analyze(source, "canary", agents.canary, WINDOW, Thresholds(), stage="dev")
    m = result.measurement
    assert (m.requests, m.errors, m.by_result) == (30, 6, {"ok": 24, "error": 6})
    assert m.error_ratio == pytest.approx(0.2) and m.window_seconds == WINDOW
    assert m.p95_seconds is not None and 0 < m.p95_seconds < 1.0  # the agents' deadline is 1 s
    assert result.verdict == "fail"
    assert result.reasons[0] == "requests: 30 in 2 s (at least 20 needed)"
    assert result.reasons[1] == "error ratio: 20.00% (6 of 30: error=6) > limit 5.00%"
    assert m.source == f"runtime /metrics of {a}/metrics, {b}/metrics (stage dev)"
    doc = result.to_json()
    assert doc["verdict"] == "fail" and doc["measurement"]["byResult"] == {"error": 6, "ok": 24}
    assert doc["thresholds"] == {"maxErrorRatio": 0.05, "maxP95Seconds": None, "minRequests": 20}
    json.dumps(doc)  # serializable as it is

    healthy = RuntimeMetrics([a, b], sleep=during_window([(a, "canary", ok(13), 200), (b, "canary", ok(12), 200)]))
    result = analyze(healthy, "canary", agents.canary, WINDOW, Thresholds(max_p95_seconds=5.0), stage="dev")
    assert result.verdict == "pass", result.reasons
    assert (result.measurement.requests, result.measurement.errors) == (25, 0)
    assert result.reasons[1] == "error ratio: 0.00% (0 of 25) <= limit 5.00%"
    assert result.reasons[2].startswith("p95 latency: ") and result.reasons[2].endswith(" <= limit 5 s")

    slow = RuntimeMetrics([a], sleep=during_window([(a, "canary", ok(20), 200)]))
    result = analyze(slow, "canary", agents.canary, WINDOW, Thresholds(max_p95_seconds=1e-9), stage="dev")
    assert result.verdict == "fail" and result.measurement.errors == 0
    assert "> limit 1e-09 s" in result.reasons[2]

    quiet = RuntimeMetrics([a, b], sleep=during_window([(a, "canary", ok(3) + bad(2), 200),
                                                        (b, "steady", ok(30), 200)]))
    result = analyze(quiet, "canary", agents.canary, WINDOW, Thresholds(), stage="dev")
    assert result.verdict == "inconclusive"  # 2 errors in 5 is 40 %, but 5 requests decide nothing
    assert (result.measurement.requests, result.measurement.errors) == (5, 2)
    assert result.reasons[0] == "requests: 5 in 2 s, fewer than the 20 needed to judge"


def test_a_person_watching_sees_the_window_fill(nodes: list[Node], agents: Agents) -> None:
    """`promote --analyze` on a terminal: what the window has seen so far, every interval, and the same
    totals at the end as without progress."""
    a, _ = (n.url for n in nodes)
    seen: list[tuple[float, float, float]] = []
    traffic = during_window([(a, "canary", ok(8) + bad(2), 200)])
    calls = []

    def sleep(seconds: float) -> None:  # the traffic runs in the first interval; the rest is waited out
        if not calls:
            traffic(seconds)
        else:
            time.sleep(seconds)
        calls.append(seconds)

    source = RuntimeMetrics([a], sleep=sleep, progress=lambda m, left: seen.append((m.requests, m.errors, left)),
                            progress_every=0.5)
    m = source.measure("canary", agents.canary, 1.5, stage="dev")
    assert (m.requests, m.errors) == (10, 2)
    assert len(seen) >= 2 and seen[-1][:2] == (10, 2) and seen[-1][2] == 0  # the last line: the whole window
    assert all(earlier[0] <= later[0] for earlier, later in itertools.pairwise(seen))


def test_refusals_count_as_errors_and_other_digests_do_not_count(nodes: list[Node], agents: Agents) -> None:
    a, b = (n.url for n in nodes)
    batches: list[Batch] = [(a, "plain", ok(4), 403), (b, "plain", ok(3), 403), (a, "canary", ok(5), 200)]
    m = RuntimeMetrics([a, b], sleep=during_window(batches)).measure("plain", agents.plain, 1.0, stage="dev")
    assert (m.requests, m.errors, m.by_result, m.p95_seconds) == (7, 7, {"refused": 7}, None)
    # The canary's traffic under another digest (here: the steady agent's) is not the canary's.
    m = RuntimeMetrics([a], sleep=during_window([(a, "canary", ok(5), 200)])).measure("canary", agents.steady, 1.0,
                                                                                     stage="dev")
    assert (m.requests, m.errors, m.error_ratio) == (0, 0, None)
    result = analyze(RuntimeMetrics([a], sleep=lambda s: None), "canary", agents.canary, 0.1,
                     Thresholds(max_p95_seconds=1.0), stage="dev")
    assert result.verdict == "inconclusive" and result.reasons[1] == "error ratio: no requests (limit 5.00%)"
    assert result.reasons[2] == "p95 latency: no observations (limit 1 s)"


def test_a_node_restarted_in_the_window_counts_from_zero(agents: Agents, tmp_path: Path) -> None:
    node = start_node(tmp_path)
    try:
        drive([(node.url, "canary", ok(5), 200)])  # before the window: 5 on the counter already

        def restart() -> None:
            nonlocal node
            node.stop()
            node = start_node(tmp_path, node.port)
            drive([(node.url, "canary", ok(9) + bad(3), 200)])

        source = RuntimeMetrics([node.url], sleep=during_window([(node.url, "canary", ok(2) + bad(1), 200)],
                                                                then=restart))
        m = source.measure("canary", agents.canary, WINDOW, stage="dev")
        # What the old process did in the window died with it; the new one's 12 count in full (a plain
        # difference would say 12 - 5 = 7).
        assert (m.requests, m.errors, m.by_result) == (12, 3, {"error": 3, "ok": 9})
    finally:
        node.stop()


class _Rubbish(BaseHTTPRequestHandler):
    """A real HTTP server that is not what the analysis expects: HTML, foreign metrics, too much, too late."""

    def do_GET(self) -> None:
        if self.path.startswith("/slow"):
            time.sleep(3)
            body = b"late\n"
        elif self.path.startswith("/big"):
            body = b"# " + b"x" * (9 * 1024 * 1024) + b"\n"
        elif self.path.startswith("/foreign"):
            body = b"# TYPE up gauge\nup 1\n"
        else:
            body = b"<html><body>It works!</body></html>\n"
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the client gave up, as it should

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def rubbish() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Rubbish)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


DIGEST = "sha256:" + "ab" * 32


def test_unreachable_or_rubbish_metrics_are_unavailable(rubbish: str) -> None:
    closed = f"http://127.0.0.1:{free_port()}"

    def never(_: float) -> None:
        raise AssertionError("a failed first scrape must not wait for the window")

    cases = [(closed, "unreachable"), (rubbish + "/html", "not Prometheus text exposition"),
             (rubbish + "/foreign", "no agent_factory_wasi_agent_executions metric"),
             (rubbish + "/big", "8 MiB"), (rubbish + "/slow", "within 0.5 s")]
    for url, message in cases:
        with pytest.raises(MetricsUnavailable, match=message) as info:
            RuntimeMetrics([url], timeout=0.5, sleep=never).measure("canary", DIGEST, 1.0, stage="dev")
        assert url in str(info.value)
    with pytest.raises(MetricsUnavailable, match=f"{closed}/api/v1/query: unreachable"):
        PrometheusMetrics(closed).measure("canary", DIGEST, 60.0, stage="dev")
    with pytest.raises(MetricsUnavailable, match="not a Prometheus API answer"):
        PrometheusMetrics(rubbish).measure("canary", DIGEST, 60.0, stage="dev")
    with pytest.raises(MetricsUnavailable, match="within 0.5 s"):
        PrometheusMetrics(rubbish + "/slow", timeout=0.5).measure("canary", DIGEST, 60.0, stage="dev")


def test_one_unreadable_node_fails_the_analysis_and_a_node_is_not_a_prometheus(nodes: list[Node],
                                                                                agents: Agents) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(MetricsUnavailable, match=f"{closed}/metrics: unreachable"):
        analyze(RuntimeMetrics([nodes[0].url, closed], sleep=lambda s: None), "canary", agents.canary, 1.0,
                Thresholds(), stage="dev")
    with pytest.raises(MetricsUnavailable, match="not a Prometheus API answer \\(HTTP 404, no status\\)"):
        PrometheusMetrics(nodes[0].url).measure("canary", agents.canary, 60.0, stage="dev")


def test_bad_arguments_are_refused_before_anything_is_asked() -> None:
    never = RuntimeMetrics(["http://127.0.0.1:9"], sleep=lambda s: None)
    with pytest.raises(InputError, match="digest"):
        never.measure("canary", "sha256:short", 1.0, stage="dev")
    with pytest.raises(InputError, match="agent"):
        never.measure('x"} or vector(1) #', DIGEST, 1.0, stage="dev")
    with pytest.raises(InputError, match="window"):
        analyze(never, "canary", DIGEST, 0.0, Thresholds(), stage="dev")
    with pytest.raises(InputError, match="not a stage name"):
        never.measure("canary", DIGEST, 1.0, stage='canary"} or vector(1) #')
    with pytest.raises(ConfigError):
        RuntimeMetrics([])
    with pytest.raises(ConfigError):
        PrometheusMetrics("localhost:9090")
    with pytest.raises(InputError, match="max_error_ratio"):
        Thresholds(max_error_ratio=1.5)
    with pytest.raises(InputError, match="min_requests"):
        Thresholds(min_requests=0)
    with pytest.raises(InputError, match="max_p95_seconds"):
        Thresholds(max_p95_seconds=0.0)


@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("1h30m", 5400.0), ("2m5s", 125.0), ("1h0m1s", 3601.0),
    ("0s", 0.0), ("90s", 90.0),
])
def test_parse_window(text: str, seconds: float) -> None:
    assert parse_window(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "5x", "1m1h", " 5m", "5m ", "-5m", "1.5h", "5M", "1d", "m", "5ms",
                                  "1234567h"])
def test_parse_window_refuses(text: str) -> None:
    with pytest.raises(InputError, match="30s, 5m, 1h or 1h30m") as info:
        parse_window(text)
    assert repr(text) in str(info.value)


def test_quantile_interpolates_as_prometheus_does() -> None:
    inf = math.inf
    assert quantile(0.95, {0.1: 0, 0.5: 10, inf: 10}) == pytest.approx(0.48)
    assert quantile(0.95, {0.1: 5, 0.5: 5, inf: 10}) == 0.5  # the rank falls in +Inf: the highest finite bound
    assert quantile(0.5, {0.1: 4, 0.5: 8, inf: 8}) == pytest.approx(0.1)
    assert quantile(0.95, {0.1: 0, inf: 0}) is None
    assert quantile(0.95, {0.1: 3}) is None  # no +Inf bucket: not a histogram
    assert quantile(0.95, {0.1: 5, 0.5: 4, inf: 10}) == 0.5  # non-monotonic counts are made monotonic


def test_a_measurement_without_requests_has_no_ratio() -> None:
    m = Measurement(0, 0, None, "x", 1.0, {})
    assert m.error_ratio is None and m.to_json()["errorRatio"] is None


# -- a real Prometheus ---------------------------------------------------------------------------------
@pytest.fixture
def prometheus(nodes: list[Node], tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("no `prometheus` binary on PATH (Debian package `prometheus`; `make system-deps` installs it)")
    targets = ", ".join(f'"127.0.0.1:{n.port}"' for n in nodes)
    config = tmp_path / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                      f"scrape_configs:\n  - job_name: runtime\n    static_configs:\n      - targets: [{targets}]\n")
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            if proc.poll() is not None:
                pytest.fail(f"prometheus exited {proc.returncode}: {(tmp_path / 'prometheus.log').read_text()}")
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            pytest.fail("prometheus did not become ready")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def wait_for(url: str, query: str, expected: float, tries: int = 100) -> None:
    """Poll Prometheus until `query` answers `expected` (it scrapes every second); bounded."""
    answer = None
    for _ in range(tries):
        result = httpx.get(f"{url}/api/v1/query", params={"query": query}, timeout=5).json()["data"]["result"]
        answer = float(result[0]["value"][1]) if result else None
        if answer == expected:
            return
        time.sleep(0.2)
    pytest.fail(f"prometheus never answered {expected} to {query} (last: {answer})")


def runtime_counts(nodes: list[Node], agent: str, digest: str) -> dict[str, float]:
    """The runtime's own counters, summed over the nodes: what Prometheus must agree with."""
    counts: dict[str, float] = {}
    for n in nodes:
        for family in text_string_to_metric_families(httpx.get(f"{n.url}/metrics").text):
            for s in family.samples:
                if s.name == "agent_factory_wasi_agent_executions_total" and \
                        (s.labels["agent"], s.labels["digest"]) == (agent, digest):
                    counts[s.labels["result"]] = counts.get(s.labels["result"], 0) + s.value
    return counts


def test_prometheus_agrees_with_the_runtime_counters(prometheus: str, nodes: list[Node], agents: Agents) -> None:
    a, b = (n.url for n in nodes)
    wait_for(prometheus, 'sum(up{job="runtime"})', 2)
    counter = f'agent_factory_wasi_agent_executions_total{{agent="canary",digest="{agents.canary}"}}'
    # First invocations, and a scrape of them, so that the latency buckets have a start in the window.
    drive([(a, "canary", ok(2), 200), (b, "canary", ok(2), 200)])
    wait_for(prometheus, f"sum({counter})", 4)
    wait_for(prometheus, 'count(agent_factory_wasi_execution_duration_seconds_bucket{agent="canary"})', 2 * 17)
    drive([(a, "canary", ok(9) + bad(2), 200), (b, "canary", bad(2) + ok(9), 200),
           (a, "steady", ok(5), 200), (b, "plain", ok(3), 403)])
    wait_for(prometheus, f"sum({counter})", 26)
    wait_for(prometheus, f'sum(agent_factory_wasi_agent_executions_total{{agent="plain",digest="{agents.plain}"}})',
             3)

    source = PrometheusMetrics(prometheus)
    window = 300.0  # everything since Prometheus started, and before
    m = source.measure("canary", agents.canary, window, stage="dev")
    assert m.by_result == runtime_counts(nodes, "canary", agents.canary) == {"ok": 22, "error": 4}
    assert (m.requests, m.errors, m.window_seconds) == (26, 4, window)
    assert m.p95_seconds is not None and 0 < m.p95_seconds < 1.0
    assert m.source == f"prometheus {prometheus} (stage dev)"
    plain = source.measure("plain", agents.plain, window, stage="dev")
    assert (plain.requests, plain.errors, plain.by_result, plain.p95_seconds) == (3, 3, {"refused": 3}, None)
    assert source.measure("canary", agents.steady, window, stage="dev").requests == 0

    # The window is the past: judging it again under other thresholds costs nothing.
    verdicts: dict[str, Analysis] = {}
    for label, thresholds in {"default": Thresholds(), "lenient": Thresholds(max_error_ratio=0.2),
                              "fast": Thresholds(max_error_ratio=0.2, max_p95_seconds=1e-9),
                              "busy": Thresholds(min_requests=100)}.items():
        verdicts[label] = analyze(source, "canary", agents.canary, window, thresholds, stage="dev")
    assert {k: v.verdict for k, v in verdicts.items()} == {
        "default": "fail", "lenient": "pass", "fast": "fail", "busy": "inconclusive"}
    assert verdicts["default"].reasons[1] == "error ratio: 15.38% (4 of 26: error=4) > limit 5.00%"

    # Prometheus' own refusals reach the caller with Prometheus' words.
    with pytest.raises(MetricsUnavailable, match="query 'sum\\(' failed: bad_data: .*parse error"):
        source.query("sum(", at=time.time())
    with pytest.raises(MetricsUnavailable, match="answered 'scalar' data, not a vector"):
        source.query("1", at=time.time())
