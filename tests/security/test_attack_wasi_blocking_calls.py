"""Attack: a signed agent waits inside a WASI host call, where epoch interruption cannot reach it.

`poll_oneoff` with a long clock subscription (relative or absolute, on either clock) and opening a
FIFO or device under a preopen used to hold a worker for as long as the guest liked, with outcome
`ok`. Now every wait is clamped to the invocation's deadline (outcome `timeout`, within the deadline
plus a small slack), a preopen holding anything that can block is refused before the agent runs,
and the pipeline's test stage uses the same host calls.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers import write_template
from runtime_helpers import OK_WAT, WASI_WRITE, Signed, publish, serve_process, signed_store, sleeper, wat_manifest

from agentfactory.template import load_template
from pipelines.casetests import run_cases
from pipelines.compilecheck import compile_checked
from pipelines.run import run_pipeline
from sandbox_runtime.runtime import Refused, Runtime, RuntimeConfig
from sandbox_runtime.sandbox import Invocation

pytestmark = pytest.mark.toolchain

SLACK = 0.75  # seconds past the deadline an invocation may take to be stopped and judged


# Opens "pipe" under the first preopen (fd 3) for reading, then reads it: both block on a FIFO.
OPEN_PIPE = f"""(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
  {WASI_WRITE}
  (memory (export "memory") 1)
  (data (i32.const 512) "pipe")
  (func (export "_start")
    (drop (call $open (i32.const 3) (i32.const 1) (i32.const 512) (i32.const 4) (i32.const 0)
                      (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 600)))
    (i32.store (i32.const 700) (i32.const 800))
    (i32.store (i32.const 704) (i32.const 16))
    (drop (call $read (i32.load (i32.const 600)) (i32.const 700) (i32.const 1) (i32.const 708)))))"""


@pytest.fixture
def signed(af_home: Path) -> Signed:
    return signed_store(af_home)


@pytest.fixture
def runtime(signed: Signed) -> Iterator[Runtime]:
    rt = Runtime(signed.store, signed.trust, signed.engine, RuntimeConfig())
    yield rt
    rt.close()


@pytest.mark.parametrize(("clock", "absolute"), [(1, False), (1, True), (0, True), (0, False)],
                         ids=["monotonic-relative", "monotonic-absolute", "realtime-absolute", "realtime-relative"])
def test_a_sleep_past_the_deadline_is_a_timeout_at_the_deadline(signed: Signed, runtime: Runtime, tmp_path: Path,
                                                                  clock: int, absolute: bool) -> None:
    publish(signed, tmp_path / "t", {"sleeper": (wat_manifest("sleeper", timeout_ms=1000),
                                                 {"src/main.wat": sleeper(clock, absolute)})})
    runtime.prepare("sleeper")
    started = time.monotonic()
    result = runtime.invoke("sleeper", Invocation())
    took = time.monotonic() - started
    ex = result.execution
    assert (ex.outcome, ex.limits_hit, ex.exit_code, ex.stdout) == ("timeout", ("timeout",), None, b""), ex
    assert "deadline exceeded: stopped after 1000 ms" in ex.reason and "host call" in ex.reason
    assert 0.95 <= took < 1.0 + SLACK, took


def test_short_sleeps_and_clocks_still_work(signed: Signed, runtime: Runtime, tmp_path: Path) -> None:
    publish(signed, tmp_path / "t", {
        "nap": (wat_manifest("nap"), {"src/main.wat": sleeper(1, False, 50_000_000)}),
        "napabs": (wat_manifest("napabs"), {"src/main.wat": sleeper(1, True, 50_000_000)}),
        "napwall": (wat_manifest("napwall"), {"src/main.wat": sleeper(0, True, 50_000_000)}),
    })
    for name in ("nap", "napabs", "napwall"):
        ex = runtime.invoke(name, Invocation()).execution
        assert (ex.outcome, ex.stdout) == ("ok", b"woke\n"), (name, ex)
        assert 0.05 <= ex.guest_seconds < 0.5, (name, ex.guest_seconds)


NAP_C = r"""
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    (void)argv;
    struct timespec a, b, nap = {0, 50000000};
    clock_gettime(CLOCK_MONOTONIC, &a);
    nanosleep(&nap, NULL);
    clock_gettime(CLOCK_MONOTONIC, &b);
    long ms = (b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000;
    printf("napped %s\n", ms >= 50 && ms < 500 ? "ok" : "wrong");
    fflush(stdout);
    if (argc > 1) sleep(20);
    return 0;
}
"""


def test_libc_sleeps_are_clamped_too(signed: Signed, runtime: Runtime, tmp_path: Path) -> None:
    manifest = wat_manifest("napper", language="c", sources="[src/main.c]", memory_mib=8, timeout_ms=1000)
    publish(signed, tmp_path / "t", {"napper": (manifest, {"src/main.c": NAP_C})})
    ex = runtime.invoke("napper", Invocation()).execution
    assert (ex.outcome, ex.stdout) == ("ok", b"napped ok\n"), ex
    started = time.monotonic()
    ex = runtime.invoke("napper", Invocation(args=("then-sleep-20-s",))).execution
    assert (ex.outcome, ex.stdout) == ("timeout", b"napped ok\n"), ex
    assert time.monotonic() - started < 1.0 + SLACK


def test_sleepers_over_http_time_out_and_do_not_hold_the_workers(signed: Signed, tmp_path: Path) -> None:
    """As many sleepers as workers, with the per-agent share lifted (1.0) so that they do take every worker:
    each is stopped at its deadline, so a worker comes free at 1 s, not at the guest's 20 s. With the default
    share (half) the sleepers could not hold every worker at all: test_attack_runtime_worker_hog.py."""
    publish(signed, tmp_path / "t", {"sleeper": (wat_manifest("sleeper", timeout_ms=1000),
                                                 {"src/main.wat": sleeper()}),
                                     "ok": (wat_manifest("ok"), {"src/main.wat": OK_WAT})})
    env = {"AGENTFACTORY_RUNTIME_AGENT_WORKER_SHARE": "1", "AGENTFACTORY_RUNTIME_AGENT_QUEUE_WAIT": "5"}
    with serve_process(signed, tmp_path, workers=4, env=env) as node:
        url = node.url
        with httpx.Client(base_url=url, timeout=30) as client:
            assert client.post("/v1/agents/ok/invoke").status_code == 200  # warm: verified and compiled
            assert client.post("/v1/agents/sleeper/invoke").status_code == 422
        answers: list[tuple[int, dict[str, object], float]] = []

        def sleep_once() -> None:
            with httpx.Client(base_url=url, timeout=30) as client:
                started = time.monotonic()
                r = client.post("/v1/agents/sleeper/invoke", headers={"Accept": "application/json"})
                answers.append((r.status_code, r.json(), time.monotonic() - started))

        threads = [threading.Thread(target=sleep_once) for _ in range(4)]  # as many as there are workers
        for t in threads:
            t.start()
        time.sleep(0.2)
        with httpx.Client(base_url=url, timeout=30) as client:
            started = time.monotonic()
            ok = client.post("/v1/agents/ok/invoke")
            waited = time.monotonic() - started
        for t in threads:
            t.join()
    assert ok.status_code == 200 and ok.content == b"ok\n"
    assert waited < 1.0 + SLACK + 0.5, waited  # a worker came free at the sleepers' deadline, not after 20 s
    assert len(answers) == 4
    for code, doc, took in answers:
        assert code == 422 and doc["outcome"] == "timeout" and doc["limitsHit"] == ["timeout"], doc
        assert took < 1.0 + SLACK + 0.5, took


@pytest.mark.parametrize("kind", ["fifo", "link-to-fifo", "link-to-device"])
def test_a_preopen_holding_a_blocking_file_is_refused_before_the_agent_runs(signed: Signed, tmp_path: Path,
                                                                            kind: str) -> None:
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "hello.txt").write_text("hello\n")
    if kind == "fifo":
        os.mkfifo(data / "sub" / "pipe")
    elif kind == "link-to-fifo":
        os.mkfifo(tmp_path / "elsewhere")
        (data / "pipe").symlink_to(tmp_path / "elsewhere")
    else:
        (data / "pipe").symlink_to("/dev/zero")
    preopens = f'[{{"guestPath": "/data", "hostPath": "{data}", "readOnly": true}}]'
    publish(signed, tmp_path / "t", {"opener": (wat_manifest("opener", preopens=preopens),
                                                {"src/main.wat": OPEN_PIPE})})
    rt = Runtime(signed.store, signed.trust, signed.engine, RuntimeConfig(host_roots=(tmp_path.resolve(),)))
    outcome: list[BaseException | object] = []

    def invoke() -> None:
        try:
            outcome.append(rt.invoke("opener", Invocation()))
        except BaseException as exc:  # handed to the test thread
            outcome.append(exc)

    worker = threading.Thread(target=invoke, daemon=True)
    worker.start()
    worker.join(timeout=10)  # on main the open blocks for ever: fail instead of hanging the suite
    rt.close()
    assert not worker.is_alive(), "the invocation blocked in a host call"
    (refused,) = outcome
    assert isinstance(refused, Refused), refused
    assert refused.reason == "host-path"
    expected = {"fifo": "sub/pipe is a FIFO", "link-to-fifo": "data/pipe is a FIFO",
                "link-to-device": "data/pipe is a character device"}[kind]
    assert expected in str(refused) and "opening or reading it can block past any deadline" in str(refused)


def test_the_pipeline_test_stage_stops_a_sleeper_at_its_deadline(tmp_path: Path) -> None:
    cases = "cases:\n  - name: sleeps\n    stdout: \"woke\\n\"\n"
    folder = write_template(tmp_path / "t", "sleeper", manifest=wat_manifest("sleeper", timeout_ms=1000),
                            files={"src/main.wat": sleeper(), "tests/cases.yaml": cases})
    t = load_template(folder, "sleeper/agent.yaml")
    import wasmtime

    compiled = compile_checked(t, wasmtime.wat2wasm(sleeper()), "sleeper")
    started = time.monotonic()
    (result,) = run_cases(t, compiled, [{"name": "sleeps", "stdout": "woke\n"}])
    took = time.monotonic() - started
    assert not result.ok and "deadline exceeded (spec.limits.timeoutMs = 1000)" in result.reason, result
    assert took < 1.0 + SLACK, took

    from agentfactory.store import OCILayoutStore

    report = run_pipeline(tmp_path / "t", OCILayoutStore(tmp_path / "store"), jobs=1)
    (r,) = report.templates
    assert r.status == "failed" and r.tests == {"passed": 0, "total": 1}
    assert r.errors == [f"{tmp_path}/t/sleeper/tests/cases.yaml: case 'sleeps': trapped: deadline exceeded "
                        "(spec.limits.timeoutMs = 1000)"], r.errors


def test_the_test_stage_shares_one_time_budget_per_template(tmp_path: Path) -> None:
    folder = write_template(tmp_path / "t", "sleeper", manifest=wat_manifest("sleeper", timeout_ms=1000),
                            files={"src/main.wat": sleeper()})
    t = load_template(folder, "sleeper/agent.yaml")
    import wasmtime

    compiled = compile_checked(t, wasmtime.wat2wasm(sleeper()), "sleeper")
    cases = [{"name": f"c{i}"} for i in range(5)]
    started = time.monotonic()
    results = run_cases(t, compiled, cases, budget_seconds=1.5)
    took = time.monotonic() - started
    assert [r.ok for r in results] == [False] * 5
    assert "spec.limits.timeoutMs = 1000" in results[0].reason
    assert re.search(r"deadline exceeded \(the test stage's budget left 0\.\d s for this case\)", results[1].reason)
    assert all("budget of 1.5 s for this template's cases is spent" in r.reason for r in results[2:])
    assert took < 1.5 + SLACK, took
