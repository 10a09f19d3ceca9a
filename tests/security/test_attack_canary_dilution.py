"""Attack: canary analysis diluted from dev.

The attacker is any caller of the dev runtime (its HTTP API is open to the dev namespace's clients).
Right after dev -> canary, dev runs the same digest as the canary; the analysis counted
`agent_factory_wasi_agent_executions_total{agent,digest}` with no stage, so thousands of ok calls to
dev turned a 50 % canary error ratio into about 1 % and promoted the digest to prod. The runtime's
metrics now carry the node's stage (and namespace), and the analysis reads the canary stage only: a
series without a stage label is not counted at all (metrics unavailable: fail closed).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import git
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from promotion_helpers import promotion_trust, publish_logged, runtime_process, write_trust
from runtime_helpers import signed_store, wat_manifest

from pipelines.promote.analysis import MetricsUnavailable, PrometheusMetrics, RuntimeMetrics, Thresholds, analyze
from pipelines.promote.envrepo import EnvRepo, parse_trailers
from pipelines.promote.promote import Context, promote
from pipelines.promote.stages import load_stages

pytestmark = pytest.mark.toolchain
DIGEST = "sha256:" + "a" * 64

# Reads one byte of stdin: "x" exits 1 (outcome `error`), anything else prints "ok".
FLAKY_WAT = """(module
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

STAGES = """apiVersion: agentfactory.dev/v1alpha1
kind: StageGraph
stages:
  - name: dev
    namespace: agents-dev
  - name: canary
    from: dev
    namespace: canary-agents
  - name: prod
    from: canary
    namespace: prod-agents
    gates:
      analysis: {maxErrorRatio: 0.05, minRequests: 20}
"""


@pytest.fixture
def canary(af_home: Path, tmp_path: Path) -> Iterator[tuple[Context, str, str, str]]:
    """`shop` promoted (for real) to dev and canary; a dev node and a canary node running its digest."""
    s = signed_store(af_home)
    publish_logged(s, tmp_path / "t", {"shop": (wat_manifest("shop"), {"src/main.wat": FLAKY_WAT})})
    env = tmp_path / "env"
    git.Repo.init(env, initial_branch="main").index.commit("environments")
    stages = tmp_path / "stages.yaml"
    stages.write_text(STAGES)
    graph = load_stages(stages)
    ctx = Context(graph, EnvRepo(env, graph), s.store, promotion_trust(s), s.engine)
    assert promote(ctx, "shop:1.0.0", "dev").action == "promoted"
    assert promote(ctx, "shop", "canary").action == "promoted"
    trust = write_trust(s, tmp_path / "trust.yaml")
    with runtime_process(s.store.url, trust, "dev", env={"AGENTFACTORY_NAMESPACE": "agents-dev"}) as dev, \
            runtime_process(s.store.url, trust, "canary", env={"AGENTFACTORY_NAMESPACE": "canary-agents"}) as can:
        for url in (dev, can):
            _warm(url)
        yield ctx, s.store.resolve("shop").digest, dev, can


def _warm(url: str, tries: int = 600) -> None:
    """Until the node has compiled the agent (503 `compiling` before): before any window opens."""
    with httpx.Client(base_url=url, timeout=30) as client:
        for _ in range(tries):
            r = client.post("/v1/agents/shop/invoke", content=b"fine")
            if r.status_code == 200:
                return
            assert r.status_code == 503 and r.json()["reason"] == "compiling", r.text
            time.sleep(0.1)
    pytest.fail(f"{url} never compiled shop")


def _drive(url: str, bodies: list[bytes]) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        for body in bodies:
            r = client.post("/v1/agents/shop/invoke", content=body)
            assert r.status_code == 200, r.text


def _during(traffic: list[tuple[str, list[bytes]]]) -> Callable[[float], None]:
    """A `sleep` for RuntimeMetrics: the traffic runs as the window opens; the window is waited out."""
    def sleep(seconds: float) -> None:
        failures: list[BaseException] = []

        def run() -> None:
            try:
                for url, bodies in traffic:
                    _drive(url, bodies)
            except BaseException as exc:
                failures.append(exc)

        worker = threading.Thread(target=run)
        worker.start()
        time.sleep(seconds)
        worker.join(timeout=120)
        assert not worker.is_alive() and not failures, failures
    return sleep


def test_ok_traffic_to_dev_does_not_dilute_a_failing_canary(canary: tuple[Context, str, str, str]) -> None:
    ctx, digest, dev, can = canary
    # 50 % of the canary's calls fail; ten times as many ok calls go to dev, which runs the same digest.
    traffic = [(can, [b"x", b"fine"] * 20), (dev, [b"fine"] * 400)]
    metrics = RuntimeMetrics([dev, can], sleep=_during(traffic))
    outcome = promote(ctx, "shop", "prod", analysis_window=2.0, metrics=metrics)
    assert outcome.action == "rolled-back", outcome.to_json()
    assert outcome.analysis is not None and outcome.analysis.verdict == "fail"
    m = outcome.analysis.measurement
    assert (m.requests, m.errors, m.by_result) == (40, 20, {"ok": 20, "error": 20}), m
    assert m.source.endswith("(stage canary)")
    assert ctx.env.placement("prod", "shop") is None  # nothing promoted
    assert ctx.env.placement("canary", "shop") is None  # the canary was rolled back (nothing before it)
    assert parse_trailers(str(ctx.env.repo.head.commit.message))["Analysis"].startswith("fail requests=40 errors=20")

    # The runtimes label what they count with their stage and namespace; the histogram has the digest too.
    for url, stage, namespace in ((dev, "dev", "agents-dev"), (can, "canary", "canary-agents")):
        labels = [s.labels for f in text_string_to_metric_families(httpx.get(f"{url}/metrics").text)
                  for s in f.samples if s.name in ("agent_factory_wasi_agent_executions_total",
                                                   "agent_factory_wasi_execution_duration_seconds_count")]
        assert labels and all(lb["stage"] == stage and lb["namespace"] == namespace and lb["digest"] == digest
                              for lb in labels), labels
    # Dev's own view is its own: 400 ok.
    quiet = RuntimeMetrics([dev, can], sleep=lambda s: None)
    assert analyze(quiet, "shop", digest, 1.0, Thresholds(), stage="dev").measurement.requests == 0


@contextlib.contextmanager
def _prometheus(targets: list[str], tmp: Path) -> Iterator[str]:
    """A real Prometheus scraping the runtimes every second (skipped when the binary is not installed)."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("no `prometheus` binary on PATH (Debian package `prometheus`)")
    hosts = ", ".join(f'"{t.removeprefix("http://")}"' for t in targets)
    config = tmp / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                      f"scrape_configs:\n  - job_name: runtime\n    static_configs:\n      - targets: [{hosts}]\n")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = (tmp / "prometheus.log").open("wb")
    proc = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _until(url, 'sum(up{job="runtime"})', len(targets))
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _until(url: str, query: str, expected: float, tries: int = 300) -> None:
    """Poll Prometheus until `query` answers `expected` (it scrapes every second); bounded."""
    answer = None
    for _ in range(tries):
        try:
            result = httpx.get(f"{url}/api/v1/query", params={"query": query}, timeout=5).json()["data"]["result"]
            answer = float(result[0]["value"][1]) if result else None
        except (httpx.HTTPError, ValueError, KeyError):
            answer = None
        if answer == expected:
            return
        time.sleep(0.2)
    pytest.fail(f"prometheus never answered {expected} to {query} (last: {answer})")


def test_prometheus_reads_the_canary_stage_only(canary: tuple[Context, str, str, str], tmp_path: Path) -> None:
    _, digest, dev, can = canary
    with _prometheus([dev, can], tmp_path) as prom:
        series = f'agent_factory_wasi_agent_executions_total{{agent="shop",digest="{digest}"}}'
        _until(prom, f"count({series})", 2)  # the warm-up calls: one series per node, before the traffic
        _drive(can, [b"x", b"fine"] * 20)
        _drive(dev, [b"fine"] * 400)
        _until(prom, f"sum({series})", 442)
        source = PrometheusMetrics(prom)
        result = analyze(source, "shop", digest, 300.0, Thresholds(), stage="canary")
        m = result.measurement
        assert (m.requests, m.errors) == (41, 20), m  # the canary's warm-up call, then its 40
        assert result.verdict == "fail" and m.source.endswith("(stage canary)")
        assert source.measure("shop", digest, 300.0, "dev").requests == 401


class _OldRuntime(BaseHTTPRequestHandler):
    """A runtime that does not say its stage: its counts could be any stage's."""

    def do_GET(self) -> None:
        body = ("# TYPE agent_factory_wasi_agent_executions counter\n"
                f'agent_factory_wasi_agent_executions_total{{agent="shop",digest="{DIGEST}",result="ok"}} 9000\n'
                "# TYPE agent_factory_wasi_execution_duration_seconds histogram\n"
                'agent_factory_wasi_execution_duration_seconds_bucket{agent="shop",le="+Inf"} 9000\n'
                'agent_factory_wasi_execution_duration_seconds_count{agent="shop"} 9000\n'
                'agent_factory_wasi_execution_duration_seconds_sum{agent="shop"} 1\n').encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_series_without_a_stage_are_not_counted_but_refused() -> None:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _OldRuntime)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        source = RuntimeMetrics([f"http://127.0.0.1:{srv.server_address[1]}"], sleep=lambda s: None)
        with pytest.raises(MetricsUnavailable, match="no stage or digest label: a runtime too old"):
            analyze(source, "shop", DIGEST, 1.0, Thresholds(), stage="canary")
    finally:
        srv.shutdown()
        srv.server_close()
